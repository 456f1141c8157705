"""``trials.csv``: one row per evaluated point (flat fields, params as JSON, per-stage ReLUs),
then one per skipped grid trial (trial, chain, budget, ``pruned`` true, ``skipped`` the reason;
nothing measured)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from pi_opt.report._json import _atomic_write
from pi_opt.report._views import chain_label, stage_kept, stage_order
from pi_opt.report.schema import ParetoReport

FLAT_FIELDS = ["trial", "chain", "budget", "relus", "circa_relus", "poly_mults", "macs", "cost",
               "val_accuracy", "test_accuracy", "pareto", "over_budget", "harvested_from",
               "seconds", "artifact", "pruned", "feasible", "worst_class_drop", "skipped"]
#: predicted online seconds per sample on each network (``ParetoPoint.latency_s``)
LATENCY_KEYS = ["loopback", "lan", "wan", "job"]
MPC_FIELDS = ["backend", "provider", "device", "batch_size", "latency_s", "latency_min_s",
              "latency_max_s", "repeats", "rounds", "bytes_per_party", "estimated_lan_s",
              "estimated_wan_s", "plaintext_agreement"]

# Cells a spreadsheet would evaluate as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, str) and v.startswith(_FORMULA_START):
        return "'" + v
    return v


def trials_table(report: ParetoReport) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of ``trials.csv`` (rows in trial order)."""
    stages = stage_order(report.points)
    header = (FLAT_FIELDS + ["params", "per_class_test_accuracy"]
              + [f"mpc_{k}" for k in MPC_FIELDS] + [f"relus_{s}" for s in stages]
              + [f"latency_{k}_s" for k in LATENCY_KEYS])
    rows = []
    for p in sorted(report.points, key=lambda p: (p.trial, p.relus)):
        flat = {"chain": chain_label(p.chain), "over_budget": p.relus > p.budget, "skipped": None}
        row = [flat[k] if k in flat else getattr(p, k) for k in FLAT_FIELDS]
        row.append(json.dumps(p.params, sort_keys=True, default=str))
        row.append(json.dumps(p.per_class_test_accuracy) if p.per_class_test_accuracy else None)
        row += [getattr(p.mpc, k) if p.mpc else None for k in MPC_FIELDS]
        kept = stage_kept(p)
        row += [kept.get(s) if p.sites else None for s in stages]
        row += [(p.latency_s or {}).get(k) for k in LATENCY_KEYS]
        rows.append([_cell(v) for v in row])
    for k in report.skipped:
        known = {"trial": k.get("trial"), "chain": chain_label(k.get("chain") or []),
                 "budget": k.get("budget"), "pruned": True, "skipped": k.get("reason")}
        rows.append([_cell(known.get(c)) for c in header])
    return header, rows


def write_trials_csv(report: ParetoReport, path: str | os.PathLike[str]) -> Path:
    """Write ``trials.csv`` (UTF-8, RFC 4180 quoting); returns the path."""
    header, rows = trials_table(report)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    out = Path(path)
    _atomic_write(out, buf.getvalue())
    return out
