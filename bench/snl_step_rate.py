"""SNL search step rate at ResNet-18 / CIFAR-100 shape (synthetic data, no accuracy claim).

Runs the real SNL technique (mask coefficients, penalty, live-count reads) for two search
epochs on synthetic uint8 data of CIFAR-100 shape and reports optimizer steps per second
of the second epoch (setup and the first epoch's warm-up excluded), once per
``--sync-every`` value (how often the live ReLU count is read back to the host).

    python bench/snl_step_rate.py [--device cuda --width-mult 1 --batch-size 256
                                   --steps 40 --sync-every 1 50 --out OUT.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pi_opt.artifacts import ArchSpec, ModelSpec  # noqa: E402
from pi_opt.data import Augment, DataBundle  # noqa: E402
from pi_opt.profile import profile_model  # noqa: E402
from pi_opt.sites import materialize_all, prepare_sites  # noqa: E402
from pi_opt.techniques.base import TechniqueContext, baseline_candidate  # noqa: E402
from pi_opt.techniques.snl import SNL  # noqa: E402
from pi_opt.training import TrainConfig  # noqa: E402
from train_engine import CLASSES, MEAN, SHAPE, STD, machine, synthetic_split  # noqa: E402


def step_rate(args: argparse.Namespace, sync_every: int, workdir: Path) -> dict[str, Any]:
    dev = torch.device(args.device)
    n = args.batch_size * args.steps
    data = DataBundle(name="synthetic-cifar100-shape", train=synthetic_split(n, 0),
                      val=synthetic_split(args.batch_size, 1),
                      test=synthetic_split(args.batch_size, 2), num_classes=CLASSES,
                      input_shape=SHAPE, class_names=[str(i) for i in range(CLASSES)],
                      mean=MEAN, std=STD, augmenter=Augment(pad=4, flip=True))
    spec = ModelSpec(arch=ArchSpec(name="resnet18", kwargs={"width_mult": args.width_mult}),
                     input_shape=SHAPE, num_classes=CLASSES, class_names=data.class_names,
                     mean=MEAN, std=STD)
    torch.manual_seed(0)
    teacher = prepare_sites(spec.build())
    materialize_all(teacher, data.train.tensors[0][:1])
    teacher.to(dev).eval()
    stamps: list[float] = []

    def progress(ev: dict[str, Any]) -> None:
        if ev.get("phase") == "snl-search" and "epoch" in ev:
            stamps.append(time.perf_counter())

    finetune = TrainConfig(epochs=0, batch_size=args.batch_size, device=str(dev),
                           precision=args.precision, channels_last=args.channels_last,
                           sync_every=sync_every)
    ctx = TechniqueContext(spec=spec, data=data, teacher=teacher,
                           baseline_profile=profile_model(teacher, SHAPE), finetune=finetune,
                           workdir=workdir, seed=0, progress=progress)
    t0 = time.perf_counter()
    SNL(max_search_epochs=2, finetune_epochs=0).run(ctx, baseline_candidate(ctx), budget=1)
    steps = -(-n // args.batch_size)
    if len(stamps) >= 2:
        secs, note = stamps[1] - stamps[0], "second search epoch"
    else:
        secs, note = (stamps[0] if stamps else time.perf_counter()) - t0, "incl. setup"
    return {"sync_every": sync_every, "steps": steps, "seconds": secs, "timed": note,
            "steps_per_s": steps / secs, "images_per_s": steps * args.batch_size / secs,
            "relus": ctx.baseline_profile.relus}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=40, help="search steps per epoch")
    ap.add_argument("--sync-every", type=int, nargs="+", default=(1, 50))
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--out", default="bench/results/snl_step_rate.json")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [step_rate(args, k, Path(tmp)) for k in args.sync_every]
    out = {"bench": "snl_step_rate",
           "command": "python " + " ".join(["bench/snl_step_rate.py", *sys.argv[1:]]),
           "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "machine": machine(torch.device(args.device)), "device": args.device,
           "model": f"resnet18 CIFAR, width_mult={args.width_mult}",
           "batch_size": args.batch_size, "precision": args.precision,
           "channels_last": args.channels_last, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for r in runs:
        print(f"sync_every={r['sync_every']}: {r['steps_per_s']:.2f} steps/s "
              f"({r['images_per_s']:.0f} images/s, {r['timed']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
