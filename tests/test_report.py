"""Tests of pi_opt.report: Pareto computations, JSON/CSV/PNG/HTML renderers, lazy imports."""

from __future__ import annotations

import csv
import itertools
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pi_opt.errors import ConfigError
from pi_opt.report import (
    Baseline,
    MpcMeasurement,
    ParetoPoint,
    ParetoReport,
    SiteKept,
    answer_budgets,
    finalize_report,
    hypervolume_2d,
    mark_front,
    pareto_mask,
    read_report,
    render_all,
    write_json,
    write_trials_csv,
)
from pi_opt.report._views import fmt_count, fmt_pct, fmt_pp

EVIL = "<script>alert(1)</script>"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STAGES = {"layer1": 65536, "layer2": 32768, "layer3": 16384, "layer4": 8192}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


# --------------------------------------------------------------------------- fixtures

def _pt(trial: int, relus: int, val: float, test: float | None = None, **kw) -> ParetoPoint:
    kw.setdefault("chain", ["snl"])
    kw.setdefault("budget", relus)
    kw.setdefault("macs", 1_000_000)
    return ParetoPoint(trial=trial, relus=relus, val_accuracy=val,
                       test_accuracy=val if test is None else test, **kw)


def _sites(relus: int) -> list[SiteKept]:
    """Spread ``relus`` over the four stages proportionally to their size."""
    total = sum(STAGES.values())
    out, left = [], relus
    for i, (stage, n) in enumerate(STAGES.items()):
        kept = left if i == len(STAGES) - 1 else round(relus * n / total)
        left -= kept
        circa = kept // 4 if stage == "layer4" else 0
        out.append(SiteKept(name=f"{stage}.0.relu1", stage=stage, elements=n, relu=kept - circa,
                            circa=circa, poly=0, identity=n - kept))
    return out


def _mpc(relus: int) -> MpcMeasurement:
    lat = 0.05 + relus * 2e-6
    return MpcMeasurement(backend="crypten-0.4.1", provider="TFP", device="cpu", repeats=3,
                          latency_s=lat, latency_min_s=0.8 * lat, latency_max_s=1.3 * lat,
                          rounds=40 + relus // 5000,
                          bytes_per_party=2_000_000 + relus * 300)


def make_report(*, title: str = "CIFAR-10 ResNet-18 sweep", with_mpc: bool = True) -> ParetoReport:
    rng = random.Random(0)
    chains = [["snl"], ["deepreshape", "autorep"], ["deepreduce"], ["autorep", "circa"]]
    base_pc = [0.93 + 0.005 * (i % 3) for i in range(10)]
    points = []
    trial = 0
    for ci, chain in enumerate(chains):
        for budget in (15_000, 60_000, 150_000):
            relus = int(budget * (0.97 - 0.05 * ci))
            if ci == 2 and budget == 150_000:
                relus = 160_000  # over its requested budget
            # each chain wins somewhere: SNL at small budgets, DeepReShape+AutoReP at large
            bonus = {0: 0.012 * (budget == 15_000), 1: 0.01 * (budget == 150_000),
                     2: -0.01, 3: 0.006 * (budget == 60_000)}[ci]
            acc = 0.925 - 0.09 * (15_000 / relus) ** 0.8 + bonus + 0.004 * rng.random()
            per_class = [a - (0.18 if (c == 3 and relus < 50_000) else 0.03 + 0.02 * rng.random())
                         * (15_000 / relus) for c, a in enumerate(base_pc)]
            params = {"lr": 0.001 * (ci + 1), "epochs": 10, "granularity": "pixel"}
            if trial == 4:
                params["note"] = EVIL
            points.append(_pt(
                trial, relus, acc, acc - 0.004 + 0.002 * rng.random(), chain=chain, budget=budget,
                params=params, circa_relus=relus // 4 if "circa" in chain else 0,
                poly_mults=relus // 3 if "autorep" in chain else 0, macs=555_000_000,
                per_class_test_accuracy=per_class, sites=_sites(relus),
                artifact=f"artifacts/trial-{trial:03d}", seconds=30.0 + trial,
                mpc=_mpc(relus) if with_mpc and trial % 2 == 0 else None,
                harvested_from=0 if trial == 1 else None))
            trial += 1
    base = Baseline(arch={"name": "resnet18", "num_classes": 10}, relus=557_056, macs=555_000_000,
                    val_accuracy=0.94, test_accuracy=0.9350, per_class_test_accuracy=base_pc,
                    artifact="artifacts/baseline", mpc=_mpc(557_056) if with_mpc else None)
    report = ParetoReport(
        title=title, created_at="2026-11-23T00:00:00Z", job_id="job-123",
        dataset={"name": "cifar10", "num_classes": 10, "class_names": CLASSES,
                 "sizes": {"train": 45_000, "val": 5_000, "test": 10_000}},
        objective="relus",
        counting="exact + Circa ReLUs per sample; stem ReLU included; polynomials 1 mult/element",
        budgets=[1_000, 20_000, 100_000, 300_000], techniques=chains,
        search={"sampler": "tpe", "n_trials": 12, "seed": 0, "wall_time_s": 5400.0},
        software={"pi_opt": "0.1.0", "torch": "2.13.0", "optuna": "5.0.0", "python": "3.11.9"},
        baseline=base, points=points,
        failures=[{"trial": 99, "chain": ["snl"], "error": f"CUDA OOM {EVIL}"}])
    return finalize_report(report)


