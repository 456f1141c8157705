"""Pareto reports: the versioned ``ParetoReport`` data model, its computations and renderers.

Compute first (``pareto``: front marking, budget answers, hypervolume), render after
(``pareto.json``, ``trials.csv``, PNG figures, one self-contained HTML file).
Importing this package does not import matplotlib, plotly or jinja2; the renderers
import them when called (``pip install pi-opt[report]``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pi_opt.report._csv import write_trials_csv
from pi_opt.report._json import read_report, write_json
from pi_opt.report.pareto import (
    answer_budgets,
    answer_latency_budgets,
    finalize_report,
    hypervolume_2d,
    hypervolume_history,
    mark_front,
    pareto_mask,
)
from pi_opt.report.schema import (
    SCHEMA_VERSION,
    Baseline,
    BudgetAnswer,
    MpcMeasurement,
    ParetoPoint,
    ParetoReport,
    SiteKept,
)

__all__ = [
    "SCHEMA_VERSION",
    "Baseline",
    "BudgetAnswer",
    "MpcMeasurement",
    "ParetoPoint",
    "ParetoReport",
    "SiteKept",
    "answer_budgets",
    "answer_latency_budgets",
    "finalize_report",
    "hypervolume_2d",
    "hypervolume_history",
    "mark_front",
    "pareto_mask",
    "read_report",
    "render_all",
    "write_html",
    "write_json",
    "write_pngs",
    "write_trials_csv",
]


def write_pngs(report: ParetoReport, outdir: str | os.PathLike[str]) -> list[Path]:
    """PNG figures (matplotlib Agg); see :func:`pi_opt.report._png.write_pngs`."""
    from pi_opt.report._png import write_pngs as _write_pngs

    return _write_pngs(report, outdir)


def write_html(report: ParetoReport, path: str | os.PathLike[str]) -> Path:
    """Self-contained offline HTML (plotly.js inlined, no download links); see
    :func:`pi_opt.report._html.write_html`."""
    from pi_opt.report._html import write_html as _write_html

    return _write_html(report, path)


def render_all(report: ParetoReport, outdir: str | os.PathLike[str], *,
               job_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Write every format into ``outdir``; returns ``{name relative to outdir: path}``.

    Always ``pareto.json``, ``trials.csv``, ``report.html``, the shared
    ``plotly-<version>.min.js`` it loads (fully offline) and ``pareto.png``; also
    ``latency.png``, ``layers.png`` and ``per_class.png`` when the report has MPC
    measurements, per-site counts and per-class accuracies respectively, and
    ``downloads/<baseline|trial-N>.zip`` for the baseline and each front point whose
    artifact folder exists under ``job_dir`` (default: the parent of ``outdir``, i.e.
    ``<job>/report``). Every link in ``report.html`` is relative to it. The report is
    rendered as given: call :func:`finalize_report` first to mark the front and answer
    the budgets. Raises OSError when ``outdir`` is not writable.
    """
    from pi_opt.report._downloads import write_downloads
    from pi_opt.report._html import write_html as _write_html
    from pi_opt.report._html import write_plotly_js

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "pareto.json": write_json(report, out / "pareto.json"),
        "trials.csv": write_trials_csv(report, out / "trials.csv"),
    }
    downloads = write_downloads(report, out, Path(job_dir) if job_dir else out.parent)
    files.update({href: out / href for href in downloads.values()})
    js = write_plotly_js(out)
    files[js.name] = js
    files["report.html"] = _write_html(report, out / "report.html", downloads=downloads,
                                       plotly_src=js.name)
    for path in write_pngs(report, out):
        files[path.name] = path
    return files
