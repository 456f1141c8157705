"""Errors of the MPC backend (all derive from :class:`pi_opt.errors.PiOptError`)."""

from __future__ import annotations

from pi_opt.errors import PiOptError


class MpcError(PiOptError):
    """An encrypted run failed (a party raised, died, or the model cannot be lowered)."""

    code = "mpc-failed"


class MpcUnavailable(MpcError):
    """CrypTen (or the requested device) is not usable in this environment."""

    code = "mpc-unavailable"


class LoweringError(MpcError):
    """The model contains an operation the encrypted executor does not support."""

    code = "mpc-unsupported-op"


class PartyFailed(MpcError):
    """A party process raised an exception or exited without a result."""

    code = "mpc-party-failed"


class PartyTimeout(MpcError):
    """The parties did not finish within ``timeout_s``; all of them were killed."""

    code = "mpc-timeout"
