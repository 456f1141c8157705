"""Fit the CrypTen CPU latency model (time coefficients only) and validate it on held-out runs.

Training samples: every op and every whole inference of the ``fit`` runs of
``bench/mpc_families.py`` (ResNet-18 at 2 widths and 2 resolutions, VGG-16 with
max-pool, WRN-16-2, MobileNetV2; batch 1 and 8), optionally the ``keep*`` /
``last_stage_only`` variants of ``--scaling`` files (bench/mpc_relu_scaling.py), plus
the per-element runs of bench/results/mpc_circa.json with N <= --max-n (exact ReLU,
squares, Circa by l); least squares on relative errors, non-negative coefficients.
Rounds and bytes are counted from the protocol (``pi_opt.costmodel``), never fitted.

The ``--holdout`` runs (architectures and batch sizes not in the fit) are predicted from
their profiles and lowered plans; the table (and ``--holdout-out`` JSON) compares
rounds, bytes and latency with the measurement. Writes configs/latency/crypten_cpu.json
and its package copy pi_opt/costmodels/crypten_cpu.json (what
``pi_opt.costmodel.default_cost_model`` reads).

    python bench/mpc_fit_latency.py --families bench/results/mpc_families_fit.json \
        --holdout bench/results/mpc_families_holdout.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpc.latency_model import (  # noqa: E402
    CostSample,
    LinkSample,
    fit,
    fit_hidden,
    plan_counts,
    samples_from_ops,
)
from mpc.lowering import lower  # noqa: E402
from mpc.results import MpcReport  # noqa: E402
from mpc_common import machine  # noqa: E402
from mpc_relu_scaling import make_variant  # noqa: E402
from pi_opt.activations import Kind  # noqa: E402
from pi_opt.artifacts import ModelSpec  # noqa: E402
from pi_opt.costmodel import CostCounts, LatencyModel, counts_from_profile  # noqa: E402
from pi_opt.network import resolve_network  # noqa: E402
from pi_opt.profile import profile_model  # noqa: E402

#: One measured whole inference: (source, label, variant, batch, plan counts,
#: profile counts, report).
Check = tuple[str, str, str, int, CostCounts, CostCounts, MpcReport]


def circa_samples(path: Path, max_n: int) -> list[CostSample]:
    """Per-element samples of the Circa / exact-ReLU / square micro-benchmark."""
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


def _check(source: str, label: str, variant: str, batch: int, spec: ModelSpec,
           fractions: dict[str, float], report: dict[str, Any]) -> Check:
    fr = {Kind[k.upper()]: v for k, v in fractions.items()}
    model = make_variant(spec, variant, fr)
    plan = plan_counts(lower(model, spec.input_shape), batch_size=batch)
    prof = counts_from_profile(profile_model(model, spec.input_shape), batch_size=batch)
    return (source, label, variant, batch, plan, prof, MpcReport.model_validate(report))


def family_checks(path: Path) -> list[Check]:
    """Every run of a ``bench/mpc_families.py`` result file."""
    data = json.loads(path.read_text())
    return [_check(path.name, r["label"], r["variant"], r["batch_size"],
                   ModelSpec.model_validate(r["spec"]), r["fractions"], r["report"])
            for r in data["runs"]]


def scaling_checks(path: Path) -> list[Check]:
    """Every run of a ``bench/mpc_relu_scaling.py`` result file but ``holdout``."""
    data = json.loads(path.read_text())
    spec = ModelSpec.model_validate(data["spec"])
    return [_check(path.name, spec.arch.name, r["variant"], data["config"]["batch_size"],
                   spec, r["fractions"], r["report"])
            for r in data["runs"] if r["variant"] != "holdout"]


def training_samples(checks: list[Check]) -> list[CostSample]:
    """Op-level samples and the whole inference of every check."""
    out: list[CostSample] = []
    for *_, plan, _prof, rep in checks:
        out += samples_from_ops(rep.ops)
        out.append(CostSample(**plan.model_dump(), seconds=rep.measurement.latency_s))
    return out


def _pct(pred: float, meas: float) -> float:
    return 100.0 * (pred - meas) / meas


def table(lm: LatencyModel, checks: list[Check]) -> tuple[str, list[dict[str, Any]]]:
    """Markdown table and JSON rows: measured vs predicted latency, rounds and bytes."""
    lines = ["| model | variant | batch | measured s (median) | predicted s | error | "
             "rounds meas/counted | MB meas/counted | bytes error | CPU s client/server |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for _src, label, variant, batch, plan, prof, rep in checks:
        m = rep.measurement
        pred = lm.predict_counts(prof)
        cpu = rep.extra.get("cpu_s", {})
        cpu_c = statistics.median(cpu["client"]) if cpu.get("client") else float("nan")
        cpu_s = statistics.median(cpu["server"]) if cpu.get("server") else float("nan")
        row = {"label": label, "variant": variant, "batch_size": batch,
               "measured_s": m.latency_s, "latencies_s": rep.latencies_s,
               "predicted_s": pred, "predicted_plan_s": lm.predict_counts(plan),
               "latency_error_pct": _pct(pred, m.latency_s),
               "rounds": m.rounds, "counted_rounds": prof.rounds,
               "rounds_error_pct": _pct(prof.rounds, m.rounds),
               "bytes": m.bytes_per_party, "counted_bytes": prof.bytes,
               "bytes_error_pct": _pct(prof.bytes, m.bytes_per_party),
               "cpu_s_client": cpu_c, "cpu_s_server": cpu_s}
        rows.append(row)
        lines.append(
            f"| {label} | {variant} | {batch} | {m.latency_s:.3f} | {pred:.3f} | "
            f"{row['latency_error_pct']:+.0f}% | {m.rounds}/{prof.rounds:.0f} | "
            f"{m.bytes_per_party / 1e6:.3f}/{prof.bytes / 1e6:.3f} | "
            f"{row['bytes_error_pct']:+.1f}% | {cpu_c:.3f}/{cpu_s:.3f} |")
    return "\n".join(lines), rows


def coefficient_table(lm: LatencyModel) -> str:
    """Markdown table of the fitted coefficients."""
    out = ["| coefficient | seconds |", "|---|---|",
           f"| per exact ReLU / max-pool comparison | {lm.per_relu_s:.3e} |"]
    out += [f"| per Circa ReLU, l={l} | {lm.per_circa_s[l]:.3e} |" for l in sorted(lm.per_circa_s)]
    out += [f"| per square (poly) | {lm.per_mult_s:.3e} |", f"| per MAC | {lm.per_mac_s:.3e} |",
            f"| per byte sent | {lm.per_byte_s:.3e} |", f"| per round | {lm.per_round_s:.3e} |",
            f"| per fused round (mixed sites) | {lm.per_fused_round_s:.3e} |",
            f"| per inference | {lm.per_inference_s:.3e} |",
            f"| link delay hidden per round (emulated links) | {lm.hidden_per_round_s:.3e} |"]
    return "\n".join(out)


def link_samples(path: Path) -> list[LinkSample]:
    """Emulated-link samples of a ``bench/latency_emulated.py`` result: every
    non-loopback row with the same model's loopback row of that run."""
    rows = json.loads(path.read_text())["rows"]
    loop = {r["arch"]: r["measured_s"] for r in rows if r["network"] == "loopback"}
    return [LinkSample(loopback_s=loop[r["arch"]], emulated_s=r["measured_s"],
                       traffic=[tuple(g) for g in r["traffic"]],
                       network=resolve_network(r["network"]))
            for r in rows if r["network"] != "loopback"]


