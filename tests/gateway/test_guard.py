"""The guard: scoped keys on every route, refusals before the body is read, body bounds
while it streams, shared rate limits, and 500s that leak nothing. Real Redis, real
sockets (a uvicorn server) where what the server read matters."""
from __future__ import annotations

import hashlib
import re
import socket

import pytest
import redis
from fastapi.testclient import TestClient

from gateway.main import create_app
from live_gateway import KEY_ENTRIES, KEYS, raw_request, served
from polling import wait_for
from redis_acl import denials
from ssdstack.settings import GatewaySettings

# Which scope each route needs, written here independently of the routes' own markers:
# None is public. A route the OpenAPI lists and this table lacks fails the matrix.
NEEDS = {
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/v1/backends"): "read",
    ("GET", "/metrics"): "read",
    ("POST", "/v1/jobs"): "submit",
    ("GET", "/v1/jobs"): "read",
    ("GET", "/v1/jobs/{job_id}"): "read",
    ("GET", "/v1/jobs/{job_id}/logs"): "read",
    ("DELETE", "/v1/jobs/{job_id}"): "submit",
    ("POST", "/v1/datasets"): "submit",
    ("GET", "/v1/datasets"): "read",
    ("GET", "/v1/datasets/{name}"): "read",
    ("PUT", "/v1/checkpoints/{name}"): "admin",
    ("GET", "/v1/checkpoints"): "read",
    ("GET", "/v1/models"): "read",
    ("GET", "/v1/models/{name}/versions"): "read",
    ("GET", "/v1/models/{name}/versions/{version}"): "read",
    ("POST", "/v1/models/{name}/versions/{version}/deploy"): "admin",
    ("GET", "/v1/models/{name}/versions/{version}/artefacts/{file}"): "read",
    ("POST", "/v1/detect"): "read",
    ("GET", "/v2"): None,
    ("GET", "/v2/health/live"): None,
    ("GET", "/v2/health/ready"): None,
    ("GET", "/v2/models/{name}"): "read",
    ("GET", "/v2/models/{name}/versions/{version}"): "read",
    ("GET", "/v2/models/{name}/ready"): "read",
    ("GET", "/v2/models/{name}/versions/{version}/ready"): "read",
    ("POST", "/v2/models/{name}/infer"): "read",
    ("POST", "/v2/models/{name}/versions/{version}/infer"): "read",
}
RANK = {None: 0, "read": 1, "submit": 2, "admin": 3}
PATH_VALUES = {"job_id": "0" * 32, "name": "demo", "version": "1", "file": "model.onnx"}
UPLOAD_ROUTES = ["POST /v1/datasets?name=big", "PUT /v1/checkpoints/big.ckpt"]
JSON_ROUTES = ["POST /v1/jobs", "POST /v1/models/demo/versions/1/deploy", "DELETE /v1/jobs/" + "0" * 32]


def settings(redis_url: str, tmp_path, **values) -> GatewaySettings:
    values = {"rate_limit": "", "api_keys": KEY_ENTRIES, **values}
    return GatewaySettings(redis_url=redis_url, store_dir=tmp_path / "store", **values)


@pytest.fixture
def client(clean_redis, redis_user_url, tmp_path):
    """The gateway in-process, as the Redis user ``gateway``; any command Redis refused it
    fails the test."""
    with TestClient(create_app(settings(redis_user_url("gateway"), tmp_path))) as test_client:
        yield test_client
    refused = denials(redis.Redis.from_url(clean_redis))
    assert not refused, f"Redis refused the gateway commands (k8s/base/redis-users.acl): {refused}"


def test_every_route_needs_the_scope_the_table_gives(client):
    listed = {(method.upper(), path) for path, item in client.get("/openapi.json").json()["paths"].items()
              for method in item}
    assert listed == set(NEEDS), "classify every route in NEEDS"
    for (method, path), needed in NEEDS.items():
        url = path.format(**PATH_VALUES)
        for holder in (None, "read", "submit", "admin"):
            headers = {"X-API-Key": KEYS[holder]} if holder else {}
            status = client.request(method, url, headers=headers).status_code
            if needed and holder is None:
                assert status == 401, (method, path, holder, status)
            elif RANK[holder] < RANK[needed]:
                assert status == 403, (method, path, holder, status)
            else:
                assert status not in (401, 403), (method, path, holder, status)


