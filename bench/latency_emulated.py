"""Emulated LAN / WAN measurements against the cost model's prediction.

For each architecture (tiny widths, random weights, all sites exact ReLU): one CrypTen
run on loopback, one on the emulated LAN and one on the emulated WAN (``MpcConfig
(emulate_network=True)``: every message delayed by the RTT and paced at the bandwidth).
Reported per network: measured latency (median of ``--repeats``), the cost model's
prediction (fitted loopback time + rounds x RTT + bytes / bandwidth, counted from the
profile), and the loopback measurement + the same network term (isolates the link
emulation from the time fit). Rounds and bytes: measured vs counted.

    python bench/latency_emulated.py --repeats 5 --out bench/results/latency_emulated.json
    python bench/latency_emulated.py --repredict OLD.json   # new fit, same measurements
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

from mpc.config import MpcConfig  # noqa: E402
from mpc.crypten_backend import CryptenBackend  # noqa: E402
from mpc_common import machine  # noqa: E402
from pi_opt.artifacts import ArchSpec, ModelSpec, save_artifact  # noqa: E402
from pi_opt.costmodel import LatencyModel, counts_from_profile, default_cost_model  # noqa: E402
from pi_opt.network import PROFILES  # noqa: E402
from pi_opt.profile import ModelProfile, profile_model  # noqa: E402
from pi_opt.sites import prepare_sites  # noqa: E402

ARCHS = {
    "resnet_mini": ModelSpec(arch=ArchSpec(name="resnet_mini", kwargs={"widths": [4, 8, 16]}),
                             input_shape=(1, 8, 8), num_classes=10),
    "wrn10_1": ModelSpec(arch=ArchSpec(name="wrn", kwargs={"depth": 10, "widen": 1}),
                         input_shape=(3, 16, 16), num_classes=10),
    "vgg16_max": ModelSpec(arch=ArchSpec(name="vgg16", kwargs={"width_mult": 0.0625,
                                                               "pool": "max"}),
                           input_shape=(3, 32, 32), num_classes=10),
}


def _profiles(names: list[str], root: Path | None) -> dict[str, ModelProfile]:
    """Profiles of the benchmark models (seed 0); saved as artifacts under ``root``."""
    out = {}
    for name in names:
        spec = ARCHS[name]
        torch.manual_seed(0)
        model = prepare_sites(spec.build()).eval()
        model(torch.zeros(1, *spec.input_shape))
        if root is not None:
            save_artifact(model, spec, root / name)
        out[name] = profile_model(model, spec.input_shape)
    return out


def measure(names: list[str], repeats: int, root: Path) -> list[dict[str, Any]]:
    """Loopback, emulated LAN and emulated WAN runs of every model: measured columns."""
    profiles = _profiles(names, root)
    rows = []
    for net in ("loopback", "lan", "wan"):
        cfg = MpcConfig(repeats=repeats, warmup=1, timeout_s=3000, network=net,
                        emulate_network=net != "loopback")
        reports = CryptenBackend().measure_many([root / n for n in names], samples=0,
                                                config=cfg)
        for name, rep in zip(names, reports, strict=True):
            c = counts_from_profile(profiles[name])
            m = rep.measurement
            rows.append({"arch": name, "network": net, "measured_s": m.latency_s,
                         "latencies_s": rep.latencies_s, "cpu_s": rep.extra.get("cpu_s"),
                         "rounds": m.rounds, "counted_rounds": c.rounds,
                         "bytes": m.bytes_per_party, "counted_bytes": c.bytes})
    return rows


def predict(rows: list[dict[str, Any]], lm: LatencyModel) -> str:
    """Fill the predicted columns of ``rows`` with ``lm``; the markdown table."""
    profiles = _profiles(sorted({r["arch"] for r in rows}), None)
    loop = {r["arch"]: r["measured_s"] for r in rows if r["network"] == "loopback"}
    lines = ["| arch | network | measured s | predicted s | error | loopback + link s | error | "
             "rounds meas/counted | MB meas/counted |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        net = PROFILES[r["network"]]
        r["predicted_s"] = lm.predict_network(counts_from_profile(profiles[r["arch"]]), net)
        r["loopback_plus_link_s"] = loop[r["arch"]] + net.network_s(
            rounds=r["rounds"], bytes_sent=r["bytes"])
        e1 = 100 * (r["predicted_s"] - r["measured_s"]) / r["measured_s"]
        e2 = 100 * (r["loopback_plus_link_s"] - r["measured_s"]) / r["measured_s"]
        lines.append(
            f"| {r['arch']} | {r['network']} | {r['measured_s']:.3f} | {r['predicted_s']:.3f} | "
            f"{e1:+.0f}% | {r['loopback_plus_link_s']:.3f} | {e2:+.0f}% | "
            f"{r['rounds']}/{r['counted_rounds']:.0f} | "
            f"{r['bytes'] / 1e6:.3f}/{r['counted_bytes'] / 1e6:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS))
    ap.add_argument("--workdir", default="/tmp/pi-opt-latency-emulated")
    ap.add_argument("--out", default="bench/results/latency_emulated.json")
    ap.add_argument("--repredict", default=None, metavar="JSON",
                    help="no measurement: recompute the predictions of this earlier result "
                         "with the committed fit and write it to --out")
    args = ap.parse_args(argv)
    lm = default_cost_model()
    t0 = time.time()
    if args.repredict:
        out = json.loads(Path(args.repredict).read_text())
        out["repredicted_by"] = " ".join(["python", *sys.argv])
    else:
        before = machine()
        rows = measure(args.archs, args.repeats, Path(args.workdir))
        out = {"bench": "latency_emulated", "command": " ".join(["python", *sys.argv]),
               "machine": before, "machine_after": machine(), "wall_s": time.time() - t0,
               "repeats": args.repeats, "rows": rows}
    print(predict(out["rows"], lm))
    out["model"] = lm.source
    out["model_sources"] = lm.meta.get("sources")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
