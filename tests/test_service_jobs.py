"""End-to-end jobs on a real server with the embedded executor (tiny digits jobs).

A job reaches ``succeeded`` with live SSE, artifacts and an encrypted demo; a running
job is canceled; a finished one is deleted; and a job survives SIGKILL of its runner and
of its worker process, resuming the same Optuna study with the earlier trials kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Server, service_env

pytestmark = pytest.mark.slow

CHEAP = {"chain": ["deepreduce"], "search": False,
         "params": {"deepreduce": {"criticality_epochs": 0, "alphas": [1.0],
                                   "input_downsamples": [1], "thin": "never"}}}


def job_spec(n_trials: int, budgets: list[float] | None = None, **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "title": "service e2e",
        "data": {"kind": "digits", "max_train": 200},
        "model": {"arch": {"name": "resnet_mini", "kwargs": {"widths": [4, 8, 16]}},
                  "input_shape": [1, 8, 8], "num_classes": 10},
        "baseline": {"epochs": 2}, "finetune": {"epochs": 1},
        "techniques": [CHEAP], "budgets": budgets or [0.3, 0.6], "n_trials": n_trials,
    }
    spec.update(over)
    return spec


def make_key(data_dir: Path, name: str = "tester") -> str:
    from service.app import prepare_database
    from service.auth import create_api_key
    from service.settings import Settings

    db = prepare_database(Settings(data_dir=data_dir))
    _, key = create_api_key(db, name)
    db.dispose()
    return key


def client(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=240,   # first call: helper warm-up
                        headers={"Authorization": f"Bearer {key}"})


def wait_for(pred: Any, timeout: float, what: str, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class EventLog:
    """Polls the NDJSON events endpoint (the SSE fallback) and keeps everything seen."""

    def __init__(self, c: httpx.Client, job_id: str) -> None:
        self.c, self.job_id, self.events, self.status = c, job_id, [], "queued"

    def poll(self) -> list[dict[str, Any]]:
        after = self.events[-1]["id"] if self.events else 0
        r = self.c.get(f"/v1/jobs/{self.job_id}/events", params={"format": "ndjson",
                                                                  "after": after})
        assert r.status_code == 200, r.text
        self.status = r.headers["x-job-status"]
        self.events += [json.loads(x) for x in r.text.splitlines()]
        return self.events

    def trial_of(self, attempt: int) -> dict[int, float]:
        """Completed trials of ``attempt`` so far; fails fast if the job ended instead."""
        self.poll()
        if self.status in ("succeeded", "failed", "canceled"):
            raise AssertionError(f"job ended {self.status} early: {self.events[-3:]}")
        return self.completed_trials(attempt)

    def completed_trials(self, attempt: int | None = None) -> dict[int, float]:
        return {e["data"]["trial"]: e["data"]["val_accuracy"] for e in self.events
                if e["type"] == "trial" and e["data"]["state"] == "complete"
                and (attempt is None or e["attempt"] == attempt)}


def runner_pid(data_dir: Path, job_id: str) -> tuple[int | None, int, str]:
    with sqlite3.connect(data_dir / "pi-opt.db") as conn:
        pid, attempt, status = conn.execute(
            "SELECT runner_pid, attempt, status FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return pid, attempt, status


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def read_sse(c: httpx.Client, url: str, headers: dict[str, str] | None = None,
             timeout: float = 240) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] = {}
    with c.stream("GET", url, headers=headers, timeout=timeout) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("id:"):
                cur["id"] = int(line[3:])
            elif line.startswith("data:"):
                cur["data"] = json.loads(line[5:])
            elif not line and cur:
                out.append(cur)
                cur = {}
    return out


# --------------------------------------------------------------------------- happy path


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server with the embedded executor and one finished job, followed live over SSE."""
    tmp = tmp_path_factory.mktemp("e2e")
    data_dir = tmp / "data"
    key = make_key(data_dir)
    server = Server([], env=service_env(data_dir), log=tmp / "server.log")
    try:
        server.wait_healthy()
        c = client(server, key)
        r = c.post("/v1/jobs", json={"spec": job_spec(2)})
        assert r.status_code == 202, r.text
        jid = r.json()["id"]
        events = read_sse(c, f"/v1/jobs/{jid}/events")   # live, from the start to the end
        yield {"c": c, "jid": jid, "events": events, "data_dir": data_dir,
               "job": c.get(f"/v1/jobs/{jid}").json()}
    finally:
        server.stop()


