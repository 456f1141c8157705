"""Configuration of encrypted runs: :class:`MpcConfig` (links: :mod:`pi_opt.network`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pi_opt.costmodel import CostCounts
from pi_opt.errors import ConfigError
from pi_opt.network import PROFILES, NetworkProfile, resolve_network


#: A link between the parties (:class:`pi_opt.network.NetworkProfile`).
NetworkConfig = NetworkProfile

#: ``loopback``, ``lan``, ``wan`` (:data:`pi_opt.network.PROFILES`).
NETWORK_PRESETS: dict[str, NetworkProfile] = PROFILES


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
    * ``network``: ``"loopback"``/``"lan"``/``"wan"`` or ``{rtt_ms, bandwidth_mbps}``
      (:mod:`pi_opt.network`): the link of the latency estimate, and the link emulated
      with ``emulate_network``.
    * ``emulate_network``: both parties' communicator delays every message by the
      link's RTT and paces it at its bandwidth (:mod:`mpc.exchange`), so the measured
      latency includes the network; needs a ``network`` other than loopback.
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
    network: NetworkProfile | None = None
    emulate_network: bool = False
    timeout_s: float = Field(600.0, gt=0.0)
    batch_size: int = Field(1, ge=1, le=4096)
    threads: int = Field(1, ge=1, le=256)

    @field_validator("network", mode="before")
    @classmethod
    def _profile(cls, v: Any) -> Any:
        if v is None or isinstance(v, NetworkProfile):
            return v
        try:
            return resolve_network(v)
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    @model_validator(mode="after")
    def _emulated(self) -> MpcConfig:
        if self.emulate_network and (self.network is None or self.network.is_loopback):
            raise ValueError("emulate_network needs a network profile other than loopback "
                             "(e.g. network: wan)")
        return self

    @property
    def link(self) -> tuple[float, float | None] | None:
        """``(rtt_ms, bandwidth_mbps)`` to emulate, or None."""
        if not self.emulate_network or self.network is None:
            return None
        return self.network.rtt_ms, self.network.bandwidth_mbps


def link_estimates(config: MpcConfig, *, latency_s: float, counts: CostCounts,
                   hidden_s: float = 0.0) -> dict[str, float]:
    """Latency of a measured inference on loopback, LAN, WAN and the configured link.

    ``latency_s`` is what was measured: on loopback, or on the emulated link when
    ``config.emulate_network`` (then the link's share is taken out first). ``counts``:
    the run's rounds and bytes, with their per-layer ``traffic`` when known
    (:meth:`~pi_opt.costmodel.CostCounts.traffic_groups`). A link adds, per group,
    ``rounds * max(0, RTT + bytes / rounds / bandwidth - hidden_s)``
    (:meth:`pi_opt.network.NetworkProfile.traffic_s`; ``hidden_s``: the cost model's
    fitted overlap per round). Keys: ``loopback``, ``lan``, ``wan``, ``configured`` (the
    configured link; absent without one).
    """
    groups = counts.traffic_groups()

    def link_s(net: NetworkProfile) -> float:
        return net.traffic_s(groups, hidden_s=hidden_s)

    loopback = latency_s
    if config.emulate_network and config.network is not None:
        loopback = max(0.0, latency_s - link_s(config.network))
    out = {name: loopback + link_s(PROFILES[name]) for name in ("loopback", "lan", "wan")}
    if config.network is not None:
        out["configured"] = (latency_s if config.emulate_network
                             else loopback + link_s(config.network))
    return out
