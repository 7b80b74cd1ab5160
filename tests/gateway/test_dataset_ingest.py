"""Dataset upload as a job: 202 and ``ingesting``, then ``ready`` (or ``failed``) once the
evaluator's ingest ran; no job may use a dataset that is not ready; one name, one ingest."""
from __future__ import annotations

import io
import os
import zipfile

import pytest

from ingest_gateway import KEY
import ssdstack.datasets.store as store_module
from ssdstack.datasets.store import DatasetStore
from ssdstack.datasets.synth import synthesize


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    folder = tmp_path_factory.mktemp("dataset")
    synthesize(folder / "d", images=4, classes=2, seed=3)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        for path in sorted((folder / "d").rglob("*")):
            if path.is_file():
                out.write(path, path.relative_to(folder / "d").as_posix())
    return buffer.getvalue()


def upload(client, name: str, body: bytes):
    return client.post("/v1/datasets", params={"name": name}, content=body,
                       headers=dict(KEY, **{"Content-Type": "application/zip"}))


def test_an_upload_is_ingested_by_a_job(gateway, archive, tmp_path):
    client, _, run_job = gateway
    answer = upload(client, "shapes", archive)
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["type"] == "ingest" and job["state"] == "queued" and job["dataset"]["state"] == "ingesting"
    assert client.get("/v1/datasets/shapes", headers=KEY).json()["state"] == "ingesting"
    train = {"type": "train", "dataset": "shapes", "model": "m", "epochs": 1}
    refused = client.post("/v1/jobs", json=train, headers=KEY)
    assert refused.status_code == 409 and "not ready" in refused.json()["error"]["message"]
    again = upload(client, "shapes", archive)
    assert again.status_code == 409 and job["id"] in again.json()["error"]["message"]

    run_job(job["id"])
    done = client.get(f"/v1/jobs/{job['id']}", headers=KEY).json()
    assert done["state"] == "succeeded", done["error"]
    ready = client.get("/v1/datasets/shapes", headers=KEY).json()
    assert ready["state"] == "ready" and ready["splits"] == done["result"]["dataset"]["splits"]
    assert [d["name"] for d in client.get("/v1/datasets", headers=KEY).json()["datasets"]] == ["shapes"]
    assert client.post("/v1/jobs", json=train, headers=KEY).status_code == 202
    assert not any(path.is_file() for path in (tmp_path / "store" / ".tmp").rglob("*"))  # the upload is gone


def test_a_failed_ingest_names_its_reasons_and_frees_the_name(gateway, archive):
    client, _, run_job = gateway
    broken = upload(client, "broken", b"PK\x03\x04 not really a zip")
    assert broken.status_code == 202
    run_job(broken.json()["id"])
    failed = client.get("/v1/datasets/broken", headers=KEY).json()
    assert failed["state"] == "failed" and failed["error"]["code"] == "invalid_archive"
    retried = upload(client, "broken", archive)  # a failed ingest does not hold its name
    assert retried.status_code == 202
    run_job(retried.json()["id"])
    assert client.get("/v1/datasets/broken", headers=KEY).json()["state"] == "ready"


def test_an_ingest_whose_job_ended_elsewhere_reads_failed(gateway, archive):
    client, _, _ = gateway
    job = upload(client, "orphan", archive).json()
    assert client.delete(f"/v1/jobs/{job['id']}", headers=KEY).status_code == 202  # cancelled while queued
    dataset = client.get("/v1/datasets/orphan", headers=KEY).json()
    assert dataset["state"] == "failed" and "cancelled" in dataset["error"]["message"]
    train = client.post("/v1/jobs", json={"type": "train", "dataset": "orphan", "model": "m", "epochs": 1}, headers=KEY)
    assert train.status_code == 409 and "it is failed" in train.json()["error"]["message"]
    assert upload(client, "orphan", archive).status_code == 202


def test_an_ingest_run_again_after_it_stored_the_dataset_succeeds(gateway, archive, tmp_path):
    """Its worker died after the rename, before the job said so: the reaper sends the
    stage again, and the second run answers with the stored dataset."""
    client, _, run_job = gateway
    job = upload(client, "twice", archive).json()
    run_job(job["id"])
    first = client.get(f"/v1/jobs/{job['id']}", headers=KEY).json()
    store = DatasetStore(tmp_path / "store")  # the stage's second run, its upload gone with the first
    assert store.ingest_upload("twice", job["spec"]["upload"], None, "auto", job["id"]) == first["result"]["dataset"]
    assert store.get("twice")["state"] == "ready" and store.get("twice")["ingested_by"] == job["id"]


def test_an_ingest_unpacks_the_upload_itself_not_a_copy(gateway, archive, tmp_path, monkeypatch):
    """The upload is not copied again: what the ingest unpacks is the spooled upload under a
    second name (a hard link), so an upload never takes twice its size in the store."""
    client, _, run_job = gateway
    job = upload(client, "linked", archive).json()
    spooled = DatasetStore(tmp_path / "store").upload_path(job["spec"]["upload"])
    seen = []
    unpack = store_module.safe_extract

    def watched(archive_path, *rest):
        seen.append((os.path.samefile(archive_path, spooled), spooled.stat().st_nlink))
        return unpack(archive_path, *rest)

    monkeypatch.setattr(store_module, "safe_extract", watched)
    run_job(job["id"])
    assert client.get(f"/v1/jobs/{job['id']}", headers=KEY).json()["state"] == "succeeded"
    assert seen == [(True, 2)] and not spooled.exists()
