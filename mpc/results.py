"""Result types of the MPC backend (pure pydantic, no crypten).

Units: seconds; ``crypten_bytes`` as CrypTen counts them for party 0 (send +
receive of each exchange); ``bytes_sent`` / ``bytes_per_party`` = what one party
sends = ``crypten_bytes / 2``. Cost counts (``relu``, ``macs``...) are per batch.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pi_opt.report.schema import MpcMeasurement


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpRecord(_Model):
    """Cost of one lowered op per encrypted inference (median over the timed repeats)."""

    index: int
    name: str
    kind: str
    category: str                  # "linear" | "nonlinear"
    seconds: float
    rounds: int
    crypten_bytes: int
    bytes_sent: int
    relu: int = 0                  # exact-ReLU elements in the batch
    circa: int = 0                 # Circa elements in the batch
    circa_k: int | None = None
    circa_l: int | None = None
    poly_mults: int = 0            # secure squares in the batch
    maxpool_comparisons: int = 0
    macs: int = 0                  # multiply-accumulates in the batch


class MpcReport(_Model):
    """A measurement plus the per-op breakdown it was computed from."""

    artifact: str
    weights: str                   # "private" | "public"
    measurement: MpcMeasurement
    latency_other_s: float         # input sharing + output reveal + interpreter overhead
    latencies_s: list[float]       # every timed repeat (seconds per batch)
    estimated_s: float | None = None   # for the configured network (MpcConfig.network)
    counts: dict[str, int] = Field(default_factory=dict)  # per-sample counts of the plan
    server_rounds: int | None = None
    server_bytes_per_party: int | None = None
    ops: list[OpRecord] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)


class DemoResult(_Model):
    """One encrypted inference: only the client decrypts the logits."""

    prediction: int
    class_name: str | None = None
    plaintext_prediction: int
    agrees: bool
    logits: list[float]
    plaintext_logits: list[float]
    max_logit_error: float
    latency_s: float               # online wall time of this inference (client side)
    rounds: int
    bytes_per_party: int
    estimated_lan_s: float
    estimated_wan_s: float
    backend: str
    provider: str
    device: str
    weights: str


__all__ = ["DemoResult", "MpcReport", "OpRecord"]
