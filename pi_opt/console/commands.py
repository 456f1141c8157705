"""Parsers and implementations of ``pi-opt train|count|optimize|report|list``.

Each ``add_*`` function adds one subcommand to an argparse ``subparsers``; its
``cmd_*`` function runs it from the parsed ``argparse.Namespace`` and returns the exit
code. Heavy imports (torch models, optuna) happen inside the commands.
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path
from typing import Any

from pi_opt.errors import ConfigError, PiOptError


def _check_arch(name: str, kwargs: dict[str, Any], source: str | None = None) -> None:
    """The shared architecture check (``pi_opt.models.check_arch``) as one error line.

    ``source`` prefixes the line (a config file's ``file: model.arch``); without it the
    line names the offending option (``--arch`` or ``--kwargs``).
    """
    from pi_opt.console.config_file import ConfigFileError
    from pi_opt.models import check_arch

    try:
        check_arch(name, kwargs)
    except PiOptError as exc:
        where = source or ("--arch" if exc.code == "unknown-name" else "--kwargs")
        raise ConfigFileError([f"{where}: {exc.message}"]) from None


# ---- optimize ----------------------------------------------------------------------
def add_optimize(sub: Any, make_measure: Any) -> None:
    """``pi-opt optimize --config FILE``."""
    o = sub.add_parser("optimize", help="search ReLU-reduced networks into a Pareto front",
                       description="Train (or load) the baseline, run the search trials and "
                       "write the report to <workdir>/report/report.html.")
    from pi_opt.console.argtypes import positive_float, positive_int

    o.add_argument("--config", required=True, metavar="FILE",
                   help="YAML/JSON search config (see configs/)")
    o.add_argument("--workdir", help="job directory; an existing one is resumed "
                   "(default: runs/<config file name>)")
    o.add_argument("--storage", help="Optuna storage URL shared by workers "
                   "(default: a journal file in the workdir)")
    o.add_argument("--n-trials", type=positive_int, help="override the config's n_trials")
    o.add_argument("--timeout", type=positive_float, metavar="SECONDS",
                   help="stop starting new trials after this many seconds")
    o.add_argument("--measure", choices=["none", "front", "all"],
                   help="override measure_mpc: measure points under CrypTen 2PC")
    o.add_argument("--quiet", action="store_true", help="no progress output")
    o.set_defaults(func=cmd_optimize, make_measure=make_measure)


def cmd_optimize(args: argparse.Namespace) -> int:
    """Run a search job and print its front (accuracy in %)."""
    from pi_opt.console.config_file import load_model, read_mapping
    from pi_opt.console.progress import ProgressDisplay
    from pi_opt.search import SearchConfig, SearchSession

    raw = read_mapping(args.config)
    if args.n_trials is not None:
        raw["n_trials"] = args.n_trials
    if args.measure is not None:
        raw["measure_mpc"] = args.measure
    config = load_model(SearchConfig, raw, str(args.config))
    if config.model is not None:  # before any data loads
        _check_arch(config.model.arch.name, config.model.arch.kwargs, f"{args.config}: model.arch")
    measure = None
    if config.measure_mpc != "none":
        if args.make_measure is None:
            raise ConfigError("measure_mpc needs the mpc package (pip install 'pi-opt[mpc]')")
        measure = args.make_measure(config.mpc)
    workdir = Path(args.workdir or Path("runs") / Path(args.config).stem)
    progress = ProgressDisplay(args.quiet)
    try:
        session = SearchSession.open(config, workdir=workdir, storage=args.storage,
                                     progress=progress)
        session.run_trials(timeout_s=args.timeout)
        report = session.finalize(measure=measure)
    finally:
        progress.close()
    print(f"report: {workdir / 'report' / 'report.html'}")
    print_front(report)
    return 0


def print_front(report: Any) -> None:
    """The front and the baseline as a table: ReLUs, val/test accuracy in %, MPC latency."""
    from pi_opt.formatting import fmt_int, fmt_pct

    def mpc(m: Any) -> str:
        return f"  mpc {m.latency_s:.3f}s" if m is not None else ""

    print(f"{'trial':>6} {'chain':<28} {'ReLUs':>10} {'val':>7} {'test':>7}")
    for p in report.front():
        print(f"{p.trial:>6} {'+'.join(p.chain):<28} {fmt_int(p.relus):>10} "
              f"{fmt_pct(p.val_accuracy):>7} {fmt_pct(p.test_accuracy):>7}{mpc(p.mpc)}")
    b = report.baseline
    print(f"{'base':>6} {'all-ReLU':<28} {fmt_int(b.relus):>10} {fmt_pct(b.val_accuracy):>7} "
          f"{fmt_pct(b.test_accuracy):>7}{mpc(b.mpc)}")


# ---- plan --------------------------------------------------------------------------
def add_plan(sub: Any) -> None:
    """``pi-opt plan --config FILE`` (dry run, :func:`pi_opt.plan.plan_job`)."""
    pl = sub.add_parser("plan", help="dry run: ReLUs, budgets, epochs, images and time of a "
                        "job, without data or training")
    pl.add_argument("--config", required=True, metavar="FILE",
                    help="YAML/JSON search config (see configs/)")
    pl.add_argument("--steps", type=int, default=3,
                    help="training steps timed on this device (0: no time estimate)")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")
    pl.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the job plan (table or JSON)."""
    from pi_opt.console.config_file import load_model, read_mapping
    from pi_opt.plan import plan_job, render_plan
    from pi_opt.search import SearchConfig

    config = load_model(SearchConfig, read_mapping(args.config), str(args.config))
    if config.model is not None:
        _check_arch(config.model.arch.name, config.model.arch.kwargs, f"{args.config}: model.arch")
    plan = plan_job(config, measure_steps=args.steps)
    print(plan.model_dump_json(indent=2) if args.json else render_plan(plan))
    return 0


# ---- train -------------------------------------------------------------------------
def add_train(sub: Any) -> None:
    """``pi-opt train``."""
    from pi_opt.console.argtypes import json_object, positive_float

    t = sub.add_parser("train", help="train an all-ReLU baseline and save it as an artifact",
                       description="Train an all-ReLU network on a data set and save it as "
                       "an artifact directory (model.json + weights.safetensors).")
    t.add_argument("--arch", default="resnet_mini", help="architecture (see: pi-opt list)")
    t.add_argument("--kwargs", type=json_object, default={}, metavar="JSON",
                   help="architecture keyword arguments as a JSON object")
    t.add_argument("--data", default="digits", help="data set kind (digits, synthetic, "
                   "cifar10, cifar100, imagefolder, npz, ...)")
    t.add_argument("--data-path", help="data set path, for the file-based kinds")
    t.add_argument("--epochs", type=int, default=30, help="training epochs")
    t.add_argument("--lr", type=positive_float, default=0.05, help="peak learning rate")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    t.add_argument("--out", default="runs/train",
                   help="output folder; the artifact goes to <out>/baseline")
    t.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    """Train the baseline; print its artifact path, counts and accuracies as JSON."""
    from pi_opt.artifacts import ArchSpec, ModelSpec
    from pi_opt.console.config_file import load_model
    from pi_opt.console.progress import ProgressDisplay
    from pi_opt.data import DatasetSpec, load_dataset
    from pi_opt.search import SearchConfig, obtain_baseline, resolve_spec
    from pi_opt.training import TrainConfig

    _check_arch(args.arch, args.kwargs)  # before any data loads
    data_spec = load_model(DatasetSpec, {"kind": args.data, "path": args.data_path}, "--data")
    baseline = TrainConfig(epochs=args.epochs, lr=args.lr, device=args.device)
    data = load_dataset(data_spec)
    model = ModelSpec(arch=ArchSpec(name=args.arch, kwargs=args.kwargs),
                      input_shape=data.input_shape, num_classes=data.num_classes)
    config = SearchConfig(data=data_spec, model=model, baseline=baseline, techniques=[])
    out = Path(args.out)
    progress = ProgressDisplay()
    try:
        art = obtain_baseline(config, resolve_spec(config, data), data, out, progress=progress)
    finally:
        progress.close()
    m = art.manifest
    print(json.dumps({"artifact": str(out / "baseline"), "relus": m.profile.relus,
                      "macs": m.profile.macs, "val_accuracy": m.metrics["val_accuracy"],
                      "test_accuracy": m.metrics["test_accuracy"]}, indent=2))
    return 0


# ---- count -------------------------------------------------------------------------
def add_count(sub: Any) -> None:
    """``pi-opt count``."""
    from pi_opt.console.argtypes import input_shape, json_object

    c = sub.add_parser("count", help="count ReLUs, polynomial mults and MACs per sample",
                       description="Per-site counts of an artifact, or of a registered "
                       "architecture at an input shape (all per sample).")
    c.add_argument("artifact", nargs="?", help="artifact directory (with model.json); "
                   "without it --arch/--kwargs/--input-shape are counted")
    c.add_argument("--arch", default="resnet18", help="architecture (see: pi-opt list)")
    c.add_argument("--kwargs", type=json_object, default={}, metavar="JSON",
                   help="architecture keyword arguments as a JSON object")
    c.add_argument("--input-shape", type=input_shape, default=(3, 32, 32), metavar="C,H,W",
                   help="input shape, e.g. 3,32,32 or 3x32x32")
    c.add_argument("--json", action="store_true", help="print the profile as JSON")
    c.set_defaults(func=cmd_count)


def cmd_count(args: argparse.Namespace) -> int:
    """Print the per-site table and totals (or the JSON profile)."""
    from pi_opt.formatting import fmt_int

    if args.artifact:
        from pi_opt.artifacts import read_manifest

        prof = read_manifest(args.artifact).profile
    else:
        from pi_opt.models import create_model
        from pi_opt.profile import profile_model

        _check_arch(args.arch, args.kwargs)
        model = create_model(args.arch, **{"in_channels": args.input_shape[0], **args.kwargs})
        prof = profile_model(model, args.input_shape)
    if args.json:
        print(prof.model_dump_json(indent=2))
        return 0
    print(f"{'site':<24} {'stage':<8} {'elements':>9} {'relu':>9} {'circa':>7} {'poly':>7}")
    for s in prof.sites:
        print(f"{s.name:<24} {s.stage:<8} {s.elements:>9} {s.relu:>9} {s.circa:>7} {s.poly:>7}")
    print(f"ReLUs per sample: {prof.relus}  (exact {prof.exact_relus}, Circa {prof.circa_relus}); "
          f"poly mults {fmt_int(prof.poly_mults)}; MACs {fmt_int(prof.macs)}; "
          f"max-pool comparisons {fmt_int(prof.maxpool_comparisons)}")
    return 0


# ---- report ------------------------------------------------------------------------
def add_report(sub: Any) -> None:
    """``pi-opt report JOB_DIR``."""
    r = sub.add_parser("report", help="re-render a job's report from its pareto.json",
                       description="Re-render report.html, trials.csv and the figures of a "
                       "finished job from <job>/report/pareto.json.")
    r.add_argument("workdir", metavar="JOB_DIR", help="job folder (the --workdir of optimize)")
    r.add_argument("--out", help="output folder (default: <JOB_DIR>/report)")
    r.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    """Re-render every report format; print the written files."""
    from pi_opt.report import read_report, render_all

    job = Path(args.workdir)
    src = job / "report" / "pareto.json"
    if not src.is_file():
        what = "does not exist" if not job.exists() else "is not a job folder"
        raise PiOptError(f"{job} {what} (no report/pareto.json; "
                         "pass the --workdir of a finished `pi-opt optimize`)")
    report = read_report(src)
    out = render_all(report, Path(args.out) if args.out else src.parent, job_dir=job)
    for name, path in out.items():
        print(f"{name}: {path}")
    return 0


# ---- list --------------------------------------------------------------------------
def add_list(sub: Any) -> None:
    """``pi-opt list``."""
    ls = sub.add_parser("list", help="list architectures and techniques with a description",
                        description="Registered architectures and ReLU-reduction techniques.")
    ls.set_defaults(func=cmd_list)


def _first_line(obj: Any) -> str:
    doc = (inspect.getdoc(obj) or "").strip()
    return doc.splitlines()[0] if doc else ""


def cmd_list(args: argparse.Namespace) -> int:
    """Print one line per architecture and technique."""
    from pi_opt.models import describe_model, list_models
    from pi_opt.techniques import TECHNIQUES, list_techniques

    print("architectures:")
    for name in list_models():
        print(f"  {name:<14} {describe_model(name)}")
    print("techniques:")
    for name in list_techniques():
        print(f"  {name:<14} {_first_line(TECHNIQUES.get(name))}")
    return 0
