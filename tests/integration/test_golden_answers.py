"""Today's answers on the real stack are supersets of those captured before the structure
change (tests/golden): jobs of every type, the raw Redis record, models, versions,
deployment, detection, workers and errors."""
from __future__ import annotations

import json

import httpx
import pytest

from cli.client import ApiError
from golden_answers import ANSWERS, assert_superset
from itest import MODEL

pytestmark = pytest.mark.slow


def test_pipeline_job_and_its_raw_record(pipeline, client, stack):
    assert_superset("job_pipeline", client.job(pipeline["id"]), "synth")
    raw = stack.redis(decode_responses=True).hgetall(f"ssdstack:job:{pipeline['id']}")
    assert_superset("redis_job_record_pipeline", raw, "synth")
    assert_superset("job_pipeline_logs", client.get(f"/v1/jobs/{pipeline['id']}/logs"))
    listed = client.get("/v1/jobs")  # the pipeline's entry: other files' jobs may be newer
    assert_superset("list_jobs", dict(listed, jobs=[job for job in listed["jobs"] if job["id"] == pipeline["id"]]))


def test_evaluate_export_and_failed_jobs(pipeline, client, dataset):
    version = pipeline["result"]["version"]
    evaluate = client.wait(client.submit({"type": "evaluate", "model": MODEL, "version": version})["id"], 300)
    assert evaluate["state"] == "succeeded", evaluate["error"]
    assert_superset("job_evaluate", evaluate)
    export = client.wait(client.submit({"type": "export", "model": MODEL, "version": version,
                                        "formats": ["ONNX"]})["id"], 600)
    assert export["state"] == "succeeded", export["error"]
    assert_superset("job_export", export)
    assert [s["name"] for s in export["stages"]] == ["load", "export"]
    failed = client.wait(client.submit({"type": "train", "dataset": "no-such-data"})["id"], 300)
    assert_superset("job_failed", failed)


def test_models_versions_and_deployment(pipeline, client, stack):
    version = pipeline["result"]["version"]
    assert_superset("list_models", client.get("/v1/models"))
    assert_superset("list_versions", client.get(f"/v1/models/{MODEL}/versions"), "synth")
    assert_superset("get_version", client.get(f"/v1/models/{MODEL}/versions/{version}"), "synth")
    assert_superset("deploy", client.deploy(MODEL, version))
    deployed = json.loads((stack.store_dir / "models" / MODEL / "deployed").read_text())
    assert_superset("deploy", dict(deployed, name=MODEL))
    # A ready dataset is listed as before; one that failed to ingest (another test's) has its own shape.
    ready = [entry for entry in client.get("/v1/datasets")["datasets"] if entry["state"] == "ready"]
    assert_superset("list_datasets", {"datasets": ready})
    assert_superset("get_dataset", client.get("/v1/datasets/synth"))


def test_detect_workers_health_and_errors(pipeline, client, stack):
    image = next((stack.store_dir / "datasets" / "synth" / "val").glob("*.jpg")).read_bytes()
    assert_superset("detect", client.detect(image, model=MODEL))
    assert_superset("backends", client.get("/v1/backends"))
    base = f"http://127.0.0.1:{stack.gateway_port}"
    assert_superset("readyz", httpx.get(f"{base}/readyz").json())
    assert_superset("healthz", httpx.get(f"{base}/healthz").json())
    assert_superset("error_401", httpx.get(f"{base}/v1/jobs").json())
    for name, call in [("error_404_job", lambda: client.job("0" * 32)),
                       ("error_404_model", lambda: client.get("/v1/models/nope/versions")),
                       ("error_422_spec", lambda: client.submit({"type": "train"})),
                       ("error_400_detect", lambda: client.detect(b"not an image"))]:
        with pytest.raises(ApiError) as raised:
            call()
        assert raised.value.status == ANSWERS[name]["status"]
        assert_superset(name, {"status": raised.value.status, "body": raised.value.body})
    assert set(ANSWERS["openapi_paths"]) <= set(httpx.get(f"{base}/openapi.json").json()["paths"])
    metrics = httpx.get(f"{base}/metrics", headers={"X-API-Key": client.http.headers["X-API-Key"]}).text
    golden_series = {line.split("{")[0] for line in ANSWERS["metrics"].splitlines() if not line.startswith("#")}
    assert golden_series <= {line.split("{")[0] for line in metrics.splitlines() if not line.startswith("#")}
