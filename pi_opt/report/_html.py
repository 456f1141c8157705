"""``report.html``: one self-contained, offline HTML file (Jinja2 + plotly, plotly.js inlined once).

jinja2 and plotly are imported inside the functions so that ``import pi_opt.report``
stays light. Every user-provided string goes through Jinja2 autoescaping; strings
placed in plotly hover text are HTML-escaped too (plotly renders a subset of HTML).
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pi_opt.formatting import fmt_param, fmt_params
from pi_opt.report._json import _atomic_write
from pi_opt.report._views import (
    ZERO_RELU_LABEL,
    chain_colors,
    chain_label,
    class_names,
    fmt_bytes,
    fmt_count,
    fmt_duration,
    fmt_int,
    fmt_latency,
    fmt_pct,
    fmt_pp,
    fmt_seconds,
    has_mpc,
    is_zero_relu,
    over_budget,
    per_class_delta,
    point_label,
    relu_axis,
    stage_kept,
    stage_order,
    wall_time,
    worst_class,
)
from pi_opt.report.pareto import hypervolume_history
from pi_opt.report.schema import SCHEMA_VERSION, ParetoPoint, ParetoReport

if TYPE_CHECKING:
    import plotly.graph_objects as go

TEMPLATE = "report.html.j2"
_FONT = ("-apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, "
         "sans-serif")
_PLOT_CONFIG = {"displaylogo": False, "responsive": True,
                "toImageButtonOptions": {"format": "png", "scale": 2},
                "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


# --------------------------------------------------------------------------- helpers

def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _params_text(params: dict[str, Any], limit: int = 14) -> str:
    """Hover-safe ``key = value`` lines (HTML-escaped, <br>-joined)."""
    items = sorted(params.items())
    lines = [f"{_esc(k)} = {_esc(fmt_param(v))}" for k, v in items[:limit]]
    if len(items) > limit:
        lines.append(f"… {len(items) - limit} more")
    return "<br>".join(lines) if lines else "(defaults)"


def _layout(fig: go.Figure, *, height: int = 460, **kw: Any) -> go.Figure:
    fig.update_layout(
        template="plotly_white", height=height, margin={"l": 60, "r": 20, "t": 40, "b": 50},
        font={"family": _FONT, "size": 12, "color": "#1f2933"},
        hoverlabel={"font": {"family": _FONT, "size": 12}, "align": "left"},
        legend={"bgcolor": "rgba(255,255,255,0.8)"}, **kw)
    return fig


def _hover(p: ParetoPoint, base_test: float) -> str:
    lines = [f"<b>trial #{p.trial}</b> · {_esc(chain_label(p.chain))}",
             (f"ReLUs: {ZERO_RELU_LABEL}" if is_zero_relu(p) else
              f"ReLUs: {fmt_count(p.relus)} ({fmt_int(p.relus)})")
             + (" <i>over budget</i>" if over_budget(p) else ""),
             f"budget: {fmt_count(p.budget)}",
             f"val acc: {fmt_pct(p.val_accuracy)} · test acc: {fmt_pct(p.test_accuracy)}",
             f"Δ test vs baseline: {fmt_pp(p.test_accuracy - base_test)}"]
    if p.circa_relus:
        lines.append(f"Circa ReLUs: {fmt_count(p.circa_relus)}")
    if p.poly_mults:
        lines.append(f"poly mults: {fmt_count(p.poly_mults)}")
    if p.mpc is not None:
        lines.append(f"MPC: {fmt_latency(p.mpc)}, {fmt_bytes(p.mpc.bytes_per_party)}, "
                     f"{p.mpc.rounds} rounds")
    if p.harvested_from is not None:
        lines.append(f"harvested from trial #{p.harvested_from}")
    if p.pruned:
        lines.append(f"<i>pruned</i> after {p.pruned_at_epoch} training epochs")
    if p.worst_class_drop is not None:
        lines.append(f"worst-class val drop: {fmt_pp(-p.worst_class_drop)}"
                     + ("" if p.feasible else " <i>violates max_class_drop</i>"))
    if p.artifact:
        lines.append(f"artifact: {_esc(p.artifact)}")
    lines.append("<i>params</i><br>" + _params_text(p.params))
    lines.append("<i>click: select its row</i>" if p.pareto else "<i>dominated</i>")
    return "<br>".join(lines)


# --------------------------------------------------------------------------- figures

def pareto_plot(report: ParetoReport) -> go.Figure:
    """Test accuracy vs ReLUs (log x): points by chain, front line, baseline, budgets.

    Every point carries its trial number as ``customdata`` (a click selects its table
    row); 0-ReLU points sit left of a dotted axis break with their own marker.
    """
    import plotly.graph_objects as go

    colors = chain_colors(report)
    pts, b = report.points, report.baseline
    axis = relu_axis(report)
    fig = go.Figure()
    front = report.front()
    if front:
        fig.add_trace(go.Scatter(
            x=[axis.x(p.relus) for p in front], y=[100 * p.test_accuracy for p in front],
            mode="lines", line={"color": "#1f2933", "width": 1.5}, opacity=0.7,
            name="Pareto front", hoverinfo="skip"))
    for lbl, color in colors.items():
        for on_front in (True, False):
            sub = [p for p in pts if chain_label(p.chain) == lbl and p.pareto == on_front]
            if sub:
                fig.add_trace(_point_trace(sub, lbl, color, on_front, axis, b.test_accuracy))
    fig.add_trace(go.Scatter(
        x=[axis.x(b.relus)], y=[100 * b.test_accuracy], mode="markers", name="baseline",
        marker={"symbol": "star", "size": 16, "color": "#1f2933"},
        hovertemplate=(f"<b>baseline</b><br>ReLUs: {fmt_count(b.relus)}<br>test acc: "
                       f"{fmt_pct(b.test_accuracy)}<br>val acc: {fmt_pct(b.val_accuracy)}"
                       "<extra></extra>")))
    fig.add_hline(y=100 * b.test_accuracy, line={"color": "#7b8794", "dash": "dot", "width": 1})
    _budget_lines(fig, report, axis)
    if axis.has_zero:
        _zero_break(fig, axis)
    fig.update_xaxes(type="log", title="ReLUs per sample (log scale)", tickformat="~s",
                     showline=True, linecolor="#9aa5b1")
    fig.update_yaxes(title="Test accuracy (%)", ticksuffix="%", showline=True,
                     linecolor="#9aa5b1")
    return _layout(fig, height=520)


def _point_trace(sub: list[ParetoPoint], lbl: str, color: str, on_front: bool, axis: Any,
                 base_test: float) -> go.Scatter:
    import plotly.graph_objects as go

    def symbol(p: ParetoPoint) -> str:
        if is_zero_relu(p):
            return "diamond-wide"
        return "circle-open" if over_budget(p) else "circle"

    return go.Scatter(
        x=[axis.x(p.relus) for p in sub], y=[100 * p.test_accuracy for p in sub],
        mode="markers", name=_esc(lbl) + ("" if on_front else " (dominated)"),
        legendgroup=lbl, showlegend=True, customdata=[p.trial for p in sub],
        marker={"color": color, "size": 11 if on_front else 7,
                "opacity": 1.0 if on_front else 0.3, "symbol": [symbol(p) for p in sub],
                "line": {"color": "#1f2933" if on_front else color,
                         "width": 1 if on_front else 0}},
        hovertext=[_hover(p, base_test) for p in sub],
        hovertemplate="%{hovertext}<extra></extra>")


def _budget_lines(fig: go.Figure, report: ParetoReport, axis: Any) -> None:
    for budget in sorted(set(report.budgets)):
        bx = axis.x(budget)
        # On log axes plotly takes shape positions in data units but annotation
        # positions in log10 units.
        fig.add_shape(type="line", x0=bx, x1=bx, y0=0, y1=1, xref="x", yref="paper",
                      line={"color": "#b23a48", "dash": "dash", "width": 1}, layer="below")
        fig.add_annotation(x=math.log10(bx), y=0, xref="x", yref="paper",
                           text=f"B={fmt_count(budget)}",
                           showarrow=False, textangle=-90, xanchor="left", yanchor="bottom",
                           xshift=2, yshift=4, font={"color": "#b23a48", "size": 11})


def _zero_break(fig: go.Figure, axis: Any) -> None:
    """Dotted break line plus a "0" label under the 0-ReLU column."""
    fig.add_shape(type="line", x0=axis.break_at, x1=axis.break_at, y0=0, y1=1, xref="x",
                  yref="paper", line={"color": "#7b8794", "dash": "dot", "width": 1.5},
                  layer="below")
    fig.add_annotation(x=math.log10(axis.zero_at), y=1, xref="x", yref="paper",
                       text="0 ReLUs", showarrow=False, yanchor="bottom",
                       font={"color": "#3e4c59", "size": 11})


def mpc_plot(report: ParetoReport) -> go.Figure | None:
    """Validation accuracy vs measured online latency (s) and bytes sent per party (MB) of
    every MPC-measured point, with min-max latency bars; ``None`` when none was measured.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    measured = [p for p in report.points if p.mpc is not None]
    if not measured:
        return None
    colors = chain_colors(report)
    b = report.baseline
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("vs online latency", "vs communication per party"))
    for col, key, scale in ((1, "latency_s", 1.0), (2, "bytes_per_party", 1e-6)):
        for lbl, color in colors.items():
            sub = [p for p in measured if chain_label(p.chain) == lbl]
            if not sub:
                continue
            fig.add_trace(go.Scatter(
                x=[getattr(p.mpc, key) * scale for p in sub],
                y=[100 * p.test_accuracy for p in sub], mode="markers", name=_esc(lbl),
                legendgroup=lbl, showlegend=col == 1,
                marker={"color": color, "size": [11 if p.pareto else 7 for p in sub],
                        "opacity": [1.0 if p.pareto else 0.4 for p in sub],
                        "line": {"color": "#1f2933", "width": [1 if p.pareto else 0 for p in sub]}},
                hovertext=[_hover(p, b.test_accuracy) for p in sub],
                error_x=_spread_bars(sub) if key == "latency_s" else None,
                hovertemplate="%{hovertext}<extra></extra>"), row=1, col=col)
        if b.mpc is not None:
            fig.add_trace(go.Scatter(
                x=[getattr(b.mpc, key) * scale], y=[100 * b.test_accuracy], mode="markers",
                name="baseline", showlegend=col == 1, legendgroup="baseline",
                marker={"symbol": "star", "size": 16, "color": "#1f2933"},
                hovertemplate="<b>baseline</b><extra></extra>"), row=1, col=col)
    fig.update_xaxes(title_text="online latency per batch (s)", row=1, col=1)
    fig.update_xaxes(title_text="MB sent by party 0 per batch", row=1, col=2)
    fig.update_yaxes(title_text="Test accuracy (%)", ticksuffix="%", row=1, col=1)
    for col, key in ((1, "latency_s"), (2, "bytes_per_party")):
        vals = [getattr(p.mpc, key) for p in measured if p.mpc is not None]
        if b.mpc is not None:
            vals.append(getattr(b.mpc, key))
        pos = [v for v in vals if v > 0]
        if pos and max(pos) / min(pos) > 8:
            fig.update_xaxes(type="log", row=1, col=col)
    return _layout(fig, height=440)


