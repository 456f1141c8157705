"""Job specs: upload references, full validation at submission, resolution in the runner.

A stored spec keeps references (``{"upload_id": ...}``), never server paths: users
cannot point a job at arbitrary files. Resolution turns references into paths under
the uploads directory right before validation (API) or before the run (job runner).
``pi_opt.search`` (and with it torch) is imported lazily, and in the API only inside the
helper processes (``service.isolation``).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pi_opt.errors import PiOptError
from service.bounds import (
    JobLimits,
    check_input_size,
    check_params,
    check_plan_bounds,
    check_spec_bounds,
)
from service.problems import ProblemError, validation_errors

if TYPE_CHECKING:
    from pi_opt.search import SearchConfig

REF = "upload_id"
WEIGHTS_FILE = "weights.safetensors"


@dataclass(frozen=True)
class UploadRef:
    """What resolution needs to know about one upload."""

    id: str
    kind: str
    status: str
    format: str | None
    path: Path                      # absolute: data file / directory, or the model directory
    meta: dict[str, Any] = field(default_factory=dict)


def referenced_uploads(raw: Mapping[str, Any]) -> list[str]:
    """Upload ids referenced by ``data`` and ``model`` (in that order, deduplicated)."""
    ids: list[str] = []
    for key in ("data", "model"):
        part = raw.get(key)
        if isinstance(part, Mapping) and isinstance(part.get(REF), str) and part[REF] not in ids:
            ids.append(part[REF])
    return ids


def _err(loc: tuple[Any, ...], msg: str, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": ["spec", *loc], "msg": msg, "type": kind}


def resolve_spec(raw: Mapping[str, Any], uploads: Mapping[str, UploadRef]) -> dict[str, Any]:
    """Return a copy of ``raw`` with upload references replaced by paths.

    Raises ProblemError(422) listing every bad reference or user-supplied path.
    """
    spec = copy.deepcopy(dict(raw))
    errors: list[dict[str, Any]] = []
    data = spec.get("data")
    if isinstance(data, dict):
        if REF in data:
            up = uploads.get(str(data[REF]))
            if up is None or up.kind != "dataset":
                errors.append(_err(("data", REF), f"no dataset upload {data[REF]!r}", "upload"))
            elif up.status != "ready" or up.format is None:
                errors.append(_err(("data", REF), f"upload {up.id} is not ready", "upload"))
            else:
                rest = {k: v for k, v in data.items() if k != REF}
                if rest.get("kind", up.format) != up.format:
                    errors.append(_err(("data", "kind"), f"upload {up.id} holds a "
                                       f"{up.format!r} data set, not {rest['kind']!r}"))
                spec["data"] = {**rest, "kind": up.format, "path": str(up.path)}
        elif data.get("path") is not None:
            errors.append(_err(("data", "path"), "server paths are not accepted: upload the data "
                               "set (POST /v1/uploads?kind=dataset) and reference it with "
                               "{\"upload_id\": ...}", "path_not_allowed"))
    if spec.get("weights") is not None:
        errors.append(_err(("weights",), "server paths are not accepted: upload the model "
                           "(POST /v1/uploads?kind=model) and use \"model\": "
                           "{\"upload_id\": ...}", "path_not_allowed"))
    model = spec.get("model")
    if isinstance(model, dict) and REF in model:
        up = uploads.get(str(model[REF]))
        if set(model) != {REF}:
            errors.append(_err(("model",), "a model reference takes only 'upload_id'"))
        elif up is None or up.kind != "model":
            errors.append(_err(("model", REF), f"no model upload {model[REF]!r}", "upload"))
        elif up.status != "ready" or "spec" not in up.meta:
            errors.append(_err(("model", REF), f"upload {up.id} has no architecture spec yet "
                               f"(PUT /v1/uploads/{up.id}/spec)", "upload"))
        else:
            spec["model"] = copy.deepcopy(up.meta["spec"])
            spec["weights"] = str(up.path / WEIGHTS_FILE)
    if errors:
        raise ProblemError(422, "validation-error", "the job spec failed validation",
                           title="Unprocessable Content", errors=errors)
    return spec


def search_config_class() -> type[SearchConfig]:
    """pi_opt's :class:`SearchConfig` (imported lazily)."""
    from pi_opt.search import SearchConfig

    return SearchConfig


def warm_up() -> None:
    """Import the engine's config models and plan one tiny network ahead of the first
    submission: torch's first forward pass and fx trace in a process cost ~0.6 s of
    one-time initialisation, which a request queued behind it would otherwise wait for."""
    search_config_class()
    from pi_opt.artifacts import ArchSpec, ModelSpec
    from pi_opt.plan import model_facts

    tiny = ModelSpec(arch=ArchSpec(name="resnet_mini", kwargs={"widths": [2, 2, 2]}),
                     input_shape=(1, 8, 8), num_classes=2)
    model_facts(tiny.model_dump_json())


