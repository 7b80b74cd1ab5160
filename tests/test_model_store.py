"""The versioned model store: atomic publish, version numbers, artefacts, deployment."""
from __future__ import annotations

import json
import os
import time

import pytest

from ssdstack.errors import Conflict, InvalidInput, NotFound, PreconditionFailed
from ssdstack.model_store import ModelStore, remove_older_than, remove_stale_scratch, sha256_file


def _publish(store: ModelStore, name: str = "m", payload: bytes = b"weights") -> dict:
    with store.staging() as staged:
        (staged / "model.onnx").write_bytes(payload)
        return store.publish(name, staged, {"labels": ["a"], "serving": {}}, {"onnx": "model.onnx"})


def test_publish_numbers_versions_and_hashes_artefacts(tmp_path):
    store = ModelStore(tmp_path)
    first, second = _publish(store), _publish(store, payload=b"other")
    assert (first["version"], second["version"]) == (1, 2)
    folder = store.version_dir("m", 1)
    assert first["artefacts"]["onnx"] == {"file": "model.onnx", "sha256": sha256_file(folder / "model.onnx"),
                                          "bytes": 7}
    assert json.loads((folder / "manifest.json").read_text()) == first
    assert [m["version"] for m in store.versions("m")] == [1, 2]
    assert store.verify("m", 1) == []
    assert not any((tmp_path / ".tmp").iterdir())


def test_a_failed_publish_leaves_no_version(tmp_path):
    store = ModelStore(tmp_path)
    with pytest.raises(RuntimeError):
        with store.staging() as staged:
            (staged / "model.onnx").write_bytes(b"half")
            raise RuntimeError("export crashed")
    assert store.models() == [] and not any((tmp_path / ".tmp").iterdir())


def test_a_folder_without_manifest_is_not_a_version(tmp_path):
    store = ModelStore(tmp_path)
    _publish(store)
    (tmp_path / "models" / "m" / "2").mkdir()  # what a crash in the middle of a copy could leave
    assert [m["version"] for m in store.versions("m")] == [1]
    (tmp_path / "models" / "m" / "2" / "model.onnx").write_bytes(b"partial")
    assert _publish(store)["version"] == 3  # the leftover number is skipped, not reused
    with pytest.raises(NotFound):
        store.manifest("m", 7)


def test_add_artefacts_updates_manifest_and_refuses_overwrite(tmp_path):
    store = ModelStore(tmp_path)
    _publish(store)
    extra = tmp_path / "model.ort.onnx"
    extra.write_bytes(b"optimised")

    def mark(manifest):
        manifest["serving"]["onnxruntime"] = {"artefact": "serving_onnxruntime"}

    manifest = store.add_artefacts("m", 1, {"serving_onnxruntime": extra}, mark)
    assert manifest["artefacts"]["serving_onnxruntime"]["sha256"] == sha256_file(extra)
    assert store.manifest("m", 1)["serving"] == {"onnxruntime": {"artefact": "serving_onnxruntime"}}
    with pytest.raises(Conflict):
        store.add_artefacts("m", 1, {"serving_onnxruntime": extra})


def test_tampered_artefact_is_reported(tmp_path):
    store = ModelStore(tmp_path)
    _publish(store)
    (store.version_dir("m", 1) / "model.onnx").write_bytes(b"tampered")
    assert store.verify("m", 1) == ["onnx"]


def test_deploy_needs_a_converted_version(tmp_path):
    store = ModelStore(tmp_path)
    _publish(store)
    with pytest.raises(Conflict, match="convert it first"):
        store.deploy("m", 1)
    store.update_manifest("m", 1, lambda m: m["serving"].update(onnxruntime={"artefact": "x"}))
    record = store.deploy("m", 1)
    assert record["version"] == 1 and record["backends"] == ["onnxruntime"]
    assert store.deployed_version("m") == 1 and store.deployed_models() == ["m"]
    assert store.models() == [{"name": "m", "versions": [1], "latest": 1, "deployed": 1}]


def _serve(store: ModelStore, version: int, backend: str = "onnxruntime", artefact: str = "serving_onnxruntime",
           **check) -> None:
    """Record a serving artefact as a converter backend does (``check``: its check's fields)."""
    entry = {"artefact": artefact, **({"check": check} if check else {})}
    store.update_manifest("m", version, lambda m: m["serving"].update({backend: entry}))


def test_deploy_if_match_replaces_only_the_version_it_was_made_for(tmp_path):
    store = ModelStore(tmp_path)
    for version in (1, 2, 3):
        _publish(store)
        _serve(store, version, passed=True)
    assert store.deploy("m", 1, if_match=0)["previous"] is None  # 0: only while none is deployed
    with pytest.raises(PreconditionFailed, match="has version 1 deployed, not 2") as refused:
        store.deploy("m", 2, if_match=2)
    assert refused.value.details == {"deployed": 1} and store.deployed_version("m") == 1
    record = store.deploy("m", 3, if_match=1, by="job j1")
    assert (record["version"], record["previous"], record["by"]) == (3, 1, "job j1")
    assert store.deploy("m", 2)["previous"] == 3  # no If-Match: unconditional


