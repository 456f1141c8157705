"""Online 2PC latency vs kept ReLUs on one network (CrypTen, loopback, CPU).

Builds the network with random weights (latency does not depend on them) and
randomized BatchNorm statistics, keeps a random fraction of the ReLU positions of
every site (element granularity, the rest identity), and measures all variants in
one pair of party processes. A held-out mixed variant (exact ReLU, Circa, squares)
is measured too, to validate the fitted latency model (bench/mpc_fit_latency.py).

    python bench/mpc_relu_scaling.py [--arch resnet18 --width-mult 0.25 --repeats 5
                                      --batch-size 1 --out bench/results/...json]

Variants: ``keep<f>`` (exact ReLU on a random fraction f of every site),
``holdout`` (20% exact ReLU + 20% Circa (12, 16) + 10% x^2 per site) and
``last_stage_only`` (all ReLUs of the last stage, identity elsewhere: fewer ReLU
layers, hence fewer rounds).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpc.config import MpcConfig  # noqa: E402
from mpc.crypten_backend import CryptenBackend  # noqa: E402
from mpc_common import machine  # noqa: E402
from pi_opt.activations import Kind  # noqa: E402
from pi_opt.artifacts import ArchSpec, ModelSpec, save_artifact  # noqa: E402
from pi_opt.sites import iter_sites, materialize_all, prepare_sites, stage_of  # noqa: E402


def build(spec: ModelSpec, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = prepare_sites(spec.build()).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    materialize_all(model, torch.zeros(1, *spec.input_shape))
    return model


def assign(model: nn.Module, fractions: dict[Kind, float], seed: int) -> nn.Module:
    """Per site: the given fraction of random positions per kind, identity elsewhere."""
    g = torch.Generator().manual_seed(seed)
    for _, site in iter_sites(model):
        n = site.kinds.numel()
        perm = torch.randperm(n, generator=g)
        kinds = torch.full((n,), int(Kind.IDENTITY), dtype=torch.int8)
        start = 0
        for kind, frac in fractions.items():
            cnt = max(1, round(frac * n))
            kinds[perm[start:start + cnt]] = int(kind)
            start += cnt
        site.set_kinds(kinds.view(site.kinds.shape))
        c = site.input_shape[0]
        site.set_poly(torch.tensor([[0.1, 0.5, 0.1]]).repeat(c, 1))
        site.set_circa(12, 16)
    return model


def make_variant(spec: ModelSpec, name: str, fractions: dict[Kind, float]) -> nn.Module:
    """The benchmark model of one variant (deterministic: seeds 0 and 1)."""
    model = build(spec, seed=0)
    if name == "last_stage_only":
        last = max(stage_of(n) for n, _ in iter_sites(model))
        for n, site in iter_sites(model):
            if stage_of(n) != last:
                site.set_kinds(torch.zeros_like(site.kinds))
    elif fractions != {Kind.RELU: 1.0}:
        assign(model, fractions, seed=1)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--width-mult", type=float, default=0.25)
    ap.add_argument("--input", type=int, nargs=3, default=(3, 32, 32))
    ap.add_argument("--fractions", type=float, nargs="+", default=(1.0, 0.5, 0.1, 0.01))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=4, help="inputs for the agreement check")
    ap.add_argument("--provider", default="TFP")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--out", default="bench/results/mpc_relu_scaling.json")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--circa", type=float, nargs="*", default=(),
                    help="extra variants: this fraction of every site as Circa, rest identity")
    ap.add_argument("--poly", type=float, nargs="*", default=(),
                    help="extra variants: this fraction of every site as x^2 poly, rest identity")
    ap.add_argument("--no-mixed", action="store_true",
                    help="skip the holdout and last_stage_only variants")
    args = ap.parse_args(argv)
    spec = ModelSpec(arch=ArchSpec(name=args.arch, kwargs={"width_mult": args.width_mult}),
                     input_shape=tuple(args.input), num_classes=10)
    variants = {f"keep{f:g}": {Kind.RELU: f} for f in args.fractions}
    variants.update({f"circa{f:g}": {Kind.CIRCA: f} for f in args.circa})
    variants.update({f"poly{f:g}": {Kind.POLY: f} for f in args.poly})
    if not args.no_mixed:
        variants["holdout"] = {Kind.RELU: 0.2, Kind.CIRCA: 0.2, Kind.POLY: 0.1}
        variants["last_stage_only"] = {}  # all ReLUs of the last stage, identity elsewhere
    cfg = MpcConfig(provider=args.provider, repeats=args.repeats, warmup=1, timeout_s=3000,
                    batch_size=args.batch_size, device=args.device)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = []
        for name, fr in variants.items():
            save_artifact(make_variant(spec, name, fr), spec, Path(tmp) / name)
            dirs.append(Path(tmp) / name)
        reports = CryptenBackend().measure_many(dirs, samples=args.samples, config=cfg)
    runs = []
    for (name, fr), rep in zip(variants.items(), reports, strict=True):
        rep.artifact = name
        runs.append({"variant": name, "fractions": {k.name.lower(): v for k, v in fr.items()},
                     "report": rep.model_dump(mode="json")})
    out = {"bench": "mpc_relu_scaling", "command": "python " + " ".join(sys.argv),
           "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "machine": machine(), "spec": spec.model_dump(mode="json"),
           "config": cfg.model_dump(mode="json"), "wall_s": time.time() - t0, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print("| variant | kept ReLUs | total s | linear s | non-linear s | rounds | "
          "MB sent/party | linear MB | non-linear MB | agreement | max logit err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        rep = r["report"]
        m = rep["measurement"]
        print(f"| {r['variant']} | {rep['counts']['relu'] + rep['counts']['circa']:,} | "
              f"{m['latency_s']:.3f} | {m['latency_linear_s']:.3f} | "
              f"{m['latency_nonlinear_s']:.3f} | {m['rounds']} | "
              f"{m['bytes_per_party'] / 1e6:.2f} | {m['bytes_linear'] / 1e6:.2f} | "
              f"{m['bytes_nonlinear'] / 1e6:.2f} | {m['plaintext_agreement']:.2f} | "
              f"{m['max_logit_error']:.1e} |")
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
