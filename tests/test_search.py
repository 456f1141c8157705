"""Search engine: Pareto fronts, resume after a dead attempt, cancellation, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from optuna.trial import TrialState
from pydantic import ValidationError

from pi_opt.artifacts import load_artifact
from pi_opt.errors import Cancelled
from pi_opt.report import read_report
from pi_opt.search import SearchConfig, SearchSession, run_search

from tiny import TINY_SEARCH as TINY  # noqa: E402


def _cfg(**kw) -> SearchConfig:
    return SearchConfig.model_validate({**TINY, **kw})


def test_front_report_and_resume(tmp_path) -> None:
    # SNL's descent runs until every budget is met (bounded): keep it short here
    cfg = _cfg(techniques=["deepreduce", {"chain": ["snl"],
                                          "params": {"snl": {"max_search_epochs": 20}}}],
               budgets=[0.1, 0.3])
    events: list[dict] = []
    report = run_search(cfg, workdir=tmp_path, progress=events.append)
    grid = [p for p in report.points if p.harvested_from is None]
    assert len(grid) == 3  # one per (chain, budget); SNL: one descent for both budgets
    assert len(report.points) == 4
    assert {(p.chain[0], p.budget) for p in report.points} == {
        (c, b) for c in ("deepreduce", "snl") for b in report.budgets}
    for p in report.points:
        assert p.relus <= p.budget
        art = load_artifact(tmp_path / p.artifact)
        assert art.manifest.profile.relus == p.relus          # counted on the artifact
        assert art.manifest.metrics["test_accuracy"] == p.test_accuracy
    assert any(p.pareto for p in report.points)
    assert {a.budget for a in report.answers} == set(report.budgets)
    # stem 4x8x8, then two ReLU layers per stage: 4x8x8, 8x4x4, 16x2x2
    assert report.baseline.relus == 4 * 64 + 2 * (4 * 64 + 8 * 16 + 16 * 4) == 1152
    for name in ("pareto.json", "trials.csv", "report.html", "pareto.png"):
        assert (tmp_path / "report" / name).is_file()
    assert read_report(tmp_path / "report" / "pareto.json") == report
    phases = [e["phase"] for e in events if e.get("type") == "phase"]
    assert phases[:3] == ["data", "baseline", "search"] and phases[-1] == "done"
    # Re-opening the finished job runs nothing and keeps every trial.
    session = SearchSession.open(cfg, workdir=tmp_path)
    assert session.run_trials() == 0
    assert len(session.points()) == len(report.points)


def test_dead_attempt_is_resumed(tmp_path) -> None:
    cfg = _cfg(techniques=["deepreduce"], budgets=[0.1, 0.3])
    session = SearchSession.open(cfg, workdir=tmp_path)
    session.run_trials(n_trials=1)
    first = [t.number for t in session.study.get_trials(states=(TrialState.COMPLETE,))]
    assert first == [0]
    # A worker that dies inside a trial leaves it RUNNING in the journal.
    script = (
        "import os, sys, json\n"
        "from pi_opt.search import SearchConfig, SearchSession\n"
        "cfg = SearchConfig.model_validate(json.loads(sys.argv[1]))\n"
        "s = SearchSession.open(cfg, workdir=sys.argv[2])\n"
        "t = s.study.ask()\n"
        "print(t.number, flush=True)\n"
        "os._exit(9)\n")
    r = subprocess.run([sys.executable, "-c", script, cfg.model_dump_json(), str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    dead_number = int(r.stdout.split()[0])
    del session
    again = SearchSession.open(cfg, workdir=tmp_path)
    states = {t.number: t.state for t in again.study.get_trials()}
    assert states[dead_number] == TrialState.FAIL
    again.run_trials()
    done = [t for t in again.study.get_trials(states=(TrialState.COMPLETE,))]
    assert [t.number for t in done][0] == 0  # the first attempt's trial is kept
    assert sorted(t.params["budget"] for t in done) == sorted(again.budgets)


def test_measure_hook_gets_front_points_and_real_images(tmp_path) -> None:
    cfg = _cfg(techniques=["deepreduce"], budgets=[0.3], measure_mpc="front")
    seen: list[tuple[str, tuple]] = []

    def fake_measure(artifact, inputs=None):  # test double for mpc.measure.make_measure
        seen.append((artifact.name, tuple(inputs.shape)))
        return {"backend": "test", "provider": "TFP", "device": "cpu", "latency_s": 0.5,
                "rounds": 3, "bytes_per_party": 10}

    report = run_search(cfg, workdir=tmp_path, measure=fake_measure)
    assert seen[0][0] == "baseline" and report.baseline.mpc.latency_s == 0.5
    n_test = report.dataset["sizes"]["test"]
    assert all(shape == (n_test, 1, 8, 8) for _, shape in seen)
    front = [p for p in report.points if p.pareto]
    assert {name for name, _ in seen[1:]} == {f"trial-{p.trial}" for p in front}
    assert all(p.mpc is not None for p in front)


def test_cancel_stops_and_job_can_continue(tmp_path) -> None:
    cfg = _cfg(techniques=["deepreduce"], budgets=[0.3])
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 5  # after the baseline's first steps

    with pytest.raises(Cancelled):
        run_search(cfg, workdir=tmp_path, should_stop=stop)
    report = run_search(cfg, workdir=tmp_path)
    assert len(report.points) == 1


def test_bad_configs_are_rejected() -> None:
    with pytest.raises(ValidationError, match="unknown technique"):
        _cfg(techniques=["nope"])
    with pytest.raises(ValidationError, match="positive"):
        _cfg(budgets=[-1])
    with pytest.raises(ValidationError, match="Extra inputs"):
        _cfg(bogus=1)
    with pytest.raises(ValidationError, match="unknown"):
        SearchConfig.model_validate({**TINY, "model": {**TINY["model"],
                                                       "arch": {"name": "x", "kwargs": {}}},
                                     "techniques": ["zzz"]})


def test_cli_errors_and_baseline_accuracy(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("techniques: [nope]\n")
    r = subprocess.run([sys.executable, "-m", "pi_opt_cli", "optimize", "--config", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown technique" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pi_opt_cli", "count", "--arch", "resnet18"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "ReLUs per sample: 491520" in r.stdout
    for forwarded in ("serve", "mpc"):  # options reach the optional packages' CLIs
        r = subprocess.run([sys.executable, "-m", "pi_opt_cli", forwarded, "--help"],
                           capture_output=True, text=True)
        assert r.returncode == 0 and "usage:" in r.stdout, (forwarded, r.stderr)
    # The digits baseline of the quick config reaches >= 97% test accuracy on CPU.
    r = subprocess.run([sys.executable, "-m", "pi_opt_cli", "train", "--arch", "resnet_mini",
                        "--kwargs", '{"widths": [8, 16, 32]}', "--epochs", "15",
                        "--out", str(tmp_path / "bl")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["test_accuracy"] >= 0.97, out
    r = subprocess.run([sys.executable, "-m", "pi_opt_cli", "count", str(tmp_path / "bl" / "baseline")],
                       capture_output=True, text=True)
    assert f"ReLUs per sample: {out['relus']}" in r.stdout