@pytest.fixture(scope="module")
def report() -> ParetoReport:
    return make_report(title=f"Sweep {EVIL} & co")


@pytest.fixture(scope="module")
def rendered(report: ParetoReport, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    job = tmp_path_factory.mktemp("job")
    for p in [*report.points, report.baseline]:  # stand-in artifact folders of the job
        folder = job / str(p.artifact)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.json").write_text("{}")
        (folder / "weights.safetensors").write_bytes(b"w" * 64)
    return render_all(report, job / "report")


# --------------------------------------------------------------------------- pareto_mask

def _brute_front(pairs: list[tuple[float, float]]) -> set[tuple[float, float]]:
    """Distinct non-dominated (cost, acc) values by the O(n^2) definition."""
    out = set()
    for c, a in pairs:
        if not any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for c2, a2 in pairs):
            out.add((c, a))
    return out


def test_pareto_mask_dominated_and_trade_off() -> None:
    pts = [_pt(0, 100, 0.90), _pt(1, 200, 0.80), _pt(2, 50, 0.85), _pt(3, 300, 0.95)]
    assert pareto_mask(pts) == [True, False, True, True]


def test_pareto_mask_duplicates_keep_lowest_trial_in_any_order() -> None:
    a, b, c = _pt(7, 100, 0.9), _pt(3, 100, 0.9), _pt(5, 100, 0.9)
    for perm in itertools.permutations([a, b, c]):
        mask = pareto_mask(list(perm))
        assert [p.trial for p, m in zip(perm, mask, strict=True) if m] == [3]


def test_pareto_mask_equal_accuracy_and_equal_cost() -> None:
    # equal accuracy: the cheaper wins; equal cost: the more accurate wins
    assert pareto_mask([_pt(0, 200, 0.9), _pt(1, 100, 0.9)]) == [False, True]
    assert pareto_mask([_pt(0, 100, 0.8), _pt(1, 100, 0.9)]) == [False, True]
    # NaN accuracy never on the front, does not block others
    assert pareto_mask([_pt(0, 10, float("nan")), _pt(1, 100, 0.5)]) == [False, True]
    assert pareto_mask([]) == []


def test_pareto_mask_matches_definition_on_random_points() -> None:
    rng = random.Random(1)
    for _ in range(50):
        pts = [_pt(i, rng.choice([10, 20, 30, 40, 50]), rng.choice([0.5, 0.6, 0.7, 0.8]))
               for i in range(rng.randint(1, 12))]
        mask = pareto_mask(pts)
        chosen = [(p.relus, p.val_accuracy) for p, m in zip(pts, mask, strict=True) if m]
        assert len(chosen) == len(set(chosen))  # one representative per duplicate group
        assert set(chosen) == _brute_front([(p.relus, p.val_accuracy) for p in pts])


def test_pareto_mask_cost_key_and_dicts() -> None:
    pts = [{"trial": 0, "val_accuracy": 0.9, "relus": 10, "cost": 5.0},
           {"trial": 1, "val_accuracy": 0.8, "relus": 20, "cost": 1.0}]
    assert pareto_mask(pts) == [True, False]
    assert pareto_mask(pts, cost_key="cost") == [True, True]


