"""Shared helpers of the MPC benchmarks (machine description)."""

from __future__ import annotations

import os
import platform

import torch

from mpc._compat import crypten_version


def machine() -> dict[str, object]:
    """CPU count, platform, versions and current load (the machine may be shared)."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "crypten": crypten_version(), "gpu": torch.cuda.is_available(),
            "load_average_1m": os.getloadavg()[0]}
