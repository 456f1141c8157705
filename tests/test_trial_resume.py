"""A killed technique trial resumes mid-training from its per-epoch checkpoints.

Every registered technique runs a tiny trial three times: uninterrupted; killed after
about half of its training epochs (an exception raised from ``should_stop`` at the next
training step, as a worker dying there); and re-run on the same checkpoints.
The re-run must train exactly the epochs the killed run had not finished and end with
the same candidates (ReLU count, validation accuracy, outputs). A search trial whose
worker dies is re-enqueued with its checkpoint line and resumes the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from optuna.trial import TrialState

from pi_opt.profile import profile_model
from pi_opt.search import SearchConfig, SearchSession
from pi_opt.search._evaluate import seed_circa
from pi_opt.techniques import TECHNIQUES, baseline_candidate, create_technique, list_techniques
from pi_opt.techniques.base import Candidate, TechniqueContext
from pi_opt.training import TrainingCheckpoints
from tiny import TINY_SEARCH, tiny_context

#: Short settings per technique (the default suite stays short); 2 fine-tune epochs each.
SHORT: dict[str, dict[str, Any]] = {
    "snl": {"max_search_epochs": 4}, "autorep": {"search_epochs": 3},
    "deepreduce": {"criticality_epochs": 1}, "deepreshape": {"criticality_epochs": 1},
}


class _Killed(BaseException):
    """The worker dies (raised outside the technique's own error handling)."""


def _trained(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(phase, epoch) of every epoch ``fit`` trained (its progress records have no type)."""
    return [(e["phase"], int(e["epoch"])) for e in events if "type" not in e and "epoch" in e]


def _run(ctx: TechniqueContext, name: str, start: Candidate, budget: int, work: Path,
         progress: Any, should_stop: Any = None) -> list[Candidate]:
    run_ctx = dataclasses.replace(ctx, workdir=work / "cache", progress=progress,
                                  should_stop=should_stop,
                                  checkpoints=TrainingCheckpoints(work / "checkpoints"))
    torch.manual_seed(0)
    return TECHNIQUES.get(name)(**SHORT.get(name, {})).run(run_ctx, start.clone(), budget=budget)


def _same(a: list[Candidate], b: list[Candidate], x: torch.Tensor) -> None:
    assert len(a) == len(b)
    for ca, cb in zip(a, b):
        assert profile_model(ca.model, ca.spec.input_shape).relus == \
            profile_model(cb.model, cb.spec.input_shape).relus
        assert ca.val_accuracy == cb.val_accuracy
        ca.model.eval(), cb.model.eval()
        seed_circa(ca.model, 7), seed_circa(cb.model, 7)  # Circa sites draw their faults
        with torch.no_grad():
            assert torch.equal(ca.model(x), cb.model(x))


@pytest.mark.parametrize("name", list_techniques())
def test_killed_trial_resumes_mid_training(name: str, tmp_path: Path) -> None:
    ctx = tiny_context(tmp_path / "unused", epochs=2)
    budget = int(ctx.baseline_profile.relus * 0.2)
    start = baseline_candidate(ctx)
    if not TECHNIQUES.get(name).reduces_count:  # composes on a reduced model
        start = create_technique("deepreduce", epochs=1, criticality_epochs=1).run(
            ctx, start, budget=budget)[0]
    x = ctx.data.val.tensors[0][:32]

    full_events: list[dict[str, Any]] = []
    full = _run(ctx, name, start, budget, tmp_path / "full", full_events.append)
    trained = _trained(full_events)
    if len(trained) < 2:  # trains (almost) nothing: checkpoints must not change the result
        _same(full, _run(ctx, name, start, budget, tmp_path / "again", lambda e: None), x)
        return
    kill_after = len(trained) // 2
    seen: list[dict[str, Any]] = []

    def dies() -> bool:  # at the first training step after epoch `kill_after`
        if len(_trained(seen)) >= kill_after:
            raise _Killed
        return False

    with pytest.raises(_Killed):
        _run(ctx, name, start, budget, tmp_path / "killed", seen.append, dies)
    rerun_events: list[dict[str, Any]] = []
    resumed = _run(ctx, name, start, budget, tmp_path / "killed", rerun_events.append)
    assert _trained(rerun_events) == trained[kill_after:]  # only the unfinished epochs
    _same(full, resumed, x)


def test_dead_search_trial_resumes_and_cleans_up(tmp_path: Path) -> None:
    cfg = SearchConfig.model_validate({**TINY_SEARCH, "budgets": [0.2], "techniques": [
        {"chain": ["snl"], "params": {"snl": {"max_search_epochs": 3}}}]})
    seen: list[dict[str, Any]] = []

    def dies_in_epoch_three() -> bool:
        if ("snl-search", 2) in _trained(seen):
            raise SystemExit("worker going down")  # the trial stays RUNNING, as if killed
        return False

    session = SearchSession.open(cfg, workdir=tmp_path)
    session.progress = seen.append
    session.ctx = dataclasses.replace(session.ctx, should_stop=dies_in_epoch_three)
    with pytest.raises(SystemExit):
        session.run_trials()
    dead = session.study.get_trials()[0]
    assert dead.state == TrialState.RUNNING
    assert any((tmp_path / "checkpoints" / f"trial-{dead.number}").rglob("train_state.pt"))

    events: list[dict[str, Any]] = []
    again = SearchSession.open(cfg, workdir=tmp_path, progress=events.append)
    again.run_trials()
    done = again.study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 1 and done[0].user_attrs["retry_of"] == dead.number
    assert done[0].user_attrs["checkpoint_of"] == dead.number
    assert _trained(events)[0] == ("snl-search", 3)  # epochs 1-2 were not trained again
    assert not any((tmp_path / "checkpoints").rglob("*"))  # removed when the trial ended