def test_job_succeeds_with_live_sse_and_replay(e2e: dict[str, Any]) -> None:
    c, jid, events, job = e2e["c"], e2e["jid"], e2e["events"], e2e["job"]
    ids = [e["id"] for e in events]
    assert ids == list(range(1, len(ids) + 1))
    types = [e["data"]["type"] for e in events]
    assert {"status", "phase", "epoch", "trial"} <= set(types)
    final = events[-1]["data"]
    assert final["type"] == "status" and final["data"]["status"] == "succeeded", final
    trials = [e["data"]["data"] for e in events if e["data"]["type"] == "trial"]
    assert sorted(t["trial"] for t in trials if t["state"] == "complete") == [0, 1]

    assert job["status"] == "succeeded" and job["attempt"] == 1
    assert job["progress"]["trials_done"] == 2 and job["progress"]["trials_total"] == 2
    assert job["progress"]["phase"] == "done" and job["finished_at"]
    assert job["result"]["front"], job["result"]
    assert "retry-after" not in c.get(f"/v1/jobs/{jid}").headers

    first_trial = next(e["id"] for e in events if e["data"]["type"] == "trial")
    replay = read_sse(c, f"/v1/jobs/{jid}/events", headers={"Last-Event-ID": str(first_trial)})
    assert [e["id"] for e in replay] == ids[first_trial:]


def test_artifacts_download_with_media_types_and_etags(e2e: dict[str, Any]) -> None:
    _check_artifacts(e2e["c"], e2e["jid"], e2e["job"])


@pytest.mark.mpc
def test_encrypted_demo_on_the_best_point(e2e: dict[str, Any]) -> None:
    _check_demo(e2e["c"], e2e["jid"], e2e["job"])


def test_cancel_a_running_job(e2e: dict[str, Any]) -> None:
    _check_cancel_running(e2e["c"], e2e["data_dir"])


def test_delete_removes_job_and_artifacts(e2e: dict[str, Any]) -> None:
    c, jid = e2e["c"], e2e["jid"]
    assert (e2e["data_dir"] / "jobs" / jid / "report").is_dir()
    assert c.delete(f"/v1/jobs/{jid}").status_code == 204
    assert not (e2e["data_dir"] / "jobs" / jid).exists()
    assert c.get(f"/v1/jobs/{jid}").status_code == 404
    assert c.get(f"/v1/jobs/{jid}/artifacts").status_code == 404