def check_arch(name: str, kwargs: Mapping[str, Any], loc: tuple[Any, ...]) -> None:
    """Registered architecture accepting ``kwargs`` (``pi_opt.models.check_arch``, no build)."""
    from pi_opt.models import check_arch as check

    try:
        check(name, kwargs)
    except PiOptError as exc:
        part = "name" if exc.code == "unknown-name" else "kwargs"
        raise ProblemError(422, exc.code, exc.message,
                           errors=[_err((*loc, part), exc.message, exc.code)]) from None


def plan_and_check(raw: Mapping[str, Any], uploads: Mapping[str, UploadRef],
                   limits: dict[str, Any], *, require_plan: bool = True) -> dict[str, Any]:
    """Helper-process entry: validate, check the server limits, plan.

    Returns ``{"title": str, "plan": JobPlan as JSON or None}`` (nothing torch-typed);
    raises a 422 ProblemError for an invalid spec or one over the limits
    (``service.bounds``). The parameter count is checked on the meta device first, so the
    plan (which builds the model for real) never allocates a model over the limit.

    A spec without ``model`` on an uploaded data set cannot be planned before its data is
    read (the default architecture takes the data's shape): with ``require_plan=False``
    it is accepted after checking the upload's recorded input size.
    """
    config = validate_spec(raw, uploads)
    bounds = JobLimits.model_validate(limits)
    check_spec_bounds(config, bounds)
    if config.model is not None:
        check_params(_meta_params(config.model), bounds)
    data_upload = _data_upload(raw, uploads)
    if config.model is None and data_upload is not None and not require_plan:
        shape = data_upload.meta.get("input_shape")
        if shape:
            check_input_size(shape, ("data", REF), bounds)
        return {"title": config.title, "plan": None}
    plan = _plan(config)
    check_plan_bounds(plan, bounds)
    return {"title": config.title, "plan": public_plan(plan.model_dump(mode="json"))}


def _data_upload(raw: Mapping[str, Any], uploads: Mapping[str, UploadRef]) -> UploadRef | None:
    data = raw.get("data")
    if isinstance(data, Mapping) and isinstance(data.get(REF), str):
        return uploads.get(data[REF])
    return None


def _meta_params(model_spec: Any) -> int:
    """Parameters of the architecture, built on the meta device (no memory); cached per
    architecture like ``pi_opt.plan.model_facts``. Raises a 422 ProblemError."""
    return _meta_param_count(model_spec.model_dump_json())


@functools.lru_cache(maxsize=64)
def _meta_param_count(model_spec_json: str) -> int:
    import torch

    from pi_opt.artifacts import ModelSpec

    try:
        with torch.device("meta"):
            model = ModelSpec.model_validate_json(model_spec_json).build()
    except PiOptError as exc:
        raise ProblemError(422, exc.code, exc.message) from None
    except Exception as exc:  # noqa: BLE001 - any build failure is a spec problem
        raise ProblemError(422, "invalid-config", f"cannot build the architecture: {exc}",
                           errors=[_err(("model", "arch"), str(exc))]) from None
    return sum(p.numel() for p in model.parameters())


def _plan(config: SearchConfig) -> Any:
    """``plan_job`` without timing (sizes only: fast enough for every submission)."""
    from pi_opt.plan import plan_job

    try:
        return plan_job(config, measure_steps=0)
    except PiOptError as exc:
        raise ProblemError(422, exc.code, exc.message) from None


def public_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan without server paths (the data set is named by its upload reference)."""
    data = dict(plan.get("data") or {})
    data.pop("path", None)
    data.pop("path_exists", None)
    return {**plan, "data": data}


def validate_spec(raw: Mapping[str, Any], uploads: Mapping[str, UploadRef]) -> SearchConfig:
    """Resolve and fully validate a submitted spec; every problem is a 422 with ``errors``."""
    resolved = resolve_spec(raw, uploads)
    cls = search_config_class()
    try:
        config = cls.model_validate(resolved)
    except ValidationError as exc:
        errs = validation_errors(exc.errors(include_url=False))
        for e in errs:
            e["loc"] = ["spec", *e["loc"]]
        raise ProblemError(422, "validation-error", "the job spec failed validation",
                           title="Unprocessable Content", errors=errs) from None
    except PiOptError as exc:
        raise ProblemError(422, exc.code, exc.message) from None
    if config.model is not None:
        check_arch(config.model.arch.name, config.model.arch.kwargs, ("model", "arch"))
    return config
