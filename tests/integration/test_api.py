"""API behaviour on the real stack that needs no trained model; it holds whatever else the
session's stack has run before."""
from __future__ import annotations

import io
import zipfile

import httpx
import pytest
from PIL import Image

from cli.client import ApiError, Client
from itest import SECOND_API_KEY

pytestmark = pytest.mark.slow


def test_health_and_readiness_need_no_key(stack):
    base = f"http://127.0.0.1:{stack.gateway_port}"
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz").json()
    assert ready["status"] == "ready" and all(ready["queues"].values())
    assert httpx.get(f"{base}/openapi.json").status_code == 200


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong-key-123"}, {"Authorization": "Bearer nope-nope"}])
def test_missing_or_wrong_key_is_401(stack, headers):
    response = httpx.get(f"http://127.0.0.1:{stack.gateway_port}/v1/jobs", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_bearer_key_works(stack):
    response = httpx.get(f"http://127.0.0.1:{stack.gateway_port}/v1/jobs",
                         headers={"Authorization": "Bearer integration-test-key"})
    assert response.status_code == 200


@pytest.mark.parametrize("spec, field", [
    ({"type": "train"}, "train.dataset"),
    ({"type": "train", "dataset": "d", "epochs": 0}, "train.epochs"),
    ({"type": "pipeline", "dataset": "d", "architecture": "yolo"}, "pipeline.architecture"),
    ({"type": "pipeline", "dataset": "d", "epoch": 3}, "pipeline.epoch"),
    ({"type": "convert", "model": "m"}, "convert.version"),
    ({"type": "teleport"}, "type"),
    ({"type": "train", "dataset": "d", "pretrained": "../etc/passwd"}, "train.pretrained"),
    ({"type": "train", "dataset": "d", "freeze": "everything"}, "train.freeze"),
    ({"type": "import", "checkpoint": "a.ckpt", "architecture": "yolo", "labels": ["a"]}, "import.architecture"),
    ({"type": "import", "checkpoint": "a.ckpt", "architecture": "ssd_vgg16", "labels": []}, "import.labels"),
    ({"type": "export", "model": "m", "version": 1, "formats": ["TFLITE"]}, "export.formats"),
])
def test_bad_job_spec_is_422_naming_the_field(client, spec, field):
    with pytest.raises(ApiError) as raised:
        client.submit(spec)
    assert raised.value.status == 422
    assert field in raised.value.body["error"]["message"]


def test_detect_with_a_model_that_does_not_exist_is_404(client):
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, "PNG")
    with pytest.raises(ApiError) as raised:
        client.detect(buffer.getvalue(), model="never-trained")
    assert raised.value.status == 404
    assert "never-trained" in raised.value.body["error"]["message"]


def test_training_on_a_missing_dataset_fails_with_the_reason(client):
    job = client.wait(client.submit({"type": "pipeline", "dataset": "no-such-data", "model": "from-nothing",
                                     "architecture": "ssd_lite_mobilenet_v2"})["id"], timeout=120)
    assert job["state"] == "failed"
    assert "no-such-data" in job["error"]["message"]
    assert [(s["name"], s["state"]) for s in job["stages"]][:2] == [("train", "failed"), ("export", "pending")]
    assert "from-nothing" not in [m["name"] for m in client.get("/v1/models")["models"]]


def test_a_repeated_submission_with_an_idempotency_key_is_the_same_job(client, stack):
    spec = {"type": "train", "dataset": "no-such-data", "model": "idempotent"}
    first = client.submit(spec, idempotency_key="retry-after-timeout-1")
    again = client.submit(dict(spec), idempotency_key="retry-after-timeout-1")
    assert again["id"] == first["id"]
    assert [j["id"] for j in client.get("/v1/jobs", limit=500)["jobs"] if j["spec"]["model"] == "idempotent"] == [
        first["id"]]
    with pytest.raises(ApiError) as raised:
        client.submit(dict(spec, epochs=3), idempotency_key="retry-after-timeout-1")
    assert raised.value.status == 409 and first["id"] in raised.value.body["error"]["message"]
    other = Client(f"http://127.0.0.1:{stack.gateway_port}", SECOND_API_KEY)
    try:  # another caller's key of the same name is theirs
        assert other.submit(spec, idempotency_key="retry-after-timeout-1")["id"] != first["id"]
    finally:
        other.close()


def test_a_bad_upload_leaves_nothing(client, stack, tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("annotations/instances_train.json", "{not json")
        out.writestr("../escape.txt", "x")
    with pytest.raises(ApiError) as raised:
        client.upload_dataset(archive, "bad")
    assert raised.value.status == 400 and "escape" in str(raised.value)
    listed = {d["name"]: d for d in client.get("/v1/datasets")["datasets"]}
    assert listed["bad"]["state"] == "failed" and listed["bad"]["error"]["code"] == "invalid_archive"
    assert not (stack.store_dir / "datasets" / "bad").exists()
    scratch = stack.store_dir / ".tmp"
    assert not any(entry.name not in ("stage", "uploads") and not entry.name.startswith("stage-")
                   for entry in scratch.iterdir())  # an ingest's scratch is gone
    assert not any((scratch / "uploads").iterdir())  # and so is the upload


def test_every_worker_reports_its_backends(client):
    workers = client.get("/v1/backends")["workers"]
    by_service = {w["service"]: w["backends"] for w in workers}
    assert by_service["converter"] == {"convert": ["onnxruntime"]}  # no atc on this machine
    assert by_service["inferencer"] == {"infer": ["onnxruntime"]}  # no MindX SDK or NPU
    # Evaluations run in a process of their own, on a queue of their own.
    assert by_service["evaluator"] == {"evaluate": ["onnxruntime"]}
    assert by_service["trainer"]["train"] == ["mindspore"]


@pytest.mark.parametrize("spec, missing, hint", [
    ({"type": "convert", "model": "m", "version": 1, "backend": "atc"}, "'atc'", "CANN toolkit"),
    ({"type": "pipeline", "dataset": "d", "backend": "atc"}, "'atc'", "CANN toolkit"),
])
def test_a_backend_no_worker_has_fails_the_job_at_once(client, spec, missing, hint):
    with pytest.raises(ApiError) as raised:
        client.submit(spec)
    assert raised.value.status == 503
    error = raised.value.body["error"]
    assert error["code"] == "backend_unavailable"
    assert missing in error["message"] and hint in error["message"] and "converter@" in error["message"]
    job = client.get(f"/v1/jobs/{error['details']['job']}")
    assert job["state"] == "failed" and job["error"]["code"] == "backend_unavailable"


def test_unknown_job_is_404(client):
    with pytest.raises(ApiError) as raised:
        client.job("0" * 32)
    assert raised.value.status == 404
