"""ModelRepository: serves each model's deployed version and follows re-deployments."""
from __future__ import annotations

import numpy as np
import pytest

from converter.service import convert_version
from inferencer.repository import ModelRepository
from ssdstack.errors import InvalidInput, NoDeployedModel, NotFound, ServiceUnavailable
from ssdstack.jobs.context import LocalContext
from ssdstack.model_store import ModelStore


@pytest.fixture
def store(tmp_path, publish_model) -> ModelStore:
    """Model "demo" with two converted versions, neither deployed."""
    store = ModelStore(tmp_path / "store")
    for _ in range(2):
        version = publish_model(store, "demo")
        convert_version(store, "demo", version, "onnxruntime", LocalContext(quiet=True))
    return store


def test_follows_a_redeployment_without_restart(store):
    store.deploy("demo", 1)
    repository = ModelRepository(store, "onnxruntime")
    first = repository.get("demo")
    assert first.version == 1
    assert repository.get(None) is first and repository.get("demo") is first  # loaded once

    store.deploy("demo", 2)
    second = repository.get("demo")

    assert second.version == 2 and repository.get(None) is second
    assert repository.loaded() == {"demo": 2}
    image = np.zeros((50, 70, 3), np.uint8)
    assert first.detect_array(image)["version"] == 1  # a request holding the old one still finishes


def test_model_without_deployment(store):
    repository = ModelRepository(store, "onnxruntime")
    with pytest.raises(NoDeployedModel, match="'demo'") as named:
        repository.get("demo")
    with pytest.raises(NoDeployedModel):
        repository.get(None)
    assert named.value.status == 409


def test_unknown_model_is_not_found(store):
    repository = ModelRepository(store, "onnxruntime")
    with pytest.raises(NotFound, match="'nosuch'"):
        repository.get("nosuch")


def test_unnamed_request_with_several_deployed_models(store, publish_model):
    version = publish_model(store, "other")
    convert_version(store, "other", version, "onnxruntime", LocalContext(quiet=True))
    store.deploy("demo", 1)
    store.deploy("other", version)
    repository = ModelRepository(store, "onnxruntime")

    with pytest.raises(InvalidInput, match="demo, other"):
        repository.get(None)
    assert repository.get("other").name == "other"


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(store, monkeypatch):
    store.deploy("demo", 1)
    repository = ModelRepository(store, "onnxruntime")
    assert repository.get("demo").version == 1
    artefact = store.manifest("demo", 2)["artefacts"]["serving_onnxruntime"]["file"]
    (store.version_dir("demo", 2) / artefact).write_bytes(b"not an ONNX model")  # corrupted on the volume
    store.deploy("demo", 2)

    served = repository.get("demo")
    assert served.version == 1
    assert served.detect_array(np.zeros((50, 70, 3), np.uint8))["version"] == 1
    status = repository.status()["demo"]
    assert status["serving"] == 1 and status["load_failed"]["version"] == 2
    loads = []
    monkeypatch.setattr(repository, "_load", lambda *args: loads.append(args))
    assert repository.get("demo").version == 1 and loads == []  # not tried again on every request

    with pytest.raises(ServiceUnavailable, match="does not match its sha256"):
        ModelRepository(store, "onnxruntime").get("demo")  # nothing older to serve: the error is the answer
