"""The library's ``pi-opt`` subcommands: train, count, optimize, report, list.

:func:`add_commands` adds them to an argparse ``subparsers``; the console entry point
(:mod:`pi_opt_cli`) composes them with the commands of the optional ``mpc`` and
``service`` packages and hands the parser to :func:`run`, which turns every user
mistake into one-line errors (exit code 2) instead of a traceback. This module never
imports ``mpc`` or ``service``: the MPC measurement of ``optimize --measure`` is
injected through ``add_commands(..., make_measure=...)``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pi_opt.errors import ConfigError, PiOptError

#: ``make_measure(options) -> measure(artifact_dir, inputs=None) -> MpcMeasurement``.
MeasureFactory = Callable[[Mapping[str, Any]], Callable[..., Any]]


class HelpFormatter(argparse.HelpFormatter):
    """Help with ``(default: X)`` after every option that has a meaningful default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or not action.option_strings or default is None
                or default is False or default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose (sub)commands all use :class:`HelpFormatter`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


# ---- argument types (argparse turns their ArgumentTypeError into a usage line) ----
def input_shape(text: str) -> tuple[int, int, int]:
    """``"3,32,32"`` or ``"3x32x32"`` -> ``(3, 32, 32)`` (C, H, W; all positive)."""
    parts = text.replace("x", ",").replace("X", ",").split(",")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(
            f"expected C,H,W with three positive integers (e.g. 3,32,32), got {text!r}")
    return dims[0], dims[1], dims[2]


def json_object(text: str) -> dict[str, Any]:
    """A JSON object given on the command line (``'{"widths": [8, 16]}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{}}', got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


# ---- registration --------------------------------------------------------------
def add_commands(subparsers: Any, *, make_measure: MeasureFactory | None = None) -> None:
    """Add ``train``, ``count``, ``optimize``, ``plan``, ``report`` and ``list`` to ``subparsers``.

    ``make_measure`` builds the MPC measurement used by ``optimize --measure``; without
    it a config that asks for MPC measurements is refused with a ConfigError.
    """
    from pi_opt.console import commands as cmds

    cmds.add_train(subparsers)
    cmds.add_count(subparsers)
    cmds.add_optimize(subparsers, make_measure)
    cmds.add_plan(subparsers)
    cmds.add_report(subparsers)
    cmds.add_list(subparsers)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command's ``func(args)``; returns the exit code.

    User mistakes print one line per problem on stderr and return 2 (argparse's usage
    errors exit with 2 as well); Ctrl-C returns 130. Anything else is a bug: it prints
    one line plus how to see the traceback (``PI_OPT_TRACEBACK=1``), and returns 1.
    """
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        lines = getattr(exc, "lines", None) or [f"error: {exc.message}"]
        print("\n".join(lines), file=sys.stderr)
        return 2
    except PiOptError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        from pi_opt.console import validation_lines

        for line in validation_lines(exc, f"error: {exc.title}"):
            print(line, file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("PI_OPT_TRACEBACK"):
            raise
        print(f"internal error: {type(exc).__name__}: {exc} "
              "(set PI_OPT_TRACEBACK=1 for the traceback and please report it)",
              file=sys.stderr)
        return 1


__all__ = ["HelpFormatter", "MeasureFactory", "Parser", "add_commands", "input_shape",
           "json_object", "positive_float", "positive_int", "run"]
