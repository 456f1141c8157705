"""Server limits against a real server process (no job worker): job bounds checked from the
spec and its plan, the plan dry run, per-key quotas, event-id ranges, unsafe uploads
refused at upload time, no server paths in responses, a complete ``Allow`` on 405, the
published OpenAPI document, and ``keys create --expires-in``.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sqlite3
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import REPO, Server, service_env
from test_service_api import _npz, _targz, assert_problem, tiny_spec
from test_service_jobs import make_key

LIMITS = {"PI_OPT_MAX_TRIALS": "50", "PI_OPT_MAX_EPOCHS": "20", "PI_OPT_MAX_JOB_SECONDS": "3600",
          "PI_OPT_MAX_MODEL_PARAMS": "1000000", "PI_OPT_MAX_MODEL_MACS": "100000",
          "PI_OPT_MAX_ACTIVATION_BYTES": "1000000", "PI_OPT_QUOTA_ACTIVE_JOBS": "3",
          "PI_OPT_QUOTA_UPLOAD_BYTES": "200000", "PI_OPT_MAX_EXTRACT_RATIO": "5",
          "PI_OPT_QUOTA_ARTIFACT_BYTES": "1000000"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("limits")
    data_dir = tmp / "data"
    keys = {name: make_key(data_dir, name) for name in ("a", "quota", "burst")}
    server = Server(["--no-worker"], log=tmp / "server.log",
                    env=service_env(data_dir, **LIMITS))
    try:
        server.wait_healthy()
        clients = {name: httpx.Client(base_url=server.base_url, timeout=120,
                                      headers={"Authorization": f"Bearer {k}"})
                   for name, k in keys.items()}
        yield {"server": server, "data_dir": data_dir, "tmp": tmp, **clients}
    finally:
        server.stop()


def _submit(c: httpx.Client, spec: dict[str, Any]) -> httpx.Response:
    return c.post("/v1/jobs", json={"spec": spec})


def _limit_error(r: httpx.Response, limit: str, loc: list[Any]) -> dict[str, Any]:
    body = assert_problem(r, 422, "limit-exceeded")
    hits = [e for e in body["errors"] if e["limit"] == limit]
    assert hits and hits[0]["loc"] == ["spec", *loc], body
    assert limit in body["detail"] and str(hits[0]["value"]) in json.dumps(body)
    return body


# --------------------------------------------------------------------------- 1 bounds


def test_job_bounds_are_422_naming_field_and_limit(srv: dict[str, Any]) -> None:
    a = srv["a"]
    _limit_error(_submit(a, tiny_spec(n_trials=1_000_000_000)), "max_trials", ["n_trials"])
    _limit_error(_submit(a, tiny_spec(baseline={"epochs": 1_000_000_000})), "max_epochs",
                 ["baseline", "epochs"])
    _limit_error(_submit(a, tiny_spec(timeout_s=1e9)), "max_job_seconds", ["timeout_s"])
    wide = tiny_spec(model={"arch": {"name": "resnet_mini", "kwargs": {"widths": [1000000, 8, 16]}},
                            "input_shape": [1, 8, 8], "num_classes": 10})
    _limit_error(_submit(a, wide), "max_model_params", ["model", "arch"])
    huge_in = tiny_spec(model={"arch": {"name": "resnet_mini", "kwargs": {"widths": [4, 8, 16]}},
                               "input_shape": [3, 100000, 100000], "num_classes": 10})
    _limit_error(_submit(a, huge_in), "max_input_elements", ["model", "input_shape"])
    macs = tiny_spec(model={"arch": {"name": "resnet_mini", "kwargs": {"widths": [8, 16, 32]}},
                            "input_shape": [1, 8, 8], "num_classes": 10})
    _limit_error(_submit(a, macs), "max_model_macs", ["model"])
    act = tiny_spec(finetune={"epochs": 1, "batch_size": 512})
    _limit_error(_submit(a, act), "max_activation_bytes", ["model"])
    assert a.get("/v1/jobs").json()["data"] == []          # nothing was queued


def test_budgets_must_be_finite_and_integral_above_one(srv: dict[str, Any]) -> None:
    a = srv["a"]
    for raw in ("NaN", "1e999", "-Infinity"):
        body = '{"spec": %s}' % json.dumps(tiny_spec()).replace('[0.5]', f"[{raw}]")
        r = a.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
        err = assert_problem(r, 422)
        assert any(e["loc"][:2] == ["spec", "budgets"] for e in err["errors"]), err
    err = assert_problem(_submit(a, tiny_spec(budgets=[1.5])), 422, "validation-error")
    assert "integers" in json.dumps(err["errors"])
    spec = tiny_spec(budgets=[3, 0.25], title="exact")     # the stored spec is the submitted one
    r = _submit(a, spec)
    assert r.status_code == 202, r.text
    assert r.json()["spec"] == spec == a.get(f"/v1/jobs/{r.json()['id']}").json()["spec"]
    a.post(f"/v1/jobs/{r.json()['id']}/cancel")


def test_plan_dry_run_returns_the_plan_and_queues_nothing(srv: dict[str, Any]) -> None:
    a = srv["a"]
    before = len(a.get("/v1/jobs?limit=100").json()["data"])
    r = a.post("/v1/plans", json={"spec": tiny_spec()})
    assert r.status_code == 200, r.text
    plan = r.json()["plan"]
    assert plan["params"] > 0 and plan["macs"] > 0 and plan["activation_bytes_per_batch"] > 0
    assert plan["trials"] >= 1 and plan["total_epochs"] >= 3
    assert "path" not in plan["data"]
    _limit_error(a.post("/v1/plans", json={"spec": tiny_spec(n_trials=51)}), "max_trials",
                 ["n_trials"])
    assert len(a.get("/v1/jobs?limit=100").json()["data"]) == before


# --------------------------------------------------------------------------- 2 quotas


def test_active_job_quota_is_429_with_retry_after(srv: dict[str, Any]) -> None:
    q = srv["quota"]
    ids = [_submit(q, tiny_spec(title=f"q{i}")).json()["id"] for i in range(3)]
    r = _submit(q, tiny_spec(title="one too many"))
    body = assert_problem(r, 429, "quota-active-jobs")
    assert int(r.headers["retry-after"]) > 0 and body["limit"] == "quota_active_jobs"
    assert srv["a"].post("/v1/plans", json={"spec": tiny_spec()}).status_code == 200
    q.post(f"/v1/jobs/{ids[0]}/cancel")                     # room again
    assert _submit(q, tiny_spec(title="fits")).status_code == 202
    for jid in q.get("/v1/jobs?status=queued").json()["data"]:
        q.post(f"/v1/jobs/{jid['id']}/cancel")


def test_artifact_bytes_quota(srv: dict[str, Any]) -> None:
    q = srv["quota"]
    done = q.get("/v1/jobs?status=canceled&limit=1").json()["data"][0]["id"]
    with sqlite3.connect(srv["data_dir"] / "pi-opt.db") as conn:   # as if it had written them
        conn.execute("UPDATE jobs SET artifact_bytes = ? WHERE id = ?", (2_000_000, done))
    body = assert_problem(_submit(q, tiny_spec()), 422, "quota-artifact-bytes")
    assert body["limit"] == "quota_artifact_bytes"
    assert q.delete(f"/v1/jobs/{done}").status_code == 204
    r = _submit(q, tiny_spec())
    assert r.status_code == 202, r.text
    q.post(f"/v1/jobs/{r.json()['id']}/cancel")


def _random_npz(n: int) -> bytes:
    rng = np.random.default_rng(n)
    buf = io.BytesIO()
    np.savez(buf, x_train=rng.integers(0, 255, (n, 1, 32, 32), dtype=np.uint8),
             y_train=np.arange(n) % 4)
    return buf.getvalue()


def test_upload_quota_and_extraction_ratio(srv: dict[str, Any]) -> None:
    q = srv["quota"]
    r = q.post("/v1/uploads?kind=dataset&filename=a.npz", content=_random_npz(120))
    assert r.status_code == 201, r.text
    up = r.json()["id"]
    body = assert_problem(q.post("/v1/uploads?kind=dataset&filename=b.npz",
                                 content=_random_npz(100)), 413, "quota-upload-bytes")
    assert body["limit"] == "quota_upload_bytes"
    assert q.delete(f"/v1/uploads/{up}").status_code == 204
    zbuf = io.BytesIO()                                     # 150 kB of zeros -> ~200 B
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pets/cat/0.png", b"\0" * 150_000)
    body = assert_problem(q.post("/v1/uploads?kind=dataset&filename=z.zip",
                                 content=zbuf.getvalue()), 413, "extraction-limit")
    assert "max_extract_ratio" in body["detail"]
    assert q.get("/v1/uploads").json()["data"] == []


# --------------------------------------------------------------------------- 3 event ids


def test_event_ids_out_of_range_are_400_before_any_stream(srv: dict[str, Any]) -> None:
    a = srv["a"]
    jid = _submit(a, tiny_spec(title="events")).json()["id"]
    url = f"/v1/jobs/{jid}/events"
    big = "99999999999999999999999"
    for fmt in ("sse", "ndjson"):
        assert_problem(a.get(url, params={"format": fmt, "after": big}), 400, "invalid-event-id")
        assert_problem(a.get(url, params={"format": fmt, "after": -1}), 400)
        assert_problem(a.get(url, params={"format": fmt}, headers={"Last-Event-ID": big}),
                       400, "invalid-event-id")
    assert_problem(a.get(url, params={"after": 2**31}), 400)
    r = a.get(url, params={"format": "ndjson", "after": 2**31 - 1})
    assert r.status_code == 200 and r.text == ""
    a.post(f"/v1/jobs/{jid}/cancel")


# --------------------------------------------------------------------------- 5 concurrency


def test_concurrent_submissions_are_validated_in_parallel(srv: dict[str, Any]) -> None:
    """20 valid submissions at once all succeed (no helper timeouts / 503s)."""
    c = srv["burst"]
    spec = tiny_spec()
    t0 = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        rs = list(pool.map(lambda i: c.post("/v1/plans", json={"spec": {**spec,
                                                                        "title": f"b{i}"}}),
                           range(20)))
    assert [r.status_code for r in rs] == [200] * 20, [r.text for r in rs if r.status_code != 200]
    assert {r.json()["title"] for r in rs} == {f"b{i}" for i in range(20)}
    assert time.monotonic() - t0 < 120


# --------------------------------------------------------------------------- 7 leaks


def test_unsafe_npz_and_cifar_are_refused_at_upload_without_paths(srv: dict[str, Any]) -> None:
    a = srv["a"]
    buf = io.BytesIO()
    np.savez(buf, x_train=np.zeros((4, 1, 8, 8), np.uint8),
             y_train=np.array([0, 1, 0, 1], dtype=object))
    body = assert_problem(a.post("/v1/uploads?kind=dataset&filename=o.npz",
                                 content=buf.getvalue()), 415, "unsafe-format")
    assert "object array" in body["detail"]

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.getcwd, ())

    noise = np.random.default_rng(0).integers(0, 255, (2, 3072), dtype=np.uint8)
    good = pickle.dumps({b"labels": [0, 1], b"data": noise}, protocol=2)   # (incompressible)
    cifar = _targz({"cifar-10-batches-py/data_batch_1": pickle.dumps(
                        {b"labels": [0, 1], b"data": Evil()}, protocol=2),
                    "cifar-10-batches-py/test_batch": good})
    r = a.post("/v1/uploads?kind=dataset&filename=c.tar.gz", content=cifar)
    body = assert_problem(r, 415, "unsafe-format")
    assert "posix.getcwd" in body["detail"] or "os.getcwd" in body["detail"], body
    text = r.text
    assert str(srv["data_dir"]) not in text and str(srv["tmp"]) not in text
    assert "/uploads/" not in text and not any(p in text for p in ("/tmp/", "/work/", "/root/"))
    assert a.get("/v1/uploads").json()["data"] == []


def test_no_server_path_in_any_response(srv: dict[str, Any]) -> None:
    a = srv["a"]
    up = a.post("/v1/uploads?kind=dataset&filename=d.npz", content=_npz()).json()
    bad = tiny_spec(data={"upload_id": up["id"], "kind": "cifar10"}, model=None)
    texts = [a.get(f"/v1/uploads/{up['id']}").text, _submit(a, bad).text,
             a.post("/v1/plans", json={"spec": tiny_spec(
                 data={"upload_id": up["id"]})}).text,
             _submit(a, tiny_spec(data={"kind": "npz", "path": "/etc/passwd"})).text,
             a.get("/v1/uploads").text]
    for text in texts:
        assert str(srv["data_dir"]) not in text and str(REPO) not in text, text


# --------------------------------------------------------------------------- 6 openapi


def test_405_lists_every_allowed_method(srv: dict[str, Any]) -> None:
    a = srv["a"]
    r = a.put("/v1/jobs")
    assert_problem(r, 405)
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD", "POST"}
    r = a.post("/v1/jobs/job_x")
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD", "DELETE"}


def test_openapi_documents_problems_and_the_typed_spec(srv: dict[str, Any]) -> None:
    doc = httpx.get(f"{srv['server'].base_url}/v1/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["JobSpec"]["properties"]["n_trials"]["anyOf"][0]["minimum"] == 1
    assert "weights" not in schemas["JobSpec"]["properties"]
    create = doc["paths"]["/v1/jobs"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "JobCreate")
    assert {"401", "422", "429"} <= set(create["responses"])
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for code, resp in op["responses"].items():
                if code[0] in "45":
                    assert list(resp["content"]) == ["application/problem+json"], (path, code)


def test_committed_job_spec_schema_is_current() -> None:
    from service.openapi import SPEC_SCHEMA_FILE, job_spec_schema

    assert json.loads(SPEC_SCHEMA_FILE.read_text()) == job_spec_schema(), (
        "service/job_spec.schema.json is out of date (SearchConfig changed): run `make openapi`")


# --------------------------------------------------------------------------- 8 keys


def test_keys_cli_create_list_revoke_with_expiry(srv: dict[str, Any],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``pi-opt keys`` (the composed main CLI, run in-process: each ``pi-opt`` process
    imports torch, which takes long on a busy runner)."""
    from pi_opt_cli import main

    data = ["--data-dir", str(srv["data_dir"])]

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(["keys", *data, *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = cli("create", "--name", "short", "--expires-in", "5s")
    assert code == 0
    key_id, secret, expires = out.strip().split("\t")
    base = srv["server"].base_url
    h = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(f"{base}/v1/jobs", headers=h).status_code == 200
    until = datetime.fromisoformat(expires.split(" ", 1)[1])
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1.2)
    body = assert_problem(httpx.get(f"{base}/v1/jobs", headers=h), 401, "unauthorized")
    assert "expired" in body["detail"]
    other = cli("create", "--name", "gone")[1].split("\t")[0]
    assert cli("revoke", other)[0] == 0
    listed = cli("list")[1]
    assert f"{key_id}\tshort\t" in listed and "\texpired\t" in listed
    assert f"{other}\tgone\t" in listed and "\trevoked\t" in listed
    code, _, err = cli("revoke", "key_nope")
    assert code == 1 and err.startswith("error:")
    with pytest.raises(SystemExit) as bad:
        cli("create", "--expires-in", "soon")
    assert bad.value.code == 2
