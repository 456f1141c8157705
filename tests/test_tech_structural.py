"""Structural techniques: stage criticality, DeepReDuce, DeepReShape/HybReNets, Circa.

Tiny setup: digits (400 train images, 8x8), ``resnet_mini`` widths (4, 8, 16) with a
stem ReLU. Per-sample ReLUs of that model, by site (C x H x W):
stem 4x8x8 = 256; layer1 relu1/relu2 4x8x8 = 256 each; layer2 8x4x4 = 128 each;
layer3 16x2x2 = 64 each; total 1,152.
"""

from __future__ import annotations

import itertools
import json
import math

import optuna
import pytest
import torch

from pi_opt.activations import Kind
from pi_opt.artifacts import ArchSpec, ModelSpec, load_artifact, save_artifact
from pi_opt.circa_faults import circa_negative_mask, circa_relu, exact_range, fault_band
from pi_opt.errors import BudgetError, ConfigError
from pi_opt.models import create_model
from pi_opt.profile import profile_model
from pi_opt.sites import iter_sites
from pi_opt.techniques import criticality as crit_mod
from pi_opt.techniques import deepreduce as drd_mod
from pi_opt.techniques.base import Candidate, TechniqueContext, baseline_candidate
from pi_opt.techniques.circa import Circa, CircaConfig, choose_l
from pi_opt.techniques.criticality import StageCriticality, stage_criticality
from pi_opt.techniques.criticality import thinned_sites
from pi_opt.techniques.deepreduce import (
    DeepReDuce, DeepReDuceConfig, build_prepared, enumerate_plans,
)
from pi_opt.techniques.deepreshape import (
    DeepReShape, DeepReShapeConfig, equalization_multipliers, meta_relus, resnet_layout,
)

ORDER = ["layer1", "stem", "layer2", "layer3"]  # least critical first (fixed for the tests)


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


def _fixed_criticality(monkeypatch, module) -> None:
    """Pin the criticality order (ORDER) so plan choices are predictable."""
    fixed = StageCriticality(
        key="fixed", epochs=0, init="teacher", stages=["stem", "layer1", "layer2", "layer3"],
        relus={"stem": 256, "layer1": 512, "layer2": 256, "layer3": 128},
        accuracy={s: 0.5 for s in ORDER}, linear_accuracy=0.1,
        scores={s: float(i) for i, s in enumerate(ORDER)}, order=list(ORDER))
    monkeypatch.setattr(module, "stage_criticality", lambda *a, **k: fixed)


def _roundtrip(cand: Candidate, x: torch.Tensor, tmp_path, seed: int | None = None) -> None:
    """save -> load reproduces the candidate's outputs bit for bit (seeded Circa if any)."""
    man = save_artifact(cand.model, cand.spec, tmp_path / "art", history=cand.history)
    art = load_artifact(tmp_path / "art")
    assert art.manifest.spec == cand.spec
    assert art.manifest.profile.relus == profile_model(cand.model, cand.spec.input_shape).relus
    assert man.recipe.history == cand.history
    cand.model.eval()
    outs = []
    for model in (cand.model, art.model):
        if seed is not None:
            for i, (_, s) in enumerate(iter_sites(model)):
                s.circa_generator = torch.Generator().manual_seed(seed + i)
        with torch.no_grad():
            outs.append(model(x))
        for _, s in iter_sites(model):
            s.circa_generator = None
    assert torch.equal(outs[0], outs[1])


# ---------------------------------------------------------------------------
# DeepReShape: ReLU equalization
# ---------------------------------------------------------------------------
def test_relu_equalization_resnet18_gives_553() -> None:
    # ReLUs per channel of width per stage, ResNet-18 on 32x32: 4 sites x H*W
    with torch.device("meta"):
        r18 = create_model("resnet18")
    prof = profile_model(r18, (3, 32, 32))
    per_channel = [0, 0, 0, 0]
    for s in prof.sites:
        per_channel[int(s.stage[-1]) - 1] += s.shape[1] * s.shape[2]
    assert per_channel == [4 * 1024, 4 * 256, 4 * 64, 4 * 16]
    order = [2, 1, 3, 0]  # S3 > S2 > S4 > S1
    a, b, c = equalization_multipliers(order, per_channel)
    assert (a, b, c) == (5, 5, 3)
    # the inequalities of section 5.2 hold ...
    assert a > 4 and b > 4 and c < 4 and b * c < 16 and a * b * c > 64
    # ... and no integer solution with a smaller sum exists (independent brute force)
    def ok(m: tuple[int, ...]) -> bool:
        w = [1, m[0], m[0] * m[1], m[0] * m[1] * m[2]]
        r = [w[i] * per_channel[i] for i in range(4)]
        return r[2] > r[1] > r[3] > r[0]
    sols = [m for m in itertools.product(range(1, 9), repeat=3) if ok(m)]
    assert min(sum(m) for m in sols) == 13 and [m for m in sols if sum(m) == 13] == [(5, 5, 3)]
    assert not ok((2, 2, 2))  # classic ResNet puts most ReLUs in the least critical stage
    # HRN-5x5x3x C=16 count of the brief (326,656 without stem ReLU)
    spec = ModelSpec(arch=ArchSpec(name="hybrenet", kwargs={"base_width": 16,
                                                           "multipliers": [5, 5, 3]}),
                     input_shape=(3, 32, 32), num_classes=10)
    assert meta_relus(spec)[0] == 326_656


