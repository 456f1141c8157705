"""The backend interface pi_opt / the service program against (no crypten import)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from torch import Tensor

from mpc.config import MpcConfig
from mpc.errors import MpcUnavailable
from mpc.results import DemoResult
from pi_opt.report.schema import MpcMeasurement


@runtime_checkable
class Backend(Protocol):
    """An engine that runs a saved pi_opt artifact under 2-party encryption."""

    name: str

    def measure(self, artifact_dir: str | Path, *, samples: int | Tensor = 16,
                config: MpcConfig | None = None) -> MpcMeasurement:
        """Online latency, rounds, bytes and plaintext agreement of one artifact.

        ``samples``: number of N(0, 1) inputs, or images ``[N, C, H, W]`` (normalized
        like the model's training data) for the agreement check.
        """
        ...

    def demo(self, artifact_dir: str | Path, image: Tensor, *,
             config: MpcConfig | None = None) -> DemoResult:
        """Encrypted inference of one image ``[C, H, W]``; only the client sees the output."""
        ...


def get_backend(name: str = "crypten") -> Backend:
    """Backend by name (only ``"crypten"`` exists)."""
    if name != "crypten":
        raise MpcUnavailable(f"unknown MPC backend {name!r}; available: ['crypten']")
    from mpc.crypten_backend import CryptenBackend

    return CryptenBackend()


__all__ = ["Backend", "get_backend"]