def _spread_bars(points: list[ParetoPoint]) -> dict[str, Any] | None:
    """Asymmetric x error bars: the min–max of each point's timed MPC repeats."""
    spans = [(m.latency_s, m.latency_min_s, m.latency_max_s) for m in (p.mpc for p in points)
             if m is not None and m.latency_min_s is not None and m.latency_max_s is not None]
    if len(spans) != len(points):
        return None
    return {"type": "data", "symmetric": False, "thickness": 1, "width": 3,
            "array": [hi - mid for mid, _lo, hi in spans],
            "arrayminus": [mid - lo for mid, lo, _hi in spans]}


def layers_plot(report: ParetoReport) -> go.Figure | None:
    """Stacked bars of ReLUs kept per stage (per sample) for each front point; ``None``
    when no point has site data.
    """
    import plotly.graph_objects as go

    pts = [p for p in report.front() if p.sites]
    if not pts:
        return None
    stages = stage_order(pts)
    labels = [point_label(p) for p in pts]
    fig = go.Figure()
    n = len(stages)
    for i, stage in enumerate(stages):
        vals = [stage_kept(p).get(stage, 0) for p in pts]
        shade = 0.15 + 0.7 * i / max(1, n - 1)
        fig.add_trace(go.Bar(
            x=labels, y=vals, name=_esc(stage),
            marker={"color": f"rgba(38, 94, 160, {1.0 - shade * 0.8:.2f})",
                    "line": {"color": "white", "width": 0.5}},
            customdata=[[_esc(chain_label(p.chain)), fmt_count(v)] for p, v in
                        zip(pts, vals, strict=True)],
            hovertemplate=(f"<b>{_esc(stage)}</b><br>%{{x}} · %{{customdata[0]}}"
                           "<br>kept: %{customdata[1]}<extra></extra>")))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title="ReLUs kept (exact + Circa)", tickformat="~s")
    fig.update_xaxes(title="front point (trial · ReLUs)", type="category")
    return _layout(fig, height=420)


