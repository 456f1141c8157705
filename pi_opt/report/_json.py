"""``pareto.json``: the ParetoReport itself (versioned, sorted keys, indent 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from pi_opt.errors import ConfigError
from pi_opt.report.schema import SCHEMA_VERSION, ParetoReport


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def dumps_report(report: ParetoReport) -> str:
    """The report as deterministic JSON text (sorted keys, indent 2, trailing newline)."""
    return json.dumps(report.model_dump(mode="json"), sort_keys=True, indent=2,
                      ensure_ascii=False) + "\n"


def write_json(report: ParetoReport, path: str | os.PathLike[str]) -> Path:
    """Write ``report`` to ``path`` atomically; returns the path."""
    out = Path(path)
    _atomic_write(out, dumps_report(report))
    return out


def read_report(path: str | os.PathLike[str]) -> ParetoReport:
    """Load and validate a ``pareto.json``.

    Raises ``ConfigError`` for invalid JSON, an unsupported ``schema_version`` or
    fields that do not match the schema.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p.name} is not valid JSON: {e}", path=str(p)) from e
    if isinstance(data, dict) and data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise ConfigError(
            f"{p.name} has schema_version {data.get('schema_version')!r}; "
            f"this pi_opt reads version {SCHEMA_VERSION}", path=str(p))
    try:
        return ParetoReport.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{p.name} is not a valid Pareto report: {e}", path=str(p)) from e
