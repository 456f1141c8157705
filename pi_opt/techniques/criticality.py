"""Stage ReLU criticality (DeepReDuce, Jha et al. ICML'21, section 4.2 of the brief).

For every stage ``k`` of the teacher (sites grouped by :func:`pi_opt.sites.stage_of`;
the stem is its own stage ``"stem"``) a variant that keeps exact ReLUs only in
stage ``k`` (every other site IDENTITY) is KD-trained briefly from the teacher,
plus the all-linear variant (every site IDENTITY). The score is our implementable
proxy of the paper's criticality metric::

    score_k = (Acc_k - Acc_lin) / ln(max(ReLUs_k, 2))

``Acc`` = best validation accuracy of the variant, ``ReLUs_k`` = per-sample ReLUs
of stage ``k`` in the all-ReLU teacher. (The paper uses a squashed
accuracy-per-log-ReLU ratio with two tunable exponents; this proxy keeps its
two ingredients: accuracy gained over the linear network, discounted by the
log of the ReLUs needed for it.) Stages are ranked ascending: ``order[0]`` is
the least critical stage, culled first.

Variants start from the teacher's weights (``init="teacher"``, a cheap warm start;
the paper trains each variant fully) or from a fresh initialization
(``init="scratch"``). Results are cached as JSON under
``ctx.workdir / "criticality" / <key>.json`` where ``key`` hashes the architecture
spec, a data fingerprint, the teacher's weights and the training settings
(epochs included), so trials and techniques share one profile.

This module also holds structural helpers shared by DeepReDuce and DeepReShape.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from pi_opt.activations import Kind
from pi_opt.data import DataBundle
from pi_opt.errors import ModelFormatError
from pi_opt.sites import iter_sites, materialize_all, prepare_sites, stage_of
from pi_opt.techniques._common import distill
from pi_opt.techniques.base import Candidate, PlannedPhase, TechniqueContext
from pi_opt.training import TrainConfig, evaluate, resolve_device

CriticalityInit = Literal["teacher", "scratch"]
FORMULA = "score_k = (Acc_k - Acc_lin) / ln(max(ReLUs_k, 2)); ascending = least critical first"
CACHE_VERSION = 1


class StageCriticality(BaseModel):
    """Criticality profile of one (architecture, data, teacher, training settings).

    stages: stage labels in model order; relus: all-ReLU per-sample count per stage;
    accuracy: best val accuracy of the stage-only variant; order: ascending score.
    """

    model_config = ConfigDict(extra="forbid")
    version: int = CACHE_VERSION
    key: str
    formula: str = FORMULA
    epochs: int
    init: CriticalityInit
    stages: list[str]
    relus: dict[str, int]
    accuracy: dict[str, float]
    linear_accuracy: float
    scores: dict[str, float]
    order: list[str]

    def most_critical_first(self) -> list[str]:
        """Stage labels, most critical (highest score) first."""
        return list(reversed(self.order))


# ---------------------------------------------------------------------------
# structural helpers (shared with deepreduce / deepreshape)
# ---------------------------------------------------------------------------
def stage_sites(model: nn.Module) -> dict[str, list[str]]:
    """Site names grouped by stage label, both in model order."""
    out: dict[str, list[str]] = {}
    for name, _ in iter_sites(model):
        out.setdefault(stage_of(name), []).append(name)
    return out


def thinned_sites(model: nn.Module) -> set[str]:
    """Sites that DeepReDuce thinning drops.

    ResNets (``pi_opt.models.resnet.BasicBlock``): the post-residual ``relu2`` of
    every block. Other models: every other site within each stage (the 2nd, 4th, ...).
    """
    from pi_opt.models.resnet import BasicBlock

    post_residual = set()
    for name, _ in iter_sites(model):
        parent, _, leaf = name.rpartition(".")
        if leaf == "relu2" and parent:
            try:
                if isinstance(model.get_submodule(parent), BasicBlock):
                    post_residual.add(name)
            except AttributeError:
                pass
    if post_residual:
        return post_residual
    return {n for names in stage_sites(model).values() for n in names[1::2]}


def ensure_materialized(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Materialize (element granularity) every site still lacking a kinds map."""
    if all(s.materialized for _, s in iter_sites(model)):
        return
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    materialize_all(model, torch.zeros(1, *input_shape, device=dev))


