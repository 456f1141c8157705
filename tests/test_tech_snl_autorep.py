"""SNL and AutoReP techniques, DaPa closed form, AutoReP gate primitives.

Tiny setup (tests/tiny.py): digits (400 train images, 8x8), ``resnet_mini`` widths
(4, 8, 16) with a stem ReLU: 1,152 ReLUs per sample.
"""

from __future__ import annotations

import optuna
import pytest
import torch
import torch.nn.functional as F

from pi_opt.activations import Kind
from pi_opt.artifacts import load_artifact, save_artifact
from pi_opt.profile import profile_model
from pi_opt.sites import iter_sites
from pi_opt.techniques.autorep import AutoReP, AutoRePConfig, hysteresis_update, ste_gate
from pi_opt.techniques.base import Candidate, TechniqueContext, baseline_candidate
from pi_opt.techniques.dapa import dapa_coefficients, eval_poly
from pi_opt.techniques.snl import SNL, SNLConfig

TOTAL = 1152


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


def _relus(cand: Candidate) -> int:
    return profile_model(cand.model, cand.spec.input_shape).relus


def _kept_map(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: ((s.full_kinds() == Kind.RELU) | (s.full_kinds() == Kind.CIRCA)).cpu()
            for n, s in iter_sites(model)}


def _roundtrip(cand: Candidate, ctx: TechniqueContext, path) -> None:
    """Budget as saved equals the live profile; the reload is bit-exact."""
    relus = _relus(cand)
    man = save_artifact(cand.model, cand.spec, path, history=cand.history)
    assert man.profile.relus == relus
    art = load_artifact(path)
    assert art.manifest.profile.relus == relus
    x = ctx.data.val.tensors[0][:32]
    cand.model.eval()
    with torch.no_grad():
        assert torch.equal(cand.model(x), art.model(x))


# --------------------------------------------------------------------------- DaPa
def _quadrature_fit(mu: float, sigma: float, degree: int) -> torch.Tensor:
    """Least-squares polynomial fit of ReLU under N(mu, sigma^2), by dense quadrature."""
    x = torch.linspace(mu - 12 * sigma, mu + 12 * sigma, 400_001, dtype=torch.float64)
    wts = torch.exp(-0.5 * ((x - mu) / sigma) ** 2)
    basis = torch.stack([x**k for k in range(degree + 1)], 1) * wts.sqrt()[:, None]
    sol = torch.linalg.lstsq(basis, (torch.relu(x) * wts.sqrt())[:, None]).solution.squeeze(1)
    return torch.cat([sol, torch.zeros(2 - degree, dtype=torch.float64)])


def test_dapa_standard_normal_values() -> None:
    c = dapa_coefficients(torch.zeros(1), torch.ones(1))
    assert c.shape == (1, 3)
    assert torch.allclose(c[0], torch.tensor([0.1995, 0.5, 0.1995]), atol=5e-4)
    lin = dapa_coefficients(torch.zeros(1), torch.ones(1), degree=1)
    assert torch.allclose(lin[0], torch.tensor([0.3989, 0.5, 0.0]), atol=5e-4)


@pytest.mark.parametrize("mu,sigma", [(0.0, 1.0), (0.8, 0.5), (-1.3, 2.0), (2.5, 0.7)])
@pytest.mark.parametrize("degree", [1, 2])
def test_dapa_matches_numerical_least_squares(mu: float, sigma: float, degree: int) -> None:
    got = dapa_coefficients(torch.tensor([mu], dtype=torch.float64),
                            torch.tensor([sigma], dtype=torch.float64), degree)[0]
    assert torch.allclose(got, _quadrature_fit(mu, sigma, degree), atol=1e-5)


def test_dapa_matches_sampled_fit_and_uses_std() -> None:
    gen = torch.Generator().manual_seed(0)
    mean = torch.tensor([0.0, 1.0, -0.5])
    std = torch.tensor([1.0, 2.0, 0.5])
    got = dapa_coefficients(mean, std)
    x = torch.randn(400_000, 3, generator=gen, dtype=torch.float64) * std.double() + mean.double()
    for c in range(3):
        a = torch.stack([torch.ones_like(x[:, c]), x[:, c], x[:, c] ** 2], 1)
        sol = torch.linalg.lstsq(a, torch.relu(x[:, c])[:, None]).solution.squeeze(1)
        assert torch.allclose(got[c].double(), sol, atol=3e-3), (c, got[c], sol)
    # passing the variance instead of the std (the public code's bug) gives other numbers
    wrong = dapa_coefficients(mean, std**2)
    assert not torch.allclose(wrong[1], got[1], atol=1e-2)


