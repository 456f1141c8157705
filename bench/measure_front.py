"""Re-open a finished benchmark job and measure its Pareto front (and the baseline) under
CrypTen 2PC; rewrites the job's report with the measurements.

    python bench/measure_front.py --config configs/digits_bench.yaml --workdir bench/out/fronts
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from mpc.measure import make_measure
from pi_opt.search import SearchConfig, SearchSession


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/digits_bench.yaml")
    ap.add_argument("--workdir", default="bench/out/fronts")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    raw = yaml.safe_load(Path(args.config).read_text())
    raw["measure_mpc"] = "front"
    cfg = SearchConfig.model_validate(raw)
    session = SearchSession.open(cfg, workdir=args.workdir)
    report = session.finalize(measure=make_measure({"repeats": args.repeats}))
    rows = [{"trial": p.trial, "chain": "+".join(p.chain), "relus": p.relus,
             "poly_mults": p.poly_mults, "test_accuracy": p.test_accuracy,
             **(p.mpc.model_dump() if p.mpc else {})} for p in report.front()]
    base = {"relus": report.baseline.relus, "test_accuracy": report.baseline.test_accuracy,
            **(report.baseline.mpc.model_dump() if report.baseline.mpc else {})}
    out = {"baseline": base, "front": rows}
    Path(args.workdir, "mpc_front.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