def kinds_snapshot(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of every site's ``kinds`` map, by site name."""
    return {n: s.kinds.detach().clone() for n, s in iter_sites(model)}


@torch.no_grad()
def apply_keep(model: nn.Module, base: dict[str, Tensor], keep: Iterable[str]) -> None:
    """Sites in ``keep`` get their ``base`` kinds back; every other site becomes IDENTITY."""
    keep = set(keep)
    for name, site in iter_sites(model):
        k = base[name].to(site.kinds.device)
        site.set_kinds(k if name in keep else torch.full_like(k, int(Kind.IDENTITY)))


def train_kd_or_eval(
    ctx: TechniqueContext, cand: Candidate, *, epochs: int, phase: str, **overrides: Any
) -> float:
    """KD-train ``cand.model`` from the teacher (``epochs`` > 0, best val epoch kept) or
    just measure its val accuracy; sets and returns ``cand.val_accuracy``."""
    if epochs > 0:
        distill(ctx, cand, epochs=epochs, phase=phase, **overrides)
    else:
        cand.model.to(resolve_device(ctx.finetune.device))
        cand.val_accuracy = evaluate(cand.model, ctx.data.val, device=ctx.finetune.device,
                                     num_classes=ctx.data.num_classes).accuracy
    cand.model.eval()
    return cand.val_accuracy


# ---------------------------------------------------------------------------
# fingerprints and cache
# ---------------------------------------------------------------------------
_DATA_FP: weakref.WeakKeyDictionary[DataBundle, str] = weakref.WeakKeyDictionary()


def data_fingerprint(data: DataBundle) -> str:
    """SHA-256 of the train/val splits: shapes, all labels, the float64 sum of every
    input and the bytes of up to 2,048 evenly spaced input rows (memoized per bundle)."""
    hit = _DATA_FP.get(data)
    if hit is not None:
        return hit
    h = hashlib.sha256()
    h.update(json.dumps([data.name, data.num_classes, list(data.input_shape)]).encode())
    for split in (data.train, data.val):
        x, y = split.tensors
        h.update(repr((tuple(x.shape), str(x.dtype), tuple(y.shape))).encode())
        h.update(y.detach().cpu().contiguous().numpy().tobytes())
        if len(x):
            idx = torch.linspace(0, len(x) - 1, min(len(x), 2048)).round().long()
            h.update(x[idx].detach().cpu().contiguous().numpy().tobytes())
            h.update(repr(float(x.detach().double().sum())).encode())
    fp = h.hexdigest()
    _DATA_FP[data] = fp
    return fp


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex) of the model's state dict: every key and tensor's bytes, sorted by key."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                 if v.numel() else b"")
    return h.hexdigest()


def _train_config(ctx: TechniqueContext, epochs: int) -> TrainConfig:
    """The settings ``_common.distill`` trains each variant with."""
    return ctx.finetune.model_copy(update={"epochs": epochs, "select_on_val": True,
                                           "seed": ctx.job_seed})