def with_overlap(lm: LatencyModel, paths: list[str]) -> LatencyModel:
    """``lm`` with ``hidden_per_round_s`` fitted on the emulated-link runs in ``paths``
    (unchanged when there are none); prints the per-run errors before and after."""
    samples = [s for p in paths if Path(p).is_file() for s in link_samples(Path(p))]
    if not samples:
        return lm
    hidden = fit_hidden(samples)
    print(f"\nOverlap per round fitted on {len(samples)} emulated-link runs: "
          f"{hidden * 1e3:.3f} ms")
    for smp in samples:
        print(f"  {smp.network.label():>22}: loopback + link {smp.error(0.0):+.1%} "
              f"(additive) -> {smp.error(hidden):+.1%} (with overlap)")
    return lm.model_copy(update={"hidden_per_round_s": hidden, "meta": {
        **lm.meta, "sources": [*lm.meta.get("sources", []), *paths],
        "hidden_samples": len(samples)}})


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="*", default=["bench/results/mpc_families_fit.json"])
    ap.add_argument("--scaling", nargs="*", default=[],
                    help="bench/mpc_relu_scaling.py results to fit on as well")
    ap.add_argument("--circa", default="bench/results/mpc_circa.json")
    ap.add_argument("--holdout", nargs="*", default=["bench/results/mpc_families_holdout.json"])
    ap.add_argument("--holdout-out", default="bench/results/latency_holdout.json")
    ap.add_argument("--out", default="configs/latency/crypten_cpu.json")
    ap.add_argument("--package-copy", default="pi_opt/costmodels/crypten_cpu.json",
                    help="also write the fit here (shipped with pi_opt); '' to skip")
    ap.add_argument("--links", nargs="*", default=["bench/results/latency_links_fit.json"],
                    help="bench/latency_emulated.py --set fit results: the link overlap per "
                         "round is fitted on them (missing files are skipped)")
    ap.add_argument("--max-n", type=float, default=1e5,
                    help="largest per-element run used (networks have <= 1e5 per layer)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    checks = [c for p in args.families for c in family_checks(Path(p))]
    checks += [c for p in args.scaling for c in scaling_checks(Path(p))]
    train = circa_samples(Path(args.circa), int(args.max_n)) + training_samples(checks)
    lm = fit(train, source="bench/mpc_fit_latency.py (crypten 0.4.1, TFP, private weights, "
                          "CPU loopback, 1 thread/party)", meta={
        "backend": "crypten-0.4.1", "provider": "TFP", "weights": "private",
        "threads_per_party": 1, "network": "loopback", "units": "seconds / bytes sent per party",
        "sources": [*args.families, *args.scaling, args.circa], "machine": machine(),
        "note": "time only: rounds and bytes are counted from the protocol "
                "(pi_opt.costmodel); Circa keyed by l (bits kept)",
    })
    lm = with_overlap(lm, args.links)
    lm.save(args.out)
    if args.package_copy:
        lm.save(args.package_copy)
    print(coefficient_table(lm))
    fit_md, fit_rows = table(lm, checks)
    print("\nFit set (in the fit):\n" + fit_md)
    held = [c for p in args.holdout if Path(p).is_file() for c in family_checks(Path(p))]
    if held:
        md, rows = table(lm, held)
        print("\nHeld out (not in the fit):\n" + md)
        Path(args.holdout_out).write_text(json.dumps(
            {"bench": "latency_holdout", "command": "python " + " ".join(sys.argv),
             "model": lm.model_dump(mode="json"), "fit_rows": fit_rows, "rows": rows},
            indent=1) + "\n")
    print(f"wrote {args.out}" + (f" and {args.package_copy}" if args.package_copy else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
