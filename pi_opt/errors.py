"""Exception hierarchy of pi_opt.

Every error a user can cause derives from :class:`PiOptError` and carries a
human-readable message plus a stable ``code`` (used by the CLI and mapped to
HTTP problem types by the service).
"""

from __future__ import annotations


class PiOptError(Exception):
    """Base class of all user-facing pi_opt errors."""

    code: str = "pi-opt-error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigError(PiOptError):
    """A configuration value is invalid or inconsistent."""

    code = "invalid-config"


class UnknownNameError(ConfigError):
    """A registry lookup (architecture, technique, dataset kind) failed."""

    code = "unknown-name"


class DatasetError(PiOptError):
    """A data set could not be found, parsed or validated."""

    code = "invalid-dataset"


class ModelFormatError(PiOptError):
    """Model weights or specs are corrupt, mismatched or in an unsafe format."""

    code = "invalid-model"


class UnsafeFormatError(ModelFormatError):
    """The input is in a format that would execute code when loaded (pickle)."""

    code = "unsafe-format"


class ShapeMismatchError(ModelFormatError):
    """Tensor shapes do not match what the architecture expects."""

    code = "shape-mismatch"


class BudgetError(PiOptError):
    """A requested ReLU budget cannot be met by a technique."""

    code = "budget-unreachable"


class Cancelled(PiOptError):
    """The caller asked the running operation to stop."""

    code = "cancelled"
