"""/v1/jobs/{id}/demo: encrypted inference on a front point (asynchronous)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.demos import to_public
from service.deps import DemosDep, PrincipalDep
from service.routes.jobs import PROBLEM
from service.schemas import DemoCreate, DemoPublic

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["demo"])


@router.post("/demo", status_code=202,
             responses={401: PROBLEM, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM})
def create_demo(job_id: str, body: DemoCreate, response: Response, demos: DemosDep,
                principal: PrincipalDep) -> DemoPublic:
    """Start a 2-party demo (subprocess); poll the ``Location`` until ``succeeded``.

    The result holds the encrypted and plaintext predictions, the true label, latency and
    bytes exchanged, as reported by the MPC backend.
    """
    demo = demos.create(principal, job_id, body)
    response.headers["Location"] = f"/v1/jobs/{job_id}/demos/{demo.id}"
    response.headers["Retry-After"] = "2"
    return to_public(demo)


@router.get("/demos/{demo_id}", responses={401: PROBLEM, 404: PROBLEM})
def get_demo(job_id: str, demo_id: str, demos: DemosDep, principal: PrincipalDep) -> DemoPublic:
    """A demo of the job: its status and, once done, its result or problem (404 if unknown)."""
    return to_public(demos.get(principal, job_id, demo_id))
