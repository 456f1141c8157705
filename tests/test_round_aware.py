"""Round-aware SNL / AutoReP penalties under ``objective: latency`` (pi_opt.techniques._rounds).

Tiny setup (tests/tiny.py): digits subset, ``resnet_mini`` widths (4, 8, 16): 7 sites,
1,152 ReLUs per sample.
"""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from pi_opt.costmodel import RELU_ROUNDS, default_cost_model
from pi_opt.errors import ConfigError
from pi_opt.network import PROFILES
from pi_opt.profile import profile_model
from pi_opt.techniques import _masks as masks_mod
from pi_opt.techniques._masks import gated_sites
from pi_opt.techniques._rounds import close_stray_sites, site_round_weights
from pi_opt.techniques.autorep import AutoReP
from pi_opt.techniques.base import LatencyObjective, TechniqueContext, baseline_candidate
from pi_opt.techniques.snl import SNL

BUDGET = 100


def _on_wan(ctx: TechniqueContext) -> TechniqueContext:
    return dataclasses.replace(ctx, latency=LatencyObjective(
        network=PROFILES["wan"], cost_model=default_cost_model()))


def test_round_weights_price_rounds_in_relu_equivalents(ctx) -> None:
    """Under WAN a site's 9 rounds weigh rounds * (RTT - hidden + per-round s) / per-ReLU s
    (committed fit: 232 B per ReLU at 100 Mb/s; the link delay hidden behind compute per
    round); nothing without objective latency or with scale 0."""
    sites = gated_sites(baseline_candidate(ctx).model, "pixel")
    assert site_round_weights(ctx, sites, drop_squares=False) == []
    wan = _on_wan(ctx)
    assert site_round_weights(wan, sites, drop_squares=False, scale=0.0) == []
    m = default_cost_model()
    relu_s = m.per_relu_s + 232 * m.per_byte_s + 232 * 8 / 100e6
    round_s = 0.050 - m.hidden_per_round_s + m.per_round_s
    got = site_round_weights(wan, sites, drop_squares=False)
    assert got == pytest.approx([RELU_ROUNDS * round_s / relu_s] * len(sites), rel=1e-9)
    square_s = m.per_mult_s + 8 * m.per_byte_s + 8 * 8 / 100e6
    poly = site_round_weights(wan, sites, drop_squares=True, scale=2.0)
    assert poly == pytest.approx([2 * (RELU_ROUNDS - 1) * round_s / (relu_s - square_s)]
                                 * len(sites), rel=1e-9)


def _ranked(sites, top: dict[int, int]) -> dict[str, torch.Tensor]:
    """Scores that put the first ``top[i]`` pixel entries of site ``i`` above every other
    entry (site 0's first, then site 1's, ...) and everything else at 0."""
    scores, level = {}, 1000.0
    for i, g in enumerate(sites):
        s = torch.zeros(g.orig.shape).flatten()
        n = top.get(i, 0)
        s[:n] = level - torch.arange(n, dtype=torch.float32) * 1e-3
        level -= 10.0
        scores[g.name] = s.view(g.orig.shape)
    return scores


def test_close_stray_sites_moves_their_relus_to_open_sites(ctx) -> None:
    """The cut to 100 ReLUs would keep 80 / 15 / 5 in sites 0 / 1 / 2. Sites holding less than
    25 % of the budget close while their ReLUs are worth less than their rounds (weakest
    first), their ReLUs go to site 0; nothing closes without round weights or with share 0;
    a site closes only if the others can hold the budget."""
    sites = gated_sites(baseline_candidate(ctx).model, "pixel")
    scores = _ranked(sites, {0: 80, 1: 15, 2: 5})
    eligible = {g.name: g.cand.clone() for g in sites}
    names = [g.name for g in sites]

    def closed(out, before=eligible):
        return [n for n in names if not out[n].any() and before[n].any()]

    big = [1e4] * len(sites)
    assert closed(close_stray_sites(sites, scores, eligible, 100, big, stray_share=0.25)) \
        == names[1:3]
    # weights of 10 ReLUs: site 1 (15 kept) pays its rounds, site 2 (5 kept) does not
    assert closed(close_stray_sites(sites, scores, eligible, 100, [10.0] * len(sites),
                                    stray_share=0.25)) == names[2:3]
    assert close_stray_sites(sites, scores, eligible, 100, [], stray_share=0.25) is eligible
    assert closed(close_stray_sites(sites, scores, eligible, 100, big, stray_share=0.0)) == []
    # only sites 1 and 2 eligible: closing site 2 would leave too few candidates for 100
    two = {n: (e if n in names[1:3] else torch.zeros_like(e)) for n, e in eligible.items()}
    cap = sum(int(two[n].sum()) for n in names[1:2])
    assert closed(close_stray_sites(sites, scores, two, cap + 1, big, stray_share=0.9),
                  two) == []


@pytest.mark.parametrize("tech", [SNL, AutoReP], ids=["snl", "autorep"])
@pytest.mark.parametrize("share", [-0.1, 1.0, 2.0])
def test_stray_share_out_of_range_is_a_config_error(tech, share) -> None:
    with pytest.raises(ConfigError, match="stray_share"):
        tech(stray_share=share)


def _capture_penalty(monkeypatch, tech, ctx):
    """Run ``tech`` with its training loop stubbed out; return the hooks it passed to ``fit``."""
    seen: dict[str, object] = {}

    def fake_fit(model, train, val, cfg, **kw):
        seen["hooks"], seen["model"] = kw["hooks"], model
        return types.SimpleNamespace(epochs_run=0)

    monkeypatch.setattr(masks_mod, "fit", fake_fit)  # SNL, AutoReP: _masks.train_search
    tech.run(ctx, baseline_candidate(ctx), budget=BUDGET)
    return seen["hooks"], seen["model"]


