"""Whole-inference CrypTen 2PC measurements over architecture families (loopback, CPU).

Two fixed sets of small models with random weights and randomized BatchNorm
statistics (latency does not depend on the values):

* ``fit`` - what ``bench/mpc_fit_latency.py --families`` fits the time coefficients
  on: ResNet-18 at 2 widths and 2 resolutions, VGG-16 with max-pool, WRN-16-2,
  MobileNetV2 (depthwise), all ReLUs kept and a quarter kept, one mixed variant
  (exact ReLU + Circa + squares); batch 1 and 8.
* ``holdout`` - architectures / configurations *not* in the fit (ResNet-34, HybReNet,
  resnet_mini, WRN-10-1, VGG-16 with average pooling, MobileNetV2 at another width,
  expansion and resolution; batch 1, 2 and 4), predicted by the fitted model.

Per case: median latency of ``--repeats`` timed runs (after 1 warm-up), every repeat,
per-party CPU seconds, measured rounds / bytes, the per-op breakdown, and the rounds /
bytes counted from the profile (``pi_opt.costmodel``).

    python bench/mpc_families.py --set fit --repeats 5
    python bench/mpc_families.py --set holdout --repeats 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpc.config import MpcConfig  # noqa: E402
from mpc.crypten_backend import CryptenBackend  # noqa: E402
from mpc_common import machine  # noqa: E402
from mpc_relu_scaling import make_variant  # noqa: E402
from pi_opt.activations import Kind  # noqa: E402
from pi_opt.artifacts import ArchSpec, ModelSpec, save_artifact  # noqa: E402
from pi_opt.costmodel import counts_from_profile  # noqa: E402
from pi_opt.profile import profile_model  # noqa: E402

#: Kept fraction per kind of every site's positions (rest identity); ``{RELU: 1}`` = all.
VARIANTS: dict[str, dict[Kind, float]] = {
    "all": {Kind.RELU: 1.0},
    "keep0.25": {Kind.RELU: 0.25},
    "mixed": {Kind.RELU: 0.2, Kind.CIRCA: 0.2, Kind.POLY: 0.1},
}


def _spec(arch: str, shape: tuple[int, int, int], **kwargs: Any) -> ModelSpec:
    return ModelSpec(arch=ArchSpec(name=arch, kwargs=kwargs), input_shape=shape,
                     num_classes=10)


_MBV2_SMALL = {"expansion": 2, "blocks": (1, 1, 2, 1, 1, 1, 1), "head_width": 256}

#: label -> (spec, variants); every variant is measured at every batch size of the set.
SETS: dict[str, tuple[dict[str, tuple[ModelSpec, tuple[str, ...]]], tuple[int, ...]]] = {
    "fit": ({
        "resnet18x0.125@32": (_spec("resnet18", (3, 32, 32), width_mult=0.125),
                              ("all", "keep0.25", "mixed")),
        "resnet18x0.25@16": (_spec("resnet18", (3, 16, 16), width_mult=0.25),
                             ("all", "keep0.25")),
        "resnet18x0.25@32": (_spec("resnet18", (3, 32, 32), width_mult=0.25),
                             ("all", "keep0.25")),
        "vgg16x0.125max@32": (_spec("vgg16", (3, 32, 32), width_mult=0.125, pool="max"),
                              ("all", "keep0.25")),
        "wrn16_2@16": (_spec("wrn", (3, 16, 16), depth=16, widen=2), ("all", "keep0.25")),
        "mobilenet_v2x0.25@32": (_spec("mobilenet_v2", (3, 32, 32), width_mult=0.25,
                                       **_MBV2_SMALL), ("all", "keep0.25")),
    }, (1, 8)),
    "holdout": ({
        "resnet34x0.0625@32": (_spec("resnet34", (3, 32, 32), width_mult=0.0625),
                               ("all", "keep0.25")),
        "hybrenet2@32": (_spec("hybrenet", (3, 32, 32), base_width=4,
                               multipliers=(2, 2, 2), blocks=(1, 1, 1, 1)), ("all",)),
        "resnet_mini@8": (_spec("resnet_mini", (1, 8, 8)), ("all", "mixed")),
        "wrn10_1@32": (_spec("wrn", (3, 32, 32), depth=10, widen=1), ("all",)),
        "vgg16x0.0625avg@32": (_spec("vgg16", (3, 32, 32), width_mult=0.0625), ("all",)),
        "mobilenet_v2x0.5@16": (_spec("mobilenet_v2", (3, 16, 16), width_mult=0.5,
                                      expansion=3, blocks=(1, 1, 1, 1, 1, 1, 1),
                                      head_width=128), ("all", "keep0.25")),
    }, (1, 2, 4)),
}


def cases(name: str) -> list[tuple[str, ModelSpec, str]]:
    """(label, spec, variant) of every model of set ``name``."""
    models, _ = SETS[name]
    return [(label, spec, v) for label, (spec, variants) in models.items() for v in variants]


def _row(label: str, spec: ModelSpec, variant: str, batch: int, model: Any,
         rep: Any) -> dict[str, Any]:
    counted = counts_from_profile(profile_model(model, spec.input_shape), batch_size=batch)
    m = rep.measurement
    cpu = rep.extra.get("cpu_s", {})
    return {"label": label, "variant": variant, "batch_size": batch,
            "spec": spec.model_dump(mode="json"),
            "fractions": {k.name.lower(): f for k, f in VARIANTS[variant].items()},
            "latency_s": m.latency_s, "latencies_s": rep.latencies_s,
            "cpu_s_client": statistics.median(cpu["client"]) if cpu.get("client") else None,
            "cpu_s_server": statistics.median(cpu["server"]) if cpu.get("server") else None,
            "rounds": m.rounds, "bytes_per_party": m.bytes_per_party,
            "counted_rounds": counted.rounds, "counted_bytes": counted.bytes,
            "report": rep.model_dump(mode="json")}


def measure_set(name: str, repeats: int) -> list[dict[str, Any]]:
    """Measure every case of set ``name`` at each of its batch sizes (one pair of party
    processes per batch size)."""
    todo = cases(name)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models, dirs = [], []
        for i, (_, spec, variant) in enumerate(todo):
            model = make_variant(spec, variant, VARIANTS[variant])
            save_artifact(model, spec, Path(tmp) / f"m{i}")
            models.append(model)
            dirs.append(Path(tmp) / f"m{i}")
        for batch in SETS[name][1]:
            cfg = MpcConfig(repeats=repeats, warmup=1, timeout_s=3000, batch_size=batch)
            reports = CryptenBackend().measure_many(dirs, samples=0, config=cfg)
            for (label, spec, variant), model, rep in zip(todo, models, reports, strict=True):
                rows.append(_row(label, spec, variant, batch, model, rep))
                print(f"{label} {variant} b{batch}: {rep.measurement.latency_s:.3f} s, "
                      f"{rep.measurement.rounds} rounds", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=sorted(SETS), required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None,
                    help="default bench/results/mpc_families_<set>.json")
    args = ap.parse_args(argv)
    out = Path(args.out or f"bench/results/mpc_families_{args.set}.json")
    t0, before = time.time(), machine()
    rows = measure_set(args.set, args.repeats)
    data = {"bench": "mpc_families", "set": args.set, "command": "python " + " ".join(sys.argv),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine_before": before, "machine_after": machine(), "repeats": args.repeats,
            "config": {"provider": "TFP", "weights": "private", "threads": 1, "warmup": 1},
            "wall_s": time.time() - t0, "runs": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
