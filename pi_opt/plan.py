"""Dry run of a job: what it will count, train and cost, without data and without training.

:func:`plan_job` reads a :class:`~pi_opt.search.SearchConfig` and returns a
:class:`JobPlan`: the baseline's ReLU count (per-sample elements, the counting rules
of :mod:`pi_opt.profile`), parameters, MACs, activation memory, every budget as an
absolute count and as a share of the baseline, the epochs and images each chain
trains per trial and in total (baseline + search + fine-tune), and a wall-time
estimate from a few measured training steps of the real model on random tensors of
the job's input shape (on the job's device: CUDA when present and ``device: auto``).

No data is read: data-set sizes come from the official split sizes of the built-in
kinds (CIFAR, TinyImageNet, digits, synthetic) or from a cheap look at the files
(``npz`` header, image-folder file count); a missing path is a warning, not an error.
Estimates are first-order: a step of a mask search (SNL/AutoReP hooks) or of a wider
HybReNet costs more than a plain step of the base model, and phases marked ``bound``
may stop earlier.
"""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from pi_opt.artifacts import ArchSpec, ModelSpec
from pi_opt.data import DatasetSpec
from pi_opt.errors import ConfigError
from pi_opt.profile import ModelProfile, profile_model
from pi_opt.search._config import SearchConfig
from pi_opt.search._study import harvesting
from pi_opt.sites import prepare_sites
from pi_opt.techniques import TECHNIQUES
from pi_opt.techniques.base import PlanInputs, PlannedPhase
from pi_opt.training import resolve_device
from pi_opt.training._precision import plan_precision, to_memory_format, use_channels_last

#: kind -> (training pool, official test split or None, (C, H, W), classes).
_KNOWN_SIZES: dict[str, tuple[int, int | None, tuple[int, int, int], int]] = {
    "digits": (1797, None, (1, 8, 8), 10),
    "cifar10": (50_000, 10_000, (3, 32, 32), 10),
    "cifar100": (50_000, 10_000, (3, 32, 32), 100),
    "tinyimagenet": (100_000, 10_000, (3, 64, 64), 200),
}
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm"})
_MAX_FILES_COUNTED = 2_000_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataPlan(_Model):
    """Split sizes (images) as the job will see them; ``None`` when unknown without data."""

    kind: str
    path: str | None
    path_exists: bool | None
    input_shape: tuple[int, int, int] | None
    num_classes: int | None
    train_images: int | None
    val_images: int | None
    test_images: int | None
    sizes_from: str


class BudgetPlan(_Model):
    """One budget as requested (a fraction <= 1 or a count), resolved to a per-sample ReLU
    count and as a percentage of the baseline's count.
    """

    requested: float
    relus: int
    percent_of_baseline: float


class PhasePlan(_Model):
    """One phase: ``epochs`` passes over the train (or, for ``kind='eval'``, val) split."""

    name: str
    kind: str
    epochs: int
    images: int | None
    kd: bool
    shared: bool
    bound: bool
    seconds: float | None


class ChainPlan(_Model):
    """Per trial and in total (``trials`` grid trials + shared one-off phases)."""

    chain: list[str]
    trials: int
    phases: list[PhasePlan]
    epochs_per_trial: int
    images_per_trial: int | None
    seconds_per_trial: float | None
    total_epochs: int
    total_images: int | None
    total_seconds: float | None


class TimingPlan(_Model):
    """Measured on random tensors of the job's shape (``steps`` timed after one warm-up)."""

    device: str
    precision: str
    channels_last: bool
    batch_size: int
    steps: int
    train_step_s: float
    forward_step_s: float
    train_images_per_s: float
    forward_images_per_s: float
    torch_threads: int
    load_1min: float | None


class JobPlan(_Model):
    """What a job will do before it runs: model size (ReLUs per sample, params, MACs,
    activation bytes per sample / batch), data, budgets, phases with epochs, images and
    estimated seconds, optional measured timing, notes and warnings.
    """

    title: str
    arch: str
    input_shape: tuple[int, int, int]
    num_classes: int
    baseline_relus: int
    params: int
    macs: int
    training_batch: int
    activation_bytes_per_sample: int
    activation_bytes_per_batch: int
    data: DataPlan
    budgets: list[BudgetPlan]
    baseline: PhasePlan
    shared: list[PhasePlan]
    chains: list[ChainPlan]
    trials: int
    total_epochs: int
    total_images: int | None
    total_seconds: float | None
    timing: TimingPlan | None
    notes: list[str]
    warnings: list[str]