def test_relu_equalization_other_orders() -> None:
    # 3 stages, ratio 4: order S3 > S2 > S1 needs m1 > 4 and m2 > 4 -> (5, 5)
    assert equalization_multipliers([2, 1, 0], [64, 16, 4]) == (5, 5)
    # order already satisfied by the smallest multipliers
    assert equalization_multipliers([0, 1, 2], [64, 16, 4]) == (1, 1)
    with pytest.raises(ConfigError):
        equalization_multipliers([2, 1, 0], [64, 16, 4], max_multiplier=4)
    with pytest.raises(ConfigError):
        equalization_multipliers([0, 0, 1], [64, 16, 4])


# ---------------------------------------------------------------------------
# stage criticality
# ---------------------------------------------------------------------------
def test_criticality_profile_and_cache(ctx, tmp_path, monkeypatch) -> None:
    local = TechniqueContext(**{**ctx.__dict__, "workdir": tmp_path})
    calls: list[str] = []
    real = crit_mod._train_variant

    def counting(c, model, *, epochs, phase):
        calls.append(phase)
        return real(c, model, epochs=epochs, phase=phase)

    monkeypatch.setattr(crit_mod, "_train_variant", counting)
    first = stage_criticality(local, epochs=1)
    assert len(calls) == 5  # stem, layer1..3, all-linear
    assert first.stages == ["stem", "layer1", "layer2", "layer3"]
    assert first.relus == {"stem": 256, "layer1": 512, "layer2": 256, "layer3": 128}
    assert sorted(first.order) == sorted(first.stages)
    scores = [first.scores[s] for s in first.order]
    assert scores == sorted(scores)
    for s in first.stages:
        want = (first.accuracy[s] - first.linear_accuracy) / math.log(first.relus[s])
        assert first.scores[s] == pytest.approx(want)
    path = tmp_path / "criticality" / f"{first.key}.json"
    assert json.loads(path.read_text())["order"] == first.order
    assert not list((tmp_path / "criticality").glob("*.tmp"))

    second = stage_criticality(local, epochs=1)  # cache hit: no training at all
    assert len(calls) == 5 and second == first
    # a different epoch budget is a different profile
    monkeypatch.setattr(crit_mod, "_train_variant", lambda *a, **k: calls.append("x") or 0.5)
    third = stage_criticality(local, epochs=0)
    assert third.key != first.key and len(calls) == 10


