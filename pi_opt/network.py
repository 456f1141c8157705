"""Network profiles between the two parties of an encrypted inference.

A profile is a named or explicit link: ``loopback`` (same machine: the measured
loopback time, nothing added), ``lan`` (0.5 ms RTT, 1 Gb/s), ``wan`` (50 ms RTT,
100 Mb/s), or ``{"rtt_ms": ..., "bandwidth_mbps": ...}``.

Latency on a link: the loopback time plus :meth:`NetworkProfile.traffic_s` of the
traffic, given as groups of ``rounds`` rounds that send ``bytes`` per party (one group
per layer: its rounds carry equal shares of its bytes)::

    T = T_loopback + sum_groups rounds * max(0, RTT + bytes / rounds * 8 / bandwidth - hidden)

Each communication round of CrypTen is one exchange between the 2 parties (one RTT);
both parties send concurrently (full duplex), so the transfer term counts what one
party sends. ``hidden`` (seconds per round, a property of the parties' compute, fitted
on emulated links: :attr:`pi_opt.costmodel.LatencyModel.hidden_per_round_s`) is the
part of a round's delay that overlaps the peer's own compute: a party whose message
leaves first waits for the later one anyway, so a delay shorter than that gap costs
nothing. ``hidden = 0`` gives the plain additive rule ``rounds * RTT + bytes /
bandwidth``. The MPC backend's link emulation (``MpcConfig.emulate_network``) delays and
paces the real messages by the same rule, so the overlap is measured, not assumed.

Pure pydantic; raises :class:`~pi_opt.errors.ConfigError` for bad input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pi_opt.errors import ConfigError


class NetworkProfile(BaseModel):
    """A link: ``rtt_ms`` round-trip milliseconds, ``bandwidth_mbps`` megabits per
    second per direction (``None``: unlimited, loopback only), ``name`` for display."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "custom"
    rtt_ms: float = Field(ge=0.0)
    bandwidth_mbps: float | None = Field(None, gt=0.0)

    @property
    def is_loopback(self) -> bool:
        """True for the unshaped local link (0 ms RTT, unlimited bandwidth)."""
        return self.rtt_ms == 0.0 and self.bandwidth_mbps is None

    def transfer_s(self, bytes_sent: float) -> float:
        """Seconds to push ``bytes_sent`` bytes through the link (0 when unlimited)."""
        if self.bandwidth_mbps is None:
            return 0.0
        return bytes_sent * 8.0 / (self.bandwidth_mbps * 1e6)

    def network_s(self, *, rounds: float, bytes_sent: float, hidden_s: float = 0.0) -> float:
        """Seconds the link adds to ``rounds`` rounds sending ``bytes_sent`` bytes per party
        in equal shares: ``rounds * max(0, RTT + bytes_sent / rounds / bandwidth -
        hidden_s)`` (``hidden_s = 0``: ``rounds * RTT + bytes_sent / bandwidth``). Bytes
        without a round (``rounds <= 0``) cost their transfer time."""
        if rounds <= 0:
            return self.transfer_s(bytes_sent)
        per_round = self.rtt_ms * 1e-3 + self.transfer_s(bytes_sent) / rounds
        return rounds * max(0.0, per_round - hidden_s)

    def traffic_s(self, traffic: Iterable[tuple[float, float]], *, hidden_s: float = 0.0
                  ) -> float:
        """:meth:`network_s` summed over ``(rounds, bytes_sent)`` groups (e.g. layers)."""
        return sum(self.network_s(rounds=r, bytes_sent=b, hidden_s=hidden_s)
                   for r, b in traffic)

    def label(self) -> str:
        """The profile's name, or ``"<rtt> ms / <bandwidth> Mb/s"`` for a custom one."""
        if self.name != "custom":
            return self.name
        bw = "unlimited" if self.bandwidth_mbps is None else f"{self.bandwidth_mbps:g} Mb/s"
        return f"{self.rtt_ms:g} ms / {bw}"


#: Named profiles; ``loopback`` adds nothing to the measured loopback time.
PROFILES: dict[str, NetworkProfile] = {
    "loopback": NetworkProfile(name="loopback", rtt_ms=0.0, bandwidth_mbps=None),
    "lan": NetworkProfile(name="lan", rtt_ms=0.5, bandwidth_mbps=1000.0),
    "wan": NetworkProfile(name="wan", rtt_ms=50.0, bandwidth_mbps=100.0),
}

#: Profiles every report shows a latency for (plus the job's own).
REPORTED: tuple[str, ...] = ("loopback", "lan", "wan")


def resolve_network(value: Any) -> NetworkProfile:
    """A profile from a name, a ``{rtt_ms, bandwidth_mbps}`` mapping or a profile.

    Raises :class:`ConfigError` for unknown names, non-positive RTT or bandwidth
    (an explicit link needs both, finite and > 0), or other fields.
    """
    if isinstance(value, NetworkProfile):
        return value
    if isinstance(value, str):
        try:
            return PROFILES[value.lower()]
        except KeyError:
            raise ConfigError(f"unknown network profile {value!r}; use one of "
                              f"{sorted(PROFILES)} or {{rtt_ms: ..., bandwidth_mbps: ...}}",
                              network=value) from None
    if isinstance(value, dict):
        named = PROFILES.get(str(value.get("name", "")))
        if named is not None and value == named.model_dump():
            return named  # a named profile dumped by model_dump() reloads as itself
        rtt, bw = value.get("rtt_ms"), value.get("bandwidth_mbps")
        for key, v in (("rtt_ms", rtt), ("bandwidth_mbps", bw)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) \
                    or v <= 0:
                raise ConfigError(f"network.{key} must be a finite number > 0, got {v!r}",
                                  network=value)
        try:
            return NetworkProfile.model_validate({"name": "custom", **value})
        except ValidationError as exc:
            raise ConfigError(f"invalid network profile: {exc.errors()[0]['msg']} "
                              f"({sorted(value)})", network=value) from None
    raise ConfigError(f"network must be a profile name or {{rtt_ms, bandwidth_mbps}}, "
                      f"got {value!r}", network=value)


__all__ = ["PROFILES", "REPORTED", "NetworkProfile", "resolve_network"]
