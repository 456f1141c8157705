"""Load benchmark of the job API: N concurrent clients polling ``GET /v1/jobs/{id}``
while that job trains in the embedded executor (same machine, loopback only).

Bounded: runs ``--duration`` seconds (default 30) or ``--max-requests``, whichever comes
first, then cancels the job and stops the server it started. Writes
``bench/results/service_load.json`` and ``bench/results/service_load.md`` (merged into
BENCHMARKS.md by hand).

    python bench/service_load.py --clients 50 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
SPEC = {
    "title": "load benchmark",
    "data": {"kind": "digits", "max_train": 1000},
    "model": {"arch": {"name": "resnet_mini", "kwargs": {"widths": [4, 8, 16]}},
              "input_shape": [1, 8, 8], "num_classes": 10},
    "baseline": {"epochs": 4}, "finetune": {"epochs": 2},
    "techniques": [{"chain": ["deepreduce"], "search": False,
                    "params": {"deepreduce": {"criticality_epochs": 0, "alphas": [1.0],
                                              "input_downsamples": [1], "thin": "never"}}}],
    "budgets": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], "n_trials": 60,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


async def _client(base: str, path: str, headers: dict[str, str], stop_at: float,
                  budget: list[int], lat: list[float], errors: list[str]) -> None:
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as c:
        while time.monotonic() < stop_at and budget[0] > 0:
            budget[0] -= 1
            t0 = time.perf_counter()
            try:
                r = await c.get(path)
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}")
                else:
                    lat.append(time.perf_counter() - t0)
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)


async def _load(base: str, path: str, headers: dict[str, str], clients: int, duration: float,
                max_requests: int) -> tuple[list[float], list[str], float]:
    lat: list[float] = []
    errors: list[str] = []
    budget = [max_requests]
    t0 = time.monotonic()
    await asyncio.gather(*(_client(base, path, headers, t0 + duration, budget, lat, errors)
                           for _ in range(clients)))
    return lat, errors, time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--max-requests", type=int, default=200_000)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "service_load.json"))
    ap.add_argument("--md", default=str(REPO / "bench" / "results" / "service_load.md"))
    args = ap.parse_args()

    sys.path.insert(0, str(REPO))
    from service.app import prepare_database
    from service.auth import create_api_key
    from service.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="pi-opt-load-"))
    db = prepare_database(Settings(data_dir=tmp))
    _, key = create_api_key(db, "load")
    db.dispose()
    port = _free_port()
    env = {**os.environ, "PI_OPT_DATA_DIR": str(tmp), "PYTHONPATH": str(REPO),
           "PI_OPT_LOG_LEVEL": "warning", "OMP_NUM_THREADS": "1"}
    log = (tmp / "server.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "service", "serve", "--port", str(port)],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        job = httpx.post(f"{base}/v1/jobs", json={"spec": SPEC}, headers=headers, timeout=120)
        job.raise_for_status()
        jid = job.json()["id"]
        for _ in range(600):   # wait until the runner trains
            progress = httpx.get(f"{base}/v1/jobs/{jid}", headers=headers).json()["progress"]
            if progress.get("phase") in ("baseline", "search"):
                break
            time.sleep(0.2)
        events_before = len(httpx.get(f"{base}/v1/jobs/{jid}/events?format=ndjson",
                                      headers=headers).text.splitlines())
        load1 = os.getloadavg()[0]
        lat, errors, wall = asyncio.run(_load(base, f"/v1/jobs/{jid}", headers, args.clients,
                                              args.duration, args.max_requests))
        after = httpx.get(f"{base}/v1/jobs/{jid}", headers=headers).json()
        events_after = len(httpx.get(f"{base}/v1/jobs/{jid}/events?format=ndjson",
                                     headers=headers).text.splitlines())
        httpx.post(f"{base}/v1/jobs/{jid}/cancel", headers=headers)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    ms = [x * 1000 for x in lat]
    result: dict[str, Any] = {
        "command": f"python bench/service_load.py --clients {args.clients} "
                   f"--duration {args.duration:g}",
        "endpoint": "GET /v1/jobs/{id}",
        "clients": args.clients,
        "duration_s": round(wall, 2),
        "requests_ok": len(lat),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "requests_per_s": round(len(lat) / wall, 1),
        "latency_ms": {"p50": round(_percentile(ms, 50), 2), "p90": round(_percentile(ms, 90), 2),
                       "p99": round(_percentile(ms, 99), 2), "max": round(max(ms), 2),
                       "mean": round(statistics.fmean(ms), 2)} if ms else None,
        "job_during_load": {"status": after["status"], "phase": after["progress"].get("phase"),
                            "events_relayed_during_load": events_after - events_before},
        "setup": "uvicorn (1 process) + embedded executor (SQLite WAL) + the training job "
                 "subprocess + the httpx/asyncio load generator, all on one machine",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_1m_at_start": round(load1, 2)},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    lm = result["latency_ms"] or {}
    Path(args.md).write_text(
        "# Service load benchmark\n\n"
        f"`{result['command']}` (loopback, bounded; raw numbers in "
        "`bench/results/service_load.json`).\n\n"
        f"{args.clients} concurrent clients poll `GET /v1/jobs/{{id}}` for "
        f"{result['duration_s']} s while that job trains in the embedded executor "
        f"({result['setup']}; {os.cpu_count()} CPUs, 1-min load average "
        f"{result['machine']['loadavg_1m_at_start']} at start).\n\n"
        "| requests/s | p50 ms | p90 ms | p99 ms | max ms | errors |\n"
        "|---:|---:|---:|---:|---:|---:|\n"
        f"| {result['requests_per_s']} | {lm.get('p50')} | {lm.get('p90')} | {lm.get('p99')} "
        f"| {lm.get('max')} | {result['errors']} |\n\n"
        f"The job kept training meanwhile (status `{after['status']}`, "
        f"{result['job_during_load']['events_relayed_during_load']} progress events relayed "
        "during the run).\n")
    print(json.dumps(result, indent=2))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
