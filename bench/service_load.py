"""Load benchmark of the job API on one machine, while a job trains in the embedded executor.

Three bounded phases against a fresh ``python -m service serve`` (loopback only):

1. ``submit``: ``--submitters`` concurrent valid ``POST /v1/jobs`` (distinct titles, so no
   idempotency shortcut), each validated and planned in the helper processes; the same
   network in all (a sweep: the helpers build and trace it once), then
   ``submit_distinct``: the same burst with a different network in each submission
   (widths ``[4, 8, 16 + i]``: every helper call builds and traces its model);
2. ``poll``: ``--clients`` clients alternating ``GET /v1/jobs`` (list) and
   ``GET /v1/jobs/{id}`` (status), each waiting ``--think`` s between requests
   (a client polling its jobs), for ``--duration`` s;
3. ``saturate``: the same clients with no think time (closed loop: latency then measures
   the queue at the server's throughput).

Writes ``bench/results/service_load.json`` and prints a Markdown table for BENCHMARKS.md.

    python bench/service_load.py --clients 50 --submitters 20 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.process import Server  # noqa: E402

TRAIN_SPEC: dict[str, Any] = {
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


def _percentiles(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    ms = sorted(x * 1000 for x in xs)

    def q(p: float) -> float:
        return round(ms[min(len(ms) - 1, max(0, round(p / 100 * (len(ms) - 1))))], 1)

    return {"p50": q(50), "p90": q(90), "p99": q(99), "max": round(ms[-1], 1),
            "mean": round(statistics.fmean(ms), 1), "n": len(ms)}


async def _timed(c: httpx.AsyncClient, method: str, path: str, lat: list[float],
                 errors: list[str], ok: tuple[int, ...], **kw: Any) -> httpx.Response | None:
    t0 = time.perf_counter()
    try:
        r = await c.request(method, path, **kw)
    except httpx.HTTPError as exc:
        errors.append(type(exc).__name__)
        return None
    if r.status_code in ok:
        lat.append(time.perf_counter() - t0)
    else:
        errors.append(f"HTTP {r.status_code}")
    return r


def _burst_spec(i: int, distinct: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {**TRAIN_SPEC, "title": f"burst {i}{' distinct' * distinct}",
                            "n_trials": 2}
    if distinct:
        model = TRAIN_SPEC["model"]
        spec["model"] = {**model, "arch": {"name": model["arch"]["name"],
                                           "kwargs": {"widths": [4, 8, 16 + i]}}}
    return spec


async def _submit_burst(base: str, headers: dict[str, str], n: int,
                        distinct: bool) -> dict[str, Any]:
    lat: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as c:
        rs = await asyncio.gather(*(
            _timed(c, "POST", "/v1/jobs", lat, errors, (202,),
                   json={"spec": _burst_spec(i, distinct)})
            for i in range(n)))
        ids = [r.json()["id"] for r in rs if r is not None and r.status_code == 202]
        for jid in ids:        # leave the queue to the training job
            await c.post(f"/v1/jobs/{jid}/cancel")
    return {"submissions": n, "distinct_networks": distinct,
            "latency_ms": _percentiles(lat), "errors": sorted(errors)}


class _KeepAlive:
    """A minimal HTTP/1.1 keep-alive GET client on one asyncio connection.

    The poll phases use it instead of httpx: on this 2-core machine the generator shares the
    CPUs with the server, and httpx spends 5-6 ms of CPU per request (more than the server's
    3-4 ms), so its own event loop would set the tail it measures. This one parses only the
    status line and ``Content-Length`` (about 0.1 ms per request). Raises ``ConnectionError``
    on a closed or malformed answer.
    """

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.host, port = base.split("://", 1)[1].rsplit(":", 1)
        self.port = int(port)
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        """``GET path``; returns the status code after reading the whole body."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.head}\r\n"
                          .encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ConnectionError(f"bad status line {lines[0]!r}")
        length = next((int(v) for k, _, v in (ln.partition(":") for ln in lines[1:])
                       if k.lower() == "content-length"), None)
        if length is None:
            raise ConnectionError("no Content-Length")
        await self.reader.readexactly(length)
        return int(parts[1])

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _timed_get(c: _KeepAlive, path: str, lat: list[float], errors: list[str]) -> None:
    t0 = time.perf_counter()
    try:
        code = await c.get(path)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        errors.append(type(exc).__name__)
        c.writer = None
        return
    if code == 200:
        lat.append(time.perf_counter() - t0)
    else:
        errors.append(f"HTTP {code}")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _poll(base: str, headers: dict[str, str], jid: str, clients: int, duration: float,
                think: float, server_pid: int) -> dict[str, Any]:
    lat: dict[str, list[float]] = {"list": [], "status": []}
    errors: list[str] = []
    stop_at = time.monotonic() + duration

    async def client(k: int) -> None:
        c = _KeepAlive(base, headers)
        await asyncio.sleep(think * k / clients)         # spread the start
        i = k
        try:
            while time.monotonic() < stop_at:
                kind = "list" if i % 2 else "status"
                path = "/v1/jobs?limit=20" if kind == "list" else f"/v1/jobs/{jid}"
                await _timed_get(c, path, lat[kind], errors)
                i += 1
                if think:
                    await asyncio.sleep(think)
        finally:
            await c.close()

    t0, cpu0, server0 = time.monotonic(), time.process_time(), _cpu_s(server_pid)
    await asyncio.gather(*(client(k) for k in range(clients)))
    wall = time.monotonic() - t0
    n = len(lat["list"]) + len(lat["status"])
    per_request = 1000 / max(n, 1)
    return {"clients": clients, "think_s": think, "duration_s": round(wall, 1),
            "requests_per_s": round(n / wall, 1), "errors": len(errors),
            "cpu_ms_per_request": {
                "generator": round((time.process_time() - cpu0) * per_request, 2),
                "server": round((_cpu_s(server_pid) - server0) * per_request, 2)},
            "error_kinds": sorted(set(errors)),
            "latency_ms": {"list": _percentiles(lat["list"]),
                           "status": _percentiles(lat["status"]),
                           "all": _percentiles(lat["list"] + lat["status"])}}


