"""Command line: ``pi-opt mpc measure`` and ``pi-opt mpc demo`` (also ``python -m mpc ...``).

:func:`add_commands` adds the ``mpc`` command with both subcommands to the ``pi-opt``
parser (composed in :mod:`pi_opt_cli`). Output is JSON on stdout; errors are one line
on stderr with exit code 2 (``pi_opt.cli.run``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mpc.config import NETWORK_PRESETS, MpcConfig
from pi_opt.errors import ConfigError, PiOptError
from pi_opt.network import resolve_network


def _config(args: argparse.Namespace) -> MpcConfig:
    network: Any = args.network
    if network is not None and network.lower() not in NETWORK_PRESETS:
        try:  # "RTT_MS,BANDWIDTH_MBPS"
            rtt, bw = (float(v) for v in network.split(","))
        except ValueError:
            raise ConfigError(f"--network {network!r}: use one of {sorted(NETWORK_PRESETS)} "
                              "or RTT_MS,BANDWIDTH_MBPS (e.g. 20,200)") from None
        network = resolve_network({"rtt_ms": rtt, "bandwidth_mbps": bw})
    try:
        return MpcConfig(
            provider=args.provider, device=args.device, weights=args.weights,
            repeats=getattr(args, "repeats", 1), warmup=args.warmup, network=network,
            emulate_network=args.emulate, timeout_s=args.timeout,
            batch_size=getattr(args, "batch_size", 1), threads=args.threads)
    except ValidationError as exc:
        raise ConfigError(f"invalid mpc options: {exc.errors()[0]['msg']}") from None


def _dataset(args: argparse.Namespace) -> Any:
    if args.dataset is None:
        return None
    from pi_opt.data import DatasetSpec

    return DatasetSpec(kind=args.dataset, path=args.data_path)


def _write(obj: dict[str, Any], path: str | None) -> None:
    text = json.dumps(obj, indent=2)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    print(text)


def cmd_measure(args: argparse.Namespace) -> int:
    """``pi-opt mpc measure``: measure one artifact in 2 parties, write JSON (stdout or ``--json``).

        Latency in seconds, rounds and bytes per timed inference of ``batch_size`` images, plaintext
        agreement on ``--samples`` inputs (dataset images when a dataset is given, else N(0, 1)).
        ``--ops`` writes the full per-op report. Returns the exit code 0.
    """
    from mpc.crypten_backend import CryptenBackend
    from mpc.demo import default_image

    samples: Any = args.samples
    ds = _dataset(args)
    if ds is not None and args.samples > 0:
        import torch

        samples = torch.stack([default_image(args.artifact_dir, index=i, dataset=ds)[0]
                               for i in range(args.samples)])
    report = CryptenBackend().measure_report(args.artifact_dir, samples=samples,
                                             config=_config(args))
    _write(report.model_dump(mode="json") if args.ops else
           {"artifact": report.artifact, "weights": report.weights,
            **report.measurement.model_dump(mode="json"),
            "latency_other_s": report.latency_other_s, "estimated_s": report.estimated_s,
            "counts": report.counts}, args.json)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``pi-opt mpc demo``: encrypted inference of one image (``--index``) and write JSON.

        The JSON holds the image index, its label and the :class:`~mpc.results.DemoResult`.
        Returns the exit code 0.
    """
    from mpc.demo import default_image, run_demo

    image, label = default_image(args.artifact_dir, index=args.index, dataset=_dataset(args))
    result = run_demo(args.artifact_dir, image, config=_config(args))
    _write({"index": args.index, "label": label, **result.model_dump(mode="json")}, args.json)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact_dir", help="pi_opt artifact directory (model.json + weights)")
    p.add_argument("--provider", choices=["TFP", "TTP"], default="TFP",
                   help="Beaver-triple source: TFP (trusted first party) or TTP (dealer process)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="device of both parties")
    p.add_argument("--weights", choices=["private", "public"], default="private",
                   help="private: server encrypts weights (2PC); public: plaintext weights")
    p.add_argument("--network", default=None, metavar="PROFILE",
                   help="link for the latency estimate: loopback, lan, wan or "
                        "RTT_MS,BANDWIDTH_MBPS")
    p.add_argument("--emulate", action="store_true",
                   help="emulate --network between the parties (delay + pacing of every "
                        "message) so the measured latency includes it")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones")
    p.add_argument("--threads", type=int, default=1, help="torch threads per party")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole run")
    p.add_argument("--dataset", default=None,
                   help="pi_opt data set kind for real images (digits, cifar10, ...)")
    p.add_argument("--data-path", default=None, help="data set path for file-based kinds")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the JSON here")


def _add_subcommands(subparsers: Any) -> None:
    """Add ``measure`` and ``demo`` to ``subparsers``."""
    m = subparsers.add_parser("measure", help="encrypted latency/bytes/agreement of a model")
    _common(m)
    m.add_argument("--samples", type=int, default=16,
                   help="inputs for the plaintext-agreement check (N(0,1) unless --dataset)")
    m.add_argument("--repeats", type=int, default=3,
                   help="timed encrypted runs (the report shows their min-max spread)")
    m.add_argument("--batch-size", type=int, default=1, help="inputs per encrypted run")
    m.add_argument("--ops", action="store_true", help="include the per-op breakdown")
    m.set_defaults(func=cmd_measure)
    d = subparsers.add_parser("demo", help="encrypted inference of one test image")
    _common(d)
    d.add_argument("--index", type=int, default=0, help="test-split image index")
    d.set_defaults(func=cmd_demo)


def add_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``mpc {measure,demo}`` to the ``pi-opt`` parser's ``subparsers``."""
    p = subparsers.add_parser("mpc", help="2-party encrypted inference with CrypTen",
                              description="Measure or demonstrate encrypted inference of a "
                              "pi_opt artifact under CrypTen 2PC (two local party processes).")
    _add_subcommands(p.add_subparsers(dest="mpc_command", required=True, metavar="COMMAND"))
    return p


__all__ = ["add_commands"]
