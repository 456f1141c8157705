"""End-to-end demo over HTTP (``make demo``): start the service, submit a digits job,
follow it live (SSE), download the report and run the encrypted-inference demo on the
best Pareto point.

    python -m service.demo_client [--config configs/digits_quick.yaml] [--workdir runs/service-demo]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from service.process import REPO, Server


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _follow(c: httpx.Client, job_id: str) -> None:
    """Print progress from the SSE stream until the terminal event (reconnects with
    ``Last-Event-ID`` if the stream drops)."""
    last = 0
    while True:
        try:
            with c.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None,
                          headers={"Last-Event-ID": str(last)}) as r:
                for line in r.iter_lines():
                    if line.startswith("id:"):
                        last = int(line[3:])
                    if not line.startswith("data:"):
                        continue
                    ev = json.loads(line[5:])["data"]
                    kind = ev.get("type")
                    if kind == "phase":
                        _say(f"phase {ev['phase']}")
                    elif kind == "epoch" and ev.get("phase") == "baseline":
                        _say(f"baseline epoch {ev['epoch']:.0f}/{ev['epochs']} "
                             f"val_acc={ev.get('val_accuracy', 0):.3f}")
                    elif kind == "trial":
                        _say(f"trial {ev['trial']} {ev['state']} ({ev['done']}/{ev['total']}) "
                             f"relus={ev.get('relus')} val_acc={ev.get('val_accuracy')}")
                    elif kind == "status":
                        _say(f"status {ev['status']}")
                        if ev.get("terminal"):
                            return
        except httpx.TransportError:
            time.sleep(1)


def run(config: Path, workdir: Path) -> int:
    """Serve from ``workdir``, run the job of ``config`` over HTTP, download its report; exit code."""
    from service.app import prepare_database
    from service.auth import create_api_key
    from service.settings import Settings

    spec: dict[str, Any] = yaml.safe_load(config.read_text())
    data_dir = workdir / "data"
    db = prepare_database(Settings(data_dir=data_dir))
    _, key = create_api_key(db, "demo")
    db.dispose()
    env = {**os.environ, "PI_OPT_DATA_DIR": str(data_dir), "PI_OPT_LOG_LEVEL": "warning"}
    server = Server([], env=env, log=workdir / "server.log")
    base = server.base_url
    c = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    try:
        server.wait_healthy(timeout=120)
        _say(f"service on {base} (data in {data_dir}, log {workdir / 'server.log'})")
        r = c.post("/v1/jobs", json={"spec": spec}, headers={"Idempotency-Key": config.name})
        if r.status_code != 202:
            _say(f"submission refused: {r.status_code} {r.text}")
            return 1
        job_id = r.json()["id"]
        _say(f"job {job_id} accepted: {r.headers['location']}")
        _follow(c, job_id)
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] != "succeeded":
            _say(f"job ended {job['status']}: {json.dumps(job['error'])}")
            return 1
        out = workdir / "download" / job_id
        for art in c.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]:
            if art["name"].startswith("report/"):
                target = out / art["name"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(c.get(art["href"]).content)
        _say(f"report downloaded to {out / 'report' / 'report.html'}")
        for p in job["result"]["front"]:
            mpc = (f" | 2PC {p['mpc_latency_s']:.3f} s, {p['mpc_bytes_per_party'] / 1e6:.2f} MB/party"
                   if p.get("mpc_latency_s") is not None else "")
            _say(f"front: trial {p['trial']} {'+'.join(p['chain'])} relus={p['relus']} "
                 f"poly_mults={p.get('poly_mults', 0)} test_acc={p['test_accuracy']:.3f}{mpc}")
        r = c.post(f"/v1/jobs/{job_id}/demo", json={"trial": "best", "index": 0})
        if r.status_code != 202:
            _say(f"demo refused: {r.status_code} {r.text}")
            return 1
        _say("encrypted inference (CrypTen 2PC) on the best point ...")
        while (demo := c.get(r.headers["location"]).json())["status"] not in ("succeeded",
                                                                              "failed"):
            time.sleep(1)
        if demo["status"] != "succeeded":
            _say(f"demo failed: {json.dumps(demo['error'])}")
            return 1
        res = demo["result"]
        _say(f"trial {demo['trial']}, test sample {res['index']} (label {res['label']}): "
             f"encrypted prediction {res['prediction']}, plaintext {res['plaintext_prediction']},"
             f" latency {res['latency_s']:.3f} s, {res['rounds']} rounds, "
             f"{res['bytes_per_party'] / 1e6:.2f} MB per party")
        return 0
    finally:
        c.close()
        server.stop(timeout=60)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry of the HTTP demo client; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "digits_quick.yaml")
    ap.add_argument("--workdir", type=Path, default=REPO / "runs" / "service-demo")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    return run(args.config, args.workdir.resolve())


if __name__ == "__main__":
    sys.exit(main())
