"""Responses the hot polling routes build themselves."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Response
from pydantic import BaseModel


def json_model(model: BaseModel, *, status_code: int = 200,
               headers: Mapping[str, str] | None = None) -> Response:
    """``model`` as an ``application/json`` response, serialized once by pydantic.

    A route that returns a model makes FastAPI validate it again (in a worker thread for a
    sync route) before serializing it; the polling routes (job status and list, hit by
    every client every few seconds) skip that and keep ``response_model=`` in their
    decorator, so the OpenAPI document is unchanged.
    """
    return Response(content=model.model_dump_json(), status_code=status_code,
                    headers=dict(headers or {}), media_type="application/json")
