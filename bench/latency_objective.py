"""Benchmark: the latency-objective front under WAN against the ReLU-objective front, both
measured under emulated WAN (real CrypTen 2PC, ``MpcConfig(emulate_network=True)``).

Digits (``configs/digits_bench.yaml``, SNL + AutoReP, the two techniques with a round-aware
penalty, grid trials only): one search with ``objective: relus`` and one with
``objective: latency, network: wan`` (same seeds, budgets, epochs). Each search's own front
(validation accuracy vs ReLUs, resp. vs predicted WAN seconds) is measured under emulated
WAN; the report gives, for every accuracy both fronts reach, the lowest measured latency of
each front at or above it (latency at iso-accuracy; test accuracy, as in the fronts table).

ResNet-18 x0.25 at CIFAR shape (3x32x32), synthetic data, latency only (no accuracy claim):
SNL at the same ReLU budget with and without the WAN round term; predicted WAN latency and
sites with a kept ReLU for both, and an emulated-WAN measurement of both.

    nice -n 19 python bench/latency_objective.py search --objective relus --out bench/out/latobj/relus
    nice -n 19 python bench/latency_objective.py search --objective latency --out bench/out/latobj/latency
    nice -n 19 python bench/latency_objective.py resnet18 --out bench/out/latobj/r18
    flock /work/timing.lock nice -n 0 python bench/latency_objective.py measure \\
        bench/out/latobj/relus bench/out/latobj/latency bench/out/latobj/r18 --repeats 3
    python bench/latency_objective.py report --root bench/out/latobj \\
        --out bench/results/latency_objective.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import yaml  # noqa: E402

from pi_opt.artifacts import ArchSpec, ModelSpec, load_artifact, save_artifact  # noqa: E402
from pi_opt.costmodel import counts_from_profile, default_cost_model  # noqa: E402
from pi_opt.network import PROFILES  # noqa: E402
from pi_opt.profile import ModelProfile, profile_model  # noqa: E402

WAN = PROFILES["wan"]
CHAINS = ["snl", "autorep"]


def _profile_row(prof: ModelProfile) -> dict[str, Any]:
    """ReLUs, sites with a kept ReLU, counted rounds/bytes and predicted WAN seconds."""
    c = counts_from_profile(prof)
    return {"relus": prof.relus, "poly_mults": prof.poly_mults,
            "sites_kept": sum(1 for s in prof.sites if s.kept > 0), "sites": len(prof.sites),
            "kept_per_site": [s.kept for s in prof.sites], "rounds": c.rounds,
            "bytes": c.bytes, "predicted_wan_s": default_cost_model().predict_network(c, WAN)}


# ---- digits searches (accuracy: nice 19) ------------------------------------------------
def search_config(config: str, objective: str, seed: int | None = None) -> Any:
    """The bench config with SNL + AutoReP, grid only, on ``objective`` (latency: WAN);
    ``seed`` replaces the config's search/training seed (the data split stays the config's)."""
    from pi_opt.search import SearchConfig

    raw = yaml.safe_load(Path(config).read_text())
    if seed is not None:
        raw["seed"] = seed
    raw.update(techniques=CHAINS, objective=objective, measure_mpc="none",
               title=f"digits: {objective} objective" + (" on WAN" if objective == "latency"
                                                          else ""))
    if objective == "latency":
        raw["network"] = "wan"
    return SearchConfig.model_validate(raw)


def cmd_search(args: argparse.Namespace) -> None:
    from pi_opt.search import SearchSession

    cfg = search_config(args.config, args.objective, args.seed)
    out = Path(args.out)
    t0 = time.time()
    session = SearchSession.open(cfg, workdir=out)
    session.run_trials(n_trials=len(cfg.techniques) * len(session.budgets))
    session.finalize()
    (out / "search_meta.json").write_text(json.dumps({
        "objective": args.objective, "config": args.config, "wall_s": round(time.time() - t0),
        "command": " ".join(["python", *sys.argv])}, indent=2))


def front_rows(workdir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The finished search's front (its own objective) and baseline, with profile counts."""
    from pi_opt.report import mark_front
    from pi_opt.search import SearchSession

    meta = json.loads((workdir / "search_meta.json").read_text())
    cfg = search_config(meta["config"], meta["objective"])
    session = SearchSession.open(cfg, workdir=workdir)
    points = session.points()
    mark_front(points, cfg.objective)
    rows = []
    for p in sorted((p for p in points if p.pareto), key=lambda p: p.relus):
        prof = load_artifact(workdir / str(p.artifact)).manifest.profile
        rows.append({"trial": p.trial, "chain": "+".join(p.chain), "budget": p.budget,
                     "val_accuracy": p.val_accuracy, "test_accuracy": p.test_accuracy,
                     "artifact": str(workdir / str(p.artifact)), **_profile_row(prof)})
    m = session.baseline.manifest
    base = {"val_accuracy": m.metrics["val_accuracy"], "test_accuracy": m.metrics["test_accuracy"],
            "artifact": str(workdir / "baseline"), **_profile_row(m.profile)}
    return rows, base


