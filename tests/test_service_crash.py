"""Fault test: SIGKILL of the server process with a job running and an upload in flight.

After the kill no process the server started survives (helpers, job runner); the restarted
server removes the half-received upload at startup, re-queues the orphaned job at once
(long before a heartbeat would go stale) without using one of its attempts, and the job
finishes with the trials of the killed run kept.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import service_env
from test_service_jobs import EventLog, client, job_spec, make_key, pid_alive, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def descendants(pid: int) -> set[int]:
    """Live descendants of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _slow_body(release: threading.Event) -> Iterator[bytes]:
    yield b"PK\x03\x04" + os.urandom(2 << 20)     # > the 1 MiB flush: bytes reach the disk
    release.wait(60)
    yield b"never finished"


def test_sigkill_of_server_with_running_job_and_upload_in_flight(spawn: Any,
                                                                  tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = make_key(data_dir)
    # stale_after_s far beyond the test: only the startup recovery can re-queue the job
    env = service_env(data_dir, PI_OPT_STALE_AFTER_S="600")
    server = spawn.server(env)
    c = client(server, key)
    jid = c.post("/v1/jobs", json={"spec": job_spec(3, [0.3, 0.6, 0.9])}).json()["id"]
    log = EventLog(c, jid)
    wait_for(lambda: log.trial_of(1), 180, "a finished trial")
    kept = log.completed_trials(1)

    release = threading.Event()
    outcome: list[Any] = []

    def upload() -> None:
        try:
            outcome.append(httpx.post(f"{server.base_url}/v1/uploads?kind=dataset&filename=x.zip",
                                      content=_slow_body(release), timeout=60,
                                      headers={"Authorization": f"Bearer {key}"}))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    sender = threading.Thread(target=upload, daemon=True)
    sender.start()
    uploads = data_dir / "uploads"
    partial = wait_for(lambda: [p for p in uploads.glob("*/incoming.part")
                                if p.stat().st_size > 0], 30, "a partial upload on disk")
    started = descendants(server.pid)
    assert len(started) >= 3, started              # helpers (2) + job runner (+ tracker)
    runner = c.get(f"/v1/jobs/{jid}").json()
    assert runner["status"] == "running" and runner["attempt"] == 1

    os.kill(server.pid, signal.SIGKILL)
    server.popen.wait(timeout=10)
    wait_for(lambda: not any(pid_alive(p) for p in started), 15, "the server's children to exit")
    release.set()
    sender.join(timeout=30)
    assert outcome and not isinstance(outcome[0], httpx.Response), outcome
    assert all(p.exists() for p in partial)         # nothing cleaned it up yet

    restarted = spawn.server(env, name="restarted")
    assert not any(p.exists() for p in partial), "partial upload removed at startup"
    assert [d.name for d in uploads.iterdir()] == []
    c = client(restarted, key)
    log.c = c
    job = wait_for(lambda: (j := c.get(f"/v1/jobs/{jid}").json())["status"] in
                   ("succeeded", "failed", "canceled") and j, 240, "the job to finish")
    assert job["status"] == "succeeded", job
    assert job["attempt"] == 1                      # a server crash is not an attempt
    log.poll()
    reasons = [e["data"].get("reason", "") for e in log.events
               if e["type"] == "status" and e["data"]["status"] == "queued"]
    assert any("crashed" in r for r in reasons), reasons
    report = c.get(f"/v1/jobs/{jid}/artifacts/report/pareto.json").json()
    points = {p["trial"]: p for p in report["points"] if p.get("harvested_from") is None}
    for trial, acc in kept.items():                 # the killed run's trials are kept
        assert points[trial]["val_accuracy"] == pytest.approx(acc)
    assert len(points) == 3, sorted(points)
    assert not descendants(restarted.pid) & started
