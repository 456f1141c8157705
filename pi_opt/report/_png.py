"""Static PNG figures with matplotlib's Agg renderer (object API, no pyplot global state).

matplotlib is imported inside the functions so that ``import pi_opt.report`` stays light.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pi_opt.report._views import (
    chain_colors,
    chain_label,
    class_names,
    fmt_count,
    fmt_pct,
    is_zero_relu,
    over_budget,
    per_class_delta,
    point_label,
    relu_axis,
    stage_kept,
    stage_order,
    worst_class,
)
from pi_opt.report.schema import ParetoPoint, ParetoReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 150

_STYLE: dict[str, Any] = {
    "font.size": 9.5,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e6ea",
    "grid.linewidth": 0.8,
    "axes.axisbelow": True,
    "axes.edgecolor": "#5f6b7a",
    "legend.frameon": False,
    "legend.fontsize": 8.5,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}


def _figure(w: float, h: float, **kw: Any) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained", **kw)


def _save(fig: Figure, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, dpi=DPI, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _k_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _pos: fmt_count(round(x * 1e3, 6)) if x > 0 else "0")


def _pct_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda y, _pos: f"{y:g}%")


def _log_if_wide(ax: Axes, values: Sequence[float]) -> None:
    """Log x-axis with plain tick labels (0.1, 0.2, 1) when values span > 8x."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    pos = [v for v in values if v > 0]
    if pos and max(pos) / min(pos) > 8:
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        if max(pos) / min(pos) < 300:  # few decades: label 2x and 5x minor ticks too
            ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
            ax.xaxis.set_minor_formatter(plain)


def _chain_handles(report: ParetoReport, colors: dict[str, str]) -> list[Any]:
    from matplotlib.lines import Line2D

    used = {chain_label(p.chain) for p in report.points}
    return [Line2D([], [], ls="", marker="o", ms=7, mfc=c, mec="#222", mew=0.6, label=lbl)
            for lbl, c in colors.items() if lbl in used]


# --------------------------------------------------------------------------- pareto.png

def pareto_figure(report: ParetoReport) -> Figure:
    """Test accuracy vs ReLUs (K, log-x): front, faded dominated trials, baseline, budgets."""
    colors = chain_colors(report)
    fig = _figure(8.6, 5.2)
    ax = fig.add_subplot()
    pts = report.points
    axis = relu_axis(report)

    def x(relus: int) -> float:
        return axis.x(relus) / 1e3

    for lbl, color in colors.items():
        group = [p for p in pts if chain_label(p.chain) == lbl]
        dom = [p for p in group if not p.pareto]
        front = [p for p in group if p.pareto]
        styles: tuple[tuple[list[ParetoPoint], dict[str, Any]], ...] = (
            (dom, {"alpha": 0.35, "s": 22, "zorder": 2, "linewidths": 0}),
            (front, {"alpha": 1.0, "s": 52, "zorder": 4, "edgecolors": "#1b1f24",
                     "linewidths": 0.7}))
        for sub, kw in styles:
            inside = [p for p in sub if not over_budget(p) and not is_zero_relu(p)]
            over = [p for p in sub if over_budget(p) and not is_zero_relu(p)]
            zero = [p for p in sub if is_zero_relu(p)]
            if zero:  # fully linearized: own marker, left of the axis break
                ax.scatter([x(0)] * len(zero), [100 * p.test_accuracy for p in zero],
                           color=color, marker="D", **kw)
            if inside:
                ax.scatter([x(p.relus) for p in inside],
                           [100 * p.test_accuracy for p in inside], color=color, **kw)
            if over:  # hollow: the point exceeds the budget it was asked for
                okw = {**kw, "edgecolors": color, "linewidths": 1.4}
                ax.scatter([x(p.relus) for p in over], [100 * p.test_accuracy for p in over],
                           facecolors="none", **okw)

    front = report.front()
    if front:
        ax.plot([x(p.relus) for p in front], [100 * p.test_accuracy for p in front],
                color="#1b1f24", lw=1.3, alpha=0.75, zorder=3, drawstyle="default")

    b = report.baseline
    ax.axhline(100 * b.test_accuracy, color="#6b7480", ls=":", lw=1.1, zorder=1)
    ax.scatter([x(b.relus)], [100 * b.test_accuracy], marker="*", s=190, color="#1b1f24",
               zorder=5)
    ax.annotate(f"baseline {fmt_pct(b.test_accuracy, 1)}", (x(b.relus), 100 * b.test_accuracy),
                xytext=(-6, 7), textcoords="offset points", ha="right", fontsize=8.5,
                color="#3b4450")

    for budget in sorted(set(report.budgets)):
        ax.axvline(x(budget), color="#b23a48", ls="--", lw=0.9, alpha=0.7, zorder=1)
        ax.annotate(f"B={fmt_count(budget)}", (x(budget), 0.0), xycoords=("data", "axes fraction"),
                    xytext=(3, 4), textcoords="offset points", va="bottom", ha="left",
                    fontsize=8, color="#b23a48", rotation=90)

    if axis.has_zero:
        ax.axvline(axis.break_at / 1e3, color="#6b7480", ls=":", lw=1.4, zorder=1)
        ax.annotate("0 ReLUs", (x(0), 1.0), xycoords=("data", "axes fraction"),
                    xytext=(0, -12), textcoords="offset points", ha="center", fontsize=8,
                    color="#3b4450")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_k_formatter())
    ax.xaxis.set_minor_formatter(_k_formatter() if _few_decades(ax) else _null())
    ax.yaxis.set_major_formatter(_pct_formatter())
    ax.set_xlabel("ReLUs per sample (log scale)")
    ax.set_ylabel("Test accuracy")
    ax.set_title("Accuracy vs ReLU count", loc="left", pad=18)
    ax.text(0.0, 1.012, "front selected on validation accuracy; faded = dominated trials",
            transform=ax.transAxes, fontsize=8, color="#6b7480", va="bottom", ha="left")
    ax.set_title(f"{len(front)} front / {len(pts)} points", loc="right", fontsize=8.5,
                 fontweight="normal", color="#6b7480", pad=18)

    fig.legend(handles=_pareto_legend(report, colors, axis.has_zero),
               loc="outside right upper")
    return fig


