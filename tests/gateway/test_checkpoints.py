"""``/v1/checkpoints``: upload, list, and the errors a client can cause (no Redis needed)."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gateway.main import create_app
from ssdstack.settings import GatewaySettings

KEY = {"X-API-Key": "abcdefgh12abcdefgh"}


@pytest.fixture()
def client(tmp_path):
    app = create_app(GatewaySettings(api_keys="abcdefgh12abcdefgh", store_dir=tmp_path / "store", max_upload_bytes=64))
    with TestClient(app) as test_client:
        yield test_client


def test_upload_then_list(client, tmp_path):
    answer = client.put("/v1/checkpoints/zoo-ssd300.ckpt", content=b"\x0a\x01ckpt-bytes", headers=KEY)
    assert answer.status_code == 201, answer.text
    assert answer.json()["bytes"] == 12 and len(answer.json()["sha256"]) == 64
    assert (tmp_path / "store" / "checkpoints" / "zoo-ssd300.ckpt").read_bytes() == b"\x0a\x01ckpt-bytes"
    listed = client.get("/v1/checkpoints", headers=KEY).json()["checkpoints"]
    assert [entry["name"] for entry in listed] == ["zoo-ssd300.ckpt"]


def test_a_name_is_never_overwritten(client, tmp_path):
    assert client.put("/v1/checkpoints/a.ckpt", content=b"first", headers=KEY).status_code == 201
    answer = client.put("/v1/checkpoints/a.ckpt", content=b"second", headers=KEY)
    assert answer.status_code == 409 and "exists" in answer.json()["error"]["message"]
    assert (tmp_path / "store" / "checkpoints" / "a.ckpt").read_bytes() == b"first"


@pytest.mark.parametrize("name, body, status, words", [
    ("model.bin", b"x", 400, "must match"),
    (".hidden.ckpt", b"x", 400, "must match"),
    ("empty.ckpt", b"", 400, "empty"),
    ("big.ckpt", b"x" * 65, 413, "limit"),
])
def test_bad_uploads_are_refused_and_leave_nothing(client, tmp_path, name, body, status, words):
    answer = client.put(f"/v1/checkpoints/{name}", content=body, headers=KEY)
    assert answer.status_code == status and words in answer.json()["error"]["message"]
    folder = tmp_path / "store" / "checkpoints"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_upload_needs_the_api_key(client):
    assert client.put("/v1/checkpoints/a.ckpt", content=b"x").status_code == 401
