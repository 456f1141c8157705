"""Training-engine throughput: ``pi_opt.training.fit`` vs a minimal hand-written loop.

Same model (CIFAR ResNet-18, optionally width-scaled), same synthetic CIFAR-100-shaped
data (3x32x32, 100 classes, uint8 pixels normalized like a real split), same batch size,
number of steps, optimizer (SGD, momentum 0.9, Nesterov, weight decay 5e-4, constant lr)
and augmentation (pad 4 + random crop + flip). Runs are interleaved (reference, fit,
fit, reference, ...) in one process; each run starts from the same initial weights.
On CPU the time of a run is its process CPU time (robust on a shared machine); on CUDA
it is wall time between device synchronisations. On CUDA fit also runs with bf16 +
channels_last.

    python bench/train_engine.py [--device cpu --width-mult 0.25 --batch-size 64
                                  --steps 12 --pairs 5 --out bench/results/train_engine.json]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pi_opt.data import Augment, PixelSplit  # noqa: E402
from pi_opt.models import create_model  # noqa: E402
from pi_opt.training import TrainConfig, fit  # noqa: E402

SHAPE = (3, 32, 32)
CLASSES = 100
MEAN, STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def synthetic_split(n: int, seed: int) -> PixelSplit:
    """``n`` random uint8 images (class-dependent mean) normalized like a CIFAR split."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    u8 = (torch.randint(0, 200, (n, *SHAPE), generator=g) + (y % 56).view(-1, 1, 1, 1)
          ).to(torch.uint8)
    m = torch.tensor(MEAN).view(1, -1, 1, 1)
    s = torch.tensor(STD).view(1, -1, 1, 1)
    return PixelSplit((u8.float().div(255.0) - m) / s, y, mean=MEAN, std=STD)


def reference_loop(model: nn.Module, data: PixelSplit, cfg: TrainConfig, aug: Augment,
                   dev: torch.device) -> None:
    """The minimal loop a practitioner would write (data already on the device)."""
    model.to(dev).train()
    x_all, y_all = (t.to(dev) for t in data.tensors)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, nesterov=True)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    perm = torch.randperm(len(y_all), generator=gen, device=dev)
    for i in range(0, len(y_all), cfg.batch_size):
        idx = perm[i : i + cfg.batch_size]
        loss = F.cross_entropy(model(aug(x_all[idx], gen)), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def timed(fn: Callable[[], object], dev: torch.device) -> float:
    """Seconds of ``fn()``: CPU time on CPU, synchronized wall time on CUDA."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize(dev)
        return time.perf_counter() - t
    t = time.process_time()
    fn()
    return time.process_time() - t


def machine(dev: torch.device) -> dict[str, object]:
    info: dict[str, object] = {
        "cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "load_average_1m": os.getloadavg()[0]}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--width-mult", type=float, default=None,
                    help="ResNet-18 width multiplier (default 0.25 on CPU, 1 on CUDA)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    ap.add_argument("--pairs", type=int, default=5, help="interleaved (reference, fit) pairs")
    ap.add_argument("--out", default="bench/results/train_engine.json")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    width = args.width_mult if args.width_mult is not None else (1.0 if cuda else 0.25)
    batch = args.batch_size or (256 if cuda else 64)
    steps = args.steps or (50 if cuda else 12)
    data = synthetic_split(batch * steps, seed=0)
    aug = Augment(pad=4, flip=True)
    torch.manual_seed(0)
    init = create_model("resnet18", num_classes=CLASSES, width_mult=width)
    cfg = TrainConfig(epochs=1, batch_size=batch, lr=0.05, schedule="constant",
                      grad_clip=None, select_on_val=False, device=str(dev), seed=0)
    variants: dict[str, Callable[[nn.Module], object]] = {
        "reference": lambda m: reference_loop(m, data, cfg, aug, dev),
        "fit": lambda m: fit(m, data, None, cfg, augment=aug),
    }
    if cuda:
        fast = cfg.model_copy(update={"precision": "bf16", "channels_last": True})
        variants["fit_bf16_channels_last"] = lambda m: fit(m, data, None, fast, augment=aug)
    for fn in variants.values():  # warm-up (allocator, kernels, cudnn autotune)
        fn(copy.deepcopy(init))
    secs: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(args.pairs):
        for k in names if r % 2 == 0 else reversed(names):
            model = copy.deepcopy(init)
            secs[k].append(timed(lambda: variants[k](model), dev))
    images = batch * steps
    ratios = [ref / f for ref, f in zip(secs["reference"], secs["fit"])]
    result = {
        "bench": "train_engine", "command": "python " + " ".join(["bench/train_engine.py",
                                                                   *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(dev), "device": str(dev),
        "timing": "wall (synchronized)" if cuda else "process CPU time",
        "model": f"resnet18 CIFAR, width_mult={width}", "input": list(SHAPE),
        "classes": CLASSES, "batch_size": batch, "steps": steps, "pairs": args.pairs,
        "seconds": secs,
        "images_per_s_median": {k: images / statistics.median(v) for k, v in secs.items()},
        "images_per_s_best": {k: images / min(v) for k, v in secs.items()},
        "pair_ratios": ratios,
        "fit_over_reference": statistics.median(ratios),
    }
    if cuda:
        result["bf16_channels_last_over_fp32"] = statistics.median(
            f / b for f, b in zip(secs["fit"], secs["fit_bf16_channels_last"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| variant | images/s (median) | images/s (best) |")
    print("|---|---|---|")
    for k in variants:
        print(f"| {k} | {result['images_per_s_median'][k]:.1f} | "  # type: ignore[index]
              f"{result['images_per_s_best'][k]:.1f} |")  # type: ignore[index]
    print(f"fit_over_reference = {result['fit_over_reference']:.3f} "
          f"(pairs: {', '.join(f'{r:.3f}' for r in ratios)}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