def _fill(params, gen: torch.Generator) -> None:
    with torch.no_grad():
        for p in params:
            p.copy_(torch.rand(p.shape, generator=gen) * 2 - 0.5)


def test_snl_penalty_relus_unchanged_latency_adds_site_rounds(ctx, monkeypatch) -> None:
    """Objective relus: exactly lam * sum |c| n / N (the paper's normalised L1), bit for bit.
    Objective latency: the same L1 plus sum_s w_s sqrt(sum n c^2 / n_s), both over N + sum w."""
    sites = gated_sites(baseline_candidate(ctx).model, "pixel")
    counts = [g.weight for g in sites]
    n = float(sum(float(c.sum()) for c in counts))
    for c_ctx, weights in ((ctx, []), (_on_wan(ctx), site_round_weights(
            _on_wan(ctx), sites, drop_squares=False))):
        hooks, model = _capture_penalty(monkeypatch, SNL(finetune_epochs=0), c_ctx)
        coeffs = hooks.param_groups(model)[1]["params"]
        _fill(coeffs, torch.Generator().manual_seed(0))
        lam = SNL().config.lambda_init
        got = hooks.extra_loss(model)
        if not weights:
            w = [cn * (1.0 / max(1.0, n)) for cn in counts]
            want = lam * torch.stack([(c.abs() * wi).sum() for c, wi in zip(coeffs, w)]).sum()
            assert torch.equal(got, want)
            continue
        d = n + sum(weights)
        l1 = sum(float((c.detach().abs() * cn).sum()) for c, cn in zip(coeffs, counts))
        group = sum(ws * float(torch.sqrt((cn * c.detach() ** 2).sum() / cn.sum()))
                    for c, cn, ws in zip(coeffs, counts, weights))
        assert float(got.detach()) == pytest.approx(lam * (l1 + group) / d, rel=1e-5)
        assert group > 10 * l1  # on WAN the sites' rounds dominate the ReLUs' bytes


def test_autorep_hinge_relus_unchanged_latency_adds_site_rounds(ctx, monkeypatch) -> None:
    """AutoReP: objective relus keeps lam * relu(density - B/N) bit for bit; objective latency
    adds lam * sum_s w_s sqrt(kept share of s) / (N + sum w) through the gates."""
    sites = gated_sites(baseline_candidate(ctx).model, "pixel")
    counts = [g.weight.float() for g in sites]
    n = int(sum(float(c.sum()) for c in counts))
    for c_ctx in (ctx, _on_wan(ctx)):
        tech = AutoReP(finetune_epochs=0, search_epochs=1)
        hooks, model = _capture_penalty(monkeypatch, tech, c_ctx)
        ws = hooks.param_groups(model)[1]["params"]
        _fill(ws, torch.Generator().manual_seed(1))
        hooks.on_step(model, 1)  # gates follow w: an on gate turns off where w < -threshold
        got = hooks.extra_loss(model)
        ms = [(w >= -tech.config.threshold).float() for w in ws]
        assert 0 < sum(float(m.sum()) for m in ms) < sum(m.numel() for m in ms)
        dens = torch.stack([(m * c).sum() for m, c in zip(ms, counts)]).sum()
        lam = tech.config.lam
        hinge = lam * torch.relu(dens / n - BUDGET / n)
        if c_ctx.latency is None:
            assert torch.equal(got, hinge)
            continue
        weights = site_round_weights(c_ctx, sites, drop_squares=True)
        group = sum(w * float(torch.sqrt((c * m * m).sum() / c.sum()))
                    for m, c, w in zip(ms, counts, weights))
        want = float(hinge) + lam * group / (n + sum(weights))
        assert float(got.detach()) == pytest.approx(want, rel=1e-5)


def _kept_sites(cand) -> tuple[int, float]:
    prof = profile_model(cand.model, cand.spec.input_shape)
    wan = default_cost_model().predict_latency(prof, PROFILES["wan"])
    return sum(1 for s in prof.sites if s.kept > 0), wan


@pytest.mark.slow
@pytest.mark.parametrize("tech", [SNL(max_search_epochs=20, finetune_epochs=0),
                                  AutoReP(search_epochs=20, finetune_epochs=0)],
                         ids=["snl", "autorep"])
def test_latency_objective_concentrates_relus_in_fewer_sites(ctx, tech) -> None:
    """Same ReLU budget: on WAN the round-aware penalty leaves fewer sites with any kept ReLU
    and a lower predicted WAN latency than the ReLU objective."""
    out = {}
    for name, c_ctx in (("relus", ctx), ("latency", _on_wan(ctx))):
        torch.manual_seed(0)
        cand = tech.run(c_ctx, baseline_candidate(c_ctx), budget=BUDGET)[0]
        assert cand.relus() <= BUDGET
        out[name] = _kept_sites(cand)
    assert out["latency"][0] < out["relus"][0], out
    assert out["latency"][1] < out["relus"][1], out


def test_search_hands_the_latency_objective_to_techniques(tmp_path) -> None:
    """``objective: latency`` puts the job's link and cost model into the technique context;
    ``objective: relus`` leaves it empty (the ReLU-count penalties)."""
    from tiny import TINY_SEARCH

    from pi_opt.search import SearchConfig, SearchSession

    for objective, want in (("latency", PROFILES["wan"]), ("relus", None)):
        cfg = SearchConfig.model_validate({**TINY_SEARCH, "techniques": ["snl"], "budgets": [0.5],
                                           "objective": objective, "network": "wan"})
        session = SearchSession.open(cfg, workdir=tmp_path)  # the baseline is reused
        got = session.ctx.latency
        assert (got.network if got is not None else None) == want
        if got is not None:
            assert got.cost_model == default_cost_model()
