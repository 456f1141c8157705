"""Benchmark: what early stopping (and the other search options) save, on the same seeds.

Runs one search config twice (or more) with only the named option changed and writes,
per run, the job's exact training compute (epochs, images; seconds are wall time on a
shared machine), the validation hypervolume of its front (log10 ReLUs vs validation
accuracy; reference: the baseline's ReLUs and chance accuracy) and every front point;
then ``compute_ratio`` (in training images: exact, not wall time) and
``hypervolume_ratio`` of the second run against the first.

    OMP_NUM_THREADS=1 nice -n 19 python bench/search_efficiency.py \\
        --config configs/digits_bench.yaml --budgets 0.02 0.05 0.2 0.5 --extra-trials 4 \\
        --values none default halving --jobs 3 --out bench/results/search_efficiency.json

The first run is the reference; every run gets ``ratios`` against it, and the top-level
ratios are those of the ``default`` run (else the last one). ``--runs`` instead gives each
run as a JSON object of config overrides (a dict value is merged into the config's dict,
e.g. ``'{"pruning": "none", "finetune": {"patience": null}}'``; ``'{}'`` is the default run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from pi_opt.report.pareto import hypervolume_2d
from pi_opt.search._compute import PHASES as ALL_PHASES
from pi_opt.report.schema import ParetoReport
from pi_opt.search import SearchConfig, SearchSession


PHASES = ALL_PHASES[:3]  # search, finetune, evaluation (MPC is off)


def front_hypervolume(report: ParetoReport) -> float:
    """Validation hypervolume of the front in (log10 ReLUs, val accuracy)."""
    ref = (math.log10(report.baseline.relus), 1.0 / max(1, report.dataset["num_classes"]))
    pairs = [(math.log10(max(1, p.relus)), p.val_accuracy) for p in report.front()]
    return hypervolume_2d(pairs, ref)


def run_job(raw: dict[str, Any], workdir: Path, extra_trials: int) -> dict[str, Any]:
    """Run one search (grid + ``extra_trials`` sampled points) and summarize it."""
    cfg = SearchConfig.model_validate(raw)
    t0 = time.time()
    session = SearchSession.open(cfg, workdir=workdir)
    session.run_trials(n_trials=len(cfg.techniques) * len(session.budgets) + extra_trials)
    report = session.finalize()
    c = report.compute
    return {
        "pruning": session.pruning, "finetune_patience": cfg.finetune.patience,
        "skipped": [{k: v for k, v in s.items() if k != "trial"} for s in session.skipped()],
        "wall_s": round(time.time() - t0, 1),
        "training_epochs": c["trials"]["total"]["epochs"],
        "training_images": c["trials"]["total"]["images"],
        "training_seconds": c["trials"]["total"]["seconds"],
        "compute": c, "points": len(report.points),
        "pruned": sum(p.pruned for p in report.points),
        "hypervolume_val": round(front_hypervolume(report), 5),
        "front": [{"trial": p.trial, "chain": "+".join(p.chain), "relus": p.relus,
                   "val": p.val_accuracy, "test": p.test_accuracy,
                   "worst_class_drop": p.worst_class_drop} for p in report.front()],
        "points_by_budget": {str(b): [{"chain": "+".join(p.chain), "val": p.val_accuracy,
                                       "test": p.test_accuracy, "relus": p.relus,
                                       "pruned": p.pruned,
                                       "worst_class_drop": p.worst_class_drop}
                                      for p in report.points if p.budget == b]
                             for b in report.budgets},
    }


def ratios(run: dict[str, Any], ref: dict[str, Any]) -> dict[str, float | None]:
    """``run`` against the reference run: training images (``compute_ratio``; exact, load
    independent), epochs, wall seconds of training (load dependent) and validation
    hypervolume."""
    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 4) if b else None
    return {"compute_ratio": ratio(run["training_images"], ref["training_images"]),
            "epoch_ratio": ratio(run["training_epochs"], ref["training_epochs"]),
            "seconds_ratio": ratio(run["training_seconds"], ref["training_seconds"]),
            "hypervolume_ratio": ratio(run["hypervolume_val"], ref["hypervolume_val"])}


def uptime() -> str:
    """The host's load averages (1, 5, 15 min) as ``os.getloadavg`` gives them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def base_config(args: argparse.Namespace) -> dict[str, Any]:
    raw = yaml.safe_load(Path(args.config).read_text())
    if args.techniques:  # names / "a+b" chains, or JSON chain specs
        raw["techniques"] = [parse_value(t) for t in args.techniques]
    if args.budgets:
        raw["budgets"] = args.budgets
    raw["measure_mpc"] = "none"
    return raw