def per_class_plot(report: ParetoReport) -> go.Figure | None:
    """Heatmap of per-class test-accuracy change vs the baseline (percentage points) for
    each front point; ``None`` when per-class accuracies are missing.
    """
    import plotly.graph_objects as go

    cols = [(p, d) for p in report.front() if (d := per_class_delta(p, report.baseline))]
    if not cols:
        return None
    names = [_esc(n) for n in class_names(report)]
    z = [[100 * d[c] for _p, d in cols] for c in range(len(names))]
    lim = max(1.0, max(abs(v) for row in z for v in row))
    x = [point_label(p) for p, _d in cols]
    fig = go.Figure(go.Heatmap(
        z=z, x=x, y=names, zmid=0, zmin=-lim, zmax=lim, colorscale="RdBu",
        colorbar={"title": {"text": "Δ pp"}, "ticksuffix": ""},
        hovertemplate="%{y} · %{x}<br>Δ test accuracy: %{z:+.2f} pp<extra></extra>"))
    for c, (_p, d) in enumerate(cols):
        w = worst_class(d)
        if w is not None:
            fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=w - 0.5, y1=w + 0.5,
                          line={"color": "#111", "width": 2})
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return _layout(fig, height=min(1600, 160 + 22 * len(names)))


def hypervolume_plot(report: ParetoReport) -> go.Figure | None:
    """Hypervolume (val accuracy x ReLU fraction removed, normalised by the baseline count)
    after each trial; ``None`` with fewer than 2 points or a 0-ReLU baseline.
    """
    import plotly.graph_objects as go

    base = report.baseline.relus
    if len(report.points) < 2 or base <= 0:
        return None
    hist = hypervolume_history(report.points, (float(base), 0.0))
    fig = go.Figure(go.Scatter(
        x=[t for t, _ in hist], y=[hv / base for _t, hv in hist], mode="lines+markers",
        line={"shape": "hv", "color": "#265ea0"}, marker={"size": 5},
        hovertemplate="after trial #%{x}<br>hypervolume %{y:.4f}<extra></extra>"))
    fig.update_xaxes(title="trial")
    fig.update_yaxes(title="hypervolume (val acc × ReLU fraction)")
    return _layout(fig, height=300)


