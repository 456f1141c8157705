"""Emulated LAN / WAN measurements against the cost model's prediction.

For each architecture (tiny widths, random weights, all sites exact ReLU): one CrypTen
run on loopback, one on the emulated LAN and one on the emulated WAN (``MpcConfig
(emulate_network=True)``: every message delayed by the RTT and paced at the bandwidth).
Reported per network: measured latency (median of ``--repeats``), the cost model's
prediction (fitted loopback time + rounds x RTT + bytes / bandwidth, counted from the
profile), and the loopback measurement + the same network term (isolates the link
emulation from the time fit). Rounds and bytes: measured vs counted.

    python bench/latency_emulated.py --repeats 5 --out bench/results/latency_emulated.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from mpc.config import MpcConfig  # noqa: E402
from mpc.crypten_backend import CryptenBackend  # noqa: E402
from mpc_common import machine  # noqa: E402
from pi_opt.artifacts import ArchSpec, ModelSpec, save_artifact  # noqa: E402
from pi_opt.costmodel import counts_from_profile, default_cost_model  # noqa: E402
from pi_opt.network import PROFILES  # noqa: E402
from pi_opt.profile import profile_model  # noqa: E402
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS))
    ap.add_argument("--workdir", default="/tmp/pi-opt-latency-emulated")
    ap.add_argument("--out", default="bench/results/latency_emulated.json")
    args = ap.parse_args(argv)
    root = Path(args.workdir)
    dirs, profiles = [], {}
    for name in args.archs:
        spec = ARCHS[name]
        torch.manual_seed(0)
        model = prepare_sites(spec.build()).eval()
        model(torch.zeros(1, *spec.input_shape))
        save_artifact(model, spec, root / name)
        dirs.append(root / name)
        profiles[name] = profile_model(model, spec.input_shape)
    lm = default_cost_model()
    rows = []
    t0 = time.time()
    for net in ("loopback", "lan", "wan"):
        cfg = MpcConfig(repeats=args.repeats, warmup=1, timeout_s=3000, network=net,
                        emulate_network=net != "loopback")
        reports = CryptenBackend().measure_many(dirs, samples=0, config=cfg)
        for name, rep in zip(args.archs, reports, strict=True):
            c = counts_from_profile(profiles[name])
            m = rep.measurement
            rows.append({"arch": name, "network": net, "measured_s": m.latency_s,
                         "latencies_s": rep.latencies_s,
                         "predicted_s": lm.predict_network(c, PROFILES[net]),
                         "rounds": m.rounds, "counted_rounds": c.rounds,
                         "bytes": m.bytes_per_party, "counted_bytes": c.bytes})
    loop = {r["arch"]: r["measured_s"] for r in rows if r["network"] == "loopback"}
    print("| arch | network | measured s | predicted s | error | loopback + link s | error | "
          "rounds meas/counted | MB meas/counted |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        net = PROFILES[r["network"]]
        r["loopback_plus_link_s"] = loop[r["arch"]] + net.network_s(
            rounds=r["rounds"], bytes_sent=r["bytes"])
        e1 = 100 * (r["predicted_s"] - r["measured_s"]) / r["measured_s"]
        e2 = 100 * (r["loopback_plus_link_s"] - r["measured_s"]) / r["measured_s"]
        print(f"| {r['arch']} | {r['network']} | {r['measured_s']:.3f} | "
              f"{r['predicted_s']:.3f} | {e1:+.0f}% | {r['loopback_plus_link_s']:.3f} | "
              f"{e2:+.0f}% | {r['rounds']}/{r['counted_rounds']:.0f} | "
              f"{r['bytes'] / 1e6:.3f}/{r['counted_bytes'] / 1e6:.3f} |")
    out = {"bench": "latency_emulated", "command": " ".join(["python", *sys.argv]),
           "machine": machine(), "wall_s": time.time() - t0, "repeats": args.repeats,
           "model": lm.source, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
