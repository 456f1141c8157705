"""2-party encrypted inference of pi_opt models (CrypTen backend).

Importing this package is light: crypten is only imported inside the party
processes that :mod:`mpc.launcher` spawns. Modules:

* :mod:`mpc.config` - :class:`MpcConfig` (links: :mod:`pi_opt.network` profiles,
  optionally emulated);
* :mod:`mpc.lowering` - pi_opt model -> :class:`~mpc.lowering.Plan` (torch.fx, no ONNX);
* :mod:`mpc.encrypted`, :mod:`mpc.circa_sign` - the plan on CrypTen shares;
* :mod:`mpc.launcher` - party processes with timeouts and clean failures;
* :mod:`mpc.exchange` - the communicator patches: batched openings, shared rounds of a
  mixed site's sub-protocols, emulated links;
* :mod:`mpc.party` - the party body shared by measurement and demo;
* :mod:`mpc.backend`, :mod:`mpc.crypten_backend` - ``Backend.measure`` / ``demo``;
* :mod:`mpc.measure` - ``make_measure(options)``, the callable pi_opt's search uses;
* :mod:`mpc.latency_model` - a lowered plan's counts through the same evaluator as
  profiles, and the time fit of :class:`pi_opt.costmodel.LatencyModel` (no crypten);
* :mod:`mpc.demo`, :mod:`mpc.cli` - encrypted-inference demo and command line.
"""

from __future__ import annotations

from mpc.backend import Backend, get_backend
from mpc.config import NETWORK_PRESETS, MpcConfig, NetworkConfig
from mpc.errors import (
    LoweringError,
    MpcError,
    MpcUnavailable,
    PartyFailed,
    PartyTimeout,
)
from mpc.latency_model import LatencyModel, fit
from mpc.measure import make_measure
from mpc.results import DemoResult, MpcReport, OpRecord

__all__ = [
    "NETWORK_PRESETS", "Backend", "DemoResult", "LatencyModel", "LoweringError", "MpcConfig",
    "MpcError", "MpcReport", "MpcUnavailable", "NetworkConfig", "OpRecord", "PartyFailed",
    "PartyTimeout", "fit", "get_backend", "make_measure",
]
