"""The ``pi-opt`` console entry point: one parser composed from each package's commands.

``pi_opt.cli.add_commands`` (train, count, optimize, report, list, ...),
``mpc.cli.add_commands`` (mpc) and ``service.cli.add_commands`` (serve, worker, keys,
openapi). This top-level module is the only place that knows all three packages: the
library never imports ``mpc`` or ``service``; the MPC measurement for
``pi-opt optimize --measure`` is injected here. A package whose optional dependencies
are missing still lists its commands, which then say what to install.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import Any

from pi_opt import cli

#: (module, commands it adds, pip extra that provides its dependencies)
OPTIONAL = (("mpc.cli", ("mpc",), "mpc"),
            ("service.cli", ("serve", "worker", "keys", "openapi"), "service"))


def make_measure(options: Mapping[str, Any]) -> Callable[..., Any]:
    """The CrypTen measurement of ``optimize --measure`` (``mpc.measure.make_measure``)."""
    from mpc.measure import make_measure as make

    return make(dict(options))


def _unavailable(sub: Any, names: Sequence[str], extra: str, reason: str) -> None:
    def fail(args: argparse.Namespace) -> int:
        print(f"error: `pi-opt {args.command}` needs the {extra} extra "
              f"(pip install 'pi-opt[{extra}]'): {reason}", file=sys.stderr)
        return 2

    for name in names:
        p = sub.add_parser(name, help=f"(unavailable: pip install 'pi-opt[{extra}]')",
                           add_help=True)
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(func=fail)


def _wanted(module: str, names: Sequence[str], command: str | None) -> bool:
    """Whether ``module`` must be imported to parse ``command`` (None: every module)."""
    known = {n for _, ns, _ in OPTIONAL for n in ns}
    return command is None or command not in known or command in names


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``pi-opt`` parser: every subcommand of every installed package, or, with
    ``command`` (e.g. ``"serve"``), only the package that provides it. ``serve`` thus
    never imports ``mpc`` (whose backend loads torch) into the API process."""
    parser = cli.Parser(prog="pi-opt", description="Private-inference ReLU-budget optimizer: "
                        "search ReLU-reduced networks, report Pareto fronts, measure them "
                        "under 2-party MPC, serve jobs over HTTP.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=cli.Parser)
    cli.add_commands(sub, make_measure=make_measure)
    for module, names, extra in OPTIONAL:
        if not _wanted(module, names, command):
            continue
        try:
            mod = import_module(module)
        except ImportError as exc:
            _unavailable(sub, names, extra, str(exc))
        else:
            mod.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pi-opt`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args if not a.startswith("-")), None)
    return cli.run(build_parser(command), args)


__all__ = ["build_parser", "main", "make_measure"]