# ---------------------------------------------------------------------------
# data sizes without data
# ---------------------------------------------------------------------------
def _count_images(root: Path) -> int:
    n = 0
    for _dir, _sub, files in os.walk(root):
        n += sum(1 for f in files if Path(f).suffix.lower() in _IMAGE_SUFFIXES)
        if n >= _MAX_FILES_COUNTED:
            break
    return n


def _source_sizes(spec: DatasetSpec, warnings: list[str]) -> tuple[
        int | None, int | None, tuple[int, int, int] | None, int | None, str]:
    """(pool, official test, shape, classes, how known) of ``spec`` without loading it."""
    kind = str(spec.kind)
    if kind in _KNOWN_SIZES:
        pool, test, shape, k = _KNOWN_SIZES[kind]
        return pool, test, shape, k, "official split sizes"
    if kind == "synthetic":
        return (spec.synthetic_samples, None, tuple(spec.synthetic_shape),  # type: ignore[return-value]
                spec.synthetic_classes, "config")
    if spec.path is None or not Path(spec.path).exists():
        return None, None, None, None, "unknown (no data)"
    p = Path(spec.path)
    if kind == "npz" and p.is_file():
        import numpy as np

        try:
            with np.load(p, mmap_mode="r") as z:
                x = z["x_train"]
                test = int(z["x_test"].shape[0]) if "x_test" in z.files else None
                return int(x.shape[0]), test, None, None, "npz header"
        except Exception as exc:  # noqa: BLE001 - a plan never fails on unreadable data
            warnings.append(f"could not read {p}: {exc}")
            return None, None, None, None, "unknown (unreadable)"
    if p.is_dir():
        return _count_images(p), None, None, None, "image files counted (all splits)"
    return None, None, None, None, "unknown"


def plan_data(spec: DatasetSpec, warnings: list[str]) -> DataPlan:
    """Split sizes as :func:`pi_opt.data.load_dataset` will cut them (test, val, max_train)."""
    exists = None if spec.path is None else Path(spec.path).exists()
    if exists is False:
        warnings.append(f"data path {spec.path} does not exist (kind {spec.kind}); the plan "
                        "uses the kind's official sizes where known; the job itself will fail "
                        "until the data is there")
    if spec.kind == "shapes":  # generated with fixed split sizes (pi_opt.data._shapes)
        from pi_opt.data._shapes import NUM_CLASSES

        side = spec.image_size or 32
        n_train = spec.shapes_train if spec.max_train is None else min(spec.shapes_train,
                                                                       spec.max_train)
        return DataPlan(kind="shapes", path=None, path_exists=None, input_shape=(3, side, side),
                        num_classes=NUM_CLASSES, train_images=n_train, val_images=spec.shapes_val,
                        test_images=spec.shapes_test, sizes_from="config")
    pool, test, shape, k, how = _source_sizes(spec, warnings)
    if shape is not None and spec.image_size is not None:
        shape = (shape[0], spec.image_size, spec.image_size)
    train: int | None = None
    val: int | None = None
    if pool is not None:
        if test is None:
            test = min(pool - 1, max(1, math.ceil(spec.test_fraction * pool)))
            pool -= test
        val = min(pool - 1, max(1, math.ceil(spec.val_fraction * pool)))
        train = pool - val
        if spec.max_train is not None:
            train = min(train, spec.max_train)
    return DataPlan(kind=str(spec.kind), path=spec.path, path_exists=exists, input_shape=shape,
                    num_classes=k, train_images=train, val_images=val, test_images=test,
                    sizes_from=how)


def _model_spec(config: SearchConfig, data: DataPlan) -> ModelSpec:
    if config.model is not None:
        return config.model
    if data.input_shape is None or data.num_classes is None:
        raise ConfigError(f"dataset kind {data.kind!r}: its input shape and classes are only "
                          "known from the data; set 'model' (arch, input_shape, num_classes) "
                          "to plan without it")
    return ModelSpec(arch=ArchSpec(name="resnet_mini"), input_shape=data.input_shape,
                     num_classes=data.num_classes)


