"""Server limits on one job, checked before it is queued (and by the plan dry run).

``JobLimits`` is the JSON-able subset of ``Settings`` sent to the helper process, where
``service.specs.plan_and_check`` validates the spec, checks the cheap bounds (trials,
epochs, time, input size), counts the model's parameters on torch's meta device (no
weights are allocated, so a huge model cannot exhaust memory) and only then plans the job with
``pi_opt.plan.plan_job`` to check MACs and activation memory at the training batch.
Every refusal is a 422 problem (code ``limit-exceeded``) whose ``errors`` name the spec
field, the server limit (setting / ``PI_OPT_*`` variable) and its value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from service.problems import ProblemError
from service.settings import Settings

if TYPE_CHECKING:
    from pi_opt.search import SearchConfig


class JobLimits(BaseModel):
    """The limits of ``Settings`` that a job spec is checked against."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_trials: int
    max_epochs: int
    max_job_seconds: float
    max_model_params: int
    max_model_macs: int
    max_activation_bytes: int
    max_input_elements: int

    @classmethod
    def from_settings(cls, settings: Settings) -> JobLimits:
        """The limits configured in ``settings`` (same field names)."""
        return cls(**{name: getattr(settings, name) for name in cls.model_fields})


def _over(loc: tuple[str, ...], value: float, limit: str, bound: float, what: str
          ) -> dict[str, Any]:
    env = "PI_OPT_" + limit.upper()
    return {"loc": ["spec", *loc], "type": "limit", "limit": limit, "value": bound,
            "msg": f"{what} is {value:g}; the server allows at most {bound:g} "
                   f"({limit}, {env})"}


def _raise(errors: list[dict[str, Any]]) -> None:
    if errors:
        raise ProblemError(422, "limit-exceeded", "the job exceeds the server's limits: "
                           + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                       for e in errors),
                           title="Unprocessable Content", errors=errors)


def check_nonfinite(raw: Any, loc: tuple[Any, ...] = ("spec",)) -> None:
    """422 for NaN / Infinity anywhere in the submitted JSON (the stored spec is the
    validated one, and strict JSON has no such numbers)."""
    bad: list[tuple[Any, ...]] = []

    def walk(value: Any, where: tuple[Any, ...]) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            bad.append(where)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, (*where, k))
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(v, (*where, i))

    walk(raw, loc)
    if bad:
        raise ProblemError(422, "validation-error", "the job spec holds non-finite numbers "
                           "(NaN / Infinity)", title="Unprocessable Content",
                           errors=[{"loc": list(w), "msg": "must be a finite number",
                                    "type": "finite_number"} for w in bad[:20]])


def trial_count(config: SearchConfig) -> int:
    """Trials the job runs: ``n_trials`` or one per (chain, budget)."""
    return config.n_trials or len(config.techniques) * len(config.budgets)


def check_spec_bounds(config: SearchConfig, limits: JobLimits) -> None:
    """Bounds readable from the spec alone (no model built)."""
    errors: list[dict[str, Any]] = []
    trials = trial_count(config)
    if trials > limits.max_trials:
        errors.append(_over(("n_trials",), trials, "max_trials", limits.max_trials, "trials"))
    for phase in ("baseline", "finetune"):
        epochs = getattr(config, phase).epochs
        if epochs > limits.max_epochs:
            errors.append(_over((phase, "epochs"), epochs, "max_epochs", limits.max_epochs,
                                f"{phase} epochs"))
    if config.timeout_s is not None and config.timeout_s > limits.max_job_seconds:
        errors.append(_over(("timeout_s",), config.timeout_s, "max_job_seconds",
                            limits.max_job_seconds, "timeout_s"))
    if config.model is not None:
        errors += _input_errors(config.model.input_shape, ("model", "input_shape"), limits)
    _raise(errors)


def _input_errors(shape: Any, loc: tuple[str, ...], limits: JobLimits) -> list[dict[str, Any]]:
    elements = math.prod(int(d) for d in shape)
    if elements > limits.max_input_elements:
        return [_over(loc, elements, "max_input_elements", limits.max_input_elements,
                      "input elements (C x H x W)")]
    return []


def check_input_size(shape: Any, loc: tuple[str, ...], limits: JobLimits) -> None:
    """Input elements of a shape known otherwise (e.g. recorded with an upload)."""
    _raise(_input_errors(shape, loc, limits))


def check_params(params: int, limits: JobLimits) -> None:
    """Parameter count, before anything is allocated."""
    if params > limits.max_model_params:
        _raise([_over(("model", "arch"), params, "max_model_params", limits.max_model_params,
                      "model parameters")])


def check_plan_bounds(plan: Any, limits: JobLimits) -> None:
    """Model size from a ``JobPlan``: parameters, MACs per sample, activation memory."""
    errors: list[dict[str, Any]] = []
    for attr, limit, what in (("params", "max_model_params", "model parameters"),
                              ("macs", "max_model_macs", "MACs per sample"),
                              ("activation_bytes_per_batch", "max_activation_bytes",
                               f"activation bytes at the training batch "
                               f"({plan.training_batch})")):
        value, bound = getattr(plan, attr), getattr(limits, limit)
        if value > bound:
            errors.append(_over(("model",), value, limit, bound, what))
    _raise(errors)
