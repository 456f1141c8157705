"""Conformance: every registered technique, on a tiny model, at a tight budget.

Checks the contract of ``pi_opt.techniques.base``: the budget holds as counted on
the saved artifact, the artifact reloads bit-exactly, techniques never read the
test split, and the candidate's recipe history names the technique.
"""

from __future__ import annotations

import pytest
import torch

from pi_opt.artifacts import load_artifact, save_artifact
from pi_opt.profile import profile_model
from pi_opt.search._evaluate import seed_circa
from pi_opt.techniques import TECHNIQUES, baseline_candidate, create_technique, list_techniques
from tiny import tiny_context

FRACTION = 0.2  # of the baseline's ReLUs
#: Keeps the default suite short: SNL's descent otherwise runs up to 200 epochs to meet the
#: budget; when the bound is hit the exact top-B cut must still honour the contract.
BOUNDED = {"snl": {"max_search_epochs": 30}}


@pytest.mark.parametrize("name", list_techniques())
def test_technique_contract(name: str, tmp_path) -> None:
    ctx = tiny_context(tmp_path / "work")
    total = ctx.baseline_profile.relus
    budget = int(total * FRACTION)
    start = baseline_candidate(ctx)
    cls = TECHNIQUES.get(name)
    if not cls.reduces_count:
        # Count-preserving techniques compose on an already reduced model.
        start = create_technique("deepreduce", epochs=1).run(ctx, start, budget=budget)[0]
    cands = cls(**BOUNDED.get(name, {})).run(ctx, start, budget=budget)
    assert cands, f"{name} returned no candidate"
    for i, cand in enumerate(cands):
        relus = profile_model(cand.model, cand.spec.input_shape).relus
        assert relus <= budget, f"{name} candidate {i}: {relus} > {budget}"
        assert cand.history and cand.history[-1]["technique"] == name
        out = tmp_path / f"art{i}"
        man = save_artifact(cand.model, cand.spec, out, history=cand.history)
        assert man.profile.relus == relus
        art = load_artifact(out)
        assert art.manifest.profile.relus <= budget
        x = ctx.data.val.tensors[0][:16]
        cand.model.eval()
        seed_circa(cand.model, 7)
        seed_circa(art.model, 7)
        with torch.no_grad():
            assert torch.equal(cand.model(x), art.model(x)), f"{name}: reload is not bit-exact"
    if cls.reduces_count:
        assert profile_model(cands[0].model, cands[0].spec.input_shape).relus < total


def test_every_technique_has_typed_config() -> None:
    for name in list_techniques():
        cls = TECHNIQUES.get(name)
        assert cls.Config.model_config.get("extra") == "forbid", name
        with pytest.raises(Exception):
            cls(definitely_not_a_field=1)


def test_every_technique_plans_its_phases() -> None:
    """``plan_phases`` (used by ``pi-opt plan``) is sized from the config alone."""
    from pi_opt.techniques.base import PlanInputs
    from pi_opt.training import TrainConfig

    inputs = PlanInputs(finetune=TrainConfig(epochs=5), budgets_per_trial=3, stages=3)
    for name in list_techniques():
        phases = TECHNIQUES.get(name)().plan_phases(inputs)
        assert phases, name
        for p in phases:
            assert p.epochs >= 0 and p.kind in ("train", "eval"), (name, p)
        if TECHNIQUES.get(name).reduces_count:
            assert any(p.kind == "train" and p.epochs > 0 for p in phases), name
