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
from pi_opt.profile import ModelProfile, SiteProfile, profile_model
from pi_opt.search import SearchConfig, run_search
from pi_opt.sites import iter_sites, materialize_all, prepare_sites

ROOT = Path(__file__).resolve().parents[1]
CONFIG_JSON = ROOT / "configs" / "latency" / "crypten_cpu.json"
PACKAGE_JSON = ROOT / "pi_opt" / "costmodels" / "crypten_cpu.json"
SPEC = ModelSpec(arch=ArchSpec(name="resnet_mini", kwargs={"widths": [4, 8, 16]}),
                 input_shape=(1, 8, 8), num_classes=10)
TINY = {  # as tests/test_search.py
    "data": {"kind": "digits", "max_train": 300},
    "model": {"arch": {"name": "resnet_mini", "kwargs": {"widths": [4, 8, 16]}},
              "input_shape": [1, 8, 8], "num_classes": 10},
    "baseline": {"epochs": 2},
    "finetune": {"epochs": 1},
}


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
                     per_mac_s=1e-9, per_round_s=3e-3, per_inference_s=0.05,
                     per_relu_bytes=230.0, per_circa_bytes={8: 30.0, 16: 52.0},
                     per_mult_bytes=8.0, per_mac_bytes=0.05, per_inference_bytes=1000.0)
    prof = _profile()
    rounds = (9 + 1) + 6 + (9 + 7) + 0 + 1  # sites + output reveal
    expected = (2e-6 * (130 + 12) + 3e-7 * 50 + 5e-7 * 40 + 1e-7 * 20 + 1e-9 * 10_000
                + 3e-3 * rounds + 0.05)
    assert cm.estimate_rounds(prof) == rounds - 1
    assert m.predict(prof) == pytest.approx(expected, rel=1e-12)
    c2 = counts_from_profile(prof, batch_size=2)
    assert m.predict(prof, batch_size=2) == pytest.approx(
        2 * (expected - 3e-3 * rounds - 0.05) + 3e-3 * rounds + 0.05, rel=1e-12)
    assert c2.rounds == rounds and c2.circa == {8: 100.0, 16: 80.0}
    assert m.predict_bytes(prof) == pytest.approx(
        230.0 * 142 + 30.0 * 50 + 52.0 * 40 + 8.0 * 20 + 0.05 * 10_000 + 1000.0, rel=1e-12)
    # an unmeasured l falls back to the nearest measured one, no table to the ReLU's
    assert m.predict_counts(cm.CostCounts(circa={32: 10.0})) == pytest.approx(5e-7 * 10)
    assert LatencyModel(per_relu_s=1.0).predict_counts(cm.CostCounts(circa={8: 3.0})) == 3.0


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
    assert fallback.per_relu_s == LatencyModel.load(CONFIG_JSON).per_relu_s > 0


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