def _fig_html(fig: go.Figure | None, div_id: str) -> str | None:
    if fig is None:
        return None
    # plotly.js itself is inlined once in the template's <head>; never a CDN.
    return fig.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False,
                       config=_PLOT_CONFIG, div_id=div_id, default_width="100%")


# --------------------------------------------------------------------------- tables

def _cell(text: str, sort: float | str | None = None, *, cls: str = "num",
          title: str | None = None) -> dict[str, Any]:
    return {"text": text, "sort": "" if sort is None else sort, "cls": cls, "title": title}


def _latency_title(p: ParetoPoint) -> str:
    """Predicted latency per network (``ParetoPoint.latency_s``) as tooltip text."""
    if not p.latency_s:
        return ""
    return "; predicted latency " + ", ".join(
        f"{k} {fmt_seconds(v)}" for k, v in p.latency_s.items())


def _pareto_rows(report: ParetoReport, downloads: dict[str, str]) -> list[dict[str, Any]]:
    base = report.baseline
    rows = []
    for p in report.front():
        m = p.mpc
        d = p.test_accuracy - base.test_accuracy
        rows.append({
            "trial": p.trial, "chain": chain_label(p.chain), "params": fmt_params(p.params),
            "over": over_budget(p), "harvested_from": p.harvested_from,
            "artifact": p.artifact, "download": downloads.get(f"trial-{p.trial}"),
            "cells": [
                _cell(fmt_count(p.relus), p.relus, title=f"{p.relus:,} ReLUs; budget "
                      f"{p.budget:,}" + _latency_title(p)),
                _cell(fmt_pct(p.relus / base.relus, 1) if base.relus else "–",
                      p.relus / base.relus if base.relus else None),
                _cell(fmt_count(p.poly_mults), p.poly_mults, title=f"{p.poly_mults:,}"),
                _cell(fmt_count(p.circa_relus), p.circa_relus, title=f"{p.circa_relus:,}"),
                _cell(fmt_count(p.macs), p.macs, title=f"{p.macs:,} MACs"),
                _cell(fmt_pct(p.val_accuracy), p.val_accuracy),
                _cell(fmt_pct(p.test_accuracy), p.test_accuracy, cls="num strong"),
                _cell(fmt_pp(d), d, cls="num " + ("neg" if d < -5e-5 else "pos" if d > 5e-5
                                                  else "")),
                _cell(fmt_latency(m), m.latency_s if m else None,
                      title=f"median of {m.repeats} runs (min–max)" if m else None),
                _cell(fmt_bytes(m.bytes_per_party) if m else "–",
                      m.bytes_per_party if m else None),
                _cell(fmt_int(m.rounds) if m else "–", m.rounds if m else None),
            ],
        })
    return rows


