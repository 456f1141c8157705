"""Shared, generic test helpers: free ports and real server / worker subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

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
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        # children of the process (job runners) live in its session: end stragglers
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._fh.close()


class Server(Proc):
    """``python -m service serve`` on a free loopback port."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        super().__init__(["-m", "service", "serve", "--host", "127.0.0.1", "--port",
                          str(self.port), *args], env=env, log=log)

    def wait_healthy(self, timeout: float = 60.0) -> None:
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


def service_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """Environment for service processes: fast intervals, one torch thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PI_OPT_")}
    env.update({
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        "PI_OPT_DATA_DIR": str(data_dir),
        "PI_OPT_HEARTBEAT_INTERVAL_S": "0.5",
        "PI_OPT_STALE_AFTER_S": "4",
        "PI_OPT_POLL_INTERVAL_S": "0.2",
        "PI_OPT_CANCEL_GRACE_S": "5",
        "PI_OPT_KILL_GRACE_S": "2",
        "PI_OPT_SSE_KEEPALIVE_S": "1",
        "PI_OPT_LOG_LEVEL": "info",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    })
    env.update(overrides)
    return env


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    """Factory starting servers (``spawn.server(...)``) and other processes
    (``spawn.proc(...)``); everything is stopped at teardown."""
    started: list[Proc] = []

    class _Spawn:
        @staticmethod
        def server(env: dict[str, str], *args: str, name: str = "server",
                   wait: bool = True) -> Server:
            srv = Server(args, env=env, log=tmp_path / f"{name}-{len(started)}.log")
            started.append(srv)
            if wait:
                srv.wait_healthy()
            return srv

        @staticmethod
        def proc(env: dict[str, str], *args: str, name: str = "proc") -> Proc:
            p = Proc(args, env=env, log=tmp_path / f"{name}-{len(started)}.log")
            started.append(p)
            return p

    yield _Spawn()
    for p in reversed(started):
        p.stop()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny convolutions: torch's thread fan-out only costs time on a 2-core runner."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory, one_thread: None):
    """A tiny technique context (digits subset, 4/8/16 mini ResNet teacher; see tiny.py)."""
    from tiny import tiny_context

    return tiny_context(tmp_path_factory.mktemp("work"), epochs=1)
