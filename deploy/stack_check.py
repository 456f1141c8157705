"""Runtime half of deploy/check.sh (standard library only; needs podman on PATH).

    python3 deploy/stack_check.py single  --image localhost/pi-opt:latest --port 18000
    python3 deploy/stack_check.py compose --compose-file docker-compose.yml --port 18000

``single``: one container of the image (SQLite, embedded worker): /v1/health, the image's
HEALTHCHECK, an API key made with ``pi-opt keys create``, a tiny digits job, its report.
``compose``: the stack of docker-compose.yml through podman-compose (api + 2 workers +
postgres): a digits job whose trials both workers run (worker ids from the job's events);
once both have completed a trial one worker container is SIGKILLed, and the job must still
succeed with the trials that worker completed, its report downloaded (``--two-jobs``: first
a job without a kill); ``down`` leaving no container or volume of the stack behind.
Every step prints one ``[stack]`` line; any failure raises SystemExit with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PROJECT = "pi-opt-check"
TERMINAL = ("succeeded", "failed", "canceled")
#: one fixed technique, no baseline search: a job of a few seconds per trial on 2 cores
CHEAP = {"chain": ["deepreduce"], "search": False,
         "params": {"deepreduce": {"criticality_epochs": 0, "alphas": [1.0],
                                   "input_downsamples": [1], "thin": "never"}}}


def say(msg: str) -> None:
    print(f"[stack {time.strftime('%H:%M:%S', time.gmtime())}] {msg}", flush=True)


def sh(*cmd: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    """Run a command; its stdout (stripped). Raises SystemExit with stderr on failure."""
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}\n"
                         f"{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r.stdout.strip()


def digits_spec(title: str, n_trials: int, budgets: list[float]) -> dict[str, Any]:
    return {"title": title,
            "data": {"kind": "digits", "max_train": 300},
            "model": {"arch": {"name": "resnet_mini", "kwargs": {"widths": [4, 8, 16]}},
                      "input_shape": [1, 8, 8], "num_classes": 10},
            "baseline": {"epochs": 2}, "finetune": {"epochs": 1},
            "techniques": [CHEAP], "budgets": budgets, "n_trials": n_trials}


class Api:
    """Minimal JSON client of the /v1 API (urllib)."""

    def __init__(self, port: int, key: str | None = None) -> None:
        self.base, self.key = f"http://127.0.0.1:{port}", key

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.key:
            req.add_header("Authorization", f"Bearer {self.key}")
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers

    def json(self, path: str) -> Any:
        status, body, _ = self.request("GET", path)
        if status != 200:
            raise SystemExit(f"GET {path}: {status} {body[:300]!r}")
        return json.loads(body)

    def wait_healthy(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                status, body, _ = self.request("GET", "/v1/health")
                if status == 200:
                    return dict(json.loads(body))
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        raise SystemExit(f"/v1/health not ok within {timeout_s:.0f} s")

    def submit(self, spec: dict[str, Any]) -> str:
        status, body, headers = self.request("POST", "/v1/jobs", {"spec": spec})
        if status != 202:
            raise SystemExit(f"job submission refused: {status} {body[:500]!r}")
        return str(json.loads(body)["id"])

    def events(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        status, body, _ = self.request("GET", f"/v1/jobs/{job_id}/events?format=ndjson&after={after}")
        if status != 200:
            raise SystemExit(f"events of {job_id}: {status} {body[:300]!r}")
        return [json.loads(line) for line in body.decode().splitlines() if line]

    def wait_terminal(self, job_id: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.json(f"/v1/jobs/{job_id}")
            if job["status"] in TERMINAL:
                return dict(job)
            time.sleep(2)
        raise SystemExit(f"job {job_id} not finished within {timeout_s:.0f} s")

    def download_report(self, job_id: str) -> int:
        """Download every ``report/`` artifact; total bytes (fails if report.html is missing)."""
        arts = self.json(f"/v1/jobs/{job_id}/artifacts")["data"]
        names = {a["name"]: a["href"] for a in arts if a["name"].startswith("report/")}
        if "report/report.html" not in names:
            raise SystemExit(f"no report/report.html among {sorted(names)}")
        total = 0
        for name, href in sorted(names.items()):
            status, body, _ = self.request("GET", href.removeprefix(self.base))
            if status != 200 or not body:
                raise SystemExit(f"download {name}: {status}, {len(body)} bytes")
            total += len(body)
        say(f"report downloaded: {len(names)} files, {total} bytes "
            f"(report.html {len(self.request('GET', names['report/report.html'].removeprefix(self.base))[1])} bytes)")
        return total


def make_key(container: str) -> str:
    out = sh("podman", "exec", container, "python", "-m", "service", "keys", "create",
             "--name", "check")
    return out.splitlines()[-1].split("\t")[-1]


def run_healthcheck(container: str, retries: int = 3) -> None:
    """The image's HEALTHCHECK run by hand (no systemd timer runs it on such hosts); like
    Docker, ``retries`` consecutive failures (e.g. its 5 s timeout on a starved CPU) fail."""
    for attempt in range(1, retries + 1):
        hc = subprocess.run(["podman", "healthcheck", "run", container], capture_output=True,
                            text=True)
        if hc.returncode == 0:
            say(f"HEALTHCHECK of {container}: healthy (attempt {attempt})")
            return
        time.sleep(2)
    raise SystemExit(f"HEALTHCHECK of {container} failed {retries} times: {hc.stdout}{hc.stderr}")


def require_succeeded(job: dict[str, Any]) -> None:
    if job["status"] != "succeeded":
        raise SystemExit(f"job {job['id']} ended {job['status']}: {json.dumps(job.get('error'))}")


# ---------------------------------------------------------------------------------------
def check_single(image: str, port: int) -> None:
    name = f"{PROJECT}-single"
    sh("podman", "rm", "-f", "-v", name, check=False)
    # no systemd timer for the HEALTHCHECK on hosts without systemd: run it by hand below
    sh("podman", "run", "-d", "--name", name, "--health-interval", "disable",
       "-p", f"127.0.0.1:{port}:8000", image)
    try:
        api = Api(port)
        health = api.wait_healthy(180)
        say(f"health: {health['status']} (version {health['version']}, executor "
            f"{health['executor']}, database {health['database']})")
        run_healthcheck(name)
        api.key = make_key(name)
        status, _, _ = Api(port, "pio_wrong").request("GET", "/v1/jobs")
        if status != 401:
            raise SystemExit(f"a wrong key got {status}, expected 401")
        t0 = time.monotonic()
        job_id = api.submit(digits_spec("image check", 2, [0.3, 0.6]))
        say(f"job {job_id} accepted (wrong key refused with 401)")
        job = api.wait_terminal(job_id, 900)
        require_succeeded(job)
        say(f"job {job_id} succeeded in {time.monotonic() - t0:.1f} s")
        api.download_report(job_id)
    finally:
        sh("podman", "rm", "-f", "-v", "-t", "5", name, check=False)


# ---------------------------------------------------------------------------------------
class Stack:
    """docker-compose.yml run by podman-compose under project name ``pi-opt-check``."""

    def __init__(self, compose_file: Path, port: int) -> None:
        self.base = ["podman-compose", "-p", PROJECT, "-f", str(compose_file)]
        self.env = {**os.environ, "PI_OPT_HOST_PORT": str(port)}

    def compose(self, *args: str) -> str:
        return sh(*self.base, *args, env=self.env)

    def containers(self, service: str | None = None, *, all_states: bool = False) -> list[str]:
        cmd = ["podman", "ps", "--format", "{{.Names}}",
               "--filter", f"label=io.podman.compose.project={PROJECT}"]
        if service:
            cmd += ["--filter", f"label=com.docker.compose.service={service}"]
        if all_states:
            cmd.append("-a")
        return sorted(n for n in sh(*cmd).splitlines() if n)

    def wait_postgres(self, timeout_s: float) -> None:
        """podman < 4.6 has no `wait --condition=healthy` (podman-compose then skips
        depends_on's service_healthy): run the compose file's own health check until it passes."""
        (pg,) = self.containers("postgres")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if subprocess.run(["podman", "healthcheck", "run", pg],
                              capture_output=True).returncode == 0:
                return
            time.sleep(1)
        raise SystemExit(f"postgres not healthy within {timeout_s:.0f} s:\n"
                         + sh("podman", "logs", pg, check=False))

    def hostname_of(self, container: str) -> str:
        return sh("podman", "inspect", "--format", "{{.Config.Hostname}}", container)


def trial_workers(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Completed trial numbers per worker id (``host:pid:nonce``) from a job's events."""
    out: dict[str, list[int]] = {}
    for e in events:
        d = e["data"]
        if e["type"] == "trial" and d.get("state") == "complete" and d.get("worker"):
            out.setdefault(d["worker"], []).append(int(d["trial"]))
    return out


def run_shared_job(api: Api) -> None:
    t0 = time.monotonic()
    job_id = api.submit(digits_spec("compose stack: shared", 4, [0.2, 0.4, 0.6, 0.8]))
    say(f"job {job_id} accepted")
    job = api.wait_terminal(job_id, 1800)
    require_succeeded(job)
    elapsed = time.monotonic() - t0
    workers = trial_workers(api.events(job_id))
    say(f"job {job_id} succeeded in {elapsed:.1f} s (submit -> succeeded)")
    say("workers seen: " + ", ".join(f"{w} ran trials {sorted(t)}" for w, t in workers.items()))
    if len(workers) < 2:
        raise SystemExit(f"trials ran on {len(workers)} worker(s), expected 2: {workers}")
    api.download_report(job_id)


def run_kill_job(api: Api, stack: Stack) -> None:
    t0 = time.monotonic()
    job_id = api.submit(digits_spec("compose stack: worker killed", 4, [0.15, 0.35, 0.55, 0.75]))
    say(f"job {job_id} accepted (4 trials); killing a worker once both have completed a trial")
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 1200
    while len(trial_workers(events)) < 2:
        if time.monotonic() > deadline:
            raise SystemExit(f"both workers never completed a trial: {trial_workers(events)}")
        events += api.events(job_id, events[-1]["id"] if events else 0)
        if any(e["type"] == "status" and e["data"].get("terminal") for e in events):
            raise SystemExit("job ended before both workers completed a trial")
        time.sleep(0.5)
    by_host = {stack.hostname_of(c): c for c in stack.containers("worker")}
    victim_id = next(iter(trial_workers(events)))
    victim = by_host.get(victim_id.split(":")[0])
    if victim is None:
        raise SystemExit(f"worker {victim_id} matches no container of {by_host}")
    kept = sorted(trial_workers(events)[victim_id])
    say("workers seen: " + ", ".join(f"{w} completed trials {sorted(t)}"
                                     for w, t in trial_workers(events).items()))
    sh("podman", "kill", "-s", "KILL", victim)
    say(f"SIGKILLed {victim} (worker {victim_id}) after it completed trials {kept}")
    job = api.wait_terminal(job_id, 1800)
    require_succeeded(job)
    elapsed = time.monotonic() - t0
    events = api.events(job_id)
    requeued = [e["data"] for e in events if e["type"] == "requeued"]
    points = api.json(f"/v1/jobs/{job_id}/artifacts/report/pareto.json")["points"]
    in_report = {int(p["trial"]) for p in points if p.get("trial") is not None}
    missing = [t for t in kept if t not in in_report]
    if missing:
        raise SystemExit(f"trials {missing} of the killed worker are not in the report")
    done = {int(e["data"]["trial"]) for e in events
            if e["type"] == "trial" and e["data"].get("state") == "complete"}
    say(f"worker-kill recovery: job {job_id} succeeded {elapsed:.1f} s after submission; "
        f"{len(done)} trials complete; "
        f"the killed worker's trials {kept} kept in the report; requeued: "
        + "; ".join(f"{r.get('task')}/{r.get('shard')} ({r.get('reason')})" for r in requeued))
    api.download_report(job_id)


def check_compose(compose_file: Path, port: int, *, two_jobs: bool) -> None:
    stack = Stack(compose_file, port)
    stack.compose("down", "-v")
    try:
        stack.compose("up", "-d", "postgres")
        stack.wait_postgres(120)
        stack.compose("up", "-d", "--no-deps", "api", "worker")
        say("up: " + ", ".join(stack.containers()))
        api = Api(port)
        health = api.wait_healthy(300)
        say(f"health: {health['status']} (executor {health['executor']}, "
            f"database {health['database']})")
        (api_ctr,) = stack.containers("api")
        run_healthcheck(api_ctr)
        api.key = make_key(api_ctr)
        if two_jobs:
            run_shared_job(api)
        run_kill_job(api, stack)
    except BaseException:
        for c in stack.containers(all_states=True):
            say(f"--- logs of {c} (tail)")
            print(sh("podman", "logs", "--tail", "30", c, check=False), flush=True)
        raise
    finally:
        stack.compose("down", "-v")
    left = stack.containers(all_states=True)
    vols = [v for v in sh("podman", "volume", "ls", "--format", "{{.Name}}").splitlines()
            if v.startswith(PROJECT)]
    if left or vols:
        raise SystemExit(f"down left containers {left}, volumes {vols}")
    say("down: no container or volume of the stack left")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("single")
    s.add_argument("--image", required=True)
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("compose")
    c.add_argument("--compose-file", type=Path, required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--two-jobs", action="store_true",
                   help="first a job without a kill (its time is the stack's job time)")
    args = p.parse_args()
    if args.cmd == "single":
        check_single(args.image, args.port)
    else:
        check_compose(args.compose_file, args.port, two_jobs=args.two_jobs)


if __name__ == "__main__":
    main()