def criticality_key(ctx: TechniqueContext, *, epochs: int, init: CriticalityInit) -> str:
    """Cache key (32 hex chars) of a criticality profile: architecture, input shape, classes,
    data and teacher fingerprints, training settings and init.
    """
    payload = {
        "version": CACHE_VERSION,
        "arch": ctx.spec.arch.model_dump(mode="json"),
        "input_shape": list(ctx.spec.input_shape),
        "num_classes": ctx.spec.num_classes,
        "data": data_fingerprint(ctx.data),
        "teacher": weights_fingerprint(ctx.teacher),
        "train": _train_config(ctx, epochs).model_dump(mode="json", exclude={"device"}),
        "init": init,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def cache_path(ctx: TechniqueContext, key: str) -> Path:
    """``<workdir>/criticality/<key>.json``."""
    return Path(ctx.workdir) / "criticality" / f"{key}.json"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_cached(path: Path) -> StageCriticality | None:
    """The cached profile at ``path``, or ``None`` when missing, unreadable, invalid or of
    another cache version.
    """
    try:
        crit = StageCriticality.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None
    return crit if crit.version == CACHE_VERSION else None


# ---------------------------------------------------------------------------
# the profile
# ---------------------------------------------------------------------------
def _variant(ctx: TechniqueContext, keep_stage: str | None, init: CriticalityInit) -> nn.Module:
    if init == "teacher":
        model = copy.deepcopy(ctx.teacher)
    else:
        torch.manual_seed(ctx.job_seed)
        model = prepare_sites(ctx.spec.build())
    ensure_materialized(model, ctx.spec.input_shape)
    base = {n: torch.full_like(s.kinds, int(Kind.RELU)) for n, s in iter_sites(model)}
    apply_keep(model, base, [n for n, _ in iter_sites(model)
                             if keep_stage is not None and stage_of(n) == keep_stage])
    return model


def _train_variant(ctx: TechniqueContext, model: nn.Module, *, epochs: int, phase: str) -> float:
    """KD-train one variant; returns its best validation accuracy (patched in tests)."""
    cand = Candidate(model=model, spec=ctx.spec)
    # Shared across trials: train with the job's seed, not the trial's.
    # Shared across trials: never reported to (or stopped by) one trial's pruning.
    shared = dataclasses.replace(ctx, seed=ctx.job_seed, fairness_weight=0.0,
                                 early_stop=None)
    return train_kd_or_eval(shared, cand, epochs=epochs, phase=phase)


def scores_from(
    accuracy: dict[str, float], linear_accuracy: float, relus: dict[str, int]
) -> tuple[dict[str, float], list[str]]:
    """Proxy scores and the ascending order (ties: model order, earlier first)."""
    scores = {s: (accuracy[s] - linear_accuracy) / math.log(max(relus[s], 2)) for s in accuracy}
    stages = list(accuracy)
    order = sorted(stages, key=lambda s: (scores[s], stages.index(s)))
    return scores, order


def criticality_phase(epochs: int, stages: int) -> PlannedPhase:
    """The criticality profile's cost for ``pi_opt.plan``: ``stages + 1`` KD trainings of
    ``epochs`` epochs, once per job (cached and shared by trials and techniques)."""
    return PlannedPhase("criticality", (stages + 1) * epochs, shared=True)


def stage_criticality(
    ctx: TechniqueContext,
    *,
    epochs: int,
    init: CriticalityInit = "teacher",
    use_cache: bool = True,
    technique: str = "criticality",
) -> StageCriticality:
    """Profile (or load from the cache) the stage criticality of ``ctx.teacher``.

    Costs ``S + 1`` KD trainings of ``epochs`` epochs for ``S`` stages on a miss.
    """
    key = criticality_key(ctx, epochs=epochs, init=init)
    path = cache_path(ctx, key)
    if use_cache and path.is_file():
        hit = load_cached(path)
        if hit is not None and hit.key == key:
            ctx.emit(type="technique", technique=technique, event="criticality-cached",
                     order=hit.order, path=str(path))
            return hit
    groups: dict[str, int] = {}  # stage -> all-ReLU per-sample count, in model order
    for site in ctx.baseline_profile.sites:
        groups[site.stage] = groups.get(site.stage, 0) + site.elements
    if not groups:
        raise ModelFormatError("the teacher has no ReLU sites: nothing to profile")
    relus = dict(groups)
    accuracy: dict[str, float] = {}
    for i, st in enumerate([*groups, None]):
        model = _variant(ctx, st, init)
        label = st if st is not None else "linear"
        acc = _train_variant(ctx, model, epochs=epochs, phase=f"{technique}-criticality-{label}")
        del model
        if st is None:
            linear_accuracy = acc
        else:
            accuracy[st] = acc
        ctx.emit(type="technique", technique=technique, event="criticality", stage=label,
                 accuracy=acc, done=i + 1, total=len(groups) + 1)
    scores, order = scores_from(accuracy, linear_accuracy, relus)
    crit = StageCriticality(key=key, epochs=epochs, init=init, stages=list(groups),
                            relus=relus, accuracy=accuracy, linear_accuracy=linear_accuracy,
                            scores=scores, order=order)
    _atomic_write(path, crit.model_dump_json(indent=2))
    ctx.emit(type="technique", technique=technique, event="criticality-done", order=order,
             scores=scores)
    return crit


__all__ = [
    "FORMULA", "StageCriticality", "apply_keep", "cache_path", "criticality_key",
    "data_fingerprint", "ensure_materialized", "kinds_snapshot", "scores_from",
    "stage_criticality", "stage_sites", "thinned_sites", "train_kd_or_eval",
    "weights_fingerprint",
]
