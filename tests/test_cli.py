"""The ``pi-opt`` CLI: composed parser, help everywhere, one-line errors, progress display,
and the import boundary (pi_opt never imports mpc or service)."""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import sys
from pathlib import Path

import pytest

from pi_opt_cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"subcommand {' '.join((*path, name))} has no help"
                yield from _walk(sub, (*path, name))


def test_every_command_and_option_has_help_and_pi_opt_usage() -> None:
    seen = set()
    for path, parser in _walk(build_parser()):
        seen.add(" ".join(path))
        assert parser.format_usage().startswith("usage: pi-opt"), path
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{' '.join(path)} {action.dest}: no help"
        text = parser.format_help()
        if "--epochs" in text:
            assert "(default: 30)" in text  # defaults are shown
    assert {"train", "count", "optimize", "report", "list", "mpc measure", "mpc demo", "serve",
            "worker"} <= seen


@pytest.mark.parametrize(("argv", "expect"), [
    (["count", "--input-shape", "3x32"], "expected C,H,W"),
    (["count", "--kwargs", "[1]"], "expected a JSON object"),
    (["count", "--kwargs", "{bad"], "not valid JSON"),
    (["count", "--arch", "resnt18"], "did you mean 'resnet18'"),
    (["count", "--kwargs", '{"widht": 2}'], "--kwargs: architecture 'resnet18' does not accept"),
    (["count", "/nonexistent/artifact"], "artifact manifest not found"),
    (["report", "."], "is not a job folder"),
    (["report", "/nonexistent/job"], "does not exist"),
    (["optimize", "--config", "/nonexistent.yaml"], "/nonexistent.yaml: file not found"),
    (["optimize", "--config", "x.yaml", "--n-trials", "0"], "must be >= 1"),
    (["optimize", "--config", "x.yaml", "--timeout", "nan"], "finite number > 0"),
    (["train", "--arch", "nope"], "--arch: unknown architecture 'nope'"),
    (["train", "--data", "nope"], "--data: kind: Input should be"),
    (["train", "--data", "cifar10", "--data-path", "/nonexistent"], "does not exist"),
])
def test_user_mistakes_are_one_line_errors(argv: list[str], expect: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(argv, capsys)
    assert rc == 2, err
    assert expect in err and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
    assert len(lines) == 1, err  # one error line (argparse adds the usage above it)


def test_count_accepts_x_separated_shape(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(["count", "--arch", "resnet18", "--input-shape", "3x32x32"], capsys)
    assert rc == 0 and "ReLUs per sample: 491520" in out


def test_config_errors_are_file_key_message_lines(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("budgest: [0.1]\nbaseline: {epoch: 3}\n"
                   "model: {arch: {name: resnet_mini, kwarg: {}}, input_shape: [1, 8, 8], "
                   "num_classes: 10}\n")
    rc, _, err = _run(["optimize", "--config", str(bad)], capsys)
    assert rc == 2 and "https://" not in err
    assert sorted(err.strip().splitlines()) == sorted([
        f"{bad}: budgest: unknown key (did you mean 'budgets'?)",
        f"{bad}: baseline.epoch: unknown key (did you mean 'epochs'?)",
        f"{bad}: model.arch.kwarg: unknown key (did you mean 'kwargs'?)",
    ])
    bad.write_text("techniques: [nope]\n")
    rc, _, err = _run(["optimize", "--config", str(bad)], capsys)
    assert rc == 2 and err.startswith(f"{bad}: unknown technique(s) ['nope']")
    bad.write_text("- a list\n")
    rc, _, err = _run(["optimize", "--config", str(bad)], capsys)
    assert rc == 2 and "top level must be a mapping" in err
    bad.write_text("a: [unclosed\n")
    rc, _, err = _run(["optimize", "--config", str(bad)], capsys)
    assert rc == 2 and err.startswith(f"{bad}: cannot parse:") and len(err.splitlines()) == 1


@pytest.mark.parametrize("budgets", ["[1.5]", "[.nan]", "[.inf]", "[-0.2]"])
def test_refused_budgets_are_one_line_errors(budgets: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Non-integer budgets above 1, NaN, infinity and negatives never reach training."""
    bad = tmp_path / "budgets.yaml"
    bad.write_text(f"budgets: {budgets}\n")
    rc, _, err = _run(["optimize", "--config", str(bad), "--workdir", str(tmp_path / "w")],
                      capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"{bad}: budgets"), err
    assert not (tmp_path / "w" / "baseline").exists()


def test_architecture_checked_before_data_loads(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "arch.yaml"
    # the data path does not exist: had the data loaded first, the error would be about it
    cfg.write_text("data: {kind: npz, path: /nonexistent/data.npz}\n"
                   "model: {arch: {name: resnet_mini, kwargs: {widht: [4, 8, 16]}}, "
                   "input_shape: [1, 8, 8], num_classes: 10}\n")
    rc, _, err = _run(["optimize", "--config", str(cfg), "--workdir", str(tmp_path / "w")],
                      capsys)
    assert rc == 2
    assert err.strip() == (f"{cfg}: model.arch: architecture 'resnet_mini' does not accept "
                           "['widht'] (did you mean 'widths'?); accepted: ['blocks', "
                           "'in_channels', 'input_downsample', 'num_classes', 'stem_relu', "
                           "'width_mult', 'widths']")
    assert not (tmp_path / "w").exists()


def test_measure_needs_an_injected_backend(tmp_path: Path) -> None:
    from pi_opt import cli

    parser = cli.Parser(prog="pi-opt")
    cli.add_commands(parser.add_subparsers(dest="command", required=True))  # no make_measure
    cfg = tmp_path / "m.yaml"
    cfg.write_text("measure_mpc: front\n")
    assert cli.run(parser, ["optimize", "--config", str(cfg)]) == 2


def test_list_describes_every_entry(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(["list"], capsys)
    entries = [line.split(None, 1) for line in out.splitlines() if line.startswith("  ")]
    assert rc == 0 and len(entries) >= 10
    assert all(len(e) == 2 and len(e[1]) > 10 for e in entries), entries


def test_progress_display_lines() -> None:
    from pi_opt.console import ProgressDisplay

    stream = io.StringIO()
    show = ProgressDisplay(stream=stream)
    show({"phase": "baseline", "epoch": 3.0, "epochs": 15, "val_accuracy": 0.5})
    show({"type": "phase", "phase": "search", "done": 0, "total": 2, "budgets": [100, 5000],
          "baseline_relus": 4000})
    show({"type": "trial_start", "trial": 0, "chain": ["snl"], "budget": 100})
    assert "trial 0: snl @ 100 ReLUs (2.5% of baseline)" in show.current
    show({"phase": "finetune", "epoch": 2.0, "epochs": 8, "val_accuracy": 0.91})
    show({"type": "trial", "trial": 0, "state": "complete", "done": 1, "total": 2,
          "relus": 98, "val_accuracy": 0.9, "chain": "snl", "budget": 100,
          "best": {"best_val_accuracy": 0.9}})
    show({"type": "log", "level": "warning", "message": "careful"})
    show.close()
    text = stream.getvalue()
    assert "baseline epoch 3/15 val 50.00%" in text  # whole epochs, accuracy in %
    assert "budgets: 100 ReLUs (2.5% of baseline); 5,000 ReLUs (125.0% of baseline)" in text
    assert "trial 0 snl @ 100: 98 ReLUs, val 90.00%" in text
    assert "[pi-opt] warning: careful" in text
    assert show.eta_s() is None  # closed


def test_pi_opt_never_imports_mpc_or_service() -> None:
    # statically: no import of mpc/service anywhere in pi_opt, lazy ones included
    for path in (ROOT / "pi_opt").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("mpc", "service", "pi_opt_cli"), (path, name)
    # dynamically: every pi_opt module imports with mpc and service blocked
    code = (
        "import sys, pkgutil, importlib\n"
        "sys.modules['mpc'] = None; sys.modules['service'] = None\n"
        "import pi_opt\n"
        "mods = [m.name for m in pkgutil.walk_packages(pi_opt.__path__, 'pi_opt.')]\n"
        "for name in mods: importlib.import_module(name)\n"
        "assert len(mods) > 40, mods\n"
        "print(len(mods))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]


def test_entry_without_optional_packages_says_what_to_install() -> None:
    code = ("import sys; sys.modules['mpc'] = None; sys.modules['service'] = None\n"
            "from pi_opt_cli import main\n"
            "sys.exit(main(['serve']))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "pip install 'pi-opt[service]'" in r.stderr, r.stderr
