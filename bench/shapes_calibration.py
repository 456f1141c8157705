"""Calibration of the generated ``shapes`` set: does it need its ReLUs?

Measures, on one seed of ``DatasetSpec(kind="shapes")`` (default sizes unless overridden):

* ``baseline``: the all-ReLU ``resnet`` (widths ``--widths``) trained from scratch;
* ``linearized``: the same network with every ReLU site IDENTITY (0 ReLUs: an affine map
  of the pixels), trained from scratch with the same recipe;
* ``poly_only``: AutoReP run to budget 0 from the baseline (every site a trained degree-2
  DaPa polynomial, 0 ReLUs);
* ``snl``: one SNL run from the baseline per budget in ``--budgets`` (fractions of the
  baseline's ReLUs), each point fine-tuned with KD.

``--parts`` picks what runs after the baseline (default ``linearized,poly,snl``);
``--skip-reduced`` = ``--parts linearized``.

Every point carries test accuracy, ReLUs, polynomial multiplications, the default cost
model's predicted online latency (ms per sample), and the wall and CPU seconds of its
training (CPU = this process's user + system time, so it does not grow with the load of a
shared machine). The machine load is recorded.

    nice -n 19 python bench/shapes_calibration.py --epochs 6 --search-epochs 3 --finetune-epochs 1 \
        --out bench/results/shapes/calibration.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pi_opt.activations import Kind
from pi_opt.artifacts import ArchSpec, ModelSpec
from pi_opt.costmodel import default_cost_model
from pi_opt.data import DataBundle, DatasetSpec, load_dataset
from pi_opt.profile import profile_model
from pi_opt.sites import iter_sites, materialize_all, prepare_sites
from pi_opt.techniques import TechniqueContext
from pi_opt.techniques.autorep import AutoReP
from pi_opt.techniques.base import baseline_candidate
from pi_opt.techniques.snl import SNL
from pi_opt.training import TrainConfig, evaluate, fit


def point(model: torch.nn.Module, spec: ModelSpec, data: DataBundle,
          started: tuple[float, float]) -> dict[str, Any]:
    """Test/val accuracy and costs of one trained network; ``started`` = the
    ``(perf_counter(), process_time())`` pair taken when its training began."""
    seconds, cpu = time.perf_counter() - started[0], time.process_time() - started[1]
    prof = profile_model(model, spec.input_shape)
    return {
        "test_accuracy": evaluate(model, data.test, device="cpu").accuracy,
        "val_accuracy": evaluate(model, data.val, device="cpu").accuracy,
        "relus": prof.relus, "poly_mults": prof.poly_mults,
        "latency_ms": 1e3 * default_cost_model().predict(prof),
        "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
    }


def fresh_model(spec: ModelSpec, data: DataBundle, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = prepare_sites(spec.build())
    materialize_all(model, data.train.tensors[0][:1])
    return model


def train_scratch(spec: ModelSpec, data: DataBundle, cfg: TrainConfig, *,
                  linear: bool) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train from scratch; ``linear=True`` sets every site to IDENTITY first (0 ReLUs)."""
    model = fresh_model(spec, data, cfg.seed)
    if linear:
        for _, site in iter_sites(model):
            site.set_kinds(torch.full_like(site.kinds, int(Kind.IDENTITY)))
    started = time.perf_counter(), time.process_time()
    fit(model, data.train, data.val, cfg, augment=data.augment)
    return model, point(model, spec, data, started)


def reduced_points(ctx: TechniqueContext, args: argparse.Namespace, base_relus: int) -> dict[str, Any]:
    """AutoReP to 0 ReLUs (part ``poly``) and one SNL run per budget in ``args.budgets``
    (part ``snl``), each from the baseline."""
    out: dict[str, Any] = {}
    if "poly" in args.parts:
        started = time.perf_counter(), time.process_time()
        poly = AutoReP(search_epochs=args.search_epochs).run(ctx, baseline_candidate(ctx), budget=0)[0]
        out["poly_only"] = point(poly.model, ctx.spec, ctx.data, started)
        print(json.dumps({"poly_only": out["poly_only"]}), flush=True)
    if "snl" not in args.parts:
        return out
    out["snl"] = []
    for budget in sorted({max(1, int(round(f * base_relus))) for f in args.budgets}):
        started = time.perf_counter(), time.process_time()
        cand = SNL(max_search_epochs=args.search_epochs).run(
            ctx, baseline_candidate(ctx), budget=budget)[0]
        out["snl"].append(point(cand.model, ctx.spec, ctx.data, started)
                          | {"budget": budget, "fraction": cand.relus() / base_relus})
        print(json.dumps({"snl": out["snl"][-1]}), flush=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=None, help="shapes_train (default: spec's)")
    ap.add_argument("--val", type=int, default=None)
    ap.add_argument("--test", type=int, default=None)
    ap.add_argument("--side", type=int, default=None, help="image side (default 32)")
    ap.add_argument("--widths", default="16,32,64")
    ap.add_argument("--epochs", type=int, default=12, help="baseline / linearized epochs")
    ap.add_argument("--search-epochs", type=int, default=10, help="SNL / AutoReP search epochs")
    ap.add_argument("--finetune-epochs", type=int, default=4)
    ap.add_argument("--budgets", default="0.01,0.05,0.2,0.5")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parts", default="linearized,poly,snl",
                    help="comma-separated subset of linearized,poly,snl (the baseline always runs)")
    ap.add_argument("--skip-reduced", action="store_true", help="same as --parts linearized")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    args.budgets = [float(b) for b in args.budgets.split(",")]
    args.parts = {"linearized"} if args.skip_reduced else set(args.parts.split(","))
    if not args.parts <= {"linearized", "poly", "snl"}:
        ap.error(f"--parts: unknown {sorted(args.parts - {'linearized', 'poly', 'snl'})}")
    torch.set_num_threads(args.threads)
    sizes = {k: v for k, v in (("shapes_train", args.train), ("shapes_val", args.val),
                               ("shapes_test", args.test)) if v is not None}
    dspec = DatasetSpec(kind="shapes", seed=args.seed, image_size=args.side, **sizes)
    data = load_dataset(dspec)
    spec = ModelSpec(arch=ArchSpec(name="resnet", kwargs={
        "widths": [int(w) for w in args.widths.split(",")]}),
        input_shape=data.input_shape, num_classes=data.num_classes)
    cfg = TrainConfig(epochs=args.epochs, lr=0.05, batch_size=64, device="cpu", seed=args.seed)
    result: dict[str, Any] = {
        "command": "python bench/shapes_calibration.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "data": dspec.model_dump(mode="json"), "sizes": data.sizes(), "model": spec.arch.model_dump(),
        "baseline_train": cfg.model_dump(), "load_before": os.getloadavg(),
    }
    teacher, result["baseline"] = train_scratch(spec, data, cfg, linear=False)
    print(json.dumps({"baseline": result["baseline"]}), flush=True)
    if "linearized" in args.parts:
        _, result["linearized"] = train_scratch(spec, data, cfg, linear=True)
        print(json.dumps({"linearized": result["linearized"]}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = TechniqueContext(
            spec=spec, data=data, teacher=teacher.eval(),
            baseline_profile=profile_model(teacher, spec.input_shape),
            finetune=TrainConfig(epochs=args.finetune_epochs, lr=0.01, device="cpu", seed=args.seed),
            workdir=Path(tmp), seed=args.seed, job_seed=args.seed)
        if args.parts & {"poly", "snl"}:
            result.update(reduced_points(ctx, args, result["baseline"]["relus"]))
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=1), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
