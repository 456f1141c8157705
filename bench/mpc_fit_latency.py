"""Fit the CrypTen CPU latency model from the benchmark results and validate it.

Training samples: every op of the ``keep*`` / ``last_stage_only`` variants of
bench/results/mpc_relu_scaling*.json (op level) plus those whole inferences, and
the per-element runs of bench/results/mpc_circa.json with N <= --max-n (exact ReLU,
squares, Circa by l); least squares on relative errors, non-negative coefficients.
The ``holdout`` variant (exact ReLU + Circa + squares) is predicted, not fitted.
Writes configs/latency/crypten_cpu.json and its package copy
pi_opt/costmodels/crypten_cpu.json (what ``pi_opt.costmodel.default_cost_model`` reads).

    python bench/mpc_fit_latency.py --scaling bench/results/mpc_relu_scaling.json \
        bench/results/mpc_relu_scaling_b8.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpc.latency_model import CostSample, fit, plan_counts, samples_from_ops  # noqa: E402
from mpc.lowering import lower  # noqa: E402
from mpc.results import MpcReport  # noqa: E402
from mpc_common import machine  # noqa: E402
from mpc_relu_scaling import make_variant  # noqa: E402
from pi_opt.activations import Kind  # noqa: E402
from pi_opt.artifacts import ModelSpec  # noqa: E402
from pi_opt.profile import profile_model  # noqa: E402


def circa_samples(path: Path, max_n: int) -> list[CostSample]:
    out = []
    for r in json.loads(path.read_text())["runs"]:
        if r["n"] > max_n:
            continue
        n, secs, sent = r["n"], r["seconds"], r["crypten_bytes"] / 2  # measured = counted
        if r["method"] == "crypten_relu":
            c = {"relus": float(n)}
        elif r["method"] == "square":
            c = {"poly_mults": float(n)}
        else:
            c = {"circa": {int(r["l"]): float(n)}}
        out.append(CostSample(**c, rounds=float(r["rounds"]), bytes=sent, seconds=secs))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scaling", nargs="+", default=["bench/results/mpc_relu_scaling.json"])
    ap.add_argument("--circa", default="bench/results/mpc_circa.json")
    ap.add_argument("--out", default="configs/latency/crypten_cpu.json")
    ap.add_argument("--package-copy", default="pi_opt/costmodels/crypten_cpu.json",
                    help="also write the fit here (shipped with pi_opt); '' to skip")
    ap.add_argument("--max-n", type=float, default=1e5,
                    help="largest per-element run used (networks have <= 1e5 per layer)")
    args = ap.parse_args(argv)
    train: list[CostSample] = circa_samples(Path(args.circa), int(args.max_n))
    checks = []
    for path in args.scaling:
        data = json.loads(Path(path).read_text())
        spec = ModelSpec.model_validate(data["spec"])
        batch = data["config"]["batch_size"]
        for run in data["runs"]:
            rep = MpcReport.model_validate(run["report"])
            fr = {Kind[k.upper()]: v for k, v in run["fractions"].items()}
            model = make_variant(spec, run["variant"], fr)
            counts = plan_counts(lower(model, spec.input_shape), batch_size=batch)
            m = rep.measurement
            whole = CostSample(**counts.model_dump(), seconds=m.latency_s)
            if run["variant"] != "holdout":
                train += samples_from_ops(rep.ops) + [whole]
            checks.append((Path(path).name, run["variant"], batch, model, spec, counts, m))
    lm = fit(train, source="bench/mpc_fit_latency.py (crypten 0.4.1, TFP, private weights, "
                          "CPU loopback, 1 thread/party)", meta={
        "backend": "crypten-0.4.1", "provider": "TFP", "weights": "private",
        "threads_per_party": 1, "network": "loopback", "units": "seconds / bytes sent per party",
        "sources": [*args.scaling, args.circa], "machine": machine(),
        "note": "time only: rounds and bytes are counted from the protocol "
                "(pi_opt.costmodel); Circa keyed by l (bits kept)",
    })
    lm.save(args.out)
    if args.package_copy:
        lm.save(args.package_copy)
    print("| coefficient | seconds |\n|---|---|")
    print(f"| per exact ReLU / max-pool comparison | {lm.per_relu_s:.3e} |")
    for l in sorted(lm.per_circa_s):
        print(f"| per Circa ReLU, l={l} | {lm.per_circa_s[l]:.3e} |")
    print(f"| per square (poly) | {lm.per_mult_s:.3e} |")
    print(f"| per MAC | {lm.per_mac_s:.3e} |")
    print(f"| per byte sent | {lm.per_byte_s:.3e} |")
    print(f"| per round | {lm.per_round_s:.3e} |")
    print(f"| per inference | {lm.per_inference_s:.3e} |")
    print("\n| results | variant | batch | measured s | predicted (plan) s | "
          "predicted (profile) s | error | measured / counted rounds | measured / counted MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, variant, batch, model, spec, counts, m in checks:
        pred = lm.predict_counts(counts)
        prof = lm.predict(profile_model(model, spec.input_shape), batch_size=batch)
        print(f"| {name} | {variant} | {batch} | {m.latency_s:.3f} | {pred:.3f} | {prof:.3f} | "
              f"{100 * (pred - m.latency_s) / m.latency_s:+.0f}% | {m.rounds} / "
              f"{counts.rounds:.0f} | {m.bytes_per_party / 1e6:.3f} / {counts.bytes / 1e6:.3f} |")
    print(f"wrote {args.out}" + (f" and {args.package_copy}" if args.package_copy else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
