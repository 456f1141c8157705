"""Benchmark: Pareto fronts for every technique and the combined search, over seeds.

One combined study runs per seed; its first trials are every (technique, budget) pair
with default hyperparameters (the per-technique fronts come from exactly those trials,
so every technique sees the same data, seeds and epoch budget), then the compositions,
then sampler-tuned trials. At each budget the point is selected by validation accuracy
among points with ReLUs <= budget; test accuracy is reported, with the point's ReLUs,
polynomial multiplications and the default cost model's predicted online latency
(``pi_opt.costmodel.default_cost_model().predict`` on the saved artifact's profile).

With ``--seeds 0,1,2`` every seed runs as its own process (seed -> the job's ``seed``
and the data set's ``seed``: model init, training order and, for generated data, the
images all change) under ``OUT/seed<N>/``; ``OUT/summary.json`` then holds mean, sample
std and min/max per (budget, technique) and ``OUT/table.md`` the Markdown table.

    python bench/run_fronts.py --config configs/digits_bench.yaml --out bench/results/fronts
    nice -n 10 python bench/run_fronts.py --config configs/shapes_bench.yaml \
        --out bench/results/shapes/fronts --seeds 0,1,2 --extra-trials 0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from pi_opt.artifacts import read_manifest
from pi_opt.costmodel import default_cost_model
from pi_opt.search import SearchConfig, SearchSession


def best_under(points: list[dict], budget: int) -> dict | None:
    ok = [p for p in points if p["relus"] <= budget]
    if not ok:
        return None
    return max(ok, key=lambda p: (p["val_accuracy"], -p["relus"], -p["trial"]))


def describe(point: dict, workdir: Path) -> dict[str, Any]:
    """The reported fields of a selected point, with its predicted MPC latency (ms/sample)."""
    latency = None
    if point.get("artifact"):
        prof = read_manifest(workdir / point["artifact"]).profile
        latency = 1e3 * default_cost_model().predict(prof)
    return {"relus": point["relus"], "poly_mults": point["poly_mults"], "latency_ms": latency,
            "val": point["val_accuracy"], "test": point["test_accuracy"],
            "trial": point["trial"], "chain": "+".join(point["chain"])}


def load_config(path: str, seed: int | None) -> SearchConfig:
    cfg = SearchConfig.model_validate(yaml.safe_load(Path(path).read_text()))
    if seed is not None:
        cfg = cfg.model_copy(update={"seed": seed,
                                     "data": cfg.data.model_copy(update={"seed": seed})})
    return cfg


def run_one(args: argparse.Namespace, seed: int | None, out: Path) -> dict[str, Any]:
    """One combined study; writes ``out/summary.json`` and ``out/fronts.png``."""
    cfg = load_config(args.config, seed)
    singles = [c.label for c in cfg.techniques if len(c.chain) == 1]
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    log = open(out.parent / (out.name + ".log"), "a")

    def progress(e: dict) -> None:
        if e.get("type") in ("trial", "phase"):
            line = json.dumps({k: v for k, v in e.items() if k != "best"})
            print(line, flush=True)
            log.write(line + "\n")
            log.flush()

    session = SearchSession.open(cfg, workdir=out, progress=progress)
    grid = len(cfg.techniques) * len(session.budgets)
    session.run_trials(n_trials=grid + args.extra_trials)
    report = session.finalize()
    pts = [p.model_dump() for p in report.points]
    rows = []
    for b in report.budgets:
        row: dict = {"budget": b, "fraction": b / report.baseline.relus}
        for label in singles:
            own = [p for p in pts if "+".join(p["chain"]) == label and not p["tuned"]]
            best = best_under(own, b)
            row[label] = None if best is None else describe(best, out)
        comb = best_under(pts, b)
        row["combined"] = None if comb is None else describe(comb, out)
        rows.append(row)
    summary = {
        "config": args.config, "seed": cfg.seed, "command": " ".join(["python", *sys.argv]),
        "wall_time_s": round(time.time() - t0, 1), "baseline": report.baseline.model_dump(),
        "budgets": report.budgets, "labels": singles + ["combined"], "rows": rows,
        "grid_trials": grid, "total_trials": len([p for p in pts if p["harvested_from"] is None]),
        "failures": report.failures,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(summary, out / "fronts.png", title=cfg.title)
    return summary


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean / sample std / min / max across seeds of every reported quantity."""
    first = per_seed[0]
    rows = []
    for i, b in enumerate(first["budgets"]):
        row: dict[str, Any] = {"budget": b, "fraction": first["rows"][i]["fraction"]}
        for label in first["labels"]:
            got = [s["rows"][i][label] for s in per_seed if s["rows"][i][label] is not None]
            row[label] = None if not got else {
                key: _stats([float(g[key]) for g in got if g[key] is not None])
                for key in ("test", "val", "relus", "poly_mults", "latency_ms")
                if any(g[key] is not None for g in got)} | {
                "chains": sorted({g["chain"] for g in got})}
        rows.append(row)
    base = {k: _stats([float(s["baseline"][k]) for s in per_seed])
            for k in ("test_accuracy", "val_accuracy", "relus")}
    return {"config": first["config"], "seeds": [s["seed"] for s in per_seed],
            "budgets": first["budgets"], "labels": first["labels"], "baseline": base,
            "rows": rows, "wall_time_s": [s["wall_time_s"] for s in per_seed],
            "failures": [f for s in per_seed for f in s["failures"]]}