@pytest.mark.parametrize("mu,sigma", [(1.5, 0.5), (-1.0, 3.0), (0.3, 0.2)])
def test_dapa_beats_standard_normal_fit_off_distribution(mu: float, sigma: float) -> None:
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(1, 4, 64, 64, generator=gen) * sigma + mu)
    coeffs = dapa_coefficients(torch.full((4,), mu), torch.full((4,), sigma))
    naive = dapa_coefficients(torch.zeros(4), torch.ones(4))
    mse_dapa = F.mse_loss(eval_poly(coeffs, x), torch.relu(x))
    mse_naive = F.mse_loss(eval_poly(naive, x), torch.relu(x))
    assert mse_dapa < 0.5 * mse_naive


# --------------------------------------------------------------------------- gates
def test_hysteresis_prevents_flapping() -> None:
    t = 0.003
    m = torch.ones(4)
    # w hovering inside (-t, t): nothing moves, whatever the sign
    for w in ([-0.002, 0.002, -0.0029, 0.0], [0.0025, -0.0025, 0.001, -0.001]):
        m = hysteresis_update(m, torch.tensor(w), t)
        assert torch.equal(m, torch.ones(4))
    # only entries below -t switch off
    m = hysteresis_update(m, torch.tensor([-0.004, -0.002, 0.5, -1.0]), t)
    assert torch.equal(m, torch.tensor([0.0, 1.0, 1.0, 0.0]))
    # an off gate stays off at w in (-t, t] and turns on only above t
    m = hysteresis_update(m, torch.tensor([0.002, 0.0, 0.0, 0.003]), t)
    assert torch.equal(m, torch.tensor([0.0, 1.0, 1.0, 0.0]))
    m = hysteresis_update(m, torch.tensor([0.0031, -0.001, -0.001, 0.001]), t)
    assert torch.equal(m, torch.tensor([1.0, 1.0, 1.0, 0.0]))


def test_ste_forward_is_gate_and_gradient_is_softplus_scaled() -> None:
    w = torch.tensor([-2.0, -0.001, 0.3, 4.0], requires_grad=True)
    m = torch.tensor([0.0, 1.0, 1.0, 0.0])
    g = ste_gate(w, m)
    assert torch.equal(g, m)
    upstream = torch.tensor([0.5, -1.0, 2.0, 3.0])
    (g * upstream).sum().backward()
    assert torch.allclose(w.grad, upstream * F.softplus(w.detach()))
    assert not torch.allclose(w.grad, upstream)  # not the identity STE


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize("cls", [SNL, AutoReP])
def test_suggest_space_is_prefixed_and_valid(cls) -> None:
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = cls.suggest(trial, "t0_")
    assert params and all(f"t0_{k}" in trial.params for k in params)
    cls(**params)  # a valid config
    assert cls.reduces_count


def test_config_defaults_and_validation() -> None:
    assert SNLConfig().lambda_growth == 1.25 and SNLConfig().harvest_budgets == []
    assert SNLConfig(preset="paper").lambda_growth == 1.1
    assert AutoRePConfig().threshold == 0.003 and AutoRePConfig().a2_scale == 1.0
    with pytest.raises(Exception):
        SNL(granularity="layer")
    with pytest.raises(Exception):
        AutoReP(degree=3)


# --------------------------------------------------------------------------- SNL
def test_snl_harvests_every_budget_exactly(ctx, tmp_path) -> None:
    events: list[dict] = []
    ctx.progress = events.append
    try:
        # defaults (normalised lambda, scaled mask lr): the descent runs until the
        # lowest budget is met, well inside the bound
        tech = SNL(harvest_budgets=[600, 115, 2000], max_search_epochs=120, finetune_epochs=1)
        cands = tech.run(ctx, baseline_candidate(ctx), budget=230)
    finally:
        ctx.progress = None
    budgets = [c.history[-1]["budget"] for c in cands]
    assert budgets == [230, 600, 115]  # run budget first; 2000 >= baseline is not harvested
    assert [c.history[-1]["harvested"] for c in cands] == [False, True, True]
    for i, (c, b) in enumerate(zip(cands, budgets)):
        assert c.notes["budget_reached"] and not c.notes["search_bound_hit"]
        assert _relus(c) == b  # exact top-B at pixel granularity: never over, not under
        kinds = torch.cat([s.full_kinds().flatten() for _, s in iter_sites(c.model)])
        assert set(kinds.unique().tolist()) <= {int(Kind.IDENTITY), int(Kind.RELU)}
        assert 0.0 <= c.val_accuracy <= 1.0
        _roundtrip(c, ctx, tmp_path / f"snl{i}")
    # harvest snapshots are taken in descent order, within one search
    harvest = [e for e in events if e.get("event") == "harvest"]
    assert [e["budget"] for e in harvest] == [600, 230, 115]
    assert all(e["relus"] <= e["budget"] for e in harvest)
    lams = [e["lam"] for e in events if e.get("type") == "technique" and "epoch" in e
            and "event" not in e]
    assert lams[-1] > lams[0]  # lambda escalated on plateaus


