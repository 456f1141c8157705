"""Compute accounting: training epochs, images and seconds per phase of a trial and a job.

A :class:`ComputeMeter` sits between the training loop's progress events and the
caller's callback: every epoch event (``{"phase", "epoch", ...}`` without ``type``)
counts one epoch of ``images_per_epoch`` images, and the seconds since the previous
mark go to that epoch's phase (``search`` for mask searches and shared criticality
training, ``finetune`` otherwise). Evaluation and MPC are timed around the calls.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pi_opt.training._loops import ProgressFn

PHASES = ("search", "finetune", "evaluation", "mpc")


def phase_of(name: str) -> str:
    """Accounting phase of a training-loop phase name (``"snl-search"`` -> ``"search"``)."""
    return "search" if ("search" in name or "criticality" in name) else "finetune"


def empty() -> dict[str, float]:
    """A zeroed ``{"epochs", "images", "seconds"}`` accumulator."""
    return {"epochs": 0, "images": 0, "seconds": 0.0}


class ComputeMeter:
    """Per-phase ``{"epochs", "images", "seconds"}`` of one trial."""

    def __init__(self, images_per_epoch: int) -> None:
        self.images_per_epoch = images_per_epoch
        self.phases: dict[str, dict[str, float]] = {p: empty() for p in PHASES}
        self.mark = time.perf_counter()
        #: epochs of this trial's own work (shared, cached criticality left out): its progress
        self.own_epochs = 0

    def wrap(self, progress: ProgressFn | None) -> ProgressFn:
        """A progress callback that counts each epoch event (epochs, images, seconds since the
        last mark) into its phase, then forwards the event to ``progress``.
        """
        def observe(event: dict[str, Any]) -> None:
            if "type" not in event and "epoch" in event and "phase" in event:
                now = time.perf_counter()
                acc = self.phases[phase_of(str(event["phase"]))]
                acc["epochs"] += 1
                acc["images"] += self.images_per_epoch
                acc["seconds"] += now - self.mark
                self.mark = now
                self.own_epochs += "criticality" not in str(event["phase"])
            if progress is not None:
                progress(event)
        return observe

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Context manager adding the wall seconds of its block to ``phase``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[phase]["seconds"] += time.perf_counter() - t0
            self.mark = time.perf_counter()

    def totals(self) -> dict[str, dict[str, float]]:
        """Per-phase totals, seconds rounded to ms."""
        return {p: {**v, "seconds": round(v["seconds"], 3)} for p, v in self.phases.items()}


def add(into: dict[str, float], part: Mapping[str, Any]) -> None:
    """Add ``part``'s epochs, images and seconds into ``into`` (missing keys count as 0)."""
    for k in ("epochs", "images", "seconds"):
        into[k] = into.get(k, 0) + (part.get(k) or 0)


def _rounded(v: Mapping[str, float]) -> dict[str, float]:
    return {k: round(x, 1) if k == "seconds" else int(x) for k, x in v.items()}


def job_compute(*, data_seconds: float, baseline: Mapping[str, Any],
                trials: list[Mapping[str, Any]], mpc_seconds: float) -> dict[str, Any]:
    """The job's ``compute`` block: data, baseline, trials (per phase and total), MPC, total.

    ``trials``: the per-trial ``ComputeMeter.totals()``; ``baseline``: its epochs, images
    and seconds. Seconds are wall seconds on this machine; epochs and images are exact.
    """
    per_phase = {p: empty() for p in PHASES[:3]}
    for t in trials:
        for p in per_phase:
            add(per_phase[p], t.get(p, {}))
    trials_total = empty()
    for v in per_phase.values():
        add(trials_total, v)
    total = empty()
    for part in (baseline, trials_total):
        add(total, part)
    total["seconds"] += data_seconds + mpc_seconds
    return {
        "data": {"seconds": round(data_seconds, 1)},
        "baseline": dict(baseline),
        "trials": {"count": len(trials), **{p: _rounded(v) for p, v in per_phase.items()},
                   "total": _rounded(trials_total)},
        "mpc": {"seconds": round(mpc_seconds, 1)},
        "total": _rounded(total),
    }