def _answer_rows(report: ParetoReport) -> list[dict[str, Any]]:
    by_trial: dict[tuple[int, int], ParetoPoint] = {(p.trial, p.relus): p for p in report.points}
    rows = []
    for a in report.answers:
        p = by_trial.get((a.trial, a.relus)) if a.trial is not None and a.relus is not None \
            else None
        status = "met" if a.met else ("closest" if a.trial is not None else "none")
        d = (a.test_accuracy - report.baseline.test_accuracy) if a.test_accuracy is not None \
            else None
        rows.append({
            "budget": fmt_count(a.budget), "budget_exact": f"{a.budget:,}", "status": status,
            "trial": a.trial, "chain": chain_label(p.chain) if p else "–",
            "relus": fmt_count(a.relus), "relus_exact": fmt_int(a.relus),
            "test": fmt_pct(a.test_accuracy), "delta": fmt_pp(d),
            "delta_cls": "neg" if d is not None and d < -5e-5 else "",
            "gap": _gap_text(a.gap_relus, a.budget),
        })
    return rows


def _gap_text(gap: int | None, budget: int) -> str:
    if gap is None:
        return "–"
    if budget <= 0:
        return f"+{fmt_count(gap)}"
    ratio = (budget + gap) / budget
    return (f"+{fmt_count(gap)} ({ratio:.3g}× the budget)" if ratio >= 2
            else f"+{fmt_count(gap)} ({gap / budget:.0%} over)")


def _layer_table(report: ParetoReport) -> dict[str, Any] | None:
    pts = [p for p in report.front() if p.sites]
    if not pts:
        return None
    stages = stage_order(pts)
    rows = []
    for p in pts:
        kept = stage_kept(p)
        total = sum(kept.values())
        rows.append({"trial": p.trial, "chain": chain_label(p.chain),
                     "cells": [_cell(fmt_count(kept.get(s, 0)), kept.get(s, 0),
                                     title=f"{kept.get(s, 0):,} "
                                     f"({kept.get(s, 0) / total:.0%} of kept)" if total
                                     else None) for s in stages]
                     + [_cell(fmt_count(total), total, cls="num strong")]})
    return {"stages": stages, "rows": rows}


def _per_class_table(report: ParetoReport) -> dict[str, Any] | None:
    cols = [(p, d) for p in report.front() if (d := per_class_delta(p, report.baseline))]
    if not cols:
        return None
    names = class_names(report)
    worst = [worst_class(d) for _p, d in cols]
    base = report.baseline.per_class_test_accuracy
    rows = []
    for c, name in enumerate(names):
        cells = []
        for j, (_p, d) in enumerate(cols):
            v = d[c]
            cls = "num worst" if worst[j] == c else ("num neg" if v < -5e-5 else "num")
            cells.append(_cell(fmt_pp(v, 1), v, cls=cls))
        rows.append({"name": name, "base": fmt_pct(base[c], 1), "base_v": base[c],
                     "cells": cells})
    summary = []
    for (p, d), w in zip(cols, worst, strict=True):
        summary.append({
            "worst_name": names[w] if w is not None else "–",
            "worst_delta": fmt_pp(d[w], 1) if w is not None else "–",
            "worst_cls": "num neg" if w is not None and d[w] < -5e-5 else "num",
            "min_acc": fmt_pct(min(p.per_class_test_accuracy), 1),
            "spread": f"{100 * (max(d) - min(d)):.1f} pp",
        })
    return {"points": [{"trial": p.trial, "label": point_label(p), "chain": chain_label(p.chain)}
                       for p, _d in cols], "rows": rows, "summary": summary}


