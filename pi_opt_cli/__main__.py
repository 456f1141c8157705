"""``python -m pi_opt_cli ...`` is ``pi-opt ...``."""

from __future__ import annotations

import sys

from pi_opt_cli import main

if __name__ == "__main__":
    sys.exit(main())