def test_mark_front_cost_objective_and_fallback() -> None:
    pts = [_pt(0, 10, 0.9, cost=5.0), _pt(1, 20, 0.8, cost=1.0)]
    mark_front(pts, "cost")
    assert [p.pareto for p in pts] == [True, True]
    pts[1].cost = None  # not every point has an estimate: fall back to ReLUs
    mark_front(pts, "cost")
    assert [p.pareto for p in pts] == [True, False]
    mark_front(pts, "relus")
    assert [p.pareto for p in pts] == [True, False]
    mark_front(pts, "latency")  # predicted seconds on the job's network, same fallback
    assert [p.pareto for p in pts] == [True, False]
    with pytest.raises(ValueError):
        mark_front(pts, "speed")


# --------------------------------------------------------------------------- answers, HV

def test_answer_budgets_selects_on_validation_reports_test() -> None:
    pts = [_pt(0, 100, 0.70, 0.85), _pt(1, 500, 0.80, 0.76), _pt(2, 900, 0.78, 0.90),
           _pt(3, 2000, 0.90, 0.88)]
    mark_front(pts, "relus")
    assert [p.pareto for p in pts] == [True, True, False, True]
    met, under_all, not_met, none = answer_budgets(pts, [1000, 5000, 50, 99])[:4]
    # trials 0 and 2 have better *test* accuracy under 1000; selection is on validation
    assert (met.met, met.trial, met.relus, met.test_accuracy, met.gap_relus) == \
        (True, 1, 500, 0.76, None)
    assert (under_all.met, under_all.trial) == (True, 3)
    assert (not_met.met, not_met.trial, not_met.relus, not_met.gap_relus) == (False, 0, 100, 50)
    assert none.trial == 0 and none.gap_relus == 1
    assert answer_budgets([], [10]) == [answer_budgets([], [10])[0]]
    empty = answer_budgets([], [10])[0]
    assert (empty.met, empty.trial, empty.relus, empty.test_accuracy) == (False, None, None, None)


def test_answer_budgets_unmarked_points_use_relu_front() -> None:
    pts = [_pt(0, 100, 0.9), _pt(1, 50, 0.95)]  # nothing marked yet; trial 0 is dominated
    (ans,) = answer_budgets(pts, [100])
    assert ans.trial == 1 and ans.met


def test_hypervolume_2d() -> None:
    ref = (4.0, 0.0)
    assert hypervolume_2d([(1, 0.5), (2, 0.8)], ref) == pytest.approx(3 * 0.5 + 2 * 0.3)
    # dominated and out-of-reference points add nothing
    assert hypervolume_2d([(1, 0.5), (2, 0.8), (3, 0.7), (5, 0.99)], ref) == \
        pytest.approx(2.1)
    assert hypervolume_2d([_pt(0, 1, 0.5)], ref) == pytest.approx(1.5)
    assert hypervolume_2d([], ref) == 0.0


def test_finalize_report(report: ParetoReport) -> None:
    assert report.front() and all(p.pareto for p in report.front())
    assert len(report.answers) == len(report.budgets)
    by_budget = {a.budget: a for a in report.answers}
    assert not by_budget[1_000].met and by_budget[1_000].gap_relus > 0
    assert by_budget[300_000].met
    # the dominated over-budget point is not on the front; test accuracy never decides
    relus_front = [p.relus for p in report.front()]
    assert relus_front == sorted(relus_front)


# --------------------------------------------------------------------------- formatting

def test_formatting() -> None:
    assert [fmt_count(n) for n in (850, 12_345, 491_520, 999_999, 1_359_872)] == \
        ["850", "12.3K", "491.5K", "1M", "1.36M"]
    assert fmt_count(138_000) == "138K" and fmt_count(100_000) == "100K"
    assert fmt_pct(0.93126) == "93.13%" and fmt_pct(None) == "–"
    assert fmt_pp(-0.0123) == "−1.23 pp" and fmt_pp(0.05) == "+5.00 pp"


# --------------------------------------------------------------------------- JSON / CSV

