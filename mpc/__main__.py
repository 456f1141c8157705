"""``python -m mpc measure|demo ...`` is ``pi-opt mpc measure|demo ...``."""

from __future__ import annotations

import sys

from pi_opt_cli import main

if __name__ == "__main__":
    sys.exit(main(["mpc", *sys.argv[1:]]))
