"""/v1/plans: dry run of a submission (validation, server limits, plan; nothing queued)."""

from __future__ import annotations

from fastapi import APIRouter

from service import jobs
from service.deps import DbDep, HelpersDep, PrincipalDep, SettingsDep
from service.routes.jobs import PROBLEM
from service.schemas import JobCreate, PlanPublic

router = APIRouter(prefix="/v1/plans", tags=["jobs"])


@router.post("", responses={401: PROBLEM, 422: PROBLEM, 503: PROBLEM})
def plan_job(body: JobCreate, db: DbDep, settings: SettingsDep, helpers: HelpersDep,
             principal: PrincipalDep) -> PlanPublic:
    """Validate ``spec`` exactly as ``POST /v1/jobs`` would (schema and server limits: 422
    naming the field and the limit) and answer its plan: parameters, MACs, activation
    memory at the training batch, trials and epochs. Quotas are not applied."""
    return PlanPublic.model_validate(jobs.plan_spec(db, settings, helpers, principal,
                                                    body.spec))
