"""``pi-opt`` command line: train, count, optimize, report, and (lazily) serve/worker/mpc."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pi_opt.errors import PiOptError


def _load_yaml_or_json(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise PiOptError(f"config file not found: {p}")
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PiOptError(f"{p}: invalid YAML: {exc}") from exc
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PiOptError(f"{p}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PiOptError(f"{p}: the top level must be a mapping")
    return data


class _Progress:
    """Console progress: a tqdm bar over trials plus epoch/phase status."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None

    def __call__(self, e: dict[str, Any]) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        kind = e.get("type")
        if kind == "phase":
            if e["phase"] == "search" and self.bar is None:
                self.bar = tqdm(total=e.get("total"), initial=e.get("done", 0), unit="trial",
                                desc="search", file=sys.stderr, dynamic_ncols=True)
            elif self.bar is None:
                print(f"[pi-opt] {e['phase']}", file=sys.stderr)
        elif kind == "epoch" or (kind is None and "epoch" in e) or e.get("phase") in (
                "baseline", "finetune"):
            msg = (f"{e.get('phase', '')} epoch {e.get('epoch')}/{e.get('epochs')} "
                   f"val={e.get('val_accuracy', float('nan')):.3f}")
            if self.bar is not None:
                self.bar.set_postfix_str(msg, refresh=True)
            elif e.get("phase") == "baseline":
                print(f"  {msg}", file=sys.stderr)
        elif kind == "trial" and self.bar is not None:
            self.bar.n = e["done"]
            best = e.get("best") or {}
            self.bar.set_postfix_str(
                f"last: {e.get('chain')} @ {e.get('budget')} -> {e.get('state')}"
                f" best val {best.get('best_val_accuracy', 0):.3f}", refresh=True)
        elif kind == "measure" and not self.quiet:
            print(f"[pi-opt] MPC measurement {e['index']}/{e['of']}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _cmd_optimize(args: argparse.Namespace) -> int:
    from pi_opt.search import SearchConfig, SearchSession

    raw = _load_yaml_or_json(args.config)
    if args.n_trials is not None:
        raw["n_trials"] = args.n_trials
    if args.measure is not None:
        raw["measure_mpc"] = args.measure
    config = SearchConfig.model_validate(raw)
    workdir = Path(args.workdir or Path("runs") / Path(args.config).stem)
    progress = _Progress(args.quiet)
    measure = None
    if config.measure_mpc != "none":
        from mpc.measure import make_measure  # lazy: CrypTen stays out of pi_opt

        measure = make_measure(config.mpc)
    try:
        session = SearchSession.open(config, workdir=workdir, storage=args.storage,
                                     progress=progress)
        session.run_trials(timeout_s=args.timeout)
        report = session.finalize(measure=measure)
    finally:
        progress.close()
    print(f"report: {workdir / 'report' / 'report.html'}")
    print(f"{'trial':>6} {'chain':<28} {'ReLUs':>9} {'val':>7} {'test':>7}")
    for p in report.front():
        print(f"{p.trial:>6} {'+'.join(p.chain):<28} {p.relus:>9} {p.val_accuracy:>7.4f} "
              f"{p.test_accuracy:>7.4f}" + (f"  mpc {p.mpc.latency_s:.3f}s" if p.mpc else ""))
    b = report.baseline
    print(f"{'base':>6} {'all-ReLU':<28} {b.relus:>9} {b.val_accuracy:>7.4f} {b.test_accuracy:>7.4f}"
          + (f"  mpc {b.mpc.latency_s:.3f}s" if b.mpc else ""))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from pi_opt.plan import plan_job, render_plan
    from pi_opt.search import SearchConfig

    config = SearchConfig.model_validate(_load_yaml_or_json(args.config))
    plan = plan_job(config, measure_steps=args.steps)
    print(plan.model_dump_json(indent=2) if args.json else render_plan(plan))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pi_opt.artifacts import ArchSpec, ModelSpec
    from pi_opt.data import DatasetSpec
    from pi_opt.search import SearchConfig
    from pi_opt.search._baseline import obtain_baseline, resolve_spec
    from pi_opt.training import TrainConfig

    from pi_opt.data import load_dataset

    data_spec = DatasetSpec(kind=args.data, path=args.data_path)
    data = load_dataset(data_spec)
    model = ModelSpec(arch=ArchSpec(name=args.arch, kwargs=json.loads(args.kwargs)),
                      input_shape=data.input_shape, num_classes=data.num_classes)
    config = SearchConfig(data=data_spec, model=model, baseline=TrainConfig(
        epochs=args.epochs, lr=args.lr, device=args.device), techniques=[])
    spec = resolve_spec(config, data)
    out = Path(args.out)
    art = obtain_baseline(config, spec, data, out, progress=_Progress(False))
    m = art.manifest
    print(json.dumps({"artifact": str(out / "baseline"), "relus": m.profile.relus,
                      "macs": m.profile.macs, "val_accuracy": m.metrics["val_accuracy"],
                      "test_accuracy": m.metrics["test_accuracy"]}, indent=2))
    return 0


def _cmd_count(args: argparse.Namespace) -> int:
    from pi_opt.profile import profile_model

    if args.artifact:
        from pi_opt.artifacts import read_manifest

        prof = read_manifest(args.artifact).profile
    else:
        from pi_opt.models import create_model

        shape = tuple(int(s) for s in args.input_shape.split(","))
        model = create_model(args.arch, in_channels=shape[0], **json.loads(args.kwargs))
        prof = profile_model(model, shape)
    if args.json:
        print(prof.model_dump_json(indent=2))
        return 0
    print(f"{'site':<24} {'stage':<8} {'elements':>9} {'relu':>9} {'circa':>7} {'poly':>7}")
    for s in prof.sites:
        print(f"{s.name:<24} {s.stage:<8} {s.elements:>9} {s.relu:>9} {s.circa:>7} {s.poly:>7}")
    print(f"ReLUs per sample: {prof.relus}  (exact {prof.exact_relus}, Circa {prof.circa_relus}); "
          f"poly mults {prof.poly_mults}; MACs {prof.macs}; max-pool comparisons "
          f"{prof.maxpool_comparisons}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pi_opt.report import read_report, render_all

    src = Path(args.workdir) / "report" / "pareto.json"
    report = read_report(src)
    out = render_all(report, Path(args.out) if args.out else src.parent)
    for name, path in out.items():
        print(f"{name}: {path}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from pi_opt.models import list_models
    from pi_opt.techniques import list_techniques

    print("architectures:", ", ".join(list_models()))
    print("techniques:   ", ", ".join(list_techniques()))
    return 0


#: Commands owned by optional packages, forwarded with their arguments (imported lazily).
FORWARDED = {"serve": "service.cli", "worker": "service.cli", "mpc": "mpc.cli"}


def _forward(command: str, rest: Sequence[str]) -> int:
    from importlib import import_module

    return int(import_module(FORWARDED[command]).main([command, *rest]) or 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pi-opt", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    o = sub.add_parser("optimize", help="search ReLU-reduced networks into a Pareto front")
    o.add_argument("--config", required=True, help="YAML/JSON SearchConfig (see configs/)")
    o.add_argument("--workdir", help="job directory (default runs/<config name>)")
    o.add_argument("--storage", help="Optuna storage URL (default: journal file in workdir)")
    o.add_argument("--n-trials", type=int)
    o.add_argument("--timeout", type=float, help="seconds")
    o.add_argument("--measure", choices=["none", "front", "all"],
                   help="measure points under CrypTen 2PC")
    o.add_argument("--quiet", action="store_true")
    o.set_defaults(func=_cmd_optimize)

    pl = sub.add_parser("plan", help="dry run: ReLUs, budgets, epochs, images and time of a "
                        "job, without data or training")
    pl.add_argument("--config", required=True, help="YAML/JSON SearchConfig (see configs/)")
    pl.add_argument("--steps", type=int, default=3,
                    help="training steps timed on this device (0: no time estimate)")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=_cmd_plan)

    t = sub.add_parser("train", help="train an all-ReLU baseline and save it as an artifact")
    t.add_argument("--arch", default="resnet_mini")
    t.add_argument("--kwargs", default="{}", help="JSON architecture kwargs")
    t.add_argument("--data", default="digits")
    t.add_argument("--data-path")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--device", default="auto")
    t.add_argument("--out", default="runs/train")
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser("count", help="count ReLUs / polynomial mults / MACs per sample")
    c.add_argument("artifact", nargs="?", help="artifact directory (model.json)")
    c.add_argument("--arch", default="resnet18")
    c.add_argument("--kwargs", default="{}")
    c.add_argument("--input-shape", default="3,32,32")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_cmd_count)

    r = sub.add_parser("report", help="re-render a job's report from pareto.json")
    r.add_argument("workdir")
    r.add_argument("--out")
    r.set_defaults(func=_cmd_report)

    ls = sub.add_parser("list", help="list architectures and techniques")
    ls.set_defaults(func=_cmd_list)

    for command, help_ in (("serve", "run the REST service (see: pi-opt serve --help)"),
                           ("worker", "run a job worker (see: pi-opt worker --help)"),
                           ("mpc", "CrypTen 2PC measure / demo (see: pi-opt mpc --help)")):
        sub.add_parser(command, help=help_, add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in FORWARDED:
            return _forward(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except ValidationError as exc:
        print(f"error: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except PiOptError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
