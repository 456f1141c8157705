"""Benchmark: Pareto fronts on digits for every technique and the combined search.

One combined study runs; its first trials are every (technique, budget) pair with
default hyperparameters (the per-technique fronts come from exactly those trials,
so every technique sees the same data, seeds and epoch budget), then the
compositions, then sampler-tuned trials. At each budget the point is selected by
validation accuracy among points with ReLUs <= budget; test accuracy is reported.

    python bench/run_fronts.py --config configs/digits_bench.yaml --out bench/results/fronts
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from pi_opt.search import SearchConfig, SearchSession


def best_under(points: list[dict], budget: int) -> dict | None:
    ok = [p for p in points if p["relus"] <= budget]
    if not ok:
        return None
    return max(ok, key=lambda p: (p["val_accuracy"], -p["relus"], -p["trial"]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/digits_bench.yaml")
    ap.add_argument("--out", default="bench/results/fronts")
    ap.add_argument("--extra-trials", type=int, default=6, help="sampler-tuned trials")
    args = ap.parse_args()
    raw = yaml.safe_load(Path(args.config).read_text())
    cfg = SearchConfig.model_validate(raw)
    singles = [c.label for c in cfg.techniques if len(c.chain) == 1]
    out = Path(args.out)
    t0 = time.time()
    log = open(out.parent / (out.name + ".log"), "a") if out.parent.exists() else None

    def progress(e: dict) -> None:
        if e.get("type") in ("trial", "phase"):
            line = json.dumps({k: v for k, v in e.items() if k != "best"})
            print(line, flush=True)
            if log:
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
            row[label] = None if best is None else {
                "relus": best["relus"], "val": best["val_accuracy"], "test": best["test_accuracy"],
                "trial": best["trial"]}
        comb = best_under(pts, b)
        row["combined"] = None if comb is None else {
            "relus": comb["relus"], "val": comb["val_accuracy"], "test": comb["test_accuracy"],
            "trial": comb["trial"], "chain": "+".join(comb["chain"])}
        rows.append(row)
    summary = {
        "config": args.config, "command": f"python bench/run_fronts.py --config {args.config} "
        f"--out {args.out} --extra-trials {args.extra_trials}",
        "wall_time_s": round(time.time() - t0, 1), "baseline": report.baseline.model_dump(),
        "budgets": report.budgets, "rows": rows, "grid_trials": grid,
        "total_trials": len([p for p in pts if p["harvested_from"] is None]),
        "failures": report.failures,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(summary, pts, singles, grid, out / "fronts.png")
    print(json.dumps(rows, indent=1))


def plot(summary: dict, pts: list[dict], singles: list[str], grid: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    budgets = summary["budgets"]
    for label in singles + ["combined"]:
        xs, ys = [], []
        for r in summary["rows"]:
            v = r[label]
            if v is not None:
                xs.append(r["budget"])
                ys.append(100 * v["test"])
        style = dict(lw=2.5, color="black", marker="s") if label == "combined" else dict(marker="o")
        ax.plot(xs, ys, label=label, **style)
    ax.axhline(100 * summary["baseline"]["test_accuracy"], ls="--", color="gray",
               label=f"all-ReLU baseline ({summary['baseline']['relus']} ReLUs)")
    ax.set_xscale("log")
    ax.set_xticks(budgets)
    ax.set_xticklabels([str(b) for b in budgets])
    ax.set_xlabel("ReLU budget (per sample, log scale)")
    ax.set_ylabel("test accuracy (%) of the val-selected point")
    ax.set_title("digits, mini ResNet: best point under each budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