def test_snl_channel_granularity_cost_weighted_and_unreached_budget(ctx) -> None:
    tech = SNL(granularity="channel", max_search_epochs=2, finetune_epochs=0,
               site_costs={"layer1": 4.0})
    (cand,) = tech.run(ctx, baseline_candidate(ctx), budget=100)
    assert _relus(cand) <= 100
    assert not cand.notes["budget_reached"] and "warning" in cand.notes
    for _, site in iter_sites(cand.model):  # channel-structured masks
        assert tuple(site.kinds.shape[1:]) == (1, 1)


# --------------------------------------------------------------------------- AutoReP
def test_autorep_budget_polynomials_and_roundtrip(ctx, tmp_path) -> None:
    tech = AutoReP(search_epochs=14, finetune_epochs=1)
    (cand,) = tech.run(ctx, baseline_candidate(ctx), budget=115)
    prof = profile_model(cand.model, cand.spec.input_shape)
    assert prof.relus <= 115
    assert prof.identity_elements == 0 and prof.poly_elements == TOTAL - prof.relus
    assert prof.poly_mults == prof.poly_elements  # every replaced channel has a2 != 0
    naive = dapa_coefficients(torch.zeros(1), torch.ones(1))[0]
    learned = []
    for _, site in iter_sites(cand.model):
        full = site.full_kinds()
        ch = (full == Kind.POLY).flatten(1).any(1)
        if ch.any():
            coeffs = site.poly.cpu()[ch]
            assert torch.isfinite(coeffs).all() and (coeffs[:, 2] != 0).all()
            learned.append(coeffs)
    learned_all = torch.cat(learned)
    # data-aware and trained: not the N(0,1) fit everywhere
    assert (learned_all - naive).abs().max() > 1e-2
    hist = cand.history[-1]
    assert hist["technique"] == "autorep" and hist["budget"] == 115
    _roundtrip(cand, ctx, tmp_path / "autorep")


