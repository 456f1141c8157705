"""Linear MPC cost model used to rank candidates before (or instead of) measuring.

``seconds = const + per_relu*ReLUs + per_circa*CircaReLUs + per_mult*poly_mults
+ per_mac*MACs + per_round*rounds`` with per-sample counts from
:class:`pi_opt.profile.ModelProfile`. Coefficients come from a JSON file fitted
to real CrypTen measurements (``mpc.latency_model``); pi_opt only evaluates it.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pi_opt.profile import ModelProfile

ROUNDS_PER_RELU_LAYER = 9  # CrypTen ltz (7 AND rounds + B2A) + 1 multiplication


class CostModel(BaseModel):
    """Per-operation costs in seconds (per sample)."""

    model_config = ConfigDict(extra="ignore")
    source: str = "unfitted"
    const_s: float = 0.0
    per_relu_s: float = 0.0
    per_circa_relu_s: float = 0.0
    per_mult_s: float = 0.0
    per_mac_s: float = 0.0
    per_round_s: float = 0.0

    @classmethod
    def load(cls, path: str | Path) -> CostModel:
        return cls.model_validate(json.loads(Path(path).read_text()))

    def estimate(self, profile: ModelProfile) -> float:
        """Estimated online seconds for one sample."""
        relu_layers = sum(1 for s in profile.sites if s.relu)
        circa_layers = sum(1 for s in profile.sites if s.circa)
        poly_layers = sum(1 for s in profile.sites if s.poly_mults)
        rounds = ROUNDS_PER_RELU_LAYER * relu_layers + 7 * circa_layers + poly_layers
        return (
            self.const_s
            + self.per_relu_s * profile.exact_relus
            + self.per_circa_relu_s * profile.circa_relus
            + self.per_mult_s * profile.poly_mults
            + self.per_mac_s * profile.macs
            + self.per_round_s * rounds
        )


def default_cost_model() -> CostModel:
    """The committed CrypTen CPU fit (``configs/latency/crypten_cpu.json``) if present."""
    path = Path(__file__).resolve().parent.parent / "configs" / "latency" / "crypten_cpu.json"
    if path.is_file():
        return CostModel.load(path)
    return CostModel()
