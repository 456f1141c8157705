"""Read a YAML/JSON config file and report every problem as ``file: key: message``.

Pydantic's raw ``ValidationError`` text (with its documentation URLs) is never shown:
:func:`validation_lines` turns each error into one line, with a "did you mean" for a
misspelled key, and :func:`load_model` raises :class:`ConfigFileError` carrying them.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from pi_opt.errors import ConfigError
from pi_opt.registry import did_you_mean

M = TypeVar("M", bound=BaseModel)


class ConfigFileError(ConfigError):
    """A config file failed to parse or validate; ``lines`` holds one line per error."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines), lines=list(lines))
        self.lines = list(lines)


def read_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a ``.yaml``/``.yml``/``.json`` file.

    Raises:
        ConfigFileError: missing file, unparsable text or a top level that is not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigFileError([f"{p}: file not found"])
    text = p.read_text()
    import yaml

    try:
        data = yaml.safe_load(text) if p.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigFileError([f"{p}: cannot parse: {_one_line(str(exc))}"]) from None
    if not isinstance(data, dict):
        raise ConfigFileError([f"{p}: the top level must be a mapping of keys to values"])
    return data


def load_model(cls: type[M], raw: dict[str, Any], source: str) -> M:
    """Validate ``raw`` into ``cls``.

    Raises:
        ConfigFileError: one ``source: key: message`` line per validation error.
    """
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise ConfigFileError(validation_lines(exc, source, cls)) from None


def validation_lines(exc: ValidationError, source: str,
                     cls: type[BaseModel] | None = None) -> list[str]:
    """One ``source: dotted.key: message`` line per error of ``exc``.

    ``cls`` (the model validated) lets a misspelled key get a "did you mean".
    """
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        msg = _message(err)
        if err["type"] == "extra_forbidden" and loc:
            fields = _fields_at(cls, loc) if cls is not None else None
            msg = f"unknown key{did_you_mean(str(loc[-1]), fields or [])}"
        lines.append(f"{source}: {key}: {msg}" if key else f"{source}: {msg}")
    return lines


def _message(err: Any) -> str:
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if err["type"] == "missing":
        msg = "required key is missing"
    return _one_line(msg)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _as_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``X``, ``X | None``, ``list[X]``...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return None
    for arg in typing.get_args(annotation):
        found = _as_model(arg)
        if found is not None:
            return found
    return None


def _fields_at(cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names of the model that holds the last key of ``loc`` (None when unknown)."""
    model: type[BaseModel] | None = cls
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, int) or part not in model.model_fields:
            continue  # list index or union tag: stay on the current model
        model = _as_model(model.model_fields[part].annotation)
    return list(model.model_fields) if model is not None else None


__all__ = ["ConfigFileError", "load_model", "read_mapping", "validation_lines"]