def test_json_round_trip(report: ParetoReport, tmp_path: Path) -> None:
    path = write_json(report, tmp_path / "pareto.json")
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    back = read_report(path)
    assert back == report
    assert back.model_dump() == report.model_dump()
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


def test_read_report_rejects_bad_input(report: ParetoReport, tmp_path: Path) -> None:
    data = json.loads(write_json(report, tmp_path / "a.json").read_text())
    data["schema_version"] = 2
    (tmp_path / "b.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="schema_version"):
        read_report(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ConfigError):
        read_report(tmp_path / "c.json")
    data["schema_version"] = 1
    del data["points"][0]["relus"]
    (tmp_path / "d.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError):
        read_report(tmp_path / "d.json")


def test_trials_csv(report: ParetoReport, tmp_path: Path) -> None:
    report = report.model_copy(deep=True)
    report.points[0].artifact = "=HYPERLINK(\"x\")"
    path = write_trials_csv(report, tmp_path / "trials.csv")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(report.points)
    header = list(rows[0])
    for col in ("trial", "chain", "budget", "relus", "val_accuracy", "test_accuracy", "pareto",
                "params", "mpc_latency_s", "relus_layer1", "relus_layer4"):
        assert col in header
    by_trial = {int(r["trial"]): r for r in rows}
    p5 = next(p for p in report.points if p.trial == 5)
    assert by_trial[5]["chain"] == "+".join(p5.chain)
    assert json.loads(by_trial[5]["params"]) == p5.params
    assert sum(int(by_trial[5][f"relus_{s}"]) for s in STAGES) == p5.relus
    assert by_trial[4]["params"].count(EVIL) == 1  # data kept verbatim (JSON), not mangled
    assert by_trial[0]["artifact"].startswith("'=")  # no spreadsheet formula injection
    assert by_trial[1]["mpc_latency_s"] == "" and by_trial[0]["mpc_latency_s"] != ""
    assert sum(r["pareto"] == "True" for r in rows) == len(report.front())


# --------------------------------------------------------------------------- HTML

def test_render_all_outputs(report: ParetoReport, rendered: dict[str, Path]) -> None:
    from pi_opt.report._html import plotly_js_name

    downloads = {f"downloads/trial-{p.trial}.zip" for p in report.front()}
    assert set(rendered) == {"pareto.json", "trials.csv", "report.html", "pareto.png",
                             "latency.png", "layers.png", "per_class.png", plotly_js_name(),
                             "downloads/baseline.zip", *downloads}
    outdir = rendered["report.html"].parent
    written = {p.relative_to(outdir).as_posix() for p in outdir.rglob("*") if p.is_file()}
    assert written == set(rendered)  # nothing else written


def test_html_is_offline_with_plotly_once(report: ParetoReport, rendered: dict[str, Path],
                                          tmp_path: Path) -> None:
    from plotly.offline import get_plotlyjs

    from pi_opt.report import write_html
    from pi_opt.report._html import plotly_js_name

    signature = get_plotlyjs()[:200]
    # render_all: one shared plotly.js file beside the page, loaded by a relative src
    job_html = rendered["report.html"].read_text(encoding="utf-8")
    assert signature not in job_html
    assert re.findall(r"<script[^>]*\bsrc\s*=\s*\"([^\"]+)\"", job_html) == [plotly_js_name()]
    assert rendered[plotly_js_name()].read_text(encoding="utf-8") == get_plotlyjs()
    # write_html alone: self-contained, plotly.js inlined exactly once
    html = write_html(report, tmp_path / "alone.html").read_text(encoding="utf-8")
    assert html.count(signature) == 1
    assert html.count("Plotly.newPlot(") >= 4  # pareto, mpc, layers, per-class, hypervolume
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)  # everything inline
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']?(https?:)?//", html, re.I)
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html.replace(get_plotlyjs(), ""),
                         re.I)
    assert "cdn.plot.ly" not in html.replace(get_plotlyjs(), "")


