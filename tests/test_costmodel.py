"""The one MPC cost evaluator (``pi_opt.costmodel``): formula, shipped fit, search objective."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import pi_opt.costmodel as cm
from pi_opt.activations import Kind
from pi_opt.artifacts import ArchSpec, ModelSpec, load_artifact
from pi_opt.circa_faults import circa_rounds
from pi_opt.costmodel import LatencyModel, counts_from_profile, default_cost_model
from pi_opt.errors import ConfigError
from pi_opt.models import create_model, list_models
from pi_opt.network import resolve_network
from pi_opt.profile import ModelProfile, SiteProfile, profile_model
from pi_opt.search import SearchConfig, run_search
from pi_opt.sites import iter_sites, materialize_all, prepare_sites

ROOT = Path(__file__).resolve().parents[1]
CONFIG_JSON = ROOT / "configs" / "latency" / "crypten_cpu.json"
PACKAGE_JSON = ROOT / "pi_opt" / "costmodels" / "crypten_cpu.json"
SPEC = ModelSpec(arch=ArchSpec(name="resnet_mini", kwargs={"widths": [4, 8, 16]}),
                 input_shape=(1, 8, 8), num_classes=10)
from tiny import TINY_SEARCH as TINY  # noqa: E402


def _site(name: str, *, relu: int = 0, circa: int = 0, poly: int = 0, identity: int = 0,
          circa_l: int | None = None) -> SiteProfile:
    n = relu + circa + poly + identity
    return SiteProfile(name=name, stage="s", shape=(1, 1, n), granularity="element", elements=n,
                       relu=relu, circa=circa, poly=poly, identity=identity, poly_mults=poly,
                       circa_k=4 if circa else None, circa_l=circa_l)


def _profile() -> ModelProfile:
    sites = [_site("a", relu=100, poly=20, identity=5),          # rounds 9 + 1
             _site("b", circa=50, identity=10, circa_l=8),       # rounds 3 + ceil(log2 7) = 6
             _site("c", relu=30, circa=40, circa_l=16),          # rounds 9 + 3 + ceil(log2 15)
             _site("d", identity=7)]                             # rounds 0
    return ModelProfile(relus=220, exact_relus=130, circa_relus=90, poly_elements=20,
                        poly_mults=20, identity_elements=22, site_elements=262,
                        maxpool_comparisons=12, macs=10_000, sites=sites)


def test_circa_round_formula() -> None:
    assert [circa_rounds(l) for l in (2, 3, 4, 8, 16, 32, 64)] == [3, 4, 5, 6, 7, 8, 9]


def test_predict_equals_hand_computed_formula() -> None:
    m = LatencyModel(per_relu_s=2e-6, per_circa_s={8: 3e-7, 16: 5e-7}, per_mult_s=1e-7,
                     per_mac_s=1e-9, per_byte_s=1e-8, per_round_s=3e-3, per_inference_s=0.05)
    prof = _profile()  # no layer structure: sites + max-pool comparisons as ReLUs
    # shared rounds per site: max(9, 1), 6, max(9, 7), 0; + output reveal
    rounds = 9 + 6 + 9 + 0 + 1
    circa_b = cm.circa_bytes(50, 8) + cm.circa_bytes(40, 16)
    nbytes = 232 * (130 + 12) + 8 * 20 + circa_b
    assert cm.circa_bytes(40, 16) == 8 * (2 * 10 + 4 * 4 * 10 + 1 + 2 * 40)
    expected = (2e-6 * (130 + 12) + 3e-7 * 50 + 5e-7 * 40 + 1e-7 * 20 + 1e-9 * 10_000
                + 1e-8 * nbytes + 3e-3 * rounds + 0.05)
    assert cm.estimate_rounds(prof) == rounds - 1
    c1 = counts_from_profile(prof)
    assert (c1.rounds, c1.bytes) == (rounds, pytest.approx(nbytes))
    assert m.predict(prof) == pytest.approx(expected, rel=1e-12)
    # mixed sites: the shorter parts' rounds run fused inside the longest's (a: 1, c: 7)
    assert c1.fused_rounds == 1 + 7
    fused = m.model_copy(update={"per_fused_round_s": 2e-3})
    assert fused.predict(prof) == pytest.approx(expected + 2e-3 * 8, rel=1e-12)
    c2 = counts_from_profile(prof, batch_size=2)
    assert c2.rounds == rounds and c2.circa == {8: 100.0, 16: 80.0}
    assert m.predict_bytes(prof, batch_size=2) == c2.bytes
    # an unmeasured l falls back to the nearest measured one, no table to the ReLU's
    assert m.predict_counts(cm.CostCounts(circa={32: 10.0})) == pytest.approx(5e-7 * 10)
    assert LatencyModel(per_relu_s=1.0).predict_counts(cm.CostCounts(circa={8: 3.0})) == 3.0
    wan = resolve_network("wan")
    assert m.predict_network(c1, wan) == pytest.approx(
        expected + rounds * 0.05 + nbytes * 8 / 100e6, rel=1e-12)


def test_protocol_costs_match_crypten_counts() -> None:
    """Per-layer rounds / bytes as CrypTen 0.4.1 counted them (2-party probes of
    max_pool2d, relu, square, conv; bytes here are sent per party = counted / 2)."""
    probes = {(4, 8): (46, 47360), (4, 96): (46, 568320), (9, 32): (57, 428544),
              (9, 16): (57, 214272), (16, 4): (58, 96256), (25, 4): (68, 137152),
              (1, 16): (36, 33792), (2, 8): (36, 29184)}  # (window, windows): (rounds, counted)
    for (window, windows), (rounds, counted) in probes.items():
        c = cm.maxpool_cost(windows, window)
        assert (c.rounds, 2 * c.bytes) == (rounds, counted), (window, windows)
    assert cm.relu_cost(1000) == cm.Cost(rounds=9, bytes=232_000)
    assert cm.square_cost(10) == cm.Cost(rounds=1, bytes=80)
    # Conv2d(64, 64, 3) on 1x64x32x32: 1.64 MB counted (crypten.md 2.3)
    assert 2 * cm.beaver_cost(64 * 32 * 32, 64 * 64 * 9).bytes == 16 * (65536 + 36864)
    assert cm.beaver_cost(10, 10, weights="public") == cm.Cost()
    assert cm.reveal_cost(15) == cm.Cost(rounds=1, bytes=60)


#: Small constructor arguments per registered architecture (a new architecture must
#: add an entry: the test below fails for a missing one).
SMALL_ARCHS: dict[str, dict] = {
    "hybrenet": {"base_width": 2, "multipliers": (1, 1, 1), "blocks": (1, 1, 1, 1)},
    "mobilenet_v2": {"width_mult": 0.125, "expansion": 2, "blocks": (1, 2, 2, 1, 1, 1, 1),
                     "head_width": 64},
    "resnet": {"widths": (4, 8, 8), "stem_relu": True},
    "resnet18": {"width_mult": 0.0625},
    "resnet34": {"width_mult": 0.0625},
    "resnet_mini": {"widths": (4, 8, 8), "in_channels": 3},
    "vgg16": {"width_mult": 0.0625, "pool": "max"},
    "wrn": {"depth": 10, "widen": 1},
    "wrn22_8": {},  # fixed widths: profiled on 8x8 inputs
}


def _mixed_sites(model: torch.nn.Module, shape: tuple[int, ...], seed: int) -> None:
    """Random exact / poly / Circa / identity kinds, element or channel granularity."""
    g = torch.Generator().manual_seed(seed)
    materialize_all(model, torch.zeros(1, *shape),
                    granularity="channel" if seed % 2 else "element")
    for _, site in iter_sites(model):
        site.set_kinds(torch.randint(0, 4, site.kinds.shape, generator=g).to(torch.int8))
        site.set_poly(torch.randn(site.input_shape[0], 3, generator=g))
        site.set_circa(4, (8, 16)[seed % 2])


@pytest.mark.parametrize("name", sorted(list_models()))
def test_profile_and_plan_agree_on_every_architecture(name: str) -> None:
    from mpc.latency_model import plan_counts
    from mpc.lowering import lower

    assert name in SMALL_ARCHS, f"add small kwargs for {name!r} to SMALL_ARCHS"
    shape = (3, 8, 8) if name == "wrn22_8" else (3, 32, 32)
    torch.manual_seed(0)
    model = prepare_sites(create_model(name, **SMALL_ARCHS[name])).eval()
    shipped, wan, lan = default_cost_model(), resolve_network("wan"), resolve_network("lan")
    for variant in ("all_relu", "mixed"):
        if variant == "mixed":
            _mixed_sites(model, shape, seed=len(name))
        prof, plan = profile_model(model, shape), lower(model, shape)
        assert prof.layers is not None
        for batch, weights in ((1, "private"), (8, "private"), (1, "public")):
            p = counts_from_profile(prof, batch_size=batch, weights=weights)
            q = plan_counts(plan, batch_size=batch, weights=weights)
            assert p.rounds == q.rounds, (variant, batch, weights)
            assert p.bytes == pytest.approx(q.bytes, rel=0.05), (variant, batch, weights)
            assert (p.relus, p.circa, p.poly_mults, p.macs) == (q.relus, q.circa,
                                                                q.poly_mults, q.macs)
            for c in (p, q):  # the per-layer traffic adds up to the totals
                assert sum(r for r, _ in c.traffic) == c.rounds
                assert sum(b for _, b in c.traffic) == pytest.approx(c.bytes)
            for net in (None, wan, lan):  # the search's latency = the plan's
                lp = shipped.predict_counts(p) if net is None else shipped.predict_network(p, net)
                lq = shipped.predict_counts(q) if net is None else shipped.predict_network(q, net)
                assert lp == pytest.approx(lq, rel=1e-3), (variant, batch, weights, net)
        linear = sum(op.kind in ("conv", "linear", "affine") for op in plan.ops)
        assert p.linear_rounds == 0 and q.rounds >= linear + 1


def test_link_delay_hidden_behind_compute_per_round() -> None:
    """Per traffic group: rounds x max(0, RTT + bytes / rounds / bandwidth - hidden)."""
    lan = resolve_network("lan")  # 0.5 ms, 1 Gb/s: 1e5 B in 10 rounds = 0.08 ms per round
    assert lan.network_s(rounds=10, bytes_sent=1e5) == pytest.approx(10 * 0.5e-3 + 8e-4)
    assert lan.network_s(rounds=10, bytes_sent=1e5, hidden_s=0.2e-3) == pytest.approx(
        10 * (0.58e-3 - 0.2e-3))
    assert lan.network_s(rounds=10, bytes_sent=1e5, hidden_s=1e-3) == 0.0
    assert lan.network_s(rounds=0, bytes_sent=1e5, hidden_s=1e-3) == pytest.approx(8e-4)
    # a big layer's transfer is not hidden by a small overlap; the small layer's delay is
    groups = [(1.0, 1e6), (9.0, 9e3)]  # 8 ms + 0.5 ms in 1 round; 0.008 ms per round
    assert lan.traffic_s(groups, hidden_s=1e-3) == pytest.approx(8.5e-3 - 1e-3)
    prof = _profile()
    c = counts_from_profile(prof)
    # the reveal, 3 communicating sites, the max-pool comparisons of a layerless profile
    assert len(c.traffic) == 1 + 3 + 1
    base = LatencyModel(per_round_s=3e-3, per_byte_s=1e-8, per_inference_s=0.05)
    hid = base.model_copy(update={"hidden_per_round_s": 1e-3})
    loop, wan = resolve_network("loopback"), resolve_network("wan")
    assert hid.predict_network(c, loop) == base.predict_network(c, loop) == base.predict_counts(c)
    assert base.predict_network(c, wan) - hid.predict_network(c, wan) == pytest.approx(
        c.rounds * 1e-3)  # every WAN round is longer than the overlap
    assert hid.link_s(c, lan) < base.link_s(c, lan)
    # one group of the totals when a CostCounts carries no traffic
    flat = c.model_copy(update={"traffic": []})
    assert hid.link_s(flat, wan) == pytest.approx(wan.network_s(
        rounds=c.rounds, bytes_sent=c.bytes, hidden_s=1e-3))
    with pytest.raises(ValueError):
        LatencyModel(hidden_per_round_s=-1e-3)


def test_shipped_fit_loads_and_prefers_fewer_relus() -> None:
    assert PACKAGE_JSON.read_bytes() == CONFIG_JSON.read_bytes()  # fit script writes both
    shipped = default_cost_model()
    assert shipped == LatencyModel.load(CONFIG_JSON)
    data = json.loads(CONFIG_JSON.read_text())
    assert "const_s" not in data and "per_circa_relu_s" not in data
    # the no-file fallback carries exactly the committed coefficients
    assert cm.LatencyModel.model_validate(cm._COMMITTED) == shipped.model_copy(
        update={"meta": {}})

    torch.manual_seed(0)
    model = prepare_sites(SPEC.build())
    materialize_all(model, torch.zeros(1, *SPEC.input_shape))
    full = profile_model(model, SPEC.input_shape)
    g = torch.Generator().manual_seed(0)
    for _, site in iter_sites(model):  # keep a quarter of each site's ReLUs
        n = site.kinds.numel()
        kinds = torch.full((n,), int(Kind.IDENTITY), dtype=torch.int8)
        kinds[torch.randperm(n, generator=g)[:max(1, n // 4)]] = int(Kind.RELU)
        site.set_kinds(kinds.view(site.kinds.shape))
    reduced = profile_model(model, SPEC.input_shape)
    assert reduced.relus < full.relus
    assert 0 < shipped.predict(reduced) < shipped.predict(full)


def test_no_file_falls_back_to_committed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cm, "default_model_text", lambda: None)
    fallback = cm.default_cost_model()
    assert fallback.per_round_s == LatencyModel.load(CONFIG_JSON).per_round_s > 0


def _module_level(tree: ast.AST):
    """Nodes outside function bodies (the CLI imports ``mpc`` lazily inside a function)."""
    for node in ast.iter_child_nodes(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node
            yield from _module_level(node)


def test_pi_opt_never_imports_mpc_or_crypten() -> None:
    bad = []
    for path in sorted((ROOT / "pi_opt").rglob("*.py")):
        for node in _module_level(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("mpc", "crypten")]
    assert not bad, bad


def test_search_cost_objective_uses_the_model(tmp_path: Path) -> None:
    cfg = SearchConfig.model_validate({**TINY, "techniques": ["deepreduce"], "budgets": [0.3],
                                       "objective": "cost"})
    report = run_search(cfg, workdir=tmp_path)
    assert report.objective == "cost"
    assert report.points
    model = default_cost_model()
    for p in report.points:
        prof = load_artifact(tmp_path / p.artifact).manifest.profile
        assert p.cost is not None and p.cost == model.predict(prof)


def test_network_profiles_and_config_errors() -> None:
    assert resolve_network("WAN").rtt_ms == 50.0
    assert resolve_network({"rtt_ms": 20, "bandwidth_mbps": 200}).label() == "20 ms / 200 Mb/s"
    for bad, msg in [("moon", "unknown network profile"),
                     ({"rtt_ms": 0, "bandwidth_mbps": 10}, "rtt_ms must be"),
                     ({"rtt_ms": 5, "bandwidth_mbps": -1}, "bandwidth_mbps must be"),
                     ({"rtt_ms": 5}, "bandwidth_mbps must be"),
                     ({"rtt_ms": 5, "bandwidth_mbps": 1, "jitter": 2}, "invalid network")]:
        with pytest.raises(ConfigError, match=msg):
            resolve_network(bad)
        with pytest.raises(ValueError, match=msg):
            SearchConfig.model_validate({**TINY, "network": bad})
    with pytest.raises(ValueError, match="latency_budgets_ms must be finite and > 0"):
        SearchConfig.model_validate({**TINY, "latency_budgets_ms": [0]})
    with pytest.raises(ValueError, match="objective"):
        SearchConfig.model_validate({**TINY, "objective": "speed"})


def test_search_config_with_network_survives_a_json_round_trip() -> None:
    """A dumped config (what the service stores and a resumed job reloads) validates again."""
    for network in ("loopback", "lan", "wan", {"rtt_ms": 3, "bandwidth_mbps": 10}):
        cfg = SearchConfig.model_validate({**TINY, "network": network})
        again = SearchConfig.model_validate(json.loads(cfg.model_dump_json()))
        assert again.network == cfg.network
    with pytest.raises(ValueError, match="rtt_ms must be"):  # a doctored name is not a bypass
        SearchConfig.model_validate({**TINY, "network": {"name": "loopback", "rtt_ms": 0,
                                                         "bandwidth_mbps": 5}})


def test_latency_budget_below_floor_is_a_config_error(tmp_path: Path) -> None:
    cfg = SearchConfig.model_validate({**TINY, "techniques": ["deepreduce"], "budgets": [0.3],
                                       "objective": "latency", "network": "wan",
                                       "latency_budgets_ms": [1.0]})
    with pytest.raises(ConfigError, match="below the model's linear-layer floor of .* ms on "
                                          "wan: with every ReLU removed"):
        run_search(cfg, workdir=tmp_path)
    assert not (tmp_path / "baseline").exists()  # refused before any training


def test_search_latency_objective_on_wan(tmp_path: Path) -> None:
    wan = resolve_network("wan")
    prof = profile_model(SPEC.build(), SPEC.input_shape)
    model = default_cost_model()
    floor, _ = cm.linear_floor_explained(model, prof, wan)
    full = model.predict_latency(prof, wan)
    budget_ms = 1e3 * (floor + full) / 2
    relus = cm.relu_budget_for_latency(model, prof, wan, budget_ms * 1e-3)
    assert 0 < relus < prof.relus
    cfg = SearchConfig.model_validate({**TINY, "techniques": ["deepreduce"], "budgets": [0.5],
                                       "objective": "latency", "network": "wan",
                                       "latency_budgets_ms": [budget_ms]})
    report = run_search(cfg, workdir=tmp_path)
    assert report.objective == "latency" and report.network["name"] == "wan"
    assert relus in report.budgets
    for p in report.points:
        prof_p = load_artifact(tmp_path / p.artifact).manifest.profile
        assert p.cost == pytest.approx(model.predict_latency(prof_p, wan))
        assert p.latency_s is not None and p.latency_s["job"] == pytest.approx(p.cost)
        # a LAN round hides behind compute (hidden_per_round_s > its 0.5 ms), a WAN one not
        assert p.latency_s["loopback"] <= p.latency_s["lan"] < p.latency_s["wan"]
    [answer] = report.latency_answers
    assert answer.budget_ms == budget_ms
    if answer.met:
        assert answer.latency_ms <= budget_ms
    assert "latency_job_s" in (tmp_path / "report" / "trials.csv").read_text().splitlines()[0]
