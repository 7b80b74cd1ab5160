"""Artefact downloads: ``GET /v1/models/{name}/versions/{v}/artefacts/{file}`` serves the
files the manifest lists, byte for byte, with their sha256 as ETag and byte ranges, and
nothing else (no unlisted file, no path out of the version's folder); ``ssdstack model
pull`` resumes and checks them."""
from __future__ import annotations

import hashlib
import json

import pytest

from cli.client import ApiError, Client
from ingest_gateway import KEY
from ssdstack.model_store import ModelStore

REPORT = "evaluation/onnxruntime-synth-val/metrics.json"


@pytest.fixture
def published(gateway, tmp_path, exported_model):
    """The gateway client and version 1 of "demo": the ONNX model and an evaluation report
    in a subfolder; the store also holds an unlisted file in the version's folder."""
    client = gateway[0]
    store = ModelStore(tmp_path / "store")
    fields = json.loads((exported_model / "manifest_fields.json").read_text())
    with store.staging() as staged:
        (staged / "model.onnx").write_bytes((exported_model / "model.onnx").read_bytes())
        (staged / REPORT).parent.mkdir(parents=True)
        (staged / REPORT).write_text(json.dumps({"AP": 0.5}))
        store.publish("demo", staged, fields, {"onnx": "model.onnx", "report": REPORT})
    (store.version_dir("demo", 1) / "notes.txt").write_text("not an artefact")
    return client, store.version_dir("demo", 1)


def _url(file: str) -> str:
    return f"/v1/models/demo/versions/1/artefacts/{file}"


def test_a_listed_artefact_downloads_whole_with_its_sha256_as_etag(published):
    client, folder = published
    for file in ("model.onnx", REPORT):
        data = (folder / file).read_bytes()
        answer = client.get(_url(file), headers=KEY)
        assert answer.status_code == 200, answer.text
        assert answer.content == data
        assert answer.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        assert answer.headers["accept-ranges"] == "bytes"
        again = client.get(_url(file), headers=dict(KEY, **{"If-None-Match": answer.headers["etag"]}))
        assert again.status_code == 304 and again.content == b""


def test_a_range_request_gets_those_bytes(published):
    client, folder = published
    data = (folder / "model.onnx").read_bytes()
    answer = client.get(_url("model.onnx"), headers=dict(KEY, Range="bytes=100-1123"))
    assert answer.status_code == 206
    assert answer.content == data[100:1124]
    assert answer.headers["content-range"] == f"bytes 100-1123/{len(data)}"
    tail = client.get(_url("model.onnx"), headers=dict(KEY, Range="bytes=-10"))
    assert tail.status_code == 206 and tail.content == data[-10:]


@pytest.mark.parametrize("file", ["notes.txt", "manifest.json", "../1/manifest.json", "evaluation/%2e%2e/model.onnx",
                                  "%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd", "evaluation", "MODEL.ONNX"])
def test_anything_the_manifest_does_not_list_is_a_404(published, file):
    client, _ = published
    answer = client.get(_url(file), headers=KEY)
    assert answer.status_code == 404, (file, answer.status_code, answer.content[:200])
    assert answer.headers["content-type"] == "application/json"  # the error body, never a file


def test_downloads_need_a_key_and_an_existing_version(published):
    client, _ = published
    assert client.get(_url("model.onnx")).status_code == 401
    missing = client.get("/v1/models/demo/versions/2/artefacts/model.onnx", headers=KEY)
    assert missing.status_code == 404 and "no version 2" in missing.json()["error"]["message"]


@pytest.fixture
def puller(published):
    """The CLI's client on the in-process gateway, and the Range headers it sent."""
    test_client, folder = published
    ranges = []
    test_client.event_hooks["request"] = [lambda request: ranges.append(request.headers.get("range"))]
    client = Client("http://testserver", KEY["X-API-Key"])
    client.http = test_client
    test_client.headers.update(KEY)
    return client, folder, ranges


def test_pull_downloads_a_version_and_checks_it(puller, tmp_path):
    client, folder, _ = puller
    assert client.pull("demo", 1, tmp_path / "pulled") == {"model.onnx": "downloaded", REPORT: "downloaded"}
    for file in ("model.onnx", REPORT):
        assert (tmp_path / "pulled" / file).read_bytes() == (folder / file).read_bytes()
    assert json.loads((tmp_path / "pulled" / "manifest.json").read_text())["version"] == 1
    assert client.pull("demo", 1, tmp_path / "pulled") == {"model.onnx": "kept", REPORT: "kept"}


def test_pull_resumes_a_file_cut_short_with_a_range_request(puller, tmp_path):
    client, folder, ranges = puller
    data = (folder / "model.onnx").read_bytes()
    (tmp_path / "pulled").mkdir()
    (tmp_path / "pulled" / "model.onnx.part").write_bytes(data[:1000])
    assert client.pull("demo", 1, tmp_path / "pulled")["model.onnx"] == "resumed"
    assert (tmp_path / "pulled" / "model.onnx").read_bytes() == data
    assert "bytes=1000-" in ranges and not (tmp_path / "pulled" / "model.onnx.part").exists()


def test_pull_refuses_a_file_whose_sha256_differs_and_removes_it(puller, tmp_path):
    client, folder, _ = puller
    data = (folder / "model.onnx").read_bytes()
    (tmp_path / "pulled").mkdir()
    (tmp_path / "pulled" / "model.onnx.part").write_bytes(b"x" * 1000)  # not the file's first bytes
    with pytest.raises(ApiError, match="sha256 differs"):
        client.pull("demo", 1, tmp_path / "pulled")
    assert not (tmp_path / "pulled" / "model.onnx").exists()
    assert not (tmp_path / "pulled" / "model.onnx.part").exists()
    assert client.pull("demo", 1, tmp_path / "pulled")["model.onnx"] == "downloaded"
    assert (tmp_path / "pulled" / "model.onnx").read_bytes() == data
