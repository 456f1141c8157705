"""Architecture registry: ``@register_model`` / ``create_model`` / ``list_models``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from pi_opt.errors import ConfigError
from pi_opt.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("architecture")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory ``f(*, in_channels, num_classes, **kwargs) -> nn.Module``."""
    return MODELS.register(name)


def list_models() -> list[str]:
    return MODELS.names()


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered architecture; unknown names or kwargs raise ConfigError."""
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ConfigError(
                f"architecture {name!r} does not accept {unknown}; accepted: {sorted(params)}",
                arch=name,
            )
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build architecture {name!r}: {exc}", arch=name) from exc