def _pareto_legend(report: ParetoReport, colors: dict[str, str], has_zero: bool) -> list[Any]:
    """Legend of pareto.png: chains, front line, dominated, over budget, baseline, budgets."""
    from matplotlib.lines import Line2D

    handles = _chain_handles(report, colors)
    handles += [
        Line2D([], [], ls="-", color="#1b1f24", lw=1.3, label="Pareto front"),
        Line2D([], [], ls="", marker="o", ms=6, mfc="#9aa3ad", mec="none", alpha=0.35,
               label="dominated"),
        Line2D([], [], ls="", marker="o", ms=7, mfc="none", mec="#6b7480", mew=1.4,
               label="over its budget"),
        Line2D([], [], ls="", marker="*", ms=12, color="#1b1f24", label="baseline"),
        Line2D([], [], ls="--", color="#b23a48", lw=0.9, label="requested budget"),
    ]
    if has_zero:
        handles.append(Line2D([], [], ls="", marker="D", ms=6, mfc="#9aa3ad", mec="#1b1f24",
                              label="0 ReLUs (left of the dotted break)"))
    return handles


def _few_decades(ax: Axes) -> bool:
    lo, hi = ax.get_xlim()
    return lo > 0 and hi / lo < 30


def _null() -> Any:
    from matplotlib.ticker import NullFormatter

    return NullFormatter()


# --------------------------------------------------------------------------- latency.png

def latency_figure(report: ParetoReport) -> Figure | None:
    """Test accuracy vs measured MPC latency and vs bytes sent, for measured points."""
    measured = [p for p in report.points if p.mpc is not None]
    if not measured:
        return None
    colors = chain_colors(report)
    fig = _figure(10.5, 4.4)
    axes = fig.subplots(1, 2, sharey=True)
    b = report.baseline
    for ax, key, scale, xlabel in (
        (axes[0], "latency_s", 1.0, "Online latency per batch (s)"),
        (axes[1], "bytes_per_party", 1e-6, "Communication per party (MB)"),
    ):
        xs = []
        for p in measured:
            assert p.mpc is not None
            v = getattr(p.mpc, key) * scale
            xs.append(v)
            ax.scatter([v], [100 * p.test_accuracy], color=colors[chain_label(p.chain)],
                       s=50 if p.pareto else 26, alpha=1.0 if p.pareto else 0.35,
                       edgecolors="#1b1f24" if p.pareto else "none", linewidths=0.7, zorder=3)
            lo, hi = p.mpc.latency_min_s, p.mpc.latency_max_s
            if key == "latency_s" and lo is not None and hi is not None:
                ax.errorbar([v], [100 * p.test_accuracy], fmt="none", lw=1, zorder=2,
                            xerr=[[v - lo], [hi - v]],
                            ecolor=colors[chain_label(p.chain)])
        if b.mpc is not None:
            v = getattr(b.mpc, key) * scale
            xs.append(v)
            ax.scatter([v], [100 * b.test_accuracy], marker="*", s=190, color="#1b1f24",
                       zorder=4)
        ax.axhline(100 * b.test_accuracy, color="#6b7480", ls=":", lw=1.1, zorder=1)
        _log_if_wide(ax, xs)
        ax.set_xlabel(xlabel)
        ax.yaxis.set_major_formatter(_pct_formatter())
    axes[0].set_ylabel("Test accuracy")
    m = measured[0].mpc
    assert m is not None
    fig.suptitle(f"Measured encrypted inference ({m.backend}, {m.provider}, {m.device}, "
                 f"batch {m.batch_size})", x=0.01, ha="left", fontsize=11, fontweight="bold")
    from matplotlib.lines import Line2D

    handles = _chain_handles(report, colors) + [
        Line2D([], [], ls="", marker="*", ms=12, color="#1b1f24", label="baseline")]
    fig.legend(handles=handles, loc="outside right upper")
    return fig