def test_html_contains_table_values(report: ParetoReport, rendered: dict[str, Path]) -> None:
    html = rendered["report.html"].read_text(encoding="utf-8")
    for p in report.front():
        assert fmt_count(p.relus) in html
        assert fmt_pct(p.test_accuracy) in html
        assert fmt_pp(p.test_accuracy - report.baseline.test_accuracy) in html
    assert fmt_pct(report.baseline.test_accuracy) in html
    assert "1h 30m 00s" in html  # wall time
    assert "stem ReLU included" in html  # counting convention
    assert "not met · closest" in html and html.count('class="badge met"') == \
        sum(a.met for a in report.answers)
    assert 'href="pareto.json"' in html and 'href="trials.csv"' in html
    for p in report.front():
        assert f'href="downloads/trial-{p.trial}.zip"' in html and f'id="trial-{p.trial}"' in html
    # worst-hit class highlighted once per front point in the per-class table
    assert html.count('class="num worst"') == len(report.front())
    assert "cat" in html
    assert "CUDA OOM" in html  # failures list


def test_html_escapes_user_strings(rendered: dict[str, Path]) -> None:
    html = rendered["report.html"].read_text(encoding="utf-8")
    assert EVIL not in html
    assert "<script>alert" not in html
    assert "Sweep &lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "CUDA OOM &lt;script&gt;" in html