# ---- ResNet-18 x0.25 at CIFAR shape (latency only) ----------------------------------------
def cmd_resnet18(args: argparse.Namespace) -> None:
    """SNL to the same budget with and without the WAN round term; both saved + predicted."""
    import dataclasses

    from pi_opt.data import DatasetSpec, load_dataset
    from pi_opt.sites import materialize_all, prepare_sites
    from pi_opt.techniques import TechniqueContext, baseline_candidate
    from pi_opt.techniques.base import LatencyObjective
    from pi_opt.techniques.snl import SNL
    from pi_opt.training import TrainConfig

    out = Path(args.out)
    data = load_dataset(DatasetSpec(kind="synthetic", synthetic_samples=args.samples,
                                    synthetic_classes=10, synthetic_shape=(3, 32, 32), seed=0))
    spec = ModelSpec(arch=ArchSpec(name="resnet18", kwargs={"width_mult": 0.25}),
                     input_shape=(3, 32, 32), num_classes=10, mean=data.mean, std=data.std)
    torch.manual_seed(0)
    teacher = prepare_sites(spec.build())
    materialize_all(teacher, data.train.tensors[0][:1])
    teacher.eval()
    prof = profile_model(teacher, spec.input_shape)
    budget = int(args.budget_fraction * prof.relus)
    ctx = TechniqueContext(spec=spec, data=data, teacher=teacher, baseline_profile=prof,
                           finetune=TrainConfig(epochs=0, lr=0.01, seed=0, batch_size=16),
                           workdir=out / "cache", seed=0)
    save_artifact(teacher, spec, out / "baseline")
    rows: dict[str, Any] = {"baseline": {"artifact": str(out / "baseline"), **_profile_row(prof)}}
    tech = SNL(max_search_epochs=args.epochs, finetune_epochs=0, lambda_growth=2.0,
               warmup_epochs=0, lambda_init=args.lambda_init)
    for name, c in (("relus", ctx), ("latency", dataclasses.replace(
            ctx, latency=LatencyObjective(network=WAN, cost_model=default_cost_model())))):
        t0 = time.time()
        torch.manual_seed(0)
        cand = tech.run(c, baseline_candidate(c), budget=budget)[0]
        save_artifact(cand.model, cand.spec, out / name, history=cand.history)
        rows[name] = {"artifact": str(out / name), "search_s": round(time.time() - t0),
                      "budget_reached": cand.notes.get("budget_reached"),
                      "search_epochs": cand.notes.get("search_epochs"),
                      "live_count": cand.notes.get("live_count"),
                      **_profile_row(cand.profile())}
        print(name, json.dumps({k: v for k, v in rows[name].items() if k != "kept_per_site"}),
              flush=True)
    (out / "r18.json").write_text(json.dumps({
        "arch": spec.arch.model_dump(), "input_shape": [3, 32, 32], "budget": budget,
        "budget_fraction": args.budget_fraction, "synthetic_samples": args.samples,
        "snl": tech.config.model_dump(mode="json"), "rows": rows,
        "command": " ".join(["python", *sys.argv])}, indent=2))


# ---- emulated-WAN measurements (timing lock) ----------------------------------------------
def cmd_measure(args: argparse.Namespace) -> None:
    """Measure every listed job's front + baseline (or the r18 rows) under emulated WAN."""
    from mpc.config import MpcConfig
    from mpc.crypten_backend import CryptenBackend
    from mpc_common import machine

    cfg = MpcConfig(repeats=args.repeats, warmup=1, timeout_s=3000, network="wan",
                    emulate_network=True)
    for wd in map(Path, args.workdirs):
        t0 = time.time()
        before = machine()
        if (wd / "r18.json").exists():
            doc = json.loads((wd / "r18.json").read_text())
            rows = [doc["rows"][k] for k in args.r18_rows]
            base = None
        else:
            rows, base = front_rows(wd)
            doc = {"front": rows, "baseline": base}
        targets = rows + ([base] if base is not None else [])
        reports = CryptenBackend().measure_many([r["artifact"] for r in targets], samples=0,
                                                config=cfg)
        for r, rep in zip(targets, reports, strict=True):
            m = rep.measurement
            r.update(measured_wan_s=m.latency_s, measured_wan_all_s=rep.latencies_s,
                     measured_rounds=m.rounds, measured_bytes=m.bytes_per_party)
            print(wd.name, r.get("trial", ""), r["relus"], r["sites_kept"],
                  f"pred {r['predicted_wan_s']:.3f} meas {m.latency_s:.3f}", flush=True)
        doc.update(machine_before=before, machine_after=machine(), wall_s=round(time.time() - t0),
                   repeats=args.repeats, command=" ".join(["python", *sys.argv]))
        (wd / "emulated_wan.json").write_text(json.dumps(doc, indent=2))


