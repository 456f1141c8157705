"""Emulated links against the cost model's prediction; the links the overlap is fitted on.

Two sets (tiny widths, random weights, all sites exact ReLU, batch 1):

* ``holdout`` (default): resnet_mini, WRN-10-1 and VGG-16 with max-pool - none of them in
  the time fit or the overlap fit - on loopback, the emulated LAN and the emulated WAN.
* ``fit``: the ``fit`` architectures of ``bench/mpc_families.py`` (ResNet-18 at 2 widths
  and 2 resolutions, VGG-16 with max-pool, WRN-16-2, MobileNetV2) on loopback and three
  custom emulated links (1 ms / 1 Gb/s, 4 ms / 1 Gb/s, 10 ms / 100 Mb/s): what
  ``bench/mpc_fit_latency.py --links`` fits the overlap per round on.

``MpcConfig(emulate_network=True)``: every message delayed by the RTT and paced at the
bandwidth inside both parties' communicator. Reported per run: measured latency (median of
``--repeats``), the cost model's prediction (fitted loopback time + the link term with the
fitted overlap, counted per layer from the profile), and the run's own loopback
measurement + the same link term (isolates the link model from the time fit). Rounds and
bytes: measured vs counted. Each row keeps the per-layer ``traffic`` groups.

    python bench/latency_emulated.py --repeats 5 --out bench/results/latency_emulated.json
    python bench/latency_emulated.py --set fit --repeats 3 --out bench/results/latency_links_fit.json
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
from mpc_families import SETS  # noqa: E402
from pi_opt.artifacts import ArchSpec, ModelSpec, save_artifact  # noqa: E402
from pi_opt.costmodel import LatencyModel, counts_from_profile, default_cost_model  # noqa: E402
from pi_opt.network import resolve_network  # noqa: E402
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
#: The time fit's architectures (``bench/mpc_families.py --set fit``), all ReLUs kept.
FIT_ARCHS = {label: spec for label, (spec, _) in SETS["fit"][0].items()}
#: set -> (architectures, links: a profile name or ``{rtt_ms, bandwidth_mbps}``).
LINK_SETS: dict[str, tuple[dict[str, ModelSpec], list[Any]]] = {
    "holdout": (ARCHS, ["loopback", "lan", "wan"]),
    "fit": (FIT_ARCHS, ["loopback", {"rtt_ms": 1.0, "bandwidth_mbps": 1000.0},
                        {"rtt_ms": 4.0, "bandwidth_mbps": 1000.0},
                        {"rtt_ms": 10.0, "bandwidth_mbps": 100.0}]),
}


def _profiles(archs: dict[str, ModelSpec], root: Path | None) -> dict[str, ModelProfile]:
    """Profiles of the benchmark models (seed 0); saved as artifacts under ``root``."""
    out = {}
    for name, spec in archs.items():
        torch.manual_seed(0)
        model = prepare_sites(spec.build()).eval()
        model(torch.zeros(1, *spec.input_shape))
        if root is not None:
            save_artifact(model, spec, root / name)
        out[name] = profile_model(model, spec.input_shape)
    return out


def measure(set_name: str, repeats: int, root: Path) -> list[dict[str, Any]]:
    """Every model of ``set_name`` on each of its links: the measured columns."""
    archs, links = LINK_SETS[set_name]
    names = list(archs)
    profiles = _profiles(archs, root)
    rows = []
    for link in links:
        net = resolve_network(link)
        cfg = MpcConfig(repeats=repeats, warmup=1, timeout_s=3000, network=net,
                        emulate_network=not net.is_loopback)
        reports = CryptenBackend().measure_many([root / n for n in names], samples=0,
                                                config=cfg)
        for name, rep in zip(names, reports, strict=True):
            c = counts_from_profile(profiles[name])
            m = rep.measurement
            rows.append({"arch": name, "network": link, "measured_s": m.latency_s,
                         "latencies_s": rep.latencies_s, "cpu_s": rep.extra.get("cpu_s"),
                         "rounds": m.rounds, "counted_rounds": c.rounds,
                         "bytes": m.bytes_per_party, "counted_bytes": c.bytes,
                         "traffic": c.traffic})
            print(f"{name} {net.label()}: {m.latency_s:.3f} s", flush=True)
    return rows


def predict(rows: list[dict[str, Any]], lm: LatencyModel) -> str:
    """Fill the predicted columns of ``rows`` with ``lm``; the markdown table."""
    archs = {**FIT_ARCHS, **ARCHS}
    profiles = _profiles({a: archs[a] for a in sorted({r["arch"] for r in rows})}, None)
    loop = {r["arch"]: r["measured_s"] for r in rows if r["network"] == "loopback"}
    lines = ["| arch | network | measured s | predicted s | error | loopback + link s | error | "
             "rounds meas/counted | MB meas/counted |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        net = resolve_network(r["network"])
        counts = counts_from_profile(profiles[r["arch"]])
        r["predicted_s"] = lm.predict_network(counts, net)
        r["loopback_plus_link_s"] = loop[r["arch"]] + lm.link_s(counts, net)
        e1 = 100 * (r["predicted_s"] - r["measured_s"]) / r["measured_s"]
        e2 = 100 * (r["loopback_plus_link_s"] - r["measured_s"]) / r["measured_s"]
        lines.append(
            f"| {r['arch']} | {net.label()} | {r['measured_s']:.3f} | {r['predicted_s']:.3f} | "
            f"{e1:+.0f}% | {r['loopback_plus_link_s']:.3f} | {e2:+.0f}% | "
            f"{r['rounds']}/{r['counted_rounds']:.0f} | "
            f"{r['bytes'] / 1e6:.3f}/{r['counted_bytes'] / 1e6:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--set", choices=sorted(LINK_SETS), default="holdout")
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
        rows = measure(args.set, args.repeats, Path(args.workdir) / args.set)
        out = {"bench": "latency_emulated", "set": args.set,
               "command": " ".join(["python", *sys.argv]),
               "machine": before, "machine_after": machine(), "wall_s": time.time() - t0,
               "repeats": args.repeats, "rows": rows}
    print(predict(out["rows"], lm))
    out["model"] = lm.source
    out["model_sources"] = lm.meta.get("sources")
    out["hidden_per_round_s"] = lm.hidden_per_round_s
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
