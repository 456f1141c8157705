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
from pi_opt.search._config import FINETUNE_PATIENCE
from pi_opt.search._pruning import should_prune, skip_reason
from pi_opt.search._study import grid_order, unreported_epochs
from pi_opt.training import Plateau

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
    ({"finetune": {"epochs": 2, "patience": 0}}, "greater than or equal to 1"),
    ({"finetune": {"epochs": 2, "patience": "soon"}}, "valid integer"),
    ({"finetune": {"epochs": 2, "min_delta": 1.0}}, "less than 1"),
    ({"finetune": {"epochs": 2, "min_delta": -0.01}}, "greater than or equal to 0"),
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


def test_plateau_rule_and_the_search_default() -> None:
    p = Plateau(2, min_delta=0.01)
    assert [p.update(a) for a in (0.5, 0.6, 0.605, 0.7, 0.7, 0.709)] == [
        False, False, False, False, False, True]  # 0.605 and 0.709 are within min_delta
    assert not any(Plateau(None).update(a) for a in (0.5, 0.4, 0.3))
    again = Plateau(2, min_delta=0.01)
    again.replay([0.5, 0.6, 0.605, 0.7, 0.7])  # a resumed run rebuilds the state
    assert again.update(0.709) and again.record == p.record
    assert _cfg().finetune.patience == FINETUNE_PATIENCE  # a search's default
    assert SearchConfig().finetune.patience == FINETUNE_PATIENCE
    assert _cfg(finetune={"epochs": 2, "patience": None}).finetune.patience is None
    assert SearchConfig().baseline.patience is None  # the baseline trains every epoch
    # scale-aware: a quarter of the fine-tune's epochs, at least 2 (the papers' 100 -> 25)
    assert _cfg(finetune={"epochs": 100}).finetune.patience == 25
    assert _cfg(finetune={"epochs": 8}).finetune.patience == FINETUNE_PATIENCE
    assert _cfg(finetune={"epochs": 9}).finetune.patience == 3
    assert _cfg(finetune={"epochs": 100, "patience": 4}).finetune.patience == 4
    with pytest.raises(ValueError, match="finetune.epochs"):  # still TrainConfig's error
        _cfg(finetune={"epochs": "many"})


def test_a_plateau_ends_the_autorep_search_and_the_finetune(tmp_path) -> None:
    """``finetune.patience``: no improvement above ``min_delta`` for ``patience`` epochs
    ends a fine-tune and, once the gates meet the budget, an AutoReP search; counted."""
    fast = {"chain": ["autorep"], "params": {"autorep": {"search_epochs": 6, "lam": 200.0,
                                                          "mask_lr": 0.5}}}
    cfg = _cfg(techniques=[fast], budgets=[0.6], pruning="none",
               finetune={"epochs": 4, "patience": 1, "min_delta": 0.99})
    events: list[dict] = []
    report = run_search(cfg, workdir=tmp_path, progress=events.append)
    (point,) = report.points
    search = [e for e in events if e.get("type") == "technique" and "density" in e]
    first_in_budget = next(e["epoch"] for e in search if e["relus"] <= report.budgets[0])
    assert first_in_budget < point.compute["search"]["epochs"] < 6  # stopped on the plateau
    assert point.compute["finetune"]["epochs"] == 2 and not point.pruned
    assert report.search["finetune_patience"] == 1


def _grid_trial(budget: int, relus: int | None, acc: float | None, state: str = "COMPLETE",
                number: int = 0, curve: list | None = None) -> optuna.trial.FrozenTrial:
    t = optuna.trial.create_trial(
        state=getattr(optuna.trial.TrialState, state), params={"chain": "a", "budget": budget},
        distributions={"chain": CategoricalDistribution(["a"]),
                       "budget": CategoricalDistribution([100, 200, 400, 900])},
        values=[acc, relus] if state == "COMPLETE" else None,
        user_attrs={"grid": True, "relus": relus, "val_accuracy": acc,
                    "curves": {str(budget): curve or [[1.0, acc]]}})
    t.number = number
    return t