# ---------------------------------------------------------------------------
# DeepReDuce
# ---------------------------------------------------------------------------
def _hand_count(widths, hw, *, culled=(), thin=False) -> int:
    """resnet_mini count from first principles: stem + (relu1, relu2) per stage."""
    per_site = {"stem": widths[0] * hw * hw}
    for s in range(3):
        side = max(1, hw // 2 ** s)
        per_site[f"layer{s + 1}"] = widths[s] * side * side
    total = 0 if "stem" in culled else per_site["stem"]
    for s in ("layer1", "layer2", "layer3"):
        if s not in culled:
            total += per_site[s] * (1 if thin else 2)
    return total


def test_deepreduce_enumeration_counts(ctx) -> None:
    start = baseline_candidate(ctx)
    plans = enumerate_plans(start.model, start.spec, ORDER, thin_options=(False, True),
                            alphas=(1.0, 0.5), downsamples=(1, 2))
    got = {(p.culled, p.thin, p.alpha, p.input_downsample): p.relus for p in plans}
    assert len(got) == len(plans) == 4 * 4 * 2  # 4 cull levels x thin x 2 alphas x 2 res
    for (culled, thin, alpha, ds), relus in got.items():
        widths = [max(1, round(w * alpha)) for w in (4, 8, 16)]
        assert relus == _hand_count(widths, 8 // ds, culled=culled, thin=thin), (culled, thin)
    assert got[((), False, 1.0, 1)] == 1152
    assert got[(("layer1",), True, 1.0, 1)] == 256 + 128 + 64 == 448
    assert got[(("layer1", "stem"), False, 0.5, 2)] == 4 * 2 * 2 * 2 + 8 * 1 * 1 * 2 == 48
    # width/resolution plans carry the changed arch kwargs; thinning drops only relu2
    p = next(p for p in plans if p.alpha == 0.5 and p.input_downsample == 2)
    assert p.spec.arch.kwargs["width_mult"] == 0.5 and p.spec.arch.kwargs["input_downsample"] == 2
    thin = next(p for p in plans if p.thin and not p.culled and not p.arch_changed)
    assert not any(n.endswith("relu2") for n in thin.keep) and "stem_relu" in thin.keep


def test_deepreduce_non_resnet_thinning_and_arch_options() -> None:
    # VGG: no post-residual ReLU -> thinning drops every other site of a stage;
    # vgg16 has no input_downsample kwarg -> resolution options are skipped
    spec = ModelSpec(arch=ArchSpec(name="vgg16", kwargs={"width_mult": 0.125}),
                     input_shape=(1, 32, 32), num_classes=10)
    model = build_prepared(spec)
    assert thinned_sites(model) == {"layer1.1.relu", "layer2.1.relu", "layer3.1.relu",
                                    "layer4.1.relu", "layer5.1.relu"}
    order = ["layer5", "layer4", "layer3", "layer2", "layer1"]
    plans = enumerate_plans(model, spec, order, thin_options=(False, True), alphas=(1.0, 0.5),
                            downsamples=(1, 2))
    assert {(p.alpha, p.input_downsample) for p in plans} == {(1.0, 1), (0.5, 1)}
    assert all(p.spec.arch.kwargs["width_mult"] == 0.0625 for p in plans if p.alpha == 0.5)
    # widths 8,16,32,64,64 at 32,16,8,4,2 pixels; cull layer5 + layer4, thin -> one site
    # per remaining stage (layer3 keeps its 1st and 3rd ReLU)
    p = next(p for p in plans if p.culled == ("layer5", "layer4") and p.thin and p.alpha == 1)
    assert p.relus == 8 * 32 * 32 + 16 * 16 * 16 + 2 * 32 * 8 * 8


def test_deepreduce_run_budget_and_roundtrip(ctx, tmp_path, monkeypatch) -> None:
    _fixed_criticality(monkeypatch, drd_mod)
    start = baseline_candidate(ctx)
    tech = DeepReDuce(epochs=1, scratch_epoch_multiplier=1.0)
    x = ctx.data.val.tensors[0][:32]

    (cand,) = tech.run(ctx, start, budget=450)  # best fit: cull layer1 + thin = 448
    prof = profile_model(cand.model, cand.spec.input_shape)
    assert prof.relus == 448 and cand.spec == ctx.spec
    step = cand.history[-1]
    assert step["technique"] == "deepreduce" and step["culled"] == ["layer1"] and step["thin"]
    assert step["relus"] == 448 and not step["arch_changed"]
    assert prof.by_stage() == {"stem": 256, "layer1": 0, "layer2": 128, "layer3": 64}
    _roundtrip(cand, x, tmp_path / "a")

    (small,) = tech.run(ctx, start, budget=300)  # best fit needs the half resolution: 288
    assert profile_model(small.model, small.spec.input_shape).relus == 288
    assert small.spec.arch.kwargs["input_downsample"] == 2
    assert small.history[-1]["arch_changed"]
    _roundtrip(small, x, tmp_path / "b")

    (tiny,) = tech.run(ctx, start, budget=5)  # below every plan: greedy whole sites -> 0
    assert profile_model(tiny.model, tiny.spec.input_shape).relus == 0
    assert tiny.history[-1]["fallback"] and "warning" in tiny.notes

    with pytest.raises(BudgetError):
        tech.run(ctx, start, budget=-1)


# ---------------------------------------------------------------------------
# DeepReShape
# ---------------------------------------------------------------------------
def test_deepreshape_hybrenet_within_budget(ctx, tmp_path, monkeypatch) -> None:
    import pi_opt.techniques.deepreshape as drs_mod

    _fixed_criticality(monkeypatch, drs_mod)
    start = baseline_candidate(ctx)
    x = ctx.data.val.tensors[0][:32]
    tech = DeepReShape(base_widths=(2, 4, 8), train_epochs=1, finetune_epochs=1)
    (cand,) = tech.run(ctx, start, budget=400)
    step = cand.history[-1]
    # order layer3 > layer2 > layer1 with 2 sites/stage at 8x8/4x4/2x2 -> (5, 5)
    assert step["multipliers"] == [5, 5] and step["multiplier_rule"] == "relu-equalization"
    assert cand.spec.arch.name == "hybrenet"
    kw = cand.spec.arch.kwargs
    assert kw["blocks"] == [1, 1, 1] and kw["stem_relu"] is True and kw["in_channels"] == 1
    # C=2: 2*64 + 2*128 + 10*32 + 50*8 = 1104 >= 2 x 400 is the smallest such HybReNet
    assert step["base_width"] == 2 and step["hybrenet_relus"] == 1104
    relus = profile_model(cand.model, cand.spec.input_shape).relus
    assert relus <= 400 and relus == step["relus"]
    _roundtrip(cand, x, tmp_path / "a")

    # far below every structure: exact channel-level top-B
    (low,) = DeepReShape(base_widths=(2,), train_epochs=0, finetune_epochs=0).run(
        ctx, start, budget=70)
    assert low.history[-1]["channel_top_b"]
    assert 0 < profile_model(low.model, low.spec.input_shape).relus <= 70
    assert any(s.granularity == "channel" for _, s in iter_sites(low.model))
    _roundtrip(low, x, tmp_path / "b")

    with pytest.raises(ConfigError):
        DeepReShape(multipliers=(2.0,)).run(ctx, start, budget=400)


def test_deepreshape_rejects_non_resnet(ctx) -> None:
    vgg = ModelSpec(arch=ArchSpec(name="vgg16", kwargs={"width_mult": 0.0625}),
                    input_shape=(1, 32, 32), num_classes=10)
    with pytest.raises(ConfigError, match="ResNet base"):
        resnet_layout(vgg)
    bad = TechniqueContext(**{**ctx.__dict__, "spec": vgg})
    with pytest.raises(ConfigError, match="ResNet base"):
        DeepReShape().run(bad, baseline_candidate(ctx), budget=100)
    lay = resnet_layout(ModelSpec(arch=ArchSpec(name="resnet18"), input_shape=(3, 32, 32),
                                  num_classes=10))
    assert lay["blocks"] == [2, 2, 2, 2] and lay["stem_relu"] is False


# ---------------------------------------------------------------------------
# Circa
# ---------------------------------------------------------------------------
def test_circa_fault_model_matches_theory() -> None:
    k, l = 8, 24
    band, top = fault_band(k), exact_range(k, l)
    gen = torch.Generator().manual_seed(0)
    n = 100_000
    # positives inside the band [0, 2^(k-16)): zeroed with prob (2^k - 1 - q) / 2^k -> ~1/2
    x_band = torch.rand(n, generator=gen, dtype=torch.float64) * band
    neg = circa_negative_mask(x_band, k, l, generator=gen)
    assert abs(neg.float().mean().item() - 0.5) < 0.01
    q = (x_band * 2**16).long()
    low, high = q < 2**k // 10, q >= 2**k * 9 // 10
    assert neg[low].float().mean() > 0.85 and neg[high].float().mean() < 0.15
    out = circa_relu(x_band, k, l, generator=gen)
    assert torch.all((out == 0) | (out == x_band))
    # positives above the band (within range) never flip
    x_pos = band + torch.rand(n, generator=gen, dtype=torch.float64) * (top / 2 - band)
    assert not circa_negative_mask(x_pos, k, l, generator=gen).any()
    # negatives (at least one fixed-point unit) never pass
    x_neg = -(2.0**-16) - torch.rand(n, generator=gen, dtype=torch.float64) * (top / 2)
    assert circa_negative_mask(x_neg, k, l, generator=gen).all()
    assert torch.equal(circa_relu(x_neg, k, l, generator=gen), torch.zeros_like(x_neg))
    # k = 0 is exact
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    x = x[x.abs() >= 2.0**-16]
    assert torch.equal(circa_relu(x, 0, 32, generator=gen), torch.relu(x))


def test_circa_l_choice() -> None:
    assert choose_l(5.0, 12, (8, 16, 32)) == 8  # 2^(12+8-17) = 8 > 5
    assert choose_l(9.0, 12, (8, 16, 32)) == 16
    assert choose_l(5.0, 12, (8, 16, 32), margin=2.0) == 16
    assert choose_l(5.0, 0, (8, 16)) == 64  # nothing fits: full width
    with pytest.raises(ValueError):
        CircaConfig(k_choices=(70,))


def test_circa_plugin_k_selection(ctx, tmp_path) -> None:
    start = baseline_candidate(ctx)
    n0 = profile_model(start.model, start.spec.input_shape).relus
    x = ctx.data.val.tensors[0][:32]
    ks = (0, 16, 20)  # 16/20: positives below 1/16 are zeroed with prob ~1 - x

    (strict,) = Circa(k_choices=ks, tolerance=0.0, repeats=2).run(ctx, start, budget=n0)
    step = strict.history[-1]
    prof = profile_model(strict.model, strict.spec.input_shape)
    assert prof.relus == n0 and prof.circa_relus == n0 and prof.exact_relus == 0
    assert step["k"] == 0 and step["within_tolerance"]
    assert step["sweep"][0]["drop"] <= 0.0 and step["sweep"][1]["drop"] > 0.0
    for site in prof.sites:
        assert site.circa_k == 0
        assert 2 * step["max_abs"][site.name] < exact_range(0, site.circa_l)
    _roundtrip(strict, x, tmp_path / "a", seed=3)

    (loose,) = Circa(k_choices=ks, tolerance=1.0, repeats=2).run(ctx, start, budget=n0)
    assert loose.history[-1]["k"] == 20
    assert {s.circa_k for s in profile_model(loose.model, loose.spec.input_shape).sites} == {20}
    assert loose.val_accuracy < strict.val_accuracy
    _roundtrip(loose, x, tmp_path / "b", seed=3)

    # generators are never left behind (they would not survive deepcopy / artifacts)
    assert all(s.circa_generator is None for _, s in iter_sites(loose.model))
    with pytest.raises(BudgetError):
        Circa().run(ctx, start, budget=n0 - 1)


def test_circa_per_site_and_noise_aware_finetune(ctx, tmp_path, monkeypatch) -> None:
    _fixed_criticality(monkeypatch, drd_mod)
    reduced = DeepReDuce(epochs=0).run(ctx, baseline_candidate(ctx), budget=448)[0]
    n0 = profile_model(reduced.model, reduced.spec.input_shape).relus
    # k=20 on every site zeroes nearly all activations: the model-level k is 0 and the
    # per-site pass then tries 24 / 20 site by site
    (cand,) = Circa(k_choices=(0, 20, 24), tolerance=0.02, repeats=2, per_site=True,
                    finetune_epochs=1).run(ctx, reduced, budget=n0)
    prof = profile_model(cand.model, cand.spec.input_shape)
    assert prof.relus == n0 == prof.circa_relus
    step = cand.history[-1]
    assert [h["technique"] for h in cand.history] == ["deepreduce", "circa"]
    kept = {s.name for s in prof.sites if s.kept}
    assert kept == {"stem_relu", "layer2.0.relu1", "layer3.0.relu1"}
    assert step["sweep"][1]["drop"] > 0.02 and len(step["sweep"]) == 2  # stops at first failure
    assert 3 <= step["site_trials"] <= 6 and set(step["l"]) == kept
    ks = step["k"] if isinstance(step["k"], dict) else {n: step["k"] for n in kept}
    assert {s.name: s.circa_k for s in prof.sites if s.kept} == ks
    # linearized (culled/thinned) positions stay IDENTITY; the fine-tune changed weights
    by_name = dict(iter_sites(cand.model))
    assert bool((by_name["layer1.0.relu1"].kinds == int(Kind.IDENTITY)).all())
    assert not torch.equal(cand.model.fc.weight.cpu(), reduced.model.fc.weight.cpu())
    assert cand.val_accuracy == pytest.approx(step["fault_val_accuracy"])
    _roundtrip(cand, ctx.data.val.tensors[0][:32], tmp_path / "a", seed=5)


# ---------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [DeepReDuce, DeepReShape, Circa])
def test_suggest_yields_valid_configs(cls) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(4):
        trial = study.ask()
        overrides = cls.suggest(trial, "t0.")
        assert overrides and set(trial.params) == {f"t0.{k}" for k in overrides}
        cls(**overrides)  # validates
    with pytest.raises(ConfigError):
        cls(not_a_field=1)


def test_config_defaults() -> None:
    d = DeepReDuceConfig()
    assert d.alphas == (1.0, 0.5) and d.input_downsamples == (1, 2) and d.kd_temperature == 4.0
    assert DeepReShapeConfig().target_multiplier == 2.0
    assert CircaConfig().k_choices == (0, 4, 8, 10, 12, 14, 16)
