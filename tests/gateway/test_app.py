"""Gateway wiring that needs no Redis: the thread pool size and the settings checks."""
from __future__ import annotations

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from gateway.main import create_app
from ingest_gateway import KEY
from ssdstack.model_store import ModelStore
from ssdstack.settings import GatewaySettings


def test_thread_pool_is_sized_from_settings():
    app = create_app(GatewaySettings(api_keys="abcdefgh12abcdefgh", threads=77))

    @app.get("/probe")
    async def probe() -> dict:
        return {"tokens": anyio.to_thread.current_default_thread_limiter().total_tokens}

    with TestClient(app) as client:
        assert client.get("/probe").json() == {"tokens": 77}
        assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("values, words", [
    ({"api_keys": ""}, "SSDSTACK_API_KEYS"),
    ({"api_keys": "short-key"}, "at least 16"),
    ({"api_keys": "a-placeholder-key-of-length"}, "example value"),
    ({"api_keys": "changeme-changeme-changeme"}, "example value"),
    ({"api_keys": "sha256:abc"}, "64 lowercase hex"),
    ({"api_keys": "abcdefgh12abcdefgh:root"}, "unknown scope"),
    ({"api_keys": "abcdefgh12abcdefgh", "rate_limit": "lots"}, "rate limit"),
    ({"api_keys": "abcdefgh12", "redis_url": "http://x"}, "redis://"),
    ({"api_keys": "abcdefgh12", "heartbeat_interval": 10, "heartbeat_ttl": 15}, "twice"),
    ({"api_keys": "abcdefgh12", "visibility_timeout": 20, "heartbeat_ttl": 30}, "VISIBILITY"),
])
def test_bad_settings_stop_start_up_naming_the_problem(values, words):
    with pytest.raises(ValidationError, match=words):
        GatewaySettings(**values)


def test_a_key_without_a_scope_is_admin_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="gateway.main"):
        create_app(GatewaySettings(api_keys="unscoped-key-0000000,scoped-key-000000000:read"))
    assert "entries without a scope: they are admin keys" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="gateway.main"):
        create_app(GatewaySettings(api_keys="scoped-key-000000000:read"))
    assert "without a scope" not in caplog.text


def test_int8_on_a_version_without_its_dataset_is_a_409_naming_what_to_provide(gateway, publish_model, tmp_path):
    client, what_is_there, _ = gateway
    store = ModelStore(tmp_path / "store")
    publish_model(store)  # lineage names no dataset, as an import without one
    store.update_manifest("demo", 1, lambda manifest: manifest.update(lineage={"dataset": "gone"}))
    publish_model(store)
    before = what_is_there()
    for version, words in ((2, "names none"), (1, "'gone', which is not in the store")):
        refused = client.post("/v1/jobs", headers=KEY, json={"type": "convert", "model": "demo", "version": version,
                                                             "precision": "int8"})
        assert refused.status_code == 409 and words in refused.json()["error"]["message"], refused.json()
        assert "precision fp32" in refused.json()["error"]["message"]
    assert what_is_there() == before  # no job record