def test_grid_runs_early_reporting_chains_first() -> None:
    cfg = _cfg(techniques=["deepreshape+autorep", "deepreshape", "autorep", "deepreduce"],
               budgets=[0.1, 0.3])
    assert [c.label for c in grid_order(cfg)] == [
        "deepreduce", "autorep", "deepreshape", "deepreshape+autorep"]
    # 1 fine-tune epoch: the HybReNet trains 2 unjudged; in the chain the whole DeepReShape
    # step (2 + 1) runs at the chain_slack budget
    assert [unreported_epochs(c, {}, cfg) for c in (["deepreduce"], ["autorep"], [
        "deepreshape"], ["deepreshape", "autorep"])] == [0, 0, 2, 3]


def test_cross_budget_skip_rule() -> None:
    # The chain reached 0.90 with 300 ReLUs at budget 400: at 100 it expects ~75 ReLUs.
    done = [_grid_trial(400, 300, 0.90), _grid_trial(900, 900, 0.95, number=1)]
    assert skip_reason(900, done, [(10, 1.0)], done) is None  # nothing larger ran
    assert skip_reason(100, done, [(76, 0.99)], done) is None  # more ReLUs than expected
    assert skip_reason(100, done, [(75, 0.90)], done) is None  # not more accurate
    assert "dominated" in skip_reason(100, done, [(75, 0.91)], done)
    assert skip_reason(100, done[1:], [(75, 0.91)], done) is None  # 900 -> 100: ~100 expected
    # Pruned at 400 at progress 0.3 with 300 ReLUs: a skip only when a peer of the bucket
    # with no more ReLUs was ahead at that progress.
    pruned = _grid_trial(400, 300, 0.5, "PRUNED", number=2, curve=[[0.3, 0.5]])
    ahead = _grid_trial(400, 300, 0.9, number=3, curve=[[0.2, 0.8], [1.0, 0.9]])
    later = _grid_trial(400, 250, 0.9, number=4, curve=[[0.5, 0.8], [1.0, 0.9]])
    fatter = _grid_trial(400, 400, 0.9, number=5, curve=[[0.1, 0.95]])
    assert "behind trial 3" in skip_reason(100, [pruned], [], [pruned, ahead])
    assert skip_reason(100, [pruned], [], [pruned, later, fatter]) is None
    skipped = _grid_trial(200, None, None, "PRUNED", number=6)
    skipped.set_user_attr("skipped", "x")  # a skipped trial never decides: the next one does
    assert "behind trial 3" in skip_reason(100, [pruned, skipped], [], [pruned, ahead])


def test_a_grid_trial_is_skipped_when_its_point_would_be_dominated(tmp_path) -> None:
    for pruning in ("median", "none"):
        cfg = _cfg(techniques=["deepreduce"], budgets=[0.1, 0.3], pruning=pruning)
        session = SearchSession.open(cfg, workdir=tmp_path / pruning)
        session.study.add_trial(optuna.trial.create_trial(  # 1 ReLU, perfect: dominates all
            params={"chain": "deepreduce", "budget": session.budgets[0]},
            distributions={"chain": CategoricalDistribution(["deepreduce"]),
                           "budget": CategoricalDistribution(session.budgets)},
            values=[1.0, 1], user_attrs={"relus": 1, "val_accuracy": 1.0, "test_accuracy": 1.0,
                                         "chain": ["deepreduce"], "budget": session.budgets[0],
                                         "macs": 1}))
        fake = len(session.study.trials) - 1
        retry = {"chain": "deepreduce", "budget": session.budgets[0]}  # a dead trial's re-run
        session.study.enqueue_trial(retry, user_attrs={"grid": True, "fixed": retry,
                                                       "checkpoint_of": 99})
        session.run_trials(n_trials=4)
        report = session.finalize()
        ran = sorted(p.budget for p in report.points if p.trial != fake)
        assert session.budgets[0] in ran  # the re-run of a dead trial is never skipped
        ran.remove(session.budgets[0])
        rows = list(csv.DictReader((tmp_path / pruning / "report" / "trials.csv").open()))
        if pruning == "none":  # no pruning, no skipping: both grid trials ran
            assert ran == session.budgets and not report.skipped
            continue
        assert ran == [session.budgets[1]]  # the larger budget runs first, the smaller skips
        (skip,) = report.skipped
        assert skip["budget"] == session.budgets[0] and "dominated" in skip["reason"]
        assert skip["trial"] not in {p.trial for p in report.points}
        (row,) = [r for r in rows if r["skipped"]]
        assert row["trial"] == str(skip["trial"]) and row["pruned"] == "True" and not row["relus"]