def _status(base: str, headers: dict[str, str], jid: str) -> dict[str, Any]:
    return httpx.get(f"{base}/v1/jobs/{jid}", headers=headers, timeout=30).json()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from service.app import prepare_database
    from service.auth import create_api_key
    from service.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="pi-opt-load-"))
    db = prepare_database(Settings(data_dir=tmp))
    _, key = create_api_key(db, "load")
    db.dispose()
    env = {**os.environ, "PI_OPT_DATA_DIR": str(tmp), "PYTHONPATH": str(REPO),
           "PI_OPT_LOG_LEVEL": "warning", "OMP_NUM_THREADS": "1",
           "PI_OPT_QUOTA_ACTIVE_JOBS": str(args.submitters + 10)}
    server = Server([], env=env, log=tmp / "server.log")
    headers = {"Authorization": f"Bearer {key}"}
    base = server.base_url
    out: dict[str, Any] = {}
    try:
        server.wait_healthy(timeout=300)
        r = httpx.post(f"{base}/v1/jobs", json={"spec": TRAIN_SPEC}, headers=headers,
                       timeout=300)
        r.raise_for_status()
        jid = r.json()["id"]
        deadline = time.monotonic() + 300
        while _status(base, headers, jid)["progress"].get("phase") not in ("baseline",
                                                                           "search"):
            if time.monotonic() > deadline:
                raise RuntimeError("the job did not start training")
            time.sleep(0.2)
        out["loadavg_1m_before"] = round(os.getloadavg()[0], 2)
        out["submit"] = asyncio.run(_submit_burst(base, headers, args.submitters, False))
        out["submit_distinct"] = asyncio.run(_submit_burst(base, headers, args.submitters,
                                                           True))
        pid = server.popen.pid
        out["poll"] = asyncio.run(_poll(base, headers, jid, args.clients, args.duration,
                                        args.think, pid))
        out["saturate"] = asyncio.run(_poll(base, headers, jid, args.clients, args.duration,
                                            0.0, pid))
        out["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
        job = _status(base, headers, jid)
        out["job_during_load"] = {"status": job["status"], "phase": job["progress"].get("phase"),
                                  "trials_done": job["progress"].get("trials_done")}
        httpx.post(f"{base}/v1/jobs/{jid}/cancel", headers=headers)
    finally:
        server.stop(timeout=30)
    return out


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for phase, what in (("submit", "same network"), ("submit_distinct", "distinct networks")):
        sub = result[phase]["latency_ms"] or {}
        rows.append(f"| {result[phase]['submissions']} concurrent `POST /v1/jobs`, {what} | "
                    f"- | {sub.get('n')} | {sub.get('p50')} | {sub.get('p99')} | "
                    f"{sub.get('max')} | {len(result[phase]['errors'])} |")
    for phase in ("poll", "saturate"):
        p = result[phase]
        for kind in ("list", "status"):
            lm = p["latency_ms"][kind] or {}
            rows.append(f"| {p['clients']} clients, think {p['think_s']:g} s: "
                        f"`GET /v1/jobs{'?limit=20' if kind == 'list' else '/{id}'}` | "
                        f"{p['requests_per_s']} | {lm.get('n')} | {lm.get('p50')} | "
                        f"{lm.get('p99')} | {lm.get('max')} | {p['errors']} |")
    return ("| phase | req/s (both) | n | p50 ms | p99 ms | max ms | errors |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--submitters", type=int, default=20)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--think", type=float, default=0.5, help="seconds between a client's "
                    "requests in the poll phase")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "service_load.json"))
    args = ap.parse_args()
    t0 = time.monotonic()
    result = {"command": f"python bench/service_load.py --clients {args.clients} --submitters "
                         f"{args.submitters} --duration {args.duration:g} --think {args.think:g}",
              "setup": "uvicorn (1 process) + embedded executor (SQLite WAL) + 2 helper "
                       "processes + the training job subprocess + the load generator (httpx for "
                       "submissions, a minimal keep-alive HTTP/1.1 client for polling), all "
                       "on one machine",
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              **run(args)}
    result["wall_s"] = round(time.monotonic() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