# ---------------------------------------------------------------------------
# model measurements
# ---------------------------------------------------------------------------
def activation_bytes_per_sample(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Bytes autograd saves for the backward pass per sample (fp32, train mode).

    Measured with saved-tensor hooks on a batch of 2 (BatchNorm needs > 1), parameters
    and tensors sharing a storage counted once.
    """
    params = {p.data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
        return t

    was = model.training
    model.train()
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(torch.randn(2, *input_shape, device=dev))
        del out
    finally:
        model.train(was)
    return total // 2


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_steps(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, *,
               batch_size: int, steps: int, device: str, precision: str = "fp32",
               channels_last: bool = False) -> TimingPlan:
    """Seconds per SGD training step and per no-grad forward (median of ``steps``), with
    the run's precision (autocast, fp16 grad scaler) and memory format."""
    dev = resolve_device(device)
    with warnings.catch_warnings():  # fallbacks are the training engine's to report
        warnings.simplefilter("ignore", RuntimeWarning)
        amp = plan_precision(precision, dev)
        nhwc = use_channels_last(channels_last, dev)
    model = model.to(dev).train()
    if nhwc:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stub lacks memory_format
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = to_memory_format(torch.randn(batch_size, *input_shape, device=dev), nhwc)
    y = torch.randint(0, num_classes, (batch_size,), device=dev)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp.autocast():
            loss = F.cross_entropy(model(x), y)
        if amp.scaler is not None:
            amp.scaler.scale(loss).backward()
            amp.scaler.step(opt)
            amp.scaler.update()
        else:
            loss.backward()
            opt.step()

    def forward_step() -> None:
        with torch.no_grad(), amp.autocast():
            model(x)

    times = {}
    for name, fn in (("train", train_step), ("forward", forward_step)):
        fn()  # warm-up
        _sync(dev)
        runs = []
        for _ in range(steps):
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            runs.append(time.perf_counter() - t0)
        times[name] = sorted(runs)[len(runs) // 2]
    model.eval()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return TimingPlan(device=str(dev), precision=amp.used, channels_last=nhwc,
                      batch_size=batch_size, steps=steps,
                      train_step_s=times["train"], forward_step_s=times["forward"],
                      train_images_per_s=batch_size / times["train"],
                      forward_images_per_s=batch_size / times["forward"],
                      torch_threads=torch.get_num_threads(), load_1min=load)


# ---------------------------------------------------------------------------
# phases -> images and seconds
# ---------------------------------------------------------------------------
def _phase(p: PlannedPhase, data: DataPlan, timing: TimingPlan | None) -> PhasePlan:
    """Images and seconds of one phase (train: + one val pass per epoch)."""
    n = data.train_images if p.kind == "train" else data.val_images
    images = None if n is None else p.epochs * n
    seconds = None
    if timing is not None and images is not None:
        per_img = (1.0 / timing.train_images_per_s if p.kind == "train"
                   else 1.0 / timing.forward_images_per_s)
        if p.kind == "train" and p.kd:
            per_img += 1.0 / timing.forward_images_per_s
        seconds = images * per_img
        if p.kind == "train" and data.val_images is not None:
            seconds += p.epochs * data.val_images / timing.forward_images_per_s
    return PhasePlan(name=p.name, kind=p.kind, epochs=p.epochs, images=images, kd=p.kd,
                     shared=p.shared, bound=p.bound, seconds=seconds)


def _sum(values: list[Any]) -> Any:
    return None if any(v is None for v in values) else sum(values)


def _stages(model: nn.Module) -> int:
    names = getattr(model, "stage_names", None)
    return len(names) if isinstance(names, list) and names else 1


def _chain_plans(config: SearchConfig, data: DataPlan, timing: TimingPlan | None,
                 n_budgets: int, stages: int) -> tuple[list[ChainPlan], list[PhasePlan]]:
    """Per-chain plans plus the distinct shared phases (counted once per job)."""
    chains: list[ChainPlan] = []
    shared: dict[tuple[str, int], PhasePlan] = {}
    for c in config.techniques:
        phases: list[PhasePlan] = []
        for name in c.chain:
            tech = TECHNIQUES.get(name)(**c.params.get(name, {}))
            harvest = harvesting(c, config)
            inputs = PlanInputs(finetune=config.finetune, stages=stages,
                                budgets_per_trial=n_budgets if harvest else 1)
            for p in tech.plan_phases(inputs):
                pp = _phase(p, data, timing)
                pp = pp.model_copy(update={"name": f"{name}:{p.name}"})
                if p.shared:
                    shared.setdefault((p.name, p.epochs), pp)
                else:
                    phases.append(pp)
        per_epochs = sum(p.epochs for p in phases if p.kind == "train")
        per_images = _sum([p.images for p in phases if p.kind == "train"])
        per_s = _sum([p.seconds for p in phases])
        n_trials = 1 if harvesting(c, config) else n_budgets  # one descent answers all
        chains.append(ChainPlan(
            chain=list(c.chain), trials=n_trials, phases=phases, epochs_per_trial=per_epochs,
            images_per_trial=per_images, seconds_per_trial=per_s,
            total_epochs=per_epochs * n_trials,
            total_images=None if per_images is None else per_images * n_trials,
            total_seconds=None if per_s is None else per_s * n_trials))
    return chains, list(shared.values())


class ModelFacts(NamedTuple):
    """What a plan needs of the model itself: parameters, residual stages, activation
    bytes saved per training sample (fp32), and the profile (ReLUs, MACs, layers)."""
    params: int
    stages: int
    act: int
    profile: ModelProfile


@functools.lru_cache(maxsize=64)
def model_facts(model_spec_json: str) -> ModelFacts:
    """:class:`ModelFacts` of the architecture in ``model_spec_json`` (a ModelSpec as JSON).

    Deterministic in the spec, so cached (64 architectures): a service validating many
    submissions of the same network builds and traces it once per process. The profile
    returned is shared: do not mutate it. Raises what :meth:`ModelSpec.build` raises.
    """
    spec = ModelSpec.model_validate_json(model_spec_json)
    model = spec.build()
    params, stages = sum(p.numel() for p in model.parameters()), _stages(model)
    act = activation_bytes_per_sample(model, spec.input_shape)
    # this model is ours: its sites are prepared in place (no profiling copy)
    return ModelFacts(params=params, stages=stages, act=act,
                      profile=profile_model(prepare_sites(model), spec.input_shape))


def plan_job(config: SearchConfig, *, measure_steps: int = 3) -> JobPlan:
    """Plan ``config`` without data or training (see the module doc).

    measure_steps: training steps (and no-grad forwards) of the real model timed at
        the fine-tune batch size on the job's device after one warm-up; 0 skips the
        timing and leaves every ``seconds`` field ``None`` (fast, e.g. an HTTP dry run).
    Raises :class:`~pi_opt.errors.ConfigError` when the input shape is unknown
    (no ``model`` and a file-based data kind) or a technique's params are invalid.
    """
    if measure_steps < 0:
        raise ConfigError(f"measure_steps must be >= 0, got {measure_steps}")
    warnings: list[str] = []
    data = plan_data(config.data, warnings)
    spec = _model_spec(config, data)
    if data.input_shape is not None and tuple(data.input_shape) != tuple(spec.input_shape):
        warnings.append(f"model input_shape {tuple(spec.input_shape)} differs from the data "
                        f"set's {tuple(data.input_shape)}: the job will refuse it")
    batch = config.finetune.batch_size
    timing = None
    if measure_steps > 0:
        ft = config.finetune
        timing = time_steps(spec.build(), spec.input_shape, spec.num_classes,
                            batch_size=batch, steps=measure_steps, device=ft.device,
                            precision=ft.precision, channels_last=ft.channels_last)
    facts = model_facts(spec.model_dump_json())
    params, stages, act, prof = facts.params, facts.stages, facts.act, facts.profile
    budgets = _budget_plans(config, prof.relus)
    baseline = _phase(PlannedPhase("baseline", 0 if config.weights else config.baseline.epochs,
                                   kd=False), data, timing)
    chains, shared = _chain_plans(config, data, timing, len(budgets), stages)
    grid = sum(c.trials for c in chains)
    if data.train_images is None:
        warnings.append("training-set size unknown without the data: images and seconds "
                        "are left empty")
    return JobPlan(
        title=config.title, arch=spec.arch.name, input_shape=tuple(spec.input_shape),
        num_classes=spec.num_classes, baseline_relus=prof.relus,
        params=params, macs=prof.macs,
        training_batch=batch, activation_bytes_per_sample=act,
        activation_bytes_per_batch=act * batch, data=data, budgets=budgets, baseline=baseline,
        shared=shared, chains=chains, trials=config.n_trials or grid,
        total_epochs=baseline.epochs + sum(p.epochs for p in shared if p.kind == "train")
        + sum(c.total_epochs for c in chains),
        total_images=_sum([baseline.images] + [p.images for p in shared if p.kind == "train"]
                          + [c.total_images for c in chains]),
        total_seconds=_sum([baseline.seconds] + [p.seconds for p in shared]
                           + [c.total_seconds for c in chains]),
        timing=timing, notes=_notes(config, config.n_trials or grid, grid), warnings=warnings)


def _budget_plans(config: SearchConfig, baseline_relus: int) -> list[BudgetPlan]:
    out = []
    for b in config.budgets:
        relus = max(1, int(round(b * baseline_relus))) if b <= 1 else int(b)
        out.append(BudgetPlan(requested=b, relus=relus,
                              percent_of_baseline=100.0 * relus / max(1, baseline_relus)))
    uniq = {p.relus: p for p in out}
    return [uniq[k] for k in sorted(uniq)]


def _notes(config: SearchConfig, trials: int, grid: int) -> list[str]:
    notes = [
        "ReLUs are per-sample elements (pi_opt.profile rules); MACs count Conv2d/Linear.",
        "seconds = measured plain train step (+ teacher forward under KD) x images, plus "
        "one validation pass per epoch; mask searches and wider HybReNets cost more per "
        "step; 'bound' phases may stop earlier",
        "shared phases (stage criticality) run once per job and are counted once",
    ]
    if trials != grid:
        notes.append(f"n_trials={trials} differs from the {grid} grid trials: chain totals "
                     "and the job total count the grid trials only")
    return notes


__all__ = [
    "BudgetPlan", "ChainPlan", "DataPlan", "JobPlan", "PhasePlan", "TimingPlan",
    "activation_bytes_per_sample", "plan_data", "plan_job", "render_plan", "time_steps",
]


# ---------------------------------------------------------------------------
# text rendering (the data above is computed first)
# ---------------------------------------------------------------------------
def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _fmt_n(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def render_plan(plan: JobPlan) -> str:
    """A human-readable table of ``plan``."""
    d = plan.data
    lines = [
        f"plan: {plan.title}",
        f"model: {plan.arch} input {tuple(plan.input_shape)} classes {plan.num_classes}; "
        f"baseline ReLUs {plan.baseline_relus:,}; params {plan.params:,}; "
        f"MACs {plan.macs:,}",
        f"activation memory: {plan.activation_bytes_per_sample / 2**20:.2f} MiB/sample, "
        f"{plan.activation_bytes_per_batch / 2**30:.2f} GiB at batch {plan.training_batch}",
        f"data: {d.kind} ({d.sizes_from}) train {_fmt_n(d.train_images)} / val "
        f"{_fmt_n(d.val_images)} / test {_fmt_n(d.test_images)}",
        "budgets: " + ", ".join(f"{b.relus:,} ({b.percent_of_baseline:.2f} %)"
                                for b in plan.budgets),
        f"{'phase':<40} {'epochs':>8} {'images':>14} {'time':>10}",
        f"{'baseline':<40} {plan.baseline.epochs:>8} {_fmt_n(plan.baseline.images):>14} "
        f"{_fmt_s(plan.baseline.seconds):>10}",
    ]
    for p in plan.shared:
        lines.append(f"{p.name + ' (once per job)':<40} {p.epochs:>8} {_fmt_n(p.images):>14} "
                     f"{_fmt_s(p.seconds):>10}")
    for c in plan.chains:
        lines.append(f"{'+'.join(c.chain)} x {c.trials} trials: per trial "
                     f"{c.epochs_per_trial} epochs, {_fmt_n(c.images_per_trial)} images, "
                     f"{_fmt_s(c.seconds_per_trial)}; total {_fmt_s(c.total_seconds)}")
        for p in c.phases:
            label = f"  {p.name}" + (" (<=)" if p.bound else "") + (
                " [eval]" if p.kind == "eval" else "")
            lines.append(f"{label:<40} {p.epochs:>8} {_fmt_n(p.images):>14} "
                         f"{_fmt_s(p.seconds):>10}")
    lines.append(f"total: {plan.trials} trials, {plan.total_epochs:,} epochs, "
                 f"{_fmt_n(plan.total_images)} images, {_fmt_s(plan.total_seconds)}")
    t = plan.timing
    if t is not None:
        lines.append(f"measured on {t.device} ({t.precision}"
                     + (", channels_last" if t.channels_last else "") + "): "
                     f"{t.train_images_per_s:.1f} img/s train, "
                     f"{t.forward_images_per_s:.1f} img/s forward at batch {t.batch_size} "
                     f"(median of {t.steps}; {t.torch_threads} threads; load "
                     f"{t.load_1min if t.load_1min is not None else '?'})")
    lines += [f"note: {n}" for n in plan.notes]
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)
