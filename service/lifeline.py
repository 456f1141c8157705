"""Child processes die with the process that started them.

Every process the service starts (spec/data-set helpers, job runners, demo runners) calls
``die_with_parent()`` first. A SIGKILLed server cannot clean up, so each child watches
its parent itself: the kernel's ``PR_SET_PDEATHSIG`` is not enough on its own because it
fires when the *thread* that forked the child ends (pools spawn from short-lived request
threads), so a daemon thread polls ``getppid()`` and exits hard once the parent is gone.
"""

from __future__ import annotations

import os
import threading
import time

POLL_S = 0.2
ORPHAN_EXIT_CODE = 3


def _watch(parent: int, poll_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(poll_s)
    os._exit(ORPHAN_EXIT_CODE)


def die_with_parent(parent: int | None = None, *, poll_s: float = POLL_S) -> None:
    """Start the watcher; ``parent`` defaults to the current parent pid.

    Exits at once if ``parent`` is already gone (the child was adopted before it got here).
    """
    parent = os.getppid() if parent is None else parent
    if os.getppid() != parent:
        os._exit(ORPHAN_EXIT_CODE)
    threading.Thread(target=_watch, args=(parent, poll_s), daemon=True,
                     name="pi-opt-lifeline").start()
