"""/v1/jobs/{id}/artifacts: report files and front-point models."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from service import artifacts, jobs
from service.deps import DbDep, PrincipalDep, SettingsDep
from service.routes.jobs import PROBLEM
from service.schemas import ArtifactList

router = APIRouter(prefix="/v1/jobs/{job_id}/artifacts", tags=["artifacts"])


@router.get("", responses={401: PROBLEM, 404: PROBLEM})
def list_artifacts(job_id: str, db: DbDep, settings: SettingsDep,
                   principal: PrincipalDep) -> ArtifactList:
    """Files of the job so far (report, front points, baseline) with sizes and SHA-256."""
    jobs.get_job(db, principal, job_id)
    return ArtifactList(data=artifacts.list_artifacts(settings.job_dir(job_id), job_id))


@router.get("/{name:path}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}, "text/html": {},
                                         "application/json": {}, "text/csv": {},
                                         "image/png": {}}},
                       304: {"description": "Not modified (If-None-Match)"},
                       401: PROBLEM, 404: PROBLEM})
async def download_artifact(job_id: str, name: str, request: Request, db: DbDep,
                            settings: SettingsDep, principal: PrincipalDep) -> Response:
    """Download one artifact; ``ETag`` is its SHA-256 (``If-None-Match`` → 304)."""
    await anyio.to_thread.run_sync(jobs.get_job, db, principal, job_id)
    path = artifacts.resolve_artifact(settings.job_dir(job_id), name)
    digest = await anyio.to_thread.run_sync(artifacts.sha256_of, path)
    etag = f'"{digest}"'
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    return FileResponse(path, media_type=artifacts.media_type(name), filename=path.name,
                        headers={"ETag": etag, "Cache-Control": "private, max-age=0"})
