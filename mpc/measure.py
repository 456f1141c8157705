"""``make_measure``: the measurement callable pi_opt's search and the service use.

``make_measure(options)(artifact_dir, inputs=None) -> MpcMeasurement``; ``options`` are
:class:`~mpc.config.MpcConfig` fields plus ``samples`` (how many inputs the
plaintext-agreement check uses, default 16). ``inputs`` are real samples ``[N, C, H, W]``
(normalized like the model's training data; the search passes test images); without
them the check uses N(0, 1) inputs. Each call starts its own party processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from mpc.config import MpcConfig
from pi_opt.errors import ConfigError
from pi_opt.report.schema import MpcMeasurement

Measure = Callable[..., MpcMeasurement]


def make_measure(options: Mapping[str, Any] | MpcConfig | None = None) -> Measure:
    """Validate ``options`` now (ConfigError), check crypten is installed, return the callable."""
    from mpc.crypten_backend import CryptenBackend, backend_name

    opts = dict(options.model_dump() if isinstance(options, MpcConfig) else (options or {}))
    samples = opts.pop("samples", 16)
    if not isinstance(samples, int) or samples < 0:
        raise ConfigError(f"mpc.samples must be a non-negative integer, got {samples!r}")
    try:
        config = MpcConfig.model_validate(opts)
    except ValueError as exc:
        raise ConfigError(f"invalid mpc options: {exc}") from exc
    backend_name()  # raises MpcUnavailable without crypten
    backend = CryptenBackend()

    def measure(artifact_dir: Path, inputs: Tensor | None = None) -> MpcMeasurement:
        use = samples if inputs is None else inputs[:samples]
        return backend.measure(artifact_dir, samples=use, config=config)

    return measure


__all__ = ["Measure", "make_measure"]
