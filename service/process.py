"""Start and stop service processes: ``python -m service serve`` on a free loopback port.

Shared by the tests, ``bench/service_load.py`` and ``make demo`` (``service.demo_client``).
Each process runs in its own session, so ``stop`` also ends whatever it left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A Python subprocess with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = log.open("ab")
        self.popen = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env,
                                      stdout=self._fh, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        """Process id (also its session and process-group id)."""
        return self.popen.pid

    def output(self) -> str:
        """Everything the process wrote to its log so far."""
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, SIGKILL after ``timeout`` seconds, then SIGKILL its process group."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        try:        # children of the process (job runners) live in its session
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if not self._fh.closed:
            self._fh.close()


class Server(Proc):
    """``python -m service serve`` on a free loopback port (``args``: more CLI options)."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str], log: Path,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        super().__init__(["-m", "service", "serve", "--host", "127.0.0.1", "--port",
                          str(self.port), *args], env=env, log=log)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until ``/v1/health`` answers 200; RuntimeError (with the log's tail) otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()[-4000:]}")
            try:
                if httpx.get(f"{self.base_url}/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not healthy after {timeout}s:\n{self.output()[-4000:]}")
