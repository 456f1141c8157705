"""Architecture registry: ``@register_model`` / ``create_model`` / ``list_models``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from pi_opt.errors import ConfigError
from pi_opt.registry import Registry, did_you_mean

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("architecture")


F = TypeVar("F", bound=ModelFactory)


def register_model(name: str) -> Callable[[F], F]:
    """Register a factory ``f(*, in_channels, num_classes, **kwargs) -> nn.Module``
    (returned unchanged, so its own return type is kept)."""
    def deco(factory: F) -> F:
        MODELS.register(name)(factory)
        return factory

    return deco


def list_models() -> list[str]:
    """Registered architecture names, sorted."""
    return MODELS.names()


def describe_model(name: str) -> str:
    """First line of the architecture factory's docstring ("" when it has none)."""
    doc = inspect.getdoc(MODELS.get(name)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def check_arch(name: str, kwargs: Mapping[str, Any]) -> ModelFactory:
    """Check, without building anything, that ``name`` is registered and accepts ``kwargs``.

    The one architecture check of the CLI (before any data loads), the search and the
    service's spec validation. Returns the factory.

    Raises:
        UnknownNameError: ``name`` is not registered (with a "did you mean").
        ConfigError: a keyword is not a parameter of the factory.
    """
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            hints = "".join(did_you_mean(k, params) for k in unknown)
            raise ConfigError(
                f"architecture {name!r} does not accept {unknown}{hints}; "
                f"accepted: {sorted(params)}", arch=name)
    return factory


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered architecture.

    Raises:
        UnknownNameError / ConfigError: see :func:`check_arch`; also ConfigError when the
            factory refuses a value (``TypeError``/``ValueError``).
    """
    factory = check_arch(name, kwargs)
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build architecture {name!r}: {exc}", arch=name) from exc