def test_deploy_refuses_an_artefact_whose_check_did_not_pass(tmp_path):
    store = ModelStore(tmp_path)
    _publish(store)
    _serve(store, 1, passed=False, max_abs_diff_boxes=0.3)
    with pytest.raises(Conflict, match="onnxruntime: its check against the reference outputs failed"):
        store.deploy("m", 1)
    _serve(store, 1, passed=None, reason="not run")  # an FP32 ONNX Runtime artefact must pass
    with pytest.raises(Conflict, match="has not passed"):
        store.deploy("m", 1)
    assert store.deployed("m") is None


def test_deploy_takes_an_npu_artefact_checked_on_the_npu_and_an_old_unchecked_one(tmp_path):
    store = ModelStore(tmp_path)
    _publish(store)
    _serve(store, 1, backend="atc", artefact="serving_om", passed=None, reason="checked on the NPU")
    assert store.deploy("m", 1)["backends"] == ["atc"]
    _publish(store)
    _serve(store, 2)  # converted before checks were recorded: no check field at all
    assert store.deploy("m", 2)["backends"] == ["onnxruntime"]


def test_fp32_and_int8_sit_side_by_side_and_a_deploy_names_one(tmp_path):
    store = ModelStore(tmp_path)
    _publish(store)
    _serve(store, 1, passed=True)
    _serve(store, 1, backend="onnxruntime/int8", artefact="serving_onnxruntime_int8", passed=True)
    with pytest.raises(Conflict, match="onnxruntime/int8: it has not passed its accuracy gate"):
        store.deploy("m", 1, precision="int8")
    store.update_manifest("m", 1, lambda m: m["serving"]["onnxruntime/int8"].update(gate={"passed": True}))
    record = store.deploy("m", 1, precision="int8")
    assert (record["precision"], record["backends"]) == ("int8", ["onnxruntime/int8"])
    assert store.deployed_serving("m") == (1, "int8")
    assert store.deploy("m", 1)["backends"] == ["onnxruntime"] and store.deployed_serving("m") == (1, "fp32")


def test_a_deployment_recorded_before_precisions_is_fp32(tmp_path):
    store = ModelStore(tmp_path)
    _publish(store)
    _serve(store, 1, passed=True)
    (tmp_path / "models" / "m" / "deployed").write_text(json.dumps({"version": 1, "backends": ["onnxruntime"]}))
    assert store.deployed_serving("m") == (1, "fp32")


@pytest.mark.parametrize("name", ["", "../x", "Upper", "a/b", "-lead", "x" * 64])
def test_bad_names_are_rejected(tmp_path, name):
    with pytest.raises(InvalidInput):
        ModelStore(tmp_path).versions(name)


def test_stale_scratch_is_swept_and_fresh_scratch_kept(tmp_path):
    store = ModelStore(tmp_path)
    store.tmp_dir.mkdir(parents=True)
    old_dir, old_file, fresh = store.tmp_dir / "stage-old", store.tmp_dir / "upload.part", store.tmp_dir / "stage-new"
    old_dir.mkdir()
    (old_dir / "model.onnx").write_bytes(b"x")
    old_file.write_bytes(b"y")
    fresh.mkdir()
    day_ago = time.time() - 2 * 24 * 3600
    for path in (old_dir, old_file):
        os.utime(path, (day_ago, day_ago))
    assert sorted(remove_stale_scratch(tmp_path)) == ["stage-old", "upload.part"]
    assert [p.name for p in store.tmp_dir.iterdir()] == ["stage-new"]
    assert remove_stale_scratch(tmp_path / "nothing-here") == []


def test_failed_atc_logs_go_when_their_age_passes_the_retention(tmp_path):
    # The converter sweeps $SSDSTACK_WORK_DIR/atc-logs with the job retention before each job.
    logs = tmp_path / "atc-logs"
    for job, age_days in (("job-old", 31), ("job-recent", 29)):
        (logs / job / "debug" / "plog").mkdir(parents=True)
        (logs / job / "debug" / "plog" / "plog-1.log").write_text("E19999")
        stamp = time.time() - age_days * 24 * 3600
        os.utime(logs / job, (stamp, stamp))
    outside = tmp_path / "outside"
    outside.mkdir()
    (logs / "link").symlink_to(outside, target_is_directory=True)
    os.utime(logs / "link", (0, 0), follow_symlinks=False)

    assert sorted(remove_older_than(logs, 30 * 24 * 3600)) == ["job-old", "link"]
    assert [p.name for p in logs.iterdir()] == ["job-recent"]
    assert outside.is_dir()  # a link is removed, never followed