def test_html_unsafe_artifact_not_linked(tmp_path: Path) -> None:
    from pi_opt.report import write_html

    rep = make_report(with_mpc=False)
    rep.front()[0].artifact = "javascript:alert(1)"
    html = write_html(rep, tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'href="javascript' not in html and "javascript:alert(1)" in html
    assert "MPC latency" not in html  # no MPC columns without measurements


# --------------------------------------------------------------------------- PNG

def test_pngs_valid(rendered: dict[str, Path]) -> None:
    for name in ("pareto.png", "latency.png", "layers.png", "per_class.png"):
        data = rendered[name].read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 15_000, name
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width >= 600 and height >= 400, name


def test_pngs_skip_missing_data(tmp_path: Path) -> None:
    from pi_opt.report import write_pngs

    rep = make_report(with_mpc=False)
    for p in rep.points:
        p.sites = []
        p.per_class_test_accuracy = []
    assert [p.name for p in write_pngs(rep, tmp_path)] == ["pareto.png"]


# --------------------------------------------------------------------------- lazy imports

def test_import_is_lazy() -> None:
    code = ("import sys, pi_opt.report\n"
            "heavy = [m for m in ('matplotlib', 'plotly', 'jinja2') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert callable(pi_opt.report.render_all)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr


def test_plotly_hover_has_trial_chain_params(report: ParetoReport) -> None:
    from pi_opt.report._html import pareto_plot

    fig = pareto_plot(report)
    hovers = [h for tr in fig.data if tr.hovertext is not None for h in tr.hovertext]
    assert len(hovers) == len(report.points)
    h4 = next(h for h in hovers if "trial #4<" in h)
    p4 = next(p for p in report.points if p.trial == 4)
    assert "+".join(p4.chain) in h4 and "lr = " in h4
    assert "note = &lt;script&gt;alert(1)&lt;/script&gt;" in h4 and EVIL not in h4
    # budget lines: one dashed shape per budget, drawn in data units on the log axis
    lines = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert sorted(s.x0 for s in lines) == sorted(float(b) for b in report.budgets)


def test_render_degenerate_reports(tmp_path: Path) -> None:
    """No points at all, and a fully linearized (0-ReLU) point, still render."""
    empty = make_report(with_mpc=False).model_copy(update={"points": [], "answers": [],
                                                           "failures": [], "budgets": []})
    empty = finalize_report(empty)
    files = render_all(empty, tmp_path / "empty")
    assert set(files) - {"pareto.json", "trials.csv", "report.html", "pareto.png"} == {
        files["report.html"].parent.joinpath(n).name for n in files if n.endswith(".js")}
    assert "No front points." in files["report.html"].read_text(encoding="utf-8")
    assert read_report(files["pareto.json"]) == empty
    assert files["trials.csv"].read_text(encoding="utf-8").count("\n") == 1  # header only

    rep = make_report(with_mpc=False)
    rep.points.append(_pt(50, 0, 0.30, 0.31, budget=0, chain=["snl"]))
    rep = finalize_report(rep)
    assert next(p for p in rep.points if p.trial == 50).pareto
    files = render_all(rep, tmp_path / "zero")
    assert files["pareto.png"].read_bytes()[:8] == PNG_MAGIC
    html = files["report.html"].read_text(encoding="utf-8")
    assert "31.00%" in html
    assert "0 ReLUs (fully linearized" in html and "diamond-wide" in html  # marked honestly


def test_zero_relu_axis_and_mpc_spread(report: ParetoReport) -> None:
    from pi_opt.report._html import mpc_plot, pareto_plot
    from pi_opt.report._views import fmt_latency, relu_axis

    rep = report.model_copy(deep=True)
    rep.points.append(_pt(60, 0, 0.2, 0.2, budget=0, chain=["snl"]))
    axis = relu_axis(rep)
    smallest = min(p.relus for p in report.points)
    assert axis.has_zero and axis.x(0) == axis.zero_at < axis.break_at < smallest
    assert axis.x(smallest) == smallest  # positive counts are not moved
    fig = pareto_plot(rep)
    dotted = [s for s in fig.layout.shapes if s.line.dash == "dot" and s.x0 == s.x1]
    assert [s.x0 for s in dotted] == [axis.break_at]
    clickable = [t for t in fig.data if t.customdata is not None]
    assert sorted(c for t in clickable for c in t.customdata) == sorted(
        p.trial for p in rep.points)  # every point selects its row by trial number
    m = next(p.mpc for p in report.points if p.mpc is not None)
    assert fmt_latency(m).count("–") == 1 and "(" in fmt_latency(m)
    bars = [t.error_x for t in mpc_plot(report).data if t.error_x and t.error_x.array]
    assert bars and all(min(b.array) > 0 and min(b.arrayminus) > 0 for b in bars)


# --------------------------------------------------------------------------- a real job

@pytest.mark.timeout(900)  # ~70 s CPU; the limit leaves room for a loaded machine
def test_tiny_job_report_links_resolve_and_points_download(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    """Every local link of a fresh job's report.html is a file; every front point downloads."""
    import html.parser
    import zipfile

    from pi_opt.artifacts import load_artifact
    from pi_opt_cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({
        "data": {"kind": "digits", "max_train": 300},
        "model": {"arch": {"name": "resnet_mini", "kwargs": {"widths": [4, 8, 16]}},
                  "input_shape": [1, 8, 8], "num_classes": 10},
        "baseline": {"epochs": 1}, "finetune": {"epochs": 1},
        "techniques": ["deepreduce"], "budgets": [0.3, 1.0]}))
    job = tmp_path / "job"
    assert main(["optimize", "--config", str(cfg), "--workdir", str(job)]) == 0
    out, err = capsys.readouterr()
    assert re.search(r"\d+\.\d\d%", out)  # accuracy in % in the CLI as in the report
    # resolved budgets printed when the search starts; a budget >= the baseline warned about
    assert re.search(r"budgets: [\d,]+ ReLUs \(30\.0% of baseline\); [\d,]+ ReLUs "
                     r"\(100\.0% of baseline\)", err), err
    assert "at or above the baseline's" in err and "trial 0: deepreduce @ " in err
    page = job / "report" / "report.html"

    class Links(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.links: list[str] = []

        def handle_starttag(self, tag: str, attrs: list) -> None:
            self.links += [v for k, v in attrs if k in ("href", "src") and v]

    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    local = [u for u in parser.links if not u.startswith("#")]
    assert not [u for u in local if "//" in u or ":" in u]  # offline: nothing remote
    assert {"pareto.json", "trials.csv"} <= set(local)
    for url in local:
        assert (page.parent / url).is_file(), url
    report = read_report(job / "report" / "pareto.json")
    assert report.front()
    for p in report.front():
        href = f"downloads/trial-{p.trial}.zip"
        assert href in local
        with zipfile.ZipFile(page.parent / href) as zf:
            names = set(zf.namelist())
            assert {f"trial-{p.trial}/model.json", f"trial-{p.trial}/weights.safetensors",
                    f"trial-{p.trial}/HOW_TO_LOAD.txt"} == names
            zf.extractall(tmp_path / "unzipped")
        art = load_artifact(tmp_path / "unzipped" / f"trial-{p.trial}")
        assert art.manifest.profile.relus == p.relus
    # re-rendering with the CLI keeps every link working
    assert main(["report", str(job)]) == 0
    assert (page.parent / "downloads" / f"trial-{report.front()[0].trial}.zip").is_file()
