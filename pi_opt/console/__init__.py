"""Terminal helpers of the ``pi-opt`` CLI: config files with one-line errors, progress display.

Pure presentation: no search logic lives here, and nothing imports ``mpc`` or ``service``.
"""

from __future__ import annotations

from pi_opt.console.config_file import (
    ConfigFileError,
    load_model,
    read_mapping,
    validation_lines,
)
from pi_opt.console.progress import ProgressDisplay

__all__ = ["ConfigFileError", "ProgressDisplay", "load_model", "read_mapping",
           "validation_lines"]