# --------------------------------------------------------------------------- layers.png

def layers_figure(report: ParetoReport) -> Figure | None:
    """Stacked bars of ReLUs kept per stage for each front point (DeepReDuce-style view)."""
    from matplotlib import colormaps

    pts = [p for p in report.front() if p.sites]
    if not pts:
        return None
    stages = stage_order(pts)
    cmap = colormaps["viridis"]
    colors = [cmap(0.1 + 0.8 * i / max(1, len(stages) - 1)) for i in range(len(stages))]
    fig = _figure(min(18.0, 3.0 + 0.55 * len(pts)), 4.8)
    ax = fig.add_subplot()
    xs = list(range(len(pts)))
    bottom = [0.0] * len(pts)
    for stage, color in zip(stages, colors, strict=True):
        vals = [stage_kept(p).get(stage, 0) / 1e3 for p in pts]
        ax.bar(xs, vals, bottom=bottom, color=color, width=0.72, label=stage,
               edgecolor="white", linewidth=0.5)
        bottom = [a + v for a, v in zip(bottom, vals, strict=True)]
    for i, p in enumerate(pts):
        ax.annotate(fmt_count(sum(stage_kept(p).values())), (i, bottom[i]), xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", fontsize=7.5,
                    color="#3b4450")
    ax.set_xticks(xs, [f"#{p.trial} · {chain_label(p.chain)}" for p in pts], rotation=30,
                  ha="right", rotation_mode="anchor", fontsize=7.5)
    ax.yaxis.set_major_formatter(_k_formatter())
    ax.set_ylabel("ReLUs kept (exact + Circa)")
    ax.set_title("ReLUs kept per stage, Pareto-front points", loc="left")
    ax.grid(axis="x", visible=False)
    fig.legend(loc="outside right upper", title="stage")
    return fig


# --------------------------------------------------------------------------- per_class.png

def per_class_figure(report: ParetoReport) -> Figure | None:
    """Heat map (classes x front points) of test-accuracy change vs baseline, in pp."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Rectangle

    cols: list[tuple[ParetoPoint, list[float]]] = []
    for p in report.front():
        d = per_class_delta(p, report.baseline)
        if d is not None:
            cols.append((p, d))
    if not cols:
        return None
    names = class_names(report)
    n_cls, n_pts = len(names), len(cols)
    grid = [[100 * d[c] for _p, d in cols] for c in range(n_cls)]
    lim = max(1.0, max(abs(v) for row in grid for v in row))
    annotate = n_cls <= 24 and n_pts <= 18
    fig = _figure(min(20.0, 3.2 + 0.62 * n_pts), min(26.0, 1.9 + 0.3 * n_cls))
    ax = fig.add_subplot()
    im = ax.imshow(grid, cmap="RdBu", norm=TwoSlopeNorm(0.0, -lim, lim), aspect="auto",
                   interpolation="nearest")
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if annotate:
        for r in range(n_cls):
            for c in range(n_pts):
                v = grid[r][c]
                ax.text(c, r, f"{v:+.1f}".replace("-", "−"), ha="center", va="center",
                        fontsize=7, color="white" if abs(v) > 0.6 * lim else "#1b1f24")
    for c, (_p, d) in enumerate(cols):
        w = worst_class(d)
        if w is not None:
            ax.add_patch(Rectangle((c - 0.5, w - 0.5), 1, 1, fill=False, ec="#111", lw=1.8))
    ax.set_xticks(range(n_pts), [point_label(p) for p, _d in cols], rotation=45, ha="right",
                  fontsize=7.5)
    ax.set_yticks(range(n_cls), names, fontsize=7.5 if n_cls <= 40 else 5.5)
    ax.tick_params(length=0)
    ax.set_title("Per-class test accuracy change vs baseline (pp); box = worst-hit class",
                 loc="left")
    cb = fig.colorbar(im, ax=ax, shrink=0.8, pad=0.01)
    cb.set_label("Δ accuracy (percentage points)")
    cb.outline.set_visible(False)
    return fig


# --------------------------------------------------------------------------- entry point

def write_pngs(report: ParetoReport, outdir: str | os.PathLike[str]) -> list[Path]:
    """Render ``pareto.png`` and, when the data exists, ``latency.png``, ``layers.png``
    and ``per_class.png`` into ``outdir``; returns the paths written."""
    from matplotlib import rc_context

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with rc_context(cast(Any, _STYLE)):
        for name, make in (("pareto.png", pareto_figure), ("latency.png", latency_figure),
                           ("layers.png", layers_figure), ("per_class.png", per_class_figure)):
            fig = make(report)
            if fig is not None:
                written.append(_save(fig, out / name))
    return written