# --------------------------------------------------------------------------- context

def _compute_text(report: ParetoReport) -> str | None:
    """One line of the job's compute block: training epochs, images, seconds by part."""
    c = report.compute
    if not c or "total" not in c:
        return None
    tr = c.get("trials", {})
    secs = {"data": c.get("data", {}).get("seconds"), "baseline": c.get("baseline", {}).get(
        "seconds"), "trials": tr.get("total", {}).get("seconds"), "MPC": c.get("mpc", {}).get(
        "seconds")}
    parts = ", ".join(f"{k} {fmt_duration(float(v))}" for k, v in secs.items() if v is not None)
    t = c["total"]
    return (f"{fmt_int(t['epochs'])} training epochs · {fmt_int(t['images'])} images · "
            f"{fmt_duration(float(t['seconds']))} ({parts}; "
            f"{fmt_int(tr.get('count', 0))} trial records)")


def _summary_cards(report: ParetoReport, front: list[ParetoPoint]) -> list[dict[str, str]]:
    """The headline cards (label, value, sub-line) above the tables; ``front`` ascending ReLUs."""
    base = report.baseline
    best = max(front, key=lambda p: p.val_accuracy) if front else None
    return [
        {"label": "Baseline", "value": fmt_pct(base.test_accuracy),
         "sub": f"{fmt_count(base.relus)} ReLUs · {fmt_count(base.macs)} MACs"},
        {"label": "Points evaluated", "value": str(len(report.points)),
         "sub": f"{len(front)} on the Pareto front · "
                f"{sum(p.pruned for p in report.points)} pruned · "
                f"{len(report.skipped)} skipped · "
                f"{sum(not p.feasible for p in report.points)} over max_class_drop"},
        {"label": "Best front point", "value": fmt_pct(best.test_accuracy) if best else "–",
         "sub": (f"{fmt_count(best.relus)} ReLUs · trial #{best.trial}" if best else
                 "no front points")},
        {"label": "Fewest ReLUs on front", "value": fmt_count(front[0].relus) if front
         else "–", "sub": (f"{fmt_pct(front[0].test_accuracy)} test accuracy" if front
                           else "")},
        {"label": "Budgets met", "value": f"{sum(a.met for a in report.answers)}"
         f"/{len(report.answers)}" if report.answers else "–",
         "sub": f"{len(report.failures)} failed trial(s)"},
    ]