# ---- report ---------------------------------------------------------------------------------
def iso_accuracy(relus: list[dict[str, Any]], latency: list[dict[str, Any]],
                 key: str = "measured_wan_s") -> list[dict[str, Any]]:
    """For every test accuracy reached by both fronts: each front's lowest ``key`` among its
    points at or above it, and the ratio (ReLU objective / latency objective)."""
    def best(front: list[dict[str, Any]], acc: float) -> dict[str, Any] | None:
        ok = [r for r in front if r["test_accuracy"] >= acc and r.get(key) is not None]
        return min(ok, key=lambda r: r[key]) if ok else None

    out = []
    for acc in sorted({r["test_accuracy"] for r in relus + latency}):
        a, b = best(relus, acc), best(latency, acc)
        if a is None or b is None:
            continue
        out.append({"test_accuracy_at_least": acc, "relus_objective_s": a[key],
                    "relus_trial": a["trial"], "latency_objective_s": b[key],
                    "latency_trial": b["trial"], "speedup": a[key] / b[key]})
    return out


def cmd_report(args: argparse.Namespace) -> None:
    root = Path(args.root)
    jobs = {k: json.loads((root / k / "emulated_wan.json").read_text())
            for k in ("relus", "latency")}
    iso = iso_accuracy(jobs["relus"]["front"], jobs["latency"]["front"])
    iso_pred = iso_accuracy(jobs["relus"]["front"], jobs["latency"]["front"], "predicted_wan_s")
    r18 = root / "r18" / "emulated_wan.json"
    out = {"bench": "latency_objective", "digits": {
        "config": "configs/digits_bench.yaml", "chains": CHAINS, "fronts": jobs,
        "iso_accuracy_measured": iso, "iso_accuracy_predicted": iso_pred},
        "resnet18_x0.25": json.loads(r18.read_text()) if r18.exists() else None,
        "command": " ".join(["python", *sys.argv])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("| objective | trial | chain | ReLUs | sites kept | test acc | predicted WAN s | "
          "emulated WAN s |\n|---|---|---|---|---|---|---|---|")
    for name, job in jobs.items():
        for r in job["front"]:
            print(f"| {name} | {r['trial']} | {r['chain']} | {r['relus']} | {r['sites_kept']} | "
                  f"{100 * r['test_accuracy']:.1f} | {r['predicted_wan_s']:.2f} | "
                  f"{r['measured_wan_s']:.2f} |")
    print("\n| test acc >= | ReLU objective s (trial) | latency objective s (trial) | speedup |"
          "\n|---|---|---|---|")
    for r in iso:
        print(f"| {100 * r['test_accuracy_at_least']:.1f} | {r['relus_objective_s']:.2f} "
              f"({r['relus_trial']}) | {r['latency_objective_s']:.2f} ({r['latency_trial']}) | "
              f"{r['speedup']:.2f}x |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("search")
    s.add_argument("--objective", choices=["relus", "latency"], required=True)
    s.add_argument("--config", default="configs/digits_bench.yaml")
    s.add_argument("--seed", type=int, default=None, help="search/training seed (default: "
                   "the config's); the data split stays the config's")
    s.add_argument("--out", required=True)
    r = sub.add_parser("resnet18")
    r.add_argument("--out", default="bench/out/latobj/r18")
    r.add_argument("--budget-fraction", type=float, default=0.05)
    r.add_argument("--epochs", type=int, default=12)
    r.add_argument("--samples", type=int, default=320)
    r.add_argument("--lambda-init", type=float, default=49.152)  # 10x the paper's (no accuracy)
    m = sub.add_parser("measure")
    m.add_argument("workdirs", nargs="+")
    m.add_argument("--repeats", type=int, default=3)
    m.add_argument("--r18-rows", nargs="+", default=["relus", "latency"])
    p = sub.add_parser("report")
    p.add_argument("--root", default="bench/out/latobj")
    p.add_argument("--out", default="bench/results/latency_objective.json")
    args = ap.parse_args(argv)
    {"search": cmd_search, "resnet18": cmd_resnet18, "measure": cmd_measure,
     "report": cmd_report}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
