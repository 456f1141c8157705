"""Shared, generic test helpers: free ports and real server / worker subprocesses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.process import REPO, Proc, Server, free_port

__all__ = ["REPO", "Proc", "Server", "free_port", "service_env"]


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