def build_context(report: ParetoReport, downloads: dict[str, str] | None = None
                  ) -> dict[str, Any]:
    """Everything the template needs, as plain (unescaped) data and figure HTML snippets.

    ``downloads`` maps ``"baseline"`` / ``"trial-N"`` to zip links relative to the HTML
    (:func:`pi_opt.report._downloads.write_downloads`); with them the page also links
    ``pareto.json`` and ``trials.csv``, which :func:`pi_opt.report.render_all` writes next
    to it.
    """
    files = downloads or {}
    import platform

    base = report.baseline
    front = report.front()
    dataset = report.dataset
    raw_sizes = dataset.get("sizes")
    sizes: dict[str, Any] = raw_sizes if isinstance(raw_sizes, dict) else {}
    wt = wall_time(report)
    arch = base.arch.get("name") if isinstance(base.arch.get("name"), str) else None
    return {
        "r": report,
        "schema_version": SCHEMA_VERSION,
        "generator": report.software.get("pi_opt", ""),
        "python": platform.python_version(),
        "dataset_name": str(dataset.get("name", "dataset")),
        "num_classes": dataset.get("num_classes", len(base.per_class_test_accuracy) or "–"),
        "sizes": {str(k): fmt_int(v) if isinstance(v, int) else str(v) for k, v in sizes.items()},
        "arch_name": arch or "model",
        "arch_kwargs": fmt_param({k: v for k, v in base.arch.items() if k != "name"}),
        "budgets": [{"text": fmt_count(b), "exact": f"{b:,}"} for b in report.budgets],
        "chains": [chain_label(c) for c in report.techniques],
        "chain_colors": chain_colors(report),
        "search_items": [(str(k), fmt_param(v)) for k, v in sorted(report.search.items())],
        "software_items": [(str(k), str(v)) for k, v in sorted(report.software.items())],
        "wall_time": fmt_duration(wt) if wt is not None else None,
        "compute": _compute_text(report),
        "cards": _summary_cards(report, front),
        "answers": _answer_rows(report),
        "pareto_rows": _pareto_rows(report, files),
        "data_links": downloads is not None,
        "has_mpc": has_mpc(report),
        "baseline_row": {
            "relus": fmt_count(base.relus), "relus_exact": f"{base.relus:,}",
            "macs": fmt_count(base.macs), "val": fmt_pct(base.val_accuracy),
            "test": fmt_pct(base.test_accuracy),
            "latency": fmt_latency(base.mpc),
            "bytes": fmt_bytes(base.mpc.bytes_per_party) if base.mpc else "–",
            "rounds": fmt_int(base.mpc.rounds) if base.mpc else "–",
            "download": files.get("baseline"), "artifact": base.artifact},
        "mpc_setup": _mpc_setup(report),
        "layers": _layer_table(report),
        "per_class": _per_class_table(report),
        "failures": [{"trial": f.get("trial", "–"),
                      "chain": chain_label(f["chain"]) if isinstance(f.get("chain"), list)
                      else str(f.get("chain", "–")),
                      "error": str(f.get("error", ""))} for f in report.failures],
        "skipped": [{"trial": k.get("trial", "–"), "chain": chain_label(k.get("chain") or []),
                     "budget": fmt_int(k.get("budget")), "reason": str(k.get("reason", ""))}
                    for k in report.skipped],
        "figs": {
            "pareto": _fig_html(pareto_plot(report), "fig-pareto"),
            "mpc": _fig_html(mpc_plot(report), "fig-mpc"),
            "layers": _fig_html(layers_plot(report), "fig-layers"),
            "per_class": _fig_html(per_class_plot(report), "fig-per-class"),
            "hypervolume": _fig_html(hypervolume_plot(report), "fig-hv"),
        },
    }


def _mpc_setup(report: ParetoReport) -> str | None:
    m = next((p.mpc for p in report.points if p.mpc is not None), report.baseline.mpc)
    if m is None:
        return None
    parts = [m.backend, f"{m.parties} parties", f"{m.provider} provider", m.device,
             f"batch {m.batch_size}", f"median of {m.repeats}"]
    if m.network:
        parts.append(", ".join(f"{k}={v:g}" for k, v in sorted(m.network.items())))
    return " · ".join(parts)


# --------------------------------------------------------------------------- entry points

def plotly_js_name() -> str:
    """File name of the plotly.js bundle shared by a job's reports (versioned)."""
    import plotly

    return f"plotly-{plotly.__version__}.min.js"


def write_plotly_js(outdir: Path) -> Path:
    """Write the plotly.js bundle into ``outdir`` once (kept when already there)."""
    from plotly.offline import get_plotlyjs

    path = outdir / plotly_js_name()
    if not path.is_file():
        _atomic_write(path, get_plotlyjs())
    return path


def render_html(report: ParetoReport, *, downloads: dict[str, str] | None = None,
                plotly_src: str | None = None) -> str:
    """The report as one HTML document.

    ``plotly_src``: relative URL of a shared plotly.js file (:func:`write_plotly_js`);
    without it plotly.js is inlined once and the page is self-contained. Either way it
    works offline. ``downloads``: see :func:`build_context`.
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pi_opt.report", "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined)
    ctx = build_context(report, downloads)
    ctx["plotly_src"] = plotly_src
    if plotly_src is None:
        from plotly.offline import get_plotlyjs

        ctx["plotlyjs"] = get_plotlyjs()
    else:
        ctx["plotlyjs"] = ""
    return env.get_template(TEMPLATE).render(**ctx)


def write_html(report: ParetoReport, path: str | os.PathLike[str], *,
               downloads: dict[str, str] | None = None, plotly_src: str | None = None) -> Path:
    """Write ``report.html`` atomically (arguments as :func:`render_html`); returns the path."""
    out = Path(path)
    _atomic_write(out, render_html(report, downloads=downloads, plotly_src=plotly_src))
    return out