def test_bearer_tokens_and_hashed_entries_are_keys(clean_redis, tmp_path):
    secret = "a-key-known-only-by-its-digest"
    entry = f"sha256:{hashlib.sha256(secret.encode()).hexdigest()}:read"
    with TestClient(create_app(settings(clean_redis, tmp_path, api_keys=entry))) as hashed:
        assert hashed.get("/v1/jobs", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
        assert hashed.get("/v1/jobs", headers={"Authorization": f"Bearer {entry}"}).status_code == 401
        assert hashed.post("/v1/jobs", json={}, headers={"X-API-Key": secret}).status_code == 403


@pytest.mark.parametrize("route", ["POST /v1/detect", "POST /v2/models/demo/infer", *UPLOAD_ROUTES, *JSON_ROUTES])
def test_without_a_key_the_answer_comes_before_any_body_byte(clean_redis, tmp_path, route):
    before = redis.Redis.from_url(clean_redis).dbsize()
    with served(create_app(settings(clean_redis, tmp_path))) as port:
        # 8 MiB announced, none sent: the server can only answer by not reading the body.
        status, answer = raw_request(port, f"{route} HTTP/1.1\r\nHost: x\r\nContent-Length: {8 * 1024 * 1024}")
    assert status == 401 and b"missing API key" in answer
    assert redis.Redis.from_url(clean_redis).dbsize() == before
    assert not any(path.is_file() for path in (tmp_path / "store").rglob("*"))


@pytest.mark.parametrize("route, bound", [("POST /v1/jobs", 1024 ** 2), ("POST /v1/detect", 4096 + 64 * 1024),
                                          ("POST /v2/models/demo/infer", 4096 * 4 // 3 + 64 * 1024),
                                          ("POST /v1/datasets?name=big", 8192)])
def test_an_announced_body_over_the_bound_is_refused_unread(clean_redis, tmp_path, route, bound):
    app = create_app(settings(clean_redis, tmp_path, max_image_bytes=4096, max_upload_bytes=8192))
    with served(app) as port:
        status, answer = raw_request(port, f"{route} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEYS['admin']}\r\n"
                                           f"Content-Length: {bound + 1}")
    assert status == 413 and f"limit of {bound} bytes".encode() in answer


@pytest.mark.parametrize("route, bound", [("POST /v1/jobs", 1024 ** 2), ("POST /v1/datasets?name=big", 8192),
                                          ("PUT /v1/checkpoints/big.ckpt", 8192)])
def test_a_streamed_body_is_cut_off_at_the_bound(clean_redis, tmp_path, route, bound):
    app = create_app(settings(clean_redis, tmp_path, max_upload_bytes=8192))
    before = redis.Redis.from_url(clean_redis).dbsize()
    chunk = b"x" * 4096
    sent = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(bound // len(chunk) + 1))
    with served(app) as port:
        # One chunk past the bound, and the body never ends: only a refusal ends the wait.
        status, answer = raw_request(port, f"{route} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEYS['admin']}\r\n"
                                           "Content-Type: application/zip\r\nTransfer-Encoding: chunked", sent)
    assert status == 413 and b'"payload_too_large"' in answer
    assert redis.Redis.from_url(clean_redis).dbsize() == before
    assert not any(path.is_file() for path in (tmp_path / "store").rglob("*"))  # no spool, no checkpoint


def test_rate_limits_are_shared_by_replicas_and_per_key(clean_redis, tmp_path):
    first = create_app(settings(clean_redis, tmp_path, rate_limit="3/minute"))
    second = create_app(settings(clean_redis, tmp_path, rate_limit="3/minute"))
    read = {"X-API-Key": KEYS["read"]}
    with TestClient(first) as one, TestClient(second) as two:
        answers = [client.get("/v1/jobs", headers=read) for client in (one, two, one, two)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        refused = answers[-1]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.json()["error"]["code"] == "rate_limited"
        assert one.get("/v1/jobs", headers={"X-API-Key": KEYS["submit"]}).status_code == 200
        assert one.get("/healthz").status_code == 200  # public routes are not counted


def test_an_unexpected_error_answers_with_a_request_id_and_no_internals(clean_redis, tmp_path):
    app = create_app(settings(clean_redis, tmp_path))

    @app.get("/boom")
    def boom() -> dict:
        raise RuntimeError(f"cannot open {tmp_path}/secret/internal.db")

    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/boom")
    assert answer.status_code == 500
    assert str(tmp_path) not in answer.text and "RuntimeError" not in answer.text
    request_id = answer.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id) and answer.json()["error"]["details"] == {"request_id": request_id}


@pytest.mark.parametrize("job_id", ["abc", "0" * 31 + "g", "*", "0" * 33, "..%2F..%2Fkeys"])
def test_malformed_job_ids_never_reach_redis(client, clean_redis, job_id):
    stats = redis.Redis.from_url(clean_redis)
    before = stats.info("stats")["total_commands_processed"]
    answer = client.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": KEYS["read"]})
    after = stats.info("stats")["total_commands_processed"]
    assert answer.status_code in (404, 422), answer.text
    assert after - before == 1  # the INFO that took `before`


def test_a_gateway_holds_detect_bodies_only_up_to_its_budget(clean_redis, tmp_path):
    app = create_app(settings(clean_redis, tmp_path, max_image_bytes=4096, detect_receive_budget_bytes=10_000))
    head = f"POST /v1/detect HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEYS['read']}\r\nContent-Type: multipart/form-data; " \
           "boundary=b\r\nContent-Length: 8000"
    with served(app) as port, socket.create_connection(("127.0.0.1", port), timeout=20) as held:
        # The server asks for the body only once the guard let it in (and counted its 8000 bytes).
        held.sendall(head.encode() + b"\r\nExpect: 100-continue\r\n\r\n")
        assert held.recv(1024).startswith(b"HTTP/1.1 100")
        status, answer = raw_request(port, head)
        assert status == 503 and b'"overloaded"' in answer and b"retry-after: 1" in answer.lower()
        held.close()  # the first request ends, and its bytes come back
        wait_for(lambda: b'"overloaded"' not in raw_request(port, head, b"x" * 8000)[1], 20, "the budget to free")
