"""``python -m mpc measure|demo ...``."""

from __future__ import annotations

import sys

from mpc.cli import main

if __name__ == "__main__":
    sys.exit(main())