def markdown(path: Path) -> str:
    """Markdown tables of a result file: one row per run, then per budget and run."""
    res = json.loads(path.read_text())
    lines = ["| run | training epochs | training images | training s | points | pruned "
             "| val hypervolume |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in res["runs"]:
        lines.append(f"| `{r['label'][:60]}` | {r['training_epochs']:,} | "
                     f"{r['training_images']:,} | {r['training_seconds']:.0f} | {r['points']} | "
                     f"{r['pruned']} | {r['hypervolume_val']:.4f} |")
    lines += [""] + [f"`{r['label']}` vs `{res['runs'][0]['label']}`: " + ", ".join(
        f"{k} {v}" for k, v in r["ratios"].items()) for r in res["runs"][1:]]
    lines += ["", "| run | " + " | ".join(f"{p} epochs / s" for p in PHASES) + " |",
              "|---|" + "---:|" * len(PHASES)]
    for r in res["runs"]:
        ph = r["compute"]["trials"]
        lines.append(f"| `{r['label'][:40]}` | " + " | ".join(
            f"{ph[p]['epochs']:,} / {ph[p]['seconds']:.0f}" for p in PHASES) + " |")
    lines += ["",
              "| budget | run | points: chain val/test (worst-class val drop) |", "|---:|---|---|"]
    for b in res["runs"][0]["points_by_budget"]:
        for r in res["runs"]:
            cells = "; ".join(
                f"{p['chain']} {p['val']:.3f}/{p['test']:.3f} ({p['worst_class_drop']:+.3f})"
                + (" pruned" if p["pruned"] else "") for p in r["points_by_budget"][b])
            lines.append(f"| {int(b):,} | `{r['label'][:40]}` | {cells} |")
    lines += [""] + [f"`{r['label']}` skipped {'+'.join(k['chain'])} @ {k['budget']:,}: "
                     f"{k['reason']}" for r in res["runs"] for k in r.get("skipped", [])]
    return "\n".join(lines)


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this result (shell-quoted)."""
    skip = {"keep", "table"} | ({"option", "values"} if args.runs else set())
    parts = []
    for k, v in vars(args).items():
        if v is not None and k not in skip:
            vals = v if isinstance(v, list) else [v]
            parts.append(f"--{k.replace('_', '-')} " + " ".join(shlex.quote(str(x)) for x in vals))
    return ("OMP_NUM_THREADS=1 nice -n 19 python bench/search_efficiency.py "
            + " ".join(parts))


def option_runs(raw: dict[str, Any], option: str, values: list[str]
                ) -> list[tuple[str, dict[str, Any]]]:
    """``(label, config)`` per value of one config field (``default``: the field unset)."""
    out = []
    for v in values:
        cfg = {k: x for k, x in raw.items() if k != option}
        if v != "default":
            cfg[option] = parse_value(v)
        out.append((f"{option}={v}", cfg))
    return out


def override_runs(raw: dict[str, Any], runs: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """``(label, config)`` per JSON override object; ``{}`` is labelled ``default``."""
    out = []
    for text in runs:
        over = json.loads(text)
        cfg = dict(raw)
        for k, v in over.items():
            cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
        out.append((json.dumps(over, separators=(",", ":")) if over else "default", cfg))
    return out


def parse_value(v: str) -> Any:
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/digits_bench.yaml")
    ap.add_argument("--techniques", nargs="*")
    ap.add_argument("--budgets", nargs="*", type=float)
    ap.add_argument("--extra-trials", type=int, default=6)
    ap.add_argument("--option", default="pruning", help="config field to compare")
    ap.add_argument("--values", nargs="+", default=["none", "default"],
                    help="values of --option (JSON, else a string; 'default' = unset); "
                    "the first run is the reference")
    ap.add_argument("--runs", nargs="+", help="runs as JSON override objects (instead of "
                    "--option/--values); '{}' = the default run")
    ap.add_argument("--out", default="bench/results/search_efficiency.json")
    ap.add_argument("--keep", help="keep the job directories under this folder")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (wall time only)")
    ap.add_argument("--table", type=Path, help="print the markdown tables of a result file")
    args = ap.parse_args()
    if args.table:
        print(markdown(args.table))
        return
    raw = base_config(args)
    load_before = uptime()
    root = Path(args.keep or tempfile.mkdtemp(prefix="search_eff_"))
    jobs = [(label, cfg, root / f"run{i}") for i, (label, cfg) in enumerate(
        override_runs(raw, args.runs) if args.runs else option_runs(raw, args.option, args.values))]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:  # separate processes, same seeds
        futures = [pool.submit(run_job, cfg, wd, args.extra_trials) for _, cfg, wd in jobs]
        runs = [{"label": label, **f.result()} for (label, _, _), f in zip(jobs, futures)]
    for r in runs:
        print(json.dumps({k: r[k] for k in ("label", "training_epochs", "training_images",
                                            "wall_s", "pruned", "hypervolume_val")}), flush=True)
    ref = runs[0]
    for r in runs:
        r["ratios"] = ratios(r, ref)
    default = next((r for r in runs if r["label"] == "default" or r["label"].endswith(
        "=default")), runs[-1])
    out = {
        "command": command_line(args),
        "config": args.config, "techniques": raw["techniques"], "budgets": raw["budgets"],
        "extra_trials": args.extra_trials, "load_before": load_before, "load_after": uptime(),
        "reference": ref["label"], "compared": default["label"], "runs": runs,
        **default["ratios"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps({r["label"]: r["ratios"] for r in runs}))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
