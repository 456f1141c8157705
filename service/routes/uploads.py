"""/v1/uploads: data sets and models (streamed raw bodies)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import anyio
from fastapi import APIRouter, Body, Query, Request, Response

from service import uploads
from service.deps import DbDep, HelpersDep, PrincipalDep, SettingsDep
from service.routes.jobs import PROBLEM
from service.schemas import UploadPublic, UploadsPage

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

_RAW_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


@router.post("", status_code=201, openapi_extra=_RAW_BODY,
             responses={400: PROBLEM, 401: PROBLEM, 413: PROBLEM, 415: PROBLEM, 422: PROBLEM,
                        503: PROBLEM})
async def create_upload(
    request: Request, response: Response, db: DbDep, settings: SettingsDep,
    helpers: HelpersDep, principal: PrincipalDep, kind: Literal["dataset", "model"],
    filename: Annotated[str, Query(min_length=1, max_length=200)],
) -> UploadPublic:
    """Stream the raw body to disk (size-limited; SHA-256 checked against
    ``X-Checksum-Sha256`` / ``Repr-Digest`` / ``Digest`` when sent).

    ``kind=dataset``: ``.npz``, CIFAR python-batch ``.tar.gz`` or ImageFolder
    ``.zip``/``.tar.gz``. ``kind=model``: safetensors weights; then
    ``PUT /v1/uploads/{id}/spec`` with the architecture spec.
    Pickle / ``torch.save`` files, ``.npz`` object arrays and CIFAR pickles with globals
    other than numpy's array reconstruction are refused (415 ``unsafe-format``). 413 past
    ``max_upload_bytes``, the key's ``quota_upload_bytes`` or the extraction limits
    (``max_extract_bytes``, ``max_extract_ratio``).
    """
    row = await uploads.receive_upload(request, db, settings, helpers, principal, kind=kind,
                                       filename=filename)
    response.headers["Location"] = f"/v1/uploads/{row.id}"
    return uploads.to_public(row)


@router.put("/{upload_id}/spec", responses={401: PROBLEM, 404: PROBLEM, 409: PROBLEM,
                                            422: PROBLEM, 503: PROBLEM})
async def put_model_spec(upload_id: str, spec: Annotated[dict[str, Any], Body()], db: DbDep,
                         settings: SettingsDep, helpers: HelpersDep,
                         principal: PrincipalDep) -> UploadPublic:
    """Attach the architecture spec (``ModelSpec``: arch name + kwargs, input_shape,
    num_classes, ...) to a model upload; checked against the weights' tensor shapes."""
    row = await anyio.to_thread.run_sync(uploads.set_model_spec, db, settings, helpers,
                                         principal,
                                         upload_id, spec)
    return uploads.to_public(row)


@router.get("", responses={400: PROBLEM, 401: PROBLEM})
def list_uploads(request: Request, response: Response, db: DbDep, principal: PrincipalDep,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20,
                 cursor: str | None = None) -> UploadsPage:
    """Your uploads, newest first, `limit` per page; a `Link` header to the next page."""
    rows, nxt = uploads.list_uploads(db, principal, limit=limit, cursor=cursor)
    if nxt:
        q = urlencode({"limit": limit, "cursor": nxt})
        response.headers["Link"] = f'<{request.url.path}?{q}>; rel="next"'
    return UploadsPage(data=[uploads.to_public(r) for r in rows], next_cursor=nxt)


@router.get("/{upload_id}", responses={401: PROBLEM, 404: PROBLEM})
def get_upload(upload_id: str, db: DbDep, principal: PrincipalDep) -> UploadPublic:
    """One upload (404 if unknown)."""
    return uploads.to_public(uploads.get_upload(db, principal, upload_id))


@router.delete("/{upload_id}", status_code=204, responses={401: PROBLEM, 404: PROBLEM,
                                                            409: PROBLEM})
def delete_upload(upload_id: str, db: DbDep, settings: SettingsDep,
                  principal: PrincipalDep) -> Response:
    """Delete an upload (409 while an active job references it)."""
    uploads.delete_upload(db, settings, principal, upload_id)
    return Response(status_code=204)
