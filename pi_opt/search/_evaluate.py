"""Save, reload, count and test a candidate: the numbers a report shows come from the artifact."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from pi_opt.artifacts import MANIFEST, load_artifact, read_manifest, save_artifact
from pi_opt.costmodel import LatencyModel, default_cost_model, point_latencies
from pi_opt.data import DataBundle
from pi_opt.errors import BudgetError
from pi_opt.network import PROFILES, NetworkProfile
from pi_opt.profile import ModelProfile
from pi_opt.sites import iter_sites
from pi_opt.techniques.base import Candidate
from pi_opt.training import evaluate


def seed_circa(model: torch.nn.Module, seed: int) -> None:
    """Give every Circa site its own seeded generator (reproducible stochastic evaluation)."""
    for i, (_, site) in enumerate(iter_sites(model)):
        site.circa_generator = torch.Generator(device=site.kinds.device).manual_seed(
            seed * 1000 + i)


def _cost(model: LatencyModel | None, prof: ModelProfile, network: NetworkProfile | None
          ) -> float | None:
    if model is None:
        return None
    return model.predict(prof) if network is None else model.predict_latency(prof, network)


def evaluate_candidate(
    cand: Candidate,
    *,
    data: DataBundle,
    budget: int,
    directory: Path,
    workdir: Path,
    seed: int,
    cost_model: LatencyModel | None = None,
    network: NetworkProfile | None = None,
) -> dict[str, Any]:
    """Write ``cand`` as an artifact, reload it, and measure it.

    ``cost``: the cost model's seconds per sample, on ``network`` when given (objective
    ``latency``), else on loopback; ``latency_s``: the committed model's prediction on
    loopback / LAN / WAN / ``network`` (``job``).
    Raises BudgetError when the reloaded artifact holds more than ``budget`` ReLUs.
    Returns JSON-able point attributes (see ``pi_opt.report.ParetoPoint``).
    """
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_artifact(cand.model, cand.spec, tmp, history=cand.history)
    art = load_artifact(tmp)
    prof = art.manifest.profile
    if prof.relus > budget:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BudgetError(f"candidate has {prof.relus} ReLUs > budget {budget}",
                          relus=prof.relus, budget=budget)
    seed_circa(art.model, seed)
    val = evaluate(art.model, data.val, num_classes=data.num_classes)
    seed_circa(art.model, seed)
    test = evaluate(art.model, data.test, num_classes=data.num_classes)
    manifest = read_manifest(tmp)
    manifest.metrics.update({"val_accuracy": val.accuracy, "test_accuracy": test.accuracy,
                             "per_class_test_accuracy": test.per_class, "budget": budget})
    (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return {
        "budget": budget,
        "relus": prof.relus,
        "circa_relus": prof.circa_relus,
        "poly_mults": prof.poly_mults,
        "macs": prof.macs,
        "cost": _cost(cost_model, prof, network),  # s/sample
        "latency_s": point_latencies(default_cost_model(), prof, network or PROFILES["loopback"]),
        "val_accuracy": val.accuracy,
        "test_accuracy": test.accuracy,
        "per_class_test_accuracy": test.per_class,
        "per_class_val_accuracy": val.per_class,
        "sites": [{"name": s.name, "stage": s.stage, "elements": s.elements, "relu": s.relu,
                   "circa": s.circa, "poly": s.poly, "identity": s.identity} for s in prof.sites],
        "artifact": str(directory.relative_to(workdir)),
        "arch": cand.spec.arch.model_dump(mode="json"),
        "history": cand.history,
    }


def worst_class_drop(baseline: list[float], candidate: list[float]) -> float | None:
    """Largest per-class accuracy drop against the baseline (fraction; negative when every
    class improved); None when the per-class lists are missing or disagree in length."""
    pairs = [(b, c) for b, c in zip(baseline, candidate) if b == b and c == c]
    if not pairs or len(baseline) != len(candidate):
        return None
    return round(max(b - c for b, c in pairs), 6)
