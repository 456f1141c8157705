"""Configuration of encrypted runs: :class:`MpcConfig` and :class:`NetworkConfig`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class NetworkConfig(BaseModel):
    """An emulated link between the two parties.

    ``rtt_ms``: round-trip time in milliseconds; ``bandwidth_mbps``: per-direction
    bandwidth in megabits per second (full duplex).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    rtt_ms: float = Field(ge=0.0)
    bandwidth_mbps: float = Field(gt=0.0)

    def estimate(self, *, seconds: float, rounds: int, bytes_per_party: int) -> float:
        """``T = seconds + rounds * RTT + bytes_per_party / bandwidth`` in seconds.

        ``seconds`` is the loopback-measured time (local compute + loopback transfer),
        ``bytes_per_party`` what one party sends (both send concurrently).
        """
        return (seconds + rounds * self.rtt_ms * 1e-3
                + bytes_per_party * 8.0 / (self.bandwidth_mbps * 1e6))


NETWORK_PRESETS: dict[str, NetworkConfig] = {
    "lan": NetworkConfig(rtt_ms=0.5, bandwidth_mbps=1000.0),
    "wan": NetworkConfig(rtt_ms=50.0, bandwidth_mbps=100.0),
}


class MpcConfig(BaseModel):
    """How to run an encrypted measurement or demo.

    * ``provider``: CrypTen's Beaver-triple source. ``TFP`` (trusted first party:
      party 0 deals every triple locally) or ``TTP`` (an extra dealer process).
      Neither is a real offline phase; latencies are online-only.
    * ``weights``: ``private`` - the server encrypts the weights with ``src=server``
      (the only true 2PC setting in CrypTen's threat model); ``public`` - the weights
      are plaintext on both parties, so linear layers are local (communication-free,
      like Delphi's online phase, whose HE preprocessing is *not* emulated).
    * ``device``: ``cuda`` runs the shares on the GPU (gloo, host-staged); falls back
      to ``cpu`` when CUDA is unavailable (the measurement reports what ran).
    * ``repeats`` timed inferences after ``warmup`` untimed ones; the median is reported.
    * ``network``: ``"lan"``/``"wan"`` preset or explicit link for the latency estimate.
    * ``timeout_s``: wall-clock limit for the whole multi-process run.
    * ``batch_size``: images per timed encrypted inference.
    * ``threads``: torch intra-op threads per party process.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    provider: Literal["TFP", "TTP"] = "TFP"
    device: Literal["cpu", "cuda"] = "cpu"
    weights: Literal["private", "public"] = "private"
    repeats: int = Field(3, ge=1, le=1000)
    warmup: int = Field(1, ge=0, le=100)
    network: NetworkConfig | None = None
    timeout_s: float = Field(600.0, gt=0.0)
    batch_size: int = Field(1, ge=1, le=4096)
    threads: int = Field(1, ge=1, le=256)

    @field_validator("network", mode="before")
    @classmethod
    def _preset(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return NETWORK_PRESETS[v.lower()]
            except KeyError:
                raise ValueError(
                    f"unknown network preset {v!r}; use one of {sorted(NETWORK_PRESETS)} "
                    "or {'rtt_ms': ..., 'bandwidth_mbps': ...}") from None
        return v
