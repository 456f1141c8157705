"""Search efficiency: one SNL descent for every budget, pruning, compute accounting, fairness."""

from __future__ import annotations

import csv

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from pydantic import ValidationError

from pi_opt.report import read_report
from pi_opt.report.pareto import answer_budgets, mark_front
from pi_opt.report.schema import ParetoPoint
from pi_opt.search import SearchConfig, SearchSession, run_search
from pi_opt.search._pruning import should_prune

from tiny import TINY_SEARCH as TINY  # noqa: E402
FAST_SNL = {"chain": ["snl"], "params": {"snl": {"lambda_init": 0.05, "lambda_growth": 1.5,
                                                 "warmup_epochs": 0}}}


def _cfg(**kw) -> SearchConfig:
    return SearchConfig.model_validate({**TINY, **kw})


def _epoch_events(events: list[dict], phase: str) -> list[int]:
    return [e["epoch"] for e in events if e.get("phase") == phase and "type" not in e]


def test_one_snl_descent_serves_three_budgets(tmp_path) -> None:
    cfg = _cfg(techniques=[FAST_SNL], budgets=[0.1, 0.2, 0.4], pruning="none")
    events: list[dict] = []
    report = run_search(cfg, workdir=tmp_path, progress=events.append)
    search = _epoch_events(events, "snl-search")
    assert search.count(1) == 1, "more than one SNL descent ran"
    assert sorted(p.budget for p in report.points) == report.budgets  # one point per budget
    assert [p.harvested_from is None for p in report.points].count(True) == 1
    assert len(_epoch_events(events, "snl-finetune")) == 3  # one fine-tune epoch per budget
    parent = next(p for p in report.points if p.harvested_from is None)
    assert parent.compute["search"]["epochs"] == len(search)
    assert parent.compute["finetune"]["epochs"] == 3
    assert parent.compute["search"]["images"] == len(search) * report.dataset["sizes"]["train"]
    job = report.compute
    assert job["trials"]["search"]["epochs"] == len(search)
    assert job["baseline"]["epochs"] == 2
    assert job["total"]["epochs"] == 2 + len(search) + 3
    # The job's compute block survives resume (rebuilt from the study, not a timer).
    again = SearchSession.open(cfg, workdir=tmp_path)
    assert again.run_trials() == 0
    assert again.compute()["trials"] == job["trials"]


def test_a_trial_behind_its_bucket_is_pruned(tmp_path) -> None:
    cfg = _cfg(techniques=["deepreduce"], budgets=[0.1, 0.3], pruning="median",
               pruning_min_trials=1, finetune={"epochs": 3})
    session = SearchSession.open(cfg, workdir=tmp_path)
    # A finished peer holds the best possible curve in every bucket.
    for b in session.budgets:
        session.study.add_trial(optuna.trial.create_trial(
            params={"chain": "deepreduce", "budget": b},
            distributions={"chain": CategoricalDistribution(["deepreduce"]),
                           "budget": CategoricalDistribution(session.budgets)},
            values=[1.0, b], user_attrs={"curves": {str(b): [[0.01, 1.0], [1.0, 1.0]]}}))
    events: list[dict] = []
    session.progress = events.append
    session.run_trials(n_trials=3)
    report = session.finalize()
    pruned = [p for p in report.points if p.pruned]
    assert pruned and all(p.pruned_at_epoch == 1 and not p.pareto for p in pruned)
    assert all(p.compute["finetune"]["epochs"] == 1 for p in pruned)  # 2 of 3 epochs saved
    assert _epoch_events(events, "deepreduce-train") == [1]
    rows = list(csv.DictReader((tmp_path / "report" / "trials.csv").open()))
    assert {r["pruned"] for r in rows if r["trial"] == str(pruned[0].trial)} == {"True"}
    assert read_report(tmp_path / "report" / "pareto.json").points[0].pruned