def _check_artifacts(c: httpx.Client, jid: str, job: dict[str, Any]) -> None:
    listing = c.get(f"/v1/jobs/{jid}/artifacts").json()["data"]
    by_name = {a["name"]: a for a in listing}
    front = job["result"]["front"][0]["trial"]
    expected = {
        "report/report.html": "text/html",
        "report/pareto.json": "application/json",
        "report/trials.csv": "text/csv",
        "report/pareto.png": "image/png",
        f"points/trial-{front}/model.json": "application/json",
        f"points/trial-{front}/weights.safetensors": "application/octet-stream",
        "baseline/weights.safetensors": "application/octet-stream",
    }
    for name, media in expected.items():
        assert name in by_name, sorted(by_name)
        meta = by_name[name]
        assert meta["media_type"].startswith(media)
        r = c.get(meta["href"])
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(media)
        assert r.headers["content-disposition"].startswith("attachment")
        assert Path(name).name in r.headers["content-disposition"]
        digest = hashlib.sha256(r.content).hexdigest()
        assert meta["sha256"] == digest and meta["size"] == len(r.content)
        assert r.headers["etag"] == f'"{digest}"'
        again = c.get(meta["href"], headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
    assert by_name[f"points/trial-{front}/model.json"]["pareto_point"] == front
    assert by_name["report/report.html"]["pareto_point"] is None
    assert json.loads(c.get(f"/v1/jobs/{jid}/artifacts/report/pareto.json").content)["points"]
    assert not any(n.startswith(("logs/", "cache/")) or n.endswith(".journal") for n in by_name)
    for evil in ("%2e%2e/%2e%2e/pi-opt.db", "report/%2e%2e/%2e%2e/%2e%2e/pi-opt.db",
                 "optuna.journal", "%2Fetc%2Fpasswd", "report/..%2F..%2Foptuna.journal",
                 "points/trial-0/../../optuna.journal", "logs"):
        r = c.get(f"/v1/jobs/{jid}/artifacts/{evil}")
        assert r.status_code == 404, (evil, r.status_code)
        assert r.headers["content-type"].startswith("application/problem+json")


def _check_demo(c: httpx.Client, jid: str, job: dict[str, Any]) -> None:
    bad = c.post(f"/v1/jobs/{jid}/demo", json={"trial": 999, "index": 0})
    assert bad.status_code == 422 and bad.json()["code"] == "unknown-trial"
    r = c.post(f"/v1/jobs/{jid}/demo", json={"trial": "best", "index": 3})
    assert r.status_code == 202, r.text
    loc = r.headers["location"]
    demo = wait_for(lambda: (d := c.get(loc).json())["status"] in ("succeeded", "failed") and d,
                    240, "the demo")
    assert demo["status"] == "succeeded", demo
    res = demo["result"]
    assert demo["trial"] in {p["trial"] for p in job["result"]["front"]}
    assert isinstance(res["prediction"], int) and isinstance(res["plaintext_prediction"], int)
    assert res["label"] in range(10) and res["index"] == 3
    assert res["latency_s"] > 0 and res["bytes_per_party"] > 0 and res["rounds"] > 0
    assert res["agrees"] == (res["prediction"] == res["plaintext_prediction"])


def _check_cancel_running(c: httpx.Client, data_dir: Path) -> None:
    jid = c.post("/v1/jobs", json={"spec": job_spec(6, [0.2, 0.4, 0.6])}).json()["id"]
    log = EventLog(c, jid)
    wait_for(lambda: any(e["type"] in ("epoch", "trial_start") for e in log.poll()), 120,
             "the job to train")
    pid, _, _ = runner_pid(data_dir, jid)
    assert pid is not None and pid_alive(pid)
    r = c.post(f"/v1/jobs/{jid}/cancel")
    assert r.status_code == 202 and r.json()["status"] in ("cancelling", "canceled")
    wait_for(lambda: c.get(f"/v1/jobs/{jid}").json()["status"] == "canceled", 60, "canceled")
    statuses = [e["data"]["status"] for e in log.poll() if e["type"] == "status"]
    assert statuses[-2:] == ["cancelling", "canceled"]
    wait_for(lambda: not pid_alive(pid), 20, "the runner to exit")
    assert c.post(f"/v1/jobs/{jid}/cancel").json()["status"] == "canceled"


# --------------------------------------------------------------------------- crash recovery


def test_sigkill_of_runner_and_worker_resumes_the_study(spawn: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = make_key(data_dir)
    env = service_env(data_dir, PI_OPT_MAX_ATTEMPTS="4")
    server = spawn.server(env, "--no-worker")
    worker = spawn.proc(env, "-m", "service", "worker", name="worker")
    c = client(server, key)
    jid = c.post("/v1/jobs", json={"spec": job_spec(4, [0.2, 0.4, 0.6, 0.8])}).json()["id"]
    log = EventLog(c, jid)

    # 1) SIGKILL the runner once a trial has finished: crash -> attempt 2 at once
    wait_for(lambda: log.trial_of(1), 180, "a trial of attempt 1")
    kept_1 = log.completed_trials(1)
    pid, attempt, _ = runner_pid(data_dir, jid)
    assert attempt == 1 and pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: runner_pid(data_dir, jid)[1] == 2, 30, "attempt 2")

    # 2) SIGKILL the worker process once attempt 2 finished a trial: its heartbeat goes
    #    stale, a new worker re-queues the job and finishes it; a worker crash is not a
    #    runner failure, so the job stays at attempt 2
    wait_for(lambda: log.trial_of(2), 180, "a trial of attempt 2")
    kept_2 = log.completed_trials(2)
    pid2 = runner_pid(data_dir, jid)[0]
    os.kill(worker.pid, signal.SIGKILL)
    assert pid2 is not None
    wait_for(lambda: not pid_alive(pid2), 30, "the orphaned runner to stop")
    assert c.get(f"/v1/jobs/{jid}").json()["status"] == "running"   # nobody noticed yet
    spawn.proc(env, "-m", "service", "worker", name="worker2")
    job = wait_for(lambda: (j := c.get(f"/v1/jobs/{jid}").json())["status"] in
                   ("succeeded", "failed", "canceled") and j, 240, "the job to finish")
    assert job["status"] == "succeeded", job
    assert job["attempt"] == 2

    log.poll()
    reasons = [e["data"].get("reason", "") for e in log.events
               if e["type"] == "status" and e["data"]["status"] == "queued"]
    assert any("exited with code -9" in r for r in reasons), reasons
    assert any("stopped heartbeating" in r for r in reasons), reasons

    # the study was resumed, not restarted: attempt 2 started from attempt 1's count and
    # numbered its trials after attempt 1's; earlier trials are in the final report, unchanged
    done = {a: log.completed_trials(a) for a in (1, 2)}
    search = {e["attempt"]: e["data"] for e in log.events
              if e["type"] == "phase" and e["data"]["phase"] == "search"}
    # (>=: a trial may finish in the journal just before the SIGKILL lost its event)
    assert search[2]["done"] >= len(done[1]) >= 1
    assert min(done[2]) > max(done[1])
    assert all(e["data"]["trial"] not in done[1] for e in log.events
               if e["type"] == "trial_start" and e["attempt"] > 1)
    report = c.get(f"/v1/jobs/{jid}/artifacts/report/pareto.json").json()
    points = {p["trial"]: p for p in report["points"] if p.get("harvested_from") is None}
    for trial, acc in {**kept_1, **kept_2, **done[1], **done[2]}.items():
        assert trial in points, (trial, sorted(points))
        assert points[trial]["val_accuracy"] == pytest.approx(acc)
    assert len(points) == 4, sorted(points)
    assert any(e["attempt"] == 2 and e["type"] == "phase" and e["data"]["phase"] == "report"
               for e in log.events), "the resumed attempt 2 wrote the report"
    with sqlite3.connect(data_dir / "pi-opt.db") as conn:
        recoveries, artifact_bytes = conn.execute(
            "SELECT recoveries, artifact_bytes FROM jobs WHERE id = ?", (jid,)).fetchone()
    assert recoveries == 1 and artifact_bytes > 0