# --------------------------------------------------------------------------- chains
def _reduced_start(ctx: TechniqueContext) -> Candidate:
    """Baseline with ~40 % identity and ~20 % polynomial positions, one channel-level site."""
    start = baseline_candidate(ctx)
    gen = torch.Generator().manual_seed(3)
    for i, (name, site) in enumerate(iter_sites(start.model)):
        if i == 1:  # channel-granular site: half its channels linearized
            c = site.kinds.shape[0]
            site.kinds = torch.full((c, 1, 1), int(Kind.RELU), dtype=torch.int8)
            site.kinds[: c // 2] = int(Kind.IDENTITY)
            site.set_poly(torch.tensor([0.1, 0.5, 0.2]).repeat(c, 1))  # unused until POLY
            continue
        r = torch.rand(site.kinds.shape, generator=gen)
        kinds = torch.full(site.kinds.shape, int(Kind.RELU), dtype=torch.int8)
        kinds[r < 0.4] = int(Kind.IDENTITY)
        kinds[(r >= 0.4) & (r < 0.6)] = int(Kind.POLY)
        site.set_kinds(kinds)
        site.set_poly(torch.tensor([0.1, 0.5, 0.2]).repeat(site.kinds.shape[0], 1))
    return start


@pytest.mark.parametrize("name", ["snl", "autorep"])
def test_reduced_start_is_never_resurrected(ctx, name) -> None:
    start = _reduced_start(ctx)
    start_kept = _kept_map(start.model)
    start_kinds = {n: s.full_kinds().clone() for n, s in iter_sites(start.model)}
    start_poly = {n: s.poly.clone() for n, s in iter_sites(start.model)}
    n_start = _relus(start)
    budget = n_start // 2
    if name == "snl":
        tech = SNL(max_search_epochs=3, finetune_epochs=0, granularity="pixel")
    else:
        tech = AutoReP(search_epochs=3, finetune_epochs=0, granularity="channel")
    (cand,) = tech.run(ctx, start, budget=budget)
    assert _relus(cand) <= budget
    new_kinds = {n: s.full_kinds() for n, s in iter_sites(cand.model)}
    for n, kept in _kept_map(cand.model).items():
        assert not (kept & ~start_kept[n]).any(), f"{name} resurrected positions in {n}"
        was_off = ~start_kept[n]  # previously linearized positions keep their kind
        assert torch.equal(new_kinds[n][was_off], start_kinds[n][was_off])
    if name == "snl":  # SNL never touches polynomials
        for n, s in iter_sites(cand.model):
            assert torch.equal(s.poly, start_poly[n])
    # a budget the start already meets changes nothing
    (same,) = tech.run(ctx, start, budget=n_start)
    assert _relus(same) == n_start and same.notes.get("budget_already_met")
    for n, s in iter_sites(same.model):
        assert torch.equal(s.full_kinds(), start_kinds[n])
    for n, s in iter_sites(start.model):  # the start candidate itself is not modified
        assert torch.equal(s.full_kinds(), start_kinds[n])


# --------------------------------------------------------------------------- internals
def test_apply_selection_is_exact_and_respects_eligibility(ctx) -> None:
    from pi_opt.techniques.snl import apply_selection, gated_sites

    start = _reduced_start(ctx)
    model = start.model
    sites = gated_sites(model, "pixel")
    before = {g.name: g.orig.clone() for g in sites}
    gen = torch.Generator().manual_seed(5)
    scores = {g.name: torch.rand(g.cand.shape, generator=gen) for g in sites}
    eligible = {g.name: g.cand & (torch.rand(g.cand.shape, generator=gen) < 0.5) for g in sites}
    n_eligible = sum(int(e.expand(s.full_kinds().shape).sum())
                     for e, (_, s) in zip(eligible.values(), iter_sites(model)))
    # budget above the eligible count: every eligible position kept, nothing else
    kept = apply_selection(model, sites, scores, eligible, n_eligible + 50, drop_kind=Kind.POLY)
    assert kept == n_eligible == profile_model(model, start.spec.input_shape).relus
    for g in sites:
        k = g.site.kinds
        assert torch.equal(k[eligible[g.name]], before[g.name][eligible[g.name]])
        assert (k[g.cand & ~eligible[g.name]] == Kind.POLY).all()
        assert torch.equal(k[~g.cand], before[g.name][~g.cand])
    # a tight budget: exact count, the highest-scoring eligible positions
    sites = gated_sites(model, "pixel")  # current state as the new origin
    budget = 37
    kept = apply_selection(model, sites, scores, {g.name: g.cand for g in sites}, budget,
                           drop_kind=Kind.IDENTITY)
    assert kept == budget == profile_model(model, start.spec.input_shape).relus
    flat = torch.cat([scores[g.name][g.cand] for g in sites])
    thr = flat.sort(descending=True).values[budget - 1]
    for g in sites:
        on = (g.site.kinds == Kind.RELU) | (g.site.kinds == Kind.CIRCA)
        assert (scores[g.name][on] >= thr).all()


def test_autorep_dapa_init_uses_site_input_statistics(ctx) -> None:
    """Without refreshes and with a frozen polynomial, the written coefficients are the
    DaPa closed form (sigma = std) of each site's input over the calibration batches."""
    tech = AutoReP(search_epochs=1, finetune_epochs=0, dapa_refresh_steps=0, poly_lr=1e-12,
                   dapa_calib_batches=2)
    bs = ctx.finetune.batch_size
    x = ctx.data.train.tensors[0][: 2 * bs]
    stats: dict[str, list[torch.Tensor]] = {}
    teacher = baseline_candidate(ctx).model.eval()
    hooks = [s.register_forward_hook(
        lambda m, a, o, n=n: stats.setdefault(n, []).append(a[0].detach()))
        for n, s in iter_sites(teacher)]
    with torch.no_grad():
        teacher(x[:bs])
        teacher(x[bs:])
    for h in hooks:
        h.remove()
    (cand,) = tech.run(ctx, baseline_candidate(ctx), budget=300)
    checked = 0
    for n, site in iter_sites(cand.model):
        ch = (site.full_kinds() == Kind.POLY).flatten(1).any(1)
        if not ch.any():
            continue
        xs = torch.cat(stats[n]).transpose(0, 1).flatten(1).double()
        mean, var = xs.mean(1), xs.var(1, unbiased=False)
        want = dapa_coefficients(mean, var.clamp_min(1e-4).sqrt()).float()
        assert torch.allclose(site.poly.cpu()[ch], want[ch], atol=1e-4), n
        checked += 1
    assert checked >= 3
