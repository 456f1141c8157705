"""Train (or load) the all-ReLU baseline once per job directory.

The baseline is the teacher of every technique and the reference of every report.
It is cached as an artifact in ``<workdir>/baseline`` under an exclusive file lock,
so concurrent workers of one job on one machine train it exactly once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from pi_opt.artifacts import Artifact, ModelSpec, build_plain_model, load_artifact, save_artifact
from pi_opt.data import DataBundle, dataset_fingerprint
from pi_opt.search._config import SearchConfig
from pi_opt.sites import materialize_all, prepare_sites
from pi_opt.training import evaluate, fit
from pi_opt.training._loops import ProgressFn, StopFn


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (POSIX ``flock``) on ``path``; blocks until held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def baseline_key(config: SearchConfig, spec: ModelSpec) -> str:
    """Fingerprint of everything that determines the baseline weights."""
    h = hashlib.sha256()
    h.update(spec.model_dump_json().encode())
    h.update(dataset_fingerprint(config.data).encode())
    h.update(config.baseline.model_dump_json().encode())
    if config.weights:
        p = Path(config.weights)
        h.update(hashlib.sha256(p.read_bytes()).hexdigest().encode() if p.is_file() else b"?")
    return h.hexdigest()[:16]


def resolve_spec(config: SearchConfig, data: DataBundle) -> ModelSpec:
    """The job's model spec with dataset metadata (shape, classes, normalization) filled in."""
    if config.model is None:
        from pi_opt.artifacts import ArchSpec

        spec = ModelSpec(arch=ArchSpec(name="resnet_mini"), input_shape=data.input_shape,
                         num_classes=data.num_classes)
    else:
        spec = config.model
    from pi_opt.errors import ShapeMismatchError

    if tuple(spec.input_shape) != tuple(data.input_shape):
        raise ShapeMismatchError(
            f"model input_shape {tuple(spec.input_shape)} does not match the data set's "
            f"{tuple(data.input_shape)}")
    if spec.num_classes != data.num_classes:
        raise ShapeMismatchError(
            f"model has {spec.num_classes} classes, the data set {data.num_classes}")
    return spec.model_copy(update={"class_names": data.class_names, "mean": data.mean,
                                   "std": data.std})


def obtain_baseline(
    config: SearchConfig,
    spec: ModelSpec,
    data: DataBundle,
    workdir: Path,
    *,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> Artifact:
    """Load the cached baseline of this job, or train (or import) and cache it."""
    out = workdir / "baseline"
    key = baseline_key(config, spec)
    with file_lock(workdir / ".baseline.lock"):
        if (out / "model.json").is_file():
            art = load_artifact(out)
            if art.manifest.metrics.get("key") == key:
                return art
        torch.manual_seed(config.seed)
        model: nn.Module = build_plain_model(spec, config.weights)
        model = prepare_sites(model)
        materialize_all(model, data.train.tensors[0][:1])
        result = None
        ckpt = workdir / "baseline-checkpoint" / key[:16]  # resumes a killed worker
        if config.weights is None:
            result = fit(model, data.train, data.val, config.baseline.model_copy(
                update={"seed": config.seed}), augment=data.augment, progress=progress,
                should_stop=should_stop, phase="baseline", checkpoint=ckpt)
        val = evaluate(model, data.val, num_classes=data.num_classes)
        test = evaluate(model, data.test, num_classes=data.num_classes)
        metrics = {"key": key, "val_accuracy": val.accuracy, "test_accuracy": test.accuracy,
                   "per_class_test_accuracy": test.per_class,
                   "train_seconds": result.seconds if result else 0.0,
                   "imported_weights": config.weights is not None}
        save_artifact(model, spec, out, history=[{"technique": "baseline",
                                                  "params": json.loads(
                                                      config.baseline.model_dump_json())}],
                      metrics=metrics)
        shutil.rmtree(ckpt.parent, ignore_errors=True)
        return load_artifact(out)