def test_pruning_rules() -> None:
    done = float("inf")
    # (progress, val accuracy) curves of finished peers; the third was pruned at 0.2
    peers = [([(0.1, 0.5), (0.5, 0.6), (1.0, 0.7)], done),
             ([(0.1, 0.7), (0.5, 0.8), (1.0, 0.9)], done), ([(0.2, 0.2)], 0.2)]
    assert should_prune("median", [(0.1, 0.55)], peers, min_peers=2)  # median of 0.5, 0.7
    assert not should_prune("median", [(0.1, 0.7)], peers, min_peers=2)
    assert not should_prune("median", [(0.1, 0.1)], peers, min_peers=2, warmup=0.2)
    assert not should_prune("median", [(0.05, 0.1)], peers, min_peers=1)  # no peer report yet
    assert not should_prune("median", [(0.3, 0.1)], peers, min_peers=3)  # pruned peer: 0.2
    assert should_prune("median", [(0.2, 0.1)], peers, min_peers=3)
    assert not should_prune("none", [(0.5, 0.0)], peers, min_peers=1)
    # halving: rungs at 1/3, 1/9, ...; top 1/3 of (votes + itself) survive a rung
    assert should_prune("halving", [(0.05, 0.1), (0.12, 0.65)], peers, min_peers=1)
    assert not should_prune("halving", [(0.12, 0.65), (0.2, 0.1)], peers, min_peers=1)
    assert not should_prune("halving", [(0.3, 0.71), (0.4, 0.75)], peers, min_peers=1)
    assert should_prune("halving", [(0.3, 0.6), (0.4, 0.65)], peers, min_peers=1)
    assert not should_prune("halving", [(0.3, 0.85), (0.4, 0.85)], peers, min_peers=1)


def _pt(trial: int, relus: int, acc: float, **kw) -> ParetoPoint:
    return ParetoPoint(trial=trial, chain=["snl"], budget=100, relus=relus, macs=1,
                       val_accuracy=acc, test_accuracy=acc, **kw)


def test_infeasible_and_pruned_points_are_never_on_the_front() -> None:
    pts = [_pt(0, 50, 0.9, feasible=False, worst_class_drop=0.5), _pt(1, 50, 0.8),
           _pt(2, 40, 0.95, pruned=True), _pt(3, 90, 0.85)]
    mark_front(pts, "relus")
    assert [p.pareto for p in pts] == [False, True, False, True]
    for p in pts:
        p.pareto = False
    assert {a.trial for a in answer_budgets(pts, [100])} == {3}


def test_max_class_drop_constraint_in_a_study(tmp_path) -> None:
    cfg = _cfg(techniques=["deepreduce"], budgets=[0.05, 0.6], max_class_drop=0.1)
    report = run_search(cfg, workdir=tmp_path)
    assert all(p.worst_class_drop is not None for p in report.points)
    for p in report.points:
        assert p.feasible == (p.worst_class_drop <= 0.1)
        assert not (p.pareto and not p.feasible)
    assert any(not p.feasible for p in report.points)  # 5% of the ReLUs harms some class


@pytest.mark.parametrize("bad, match", [
    ({"max_class_drop": 0}, "greater than 0"),
    ({"max_class_drop": 1.5}, "less than or equal to 1"),
    ({"pruning": "sometimes"}, "none"),
    ({"pruning": "median", "budgets": [0.1]}, "at least 2 budgets"),
])
def test_bad_efficiency_configs(bad, match) -> None:
    with pytest.raises(ValidationError, match=match):
        _cfg(**bad)
    assert _cfg(budgets=[0.1]).effective_pruning() == "none"  # the default needs 2 buckets


def test_a_trial_is_pruned_in_its_search_phase(tmp_path) -> None:
    """AutoReP reports from its mask search once the gates meet the budget; a trial behind
    its bucket stops there and skips its fine-tune (progress = epochs / planned epochs)."""
    fast = {"chain": ["autorep"], "params": {"autorep": {"search_epochs": 4, "lam": 200.0,
                                                          "mask_lr": 0.5}}}
    cfg = _cfg(techniques=[fast], budgets=[0.6, 0.9], pruning="median", pruning_min_trials=1,
               finetune={"epochs": 2})
    session = SearchSession.open(cfg, workdir=tmp_path)
    for b in session.budgets:  # a finished peer that was perfect from its first report
        session.study.add_trial(optuna.trial.create_trial(
            params={"chain": "autorep", "budget": b},
            distributions={"chain": CategoricalDistribution(["autorep"]),
                           "budget": CategoricalDistribution(session.budgets)},
            values=[1.0, b], user_attrs={"curves": {str(b): [[0.01, 1.0]]}}))
    session.run_trials(n_trials=4)
    pruned = [p for p in session.finalize().points if p.pruned]
    assert pruned, "no trial was pruned"
    for p in pruned:
        search = p.compute["search"]["epochs"]
        assert p.compute["finetune"]["epochs"] == 0 and search < 4
        assert p.pruned_at_epoch == search and not p.pareto
