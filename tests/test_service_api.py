"""REST API over HTTP against a real server (uvicorn subprocess, no job worker).

Covers auth, job submission/validation/listing/pagination/cancel/delete, idempotency,
event replay (SSE + NDJSON), uploads and problem details. Jobs stay queued here; the
end-to-end runs live in test_service_jobs.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import REPO, Server, service_env

MAX_UPLOAD = 1_000_000
AUTH_CACHE_S = 1.0      # a revoked key is refused within this (PI_OPT_AUTH_CACHE_S)


def tiny_spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "data": {"kind": "digits", "max_train": 200},
        "model": {"arch": {"name": "resnet_mini", "kwargs": {"widths": [4, 8, 16]}},
                  "input_shape": [1, 8, 8], "num_classes": 10},
        "baseline": {"epochs": 2}, "finetune": {"epochs": 1},
        "techniques": ["deepreduce"], "budgets": [0.5], "n_trials": 2,
    }
    spec.update(over)
    return spec


class Api:
    def __init__(self, server: Server, key: str, data_dir: Path) -> None:
        self.base = server.base_url
        self.data_dir = data_dir
        self.headers = {"Authorization": f"Bearer {key}"}
        self.client = httpx.Client(base_url=self.base, headers=self.headers, timeout=240)

    def submit(self, spec: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        return self.client.post("/v1/jobs", json={"spec": spec or tiny_spec()}, **kw)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from service.app import prepare_database
    from service.auth import create_api_key
    from service.settings import Settings

    tmp = tmp_path_factory.mktemp("api")
    data_dir = tmp / "data"
    db = prepare_database(Settings(data_dir=data_dir))
    _, key_a = create_api_key(db, "alice")
    _, key_b = create_api_key(db, "bob")
    db.dispose()
    server = Server(["--no-worker"], log=tmp / "server.log",
                    env=service_env(data_dir, PI_OPT_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
                                    PI_OPT_QUOTA_ACTIVE_JOBS="1000",
                                    PI_OPT_AUTH_CACHE_S=str(AUTH_CACHE_S)))
    try:
        server.wait_healthy()
        yield {"a": Api(server, key_a, data_dir), "b": Api(server, key_b, data_dir),
               "server": server, "data_dir": data_dir}
    finally:
        server.stop()


@pytest.fixture
def a(env: dict[str, Any]) -> Api:
    return env["a"]


@pytest.fixture
def b(env: dict[str, Any]) -> Api:
    return env["b"]


def assert_problem(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status and body["title"]
    if code is not None:
        assert body["code"] == code, body
        assert body["type"] == f"urn:pi-opt:problem:{code}"
    return body


# --------------------------------------------------------------------------- basics


def test_health_needs_no_key_and_openapi_is_published(env: dict[str, Any], a: Api) -> None:
    base = env["server"].base_url
    r = httpx.get(f"{base}/v1/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}            # without a key: liveness only
    r = httpx.get(f"{base}/v1/health", headers={"Authorization": "Bearer pio_wrong"})
    assert r.json() == {"status": "ok"}
    r = a.client.get("/v1/health")
    assert r.json()["status"] == "ok" and r.json()["database"] == "sqlite"
    served = httpx.get(f"{base}/v1/openapi.json").json()
    committed = json.loads((REPO / "service" / "openapi.json").read_text())
    assert served == committed


def test_unknown_route_and_method_are_problems(a: Api) -> None:
    assert_problem(a.client.get("/v1/nope"), 404)
    assert_problem(a.client.put("/v1/jobs"), 405)


def test_auth_missing_wrong_and_revoked_keys(env: dict[str, Any], a: Api) -> None:
    base = env["server"].base_url
    r = httpx.get(f"{base}/v1/jobs")
    assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_problem(httpx.get(f"{base}/v1/jobs", headers={"Authorization": "Bearer pio_nope"}),
                   401, "unauthorized")
    assert_problem(httpx.get(f"{base}/v1/jobs", headers={"Authorization": "Basic eDp5"}),
                   401, "unauthorized")
    assert_problem(httpx.post(f"{base}/v1/jobs", json={"spec": tiny_spec()}), 401)

    from service.auth import create_api_key, revoke_api_key
    from service.db import Database

    db = Database(f"sqlite:///{env['data_dir'] / 'pi-opt.db'}")
    principal, secret = create_api_key(db, "temp")
    h = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(f"{base}/v1/jobs", headers=h).status_code == 200
    assert revoke_api_key(db, principal.id)
    revoked_at = time.monotonic()
    db.dispose()
    while httpx.get(f"{base}/v1/jobs", headers=h).status_code == 200:    # principal cache
        assert time.monotonic() - revoked_at < AUTH_CACHE_S + 0.5, "revoked key still works"
        time.sleep(0.05)
    assert_problem(httpx.get(f"{base}/v1/jobs", headers=h), 401)


def test_other_principals_resources_are_404(a: Api, b: Api) -> None:
    job = a.submit().json()
    jid = job["id"]
    for method, path in [("GET", f"/v1/jobs/{jid}"), ("POST", f"/v1/jobs/{jid}/cancel"),
                         ("DELETE", f"/v1/jobs/{jid}"), ("GET", f"/v1/jobs/{jid}/events"),
                         ("GET", f"/v1/jobs/{jid}/artifacts"),
                         ("GET", f"/v1/jobs/{jid}/artifacts/report/report.html")]:
        assert_problem(b.client.request(method, path), 404, "not-found")
    assert jid not in {j["id"] for j in b.client.get("/v1/jobs?limit=100").json()["data"]}
    assert a.client.get(f"/v1/jobs/{jid}").json()["status"] == "queued"  # untouched by b
    up = a.client.post("/v1/uploads?kind=dataset&filename=d.npz", content=_npz()).json()
    assert_problem(b.client.get(f"/v1/uploads/{up['id']}"), 404)
    assert_problem(b.client.delete(f"/v1/uploads/{up['id']}"), 404)
    # b cannot use a's upload in a job either
    spec = tiny_spec(data={"upload_id": up["id"]})
    body = assert_problem(b.submit(spec), 422, "validation-error")
    assert body["errors"][0]["loc"] == ["spec", "data", "upload_id"]


# --------------------------------------------------------------------------- jobs


def test_submit_get_and_representation(a: Api) -> None:
    r = a.submit(tiny_spec(title="first"))
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert int(r.headers["retry-after"]) > 0
    assert job["status"] == "queued" and job["attempt"] == 1 and job["title"] == "first"
    assert job["progress"]["trials_done"] == 0 and job["error"] is None
    assert job["links"]["events"] == f"/v1/jobs/{job['id']}/events"
    got = a.client.get(r.headers["location"])
    assert got.status_code == 200 and got.json()["id"] == job["id"]
    assert "retry-after" in got.headers
    assert_problem(a.client.get("/v1/jobs/job_doesnotexist"), 404, "not-found")


def test_list_keyset_pagination_and_status_filter(a: Api) -> None:
    ids = [a.submit(tiny_spec(title=f"page {i}")).json()["id"] for i in range(5)]
    seen: list[str] = []
    url: str | None = "/v1/jobs?limit=2"
    pages = 0
    while url:
        r = a.client.get(url)
        assert r.status_code == 200
        page = r.json()
        assert len(page["data"]) <= 2
        seen += [j["id"] for j in page["data"]]
        if page["next_cursor"]:
            assert r.headers["link"].endswith('rel="next"')
            url = r.headers["link"].split(";")[0].strip("<>")
            assert f"cursor={page['next_cursor']}" in url
        else:
            assert "link" not in r.headers
            url = None
        pages += 1
    assert len(seen) == len(set(seen)), "a job appeared twice across pages"
    assert seen[:5] == ids[::-1], "newest first"
    assert pages >= 3
    a.client.post(f"/v1/jobs/{ids[0]}/cancel")
    canceled = a.client.get("/v1/jobs", params={"status": "canceled", "limit": 100}).json()
    assert ids[0] in {j["id"] for j in canceled["data"]}
    assert all(j["status"] == "canceled" for j in canceled["data"])
    both = a.client.get("/v1/jobs", params=[("status", "canceled"), ("status", "queued"),
                                            ("limit", "100")]).json()
    assert set(ids) <= {j["id"] for j in both["data"]}
    assert_problem(a.client.get("/v1/jobs?cursor=not-a-cursor"), 400, "invalid-cursor")
    assert_problem(a.client.get("/v1/jobs?status=bogus"), 422, "validation-error")
    assert_problem(a.client.get("/v1/jobs?limit=0"), 422)


def test_idempotency_key_semantics(a: Api, b: Api) -> None:
    key = {"Idempotency-Key": "create-once-1"}
    first = a.submit(tiny_spec(title="idem"), headers=key)
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    # same key, same body (different key order in JSON) -> the original job again
    body = json.dumps({"spec": dict(reversed(list(tiny_spec(title="idem").items())))})
    again = a.client.post("/v1/jobs", content=body,
                          headers={**key, "Content-Type": "application/json"})
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    # same key, different body -> 422
    assert_problem(a.submit(tiny_spec(title="other"), headers=key), 422,
                   "idempotency-key-reused")
    # keys are per principal
    other = b.submit(tiny_spec(title="idem"), headers=key)
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
    assert_problem(a.submit(tiny_spec(), headers={"Idempotency-Key": "x" * 300}), 400)


@pytest.mark.parametrize("spec, loc_part, text", [
    (tiny_spec(model={"arch": {"name": "no_such_net"}, "input_shape": [1, 8, 8],
                      "num_classes": 10}), "name", "unknown architecture"),
    (tiny_spec(model={"arch": {"name": "resnet_mini", "kwargs": {"depth": 3}},
                      "input_shape": [1, 8, 8], "num_classes": 10}), "kwargs", "does not accept"),
    (tiny_spec(techniques=["deepreduce", "no_such_technique"]), None, "unknown technique"),
    (tiny_spec(budgets=[-1.0]), None, "budgets must be positive"),
    (tiny_spec(budgets=[]), None, "budget"),
    (tiny_spec(n_trials=0), "n_trials", ""),
    (tiny_spec(surprise=1), "surprise", ""),
    (tiny_spec(data={"kind": "npz", "path": "/etc/passwd"}), "path", "server paths"),
    (tiny_spec(weights="/tmp/w.safetensors"), "weights", "server paths"),
    (tiny_spec(data={"upload_id": "upl_missing"}), "upload_id", "no dataset upload"),
    (tiny_spec(model={"upload_id": "upl_missing"}), "upload_id", "no model upload"),
])
def test_invalid_specs_are_422_with_errors(a: Api, spec: dict[str, Any], loc_part: str | None,
                                           text: str) -> None:
    body = assert_problem(a.submit(spec), 422)
    assert body["errors"], body
    flat = json.dumps(body)
    assert text.lower() in flat.lower(), body
    if loc_part:
        assert any(loc_part in e["loc"] for e in body["errors"]), body["errors"]
    assert all(e["loc"][0] in ("spec", "body") for e in body["errors"])


def test_malformed_bodies(a: Api) -> None:
    r = a.client.post("/v1/jobs", content=b'{"spec": {', headers={"Content-Type":
                                                                    "application/json"})
    assert_problem(r, 400, "malformed-json")
    assert_problem(a.client.post("/v1/jobs", json={"nope": 1}), 422, "validation-error")
    assert_problem(a.client.post("/v1/jobs", json={"spec": tiny_spec(), "x": 1}), 422)
    assert_problem(a.client.post("/v1/jobs", json=[1, 2]), 422)


def test_cancel_and_delete_rules(a: Api) -> None:
    jid = a.submit().json()["id"]
    assert_problem(a.client.delete(f"/v1/jobs/{jid}"), 409, "job-active")
    r = a.client.post(f"/v1/jobs/{jid}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "canceled"
    assert r.json()["finished_at"] is not None
    again = a.client.post(f"/v1/jobs/{jid}/cancel")
    assert again.status_code == 202 and again.json()["status"] == "canceled"
    assert a.client.delete(f"/v1/jobs/{jid}").status_code == 204
    assert_problem(a.client.get(f"/v1/jobs/{jid}"), 404)
    assert_problem(a.client.delete(f"/v1/jobs/{jid}"), 404)
    assert_problem(a.client.post(f"/v1/jobs/{jid}/cancel"), 404)


# --------------------------------------------------------------------------- events


def _sse(client: httpx.Client, url: str, headers: dict[str, str] | None = None,
         max_s: float = 20.0) -> tuple[list[dict[str, Any]], list[str]]:
    """Read a whole SSE stream: (events with id/event/data, comment lines)."""
    events: list[dict[str, Any]] = []
    comments: list[str] = []
    cur: dict[str, Any] = {}
    with client.stream("GET", url, headers=headers, timeout=max_s) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith(":"):
                comments.append(line)
            elif line.startswith("id:"):
                cur["id"] = int(line[3:].strip())
            elif line.startswith("event:"):
                cur["event"] = line[6:].strip()
            elif line.startswith("data:"):
                cur["data"] = json.loads(line[5:])
            elif not line and cur:
                events.append(cur)
                cur = {}
    return events, comments


def test_sse_replay_with_last_event_id_and_ndjson(a: Api) -> None:
    jid = a.submit().json()["id"]
    a.client.post(f"/v1/jobs/{jid}/cancel")
    events, _ = _sse(a.client, f"/v1/jobs/{jid}/events")
    assert [e["id"] for e in events] == [1, 2]
    assert [e["data"]["data"]["status"] for e in events] == ["queued", "canceled"]
    assert events[-1]["event"] == "status" and events[-1]["data"]["data"]["terminal"]
    replay, _ = _sse(a.client, f"/v1/jobs/{jid}/events", headers={"Last-Event-ID": "1"})
    assert [e["id"] for e in replay] == [2]
    done, _ = _sse(a.client, f"/v1/jobs/{jid}/events", headers={"Last-Event-ID": "2"})
    assert done == []
    assert [e["id"] for e in _sse(a.client, f"/v1/jobs/{jid}/events?after=1")[0]] == [2]
    r = a.client.get(f"/v1/jobs/{jid}/events?format=ndjson&after=1")
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert [x["id"] for x in lines] == [2] and r.headers["x-job-status"] == "canceled"
    assert_problem(a.client.get(f"/v1/jobs/{jid}/events",
                                headers={"Last-Event-ID": "abc"}), 400)


def test_sse_sends_keepalives_while_nothing_happens(a: Api) -> None:
    jid = a.submit().json()["id"]
    comments: list[str] = []
    with a.client.stream("GET", f"/v1/jobs/{jid}/events", timeout=15) as r:
        for line in r.iter_lines():
            if line.startswith(": keep-alive"):
                comments.append(line)
                break
    assert comments, "no keep-alive comment on an idle stream"
    a.client.post(f"/v1/jobs/{jid}/cancel")


# --------------------------------------------------------------------------- uploads


def _npz(n: int = 40) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x_train=rng.integers(0, 255, (n, 1, 8, 8), dtype=np.uint8),
             y_train=np.arange(n) % 4)
    return buf.getvalue()


def _upload_dirs(data_dir: Path) -> set[str]:
    up = data_dir / "uploads"
    return {p.name for p in up.iterdir()} if up.exists() else set()


def test_npz_upload_with_checksum_and_listing(a: Api) -> None:
    blob = _npz()
    digest = hashlib.sha256(blob).hexdigest()
    r = a.client.post("/v1/uploads", params={"kind": "dataset", "filename": "tiny.npz"},
                      content=blob, headers={"X-Checksum-Sha256": digest})
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["sha256"] == digest and up["size"] == len(blob)
    assert up["format"] == "npz" and up["status"] == "ready" and up["kind"] == "dataset"
    assert r.headers["location"] == f"/v1/uploads/{up['id']}"
    assert a.client.get(f"/v1/uploads/{up['id']}").json()["sha256"] == digest
    listed = a.client.get("/v1/uploads?limit=100").json()["data"]
    assert up["id"] in {u["id"] for u in listed}
    import base64
    b64 = base64.b64encode(bytes.fromhex(digest)).decode()
    r2 = a.client.post("/v1/uploads?kind=dataset&filename=t.npz", content=blob,
                       headers={"Repr-Digest": f"sha-256=:{b64}:"})
    assert r2.status_code == 201
    # a job can use it
    job = a.submit(tiny_spec(data={"upload_id": up["id"], "max_train": 20}, model=None))
    assert job.status_code == 202, job.text
    assert_problem(a.client.delete(f"/v1/uploads/{up['id']}"), 409, "upload-in-use")
    a.client.post(f"/v1/jobs/{job.json()['id']}/cancel")
    assert a.client.delete(f"/v1/uploads/{up['id']}").status_code == 204
    assert not (a.data_dir / "uploads" / up["id"]).exists()
    assert_problem(a.client.get(f"/v1/uploads/{up['id']}"), 404)


def test_checksum_mismatch_keeps_nothing(a: Api) -> None:
    before = _upload_dirs(a.data_dir)
    r = a.client.post("/v1/uploads?kind=dataset&filename=t.npz", content=_npz(),
                      headers={"X-Checksum-Sha256": "0" * 64})
    assert_problem(r, 400, "checksum-mismatch")
    assert_problem(a.client.post("/v1/uploads?kind=dataset&filename=t.npz", content=_npz(),
                                 headers={"Digest": "sha-256=notbase64!"}), 400)
    assert _upload_dirs(a.data_dir) == before


def test_oversize_upload_is_413_and_leaves_nothing(a: Api) -> None:
    before = _upload_dirs(a.data_dir)
    big = b"\x93NUMPY" + b"0" * (MAX_UPLOAD + 10)
    assert_problem(a.client.post("/v1/uploads?kind=dataset&filename=big.npz", content=big),
                   413, "payload-too-large")

    def chunks() -> Iterator[bytes]:          # no Content-Length: caught while streaming
        for _ in range(40):
            yield b"x" * 65536

    try:
        r = a.client.post("/v1/uploads?kind=dataset&filename=big.npz", content=chunks())
        assert_problem(r, 413, "payload-too-large")
    except httpx.WriteError:
        pass  # the server may close the connection before the client finished sending
    assert _upload_dirs(a.data_dir) == before


def test_pickles_and_torch_save_are_refused(a: Api, tmp_path: Path) -> None:
    import torch

    before = _upload_dirs(a.data_dir)
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, path)
    for kind, blob in [("model", path.read_bytes()),
                       ("model", pickle.dumps({"w": [1, 2]}, protocol=4)),
                       ("dataset", pickle.dumps({"x": 1}, protocol=2)),
                       ("dataset", path.read_bytes())]:
        r = a.client.post(f"/v1/uploads?kind={kind}&filename=evil.bin", content=blob)
        assert_problem(r, 415, "unsafe-format")
    assert _upload_dirs(a.data_dir) == before
    assert_problem(a.client.post("/v1/uploads?kind=dataset&filename=x.bin",
                                 content=b"just some text"), 415, "unsupported-format")
    assert_problem(a.client.post("/v1/uploads?kind=model&filename=w.safetensors",
                                 content=b"\x10\x00\x00\x00\x00\x00\x00\x00{bad json!!!}"),
                   422, "invalid-model")
    assert_problem(a.client.post("/v1/uploads?kind=model&filename=../../etc",
                                 content=b"abc"), 422, "invalid-filename")
    assert_problem(a.client.post("/v1/uploads?kind=weird&filename=a", content=b"abc"), 422)
    assert _upload_dirs(a.data_dir) == before


def test_model_upload_two_steps(a: Api, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from pi_opt.models import create_model

    model = create_model("resnet_mini", widths=[4, 8, 16], in_channels=1, num_classes=10)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    r = a.client.post("/v1/uploads?kind=model&filename=w.safetensors", content=path.read_bytes())
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["status"] == "awaiting_spec" and up["format"] == "safetensors"
    assert up["meta"]["tensors"] == len(model.state_dict())
    # not usable before the spec is attached
    body = assert_problem(a.submit(tiny_spec(model={"upload_id": up["id"]})), 422)
    assert "spec" in json.dumps(body["errors"])
    spec = {"arch": {"name": "resnet_mini", "kwargs": {"widths": [4, 8, 16]}},
            "input_shape": [1, 8, 8], "num_classes": 10}
    wrong = {**spec, "arch": {"name": "resnet_mini", "kwargs": {"widths": [4, 8, 32]}}}
    assert_problem(a.client.put(f"/v1/uploads/{up['id']}/spec", json=wrong), 422,
                   "shape-mismatch")
    assert_problem(a.client.put(f"/v1/uploads/{up['id']}/spec",
                                json={**spec, "arch": {"name": "vgg16"}}), 422)
    assert_problem(a.client.put(f"/v1/uploads/{up['id']}/spec", json={"arch": 1}), 422)
    ok = a.client.put(f"/v1/uploads/{up['id']}/spec", json=spec)
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "ready" and ok.json()["meta"]["spec"]["num_classes"] == 10
    job = a.submit(tiny_spec(model={"upload_id": up["id"]}))
    assert job.status_code == 202, job.text
    a.client.post(f"/v1/jobs/{job.json()['id']}/cancel")


def _targz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_cifar_and_imagefolder_archives(a: Api) -> None:
    rng = np.random.default_rng(1)

    def batch(n: int) -> bytes:
        return pickle.dumps({b"labels": [int(i % 10) for i in range(n)],
                             b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8)},
                            protocol=2)

    cifar = _targz({"cifar-10-batches-py/data_batch_1": batch(20),
                    "cifar-10-batches-py/test_batch": batch(10),
                    "cifar-10-batches-py/batches.meta": pickle.dumps(
                        {b"label_names": [f"c{i}".encode() for i in range(10)]}, protocol=2)})
    r = a.client.post("/v1/uploads?kind=dataset&filename=cifar-10-python.tar.gz", content=cifar)
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "cifar10"

    from PIL import Image

    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        for cls in ("cat", "dog"):
            for i in range(3):
                img = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(img, "PNG")
                zf.writestr(f"pets/{cls}/{i}.png", img.getvalue())
    r = a.client.post("/v1/uploads?kind=dataset&filename=pets.zip", content=zbuf.getvalue())
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "imagefolder"

    evil = _targz({"../escape.txt": b"x"})
    assert_problem(a.client.post("/v1/uploads?kind=dataset&filename=e.tgz", content=evil),
                   422, "invalid-dataset")
    assert not (a.data_dir / "escape.txt").exists()


def test_api_process_never_loads_torch(env: dict[str, Any], a: Api) -> None:
    """Spec validation and data-set checks run in helper processes, not in the API."""
    assert a.submit().status_code == 202
    assert a.submit(tiny_spec(budgets=[-1])).status_code == 422
    assert a.client.post("/v1/uploads?kind=dataset&filename=d.npz",
                         content=_npz()).status_code == 201
    maps = Path(f"/proc/{env['server'].pid}/maps").read_text()
    assert "libtorch" not in maps and "libc10" not in maps