def markdown_table(agg: dict[str, Any]) -> str:
    """Test accuracy mean +- std (n seeds) with mean ReLUs / poly mults / latency per cell."""
    head = "| budget (ReLUs) | " + " | ".join(agg["labels"]) + " |"
    lines = [head, "|" + "---|" * (len(agg["labels"]) + 1)]
    for row in agg["rows"]:
        cells = [f"{row['budget']:,} ({100 * row['fraction']:.0f} %)"]
        for label in agg["labels"]:
            v = row[label]
            if v is None:
                cells.append("–")
                continue
            t = v["test"]
            lat = v.get("latency_ms")
            cells.append(f"{100 * t['mean']:.1f} ± {100 * t['std']:.1f} "
                         f"<br>{v['relus']['mean']:,.0f} R, {v['poly_mults']['mean']:,.0f} M"
                         + (f", {lat['mean']:.0f} ms" if lat else ""))
        lines.append("| " + " | ".join(cells) + " |")
    b = agg["baseline"]
    lines.append(f"\nAll-ReLU baseline: {100 * b['test_accuracy']['mean']:.1f} ± "
                 f"{100 * b['test_accuracy']['std']:.1f} % test, {b['relus']['mean']:,.0f} ReLUs "
                 f"(seeds {agg['seeds']}). Cell: test accuracy mean ± sample std over seeds; "
                 "R = mean ReLUs, M = mean polynomial multiplications, ms = cost-model latency.")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path, *, title: str, spread: bool = False) -> None:
    """Test accuracy of the val-selected point per budget; error bars = min..max over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for label in summary["labels"]:
        xs, ys, lo, hi = [], [], [], []
        for r in summary["rows"]:
            v = r[label]
            if v is None:
                continue
            xs.append(r["budget"])
            t = v["test"]
            ys.append(100 * (t["mean"] if spread else t))
            lo.append(100 * (t["mean"] - t["min"]) if spread else 0.0)
            hi.append(100 * (t["max"] - t["mean"]) if spread else 0.0)
        style = dict(lw=2.5, color="black", marker="s") if label == "combined" else dict(marker="o")
        ax.errorbar(xs, ys, yerr=[lo, hi] if spread else None, label=label, capsize=3, **style)
    base = summary["baseline"]
    acc = base["test_accuracy"]["mean"] if spread else base["test_accuracy"]
    relus = base["relus"]["mean"] if spread else base["relus"]
    ax.axhline(100 * acc, ls="--", color="gray", label=f"all-ReLU baseline ({relus:,.0f} ReLUs)")
    ax.set_xscale("log")
    ax.minorticks_off()  # the budgets are the only x labels
    ax.set_xticks(summary["budgets"])
    ax.set_xticklabels([str(b) for b in summary["budgets"]])
    ax.set_xlabel("ReLU budget (per sample, log scale)")
    ax.set_ylabel("test accuracy (%) of the val-selected point")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def run_seeds(args: argparse.Namespace, seeds: list[int], out: Path) -> None:
    """Each seed in its own process (in parallel); then aggregate their summaries.

    The processes share the cores: each gets ``cpus // seeds`` torch threads (at least 1)
    unless ``OMP_NUM_THREADS`` is set (oversubscribed threads spin in the kernel)."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(seeds))))
    procs = [subprocess.Popen([sys.executable, __file__, "--config", args.config, "--seeds",
                               str(s), "--out", str(out / f"seed{s}"),
                               "--extra-trials", str(args.extra_trials)],
                              stdout=subprocess.DEVNULL, env=env) for s in seeds]
    codes = [p.wait() for p in procs]
    per_seed = [json.loads((out / f"seed{s}" / "summary.json").read_text())
                for s, c in zip(seeds, codes, strict=True) if c == 0]
    if not per_seed:
        raise SystemExit(f"every seed failed (exit codes {codes})")
    agg = aggregate(per_seed) | {"exit_codes": dict(zip(map(str, seeds), codes, strict=True)),
                                 "command": " ".join(["python", *sys.argv])}
    (out / "summary.json").write_text(json.dumps(agg, indent=2))
    (out / "table.md").write_text(markdown_table(agg))
    title = load_config(args.config, None).title + f" ({len(per_seed)} seeds, min..max bars)"
    plot(agg, out / "fronts.png", title=title, spread=True)
    print(markdown_table(agg))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/digits_bench.yaml")
    ap.add_argument("--out", default="bench/results/fronts")
    ap.add_argument("--extra-trials", type=int, default=6, help="sampler-tuned trials")
    ap.add_argument("--seeds", default=None,
                    help="comma-separated seeds (one process each); default: the config's seed")
    args = ap.parse_args()
    out = Path(args.out)
    seeds = None if args.seeds is None else [int(s) for s in args.seeds.split(",")]
    if seeds is not None and len(seeds) > 1:
        run_seeds(args, seeds, out)
        return
    summary = run_one(args, None if seeds is None else seeds[0], out)
    print(json.dumps(summary["rows"], indent=1))


if __name__ == "__main__":
    main()
