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
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pi_opt.console.argtypes import input_shape, json_object, positive_float, positive_int
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
