"""``scripts/ascend-check.sh`` end to end against the Ascend fakes (tests/fakes/ascend):
fake ``npu-smi`` and ``atc`` on PATH, the fake ``StreamManagerApi`` on PYTHONPATH answering
with recorded MxpiObject JSON. What it proves here is the procedure and the report; the
numbers only mean something on a real NPU (docs/ascend.md)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from converter.service import convert_version
from inferencer.backends import select_engine
from ssdstack.datasets.coco import load_coco_split
from ssdstack.jobs.context import LocalContext
from fakes.ascend.recording import fake_mxsdk_path, mxpi_objects, write_json_recording

REPO = Path(__file__).resolve().parents[2]
FAKE_BIN = REPO / "tests" / "fakes" / "ascend" / "bin"


@pytest.fixture
def recorded_store(store_with_dataset, tmp_path):
    """The store, and recordings in which the MindX stream answers what ONNX Runtime finds
    (as if the NPU agreed exactly) for every val image."""
    store = store_with_dataset
    convert_version(store, "demo", 1, "onnxruntime", LocalContext(quiet=True))
    manifest = store.manifest("demo", 1)
    engine = select_engine("onnxruntime")
    engine.load(store.version_dir("demo", 1), manifest)
    detector = engine.detector(manifest, "demo", 1)
    recordings = tmp_path / "recordings"
    for record in load_coco_split(store.root / "datasets" / "synth", "val").records:
        jpeg = record.path.read_bytes()
        found = detector.detect(jpeg, exif_transpose=False)["detections"]
        write_json_recording(recordings, jpeg, mxpi_objects(found, ["background", *manifest["labels"]]))
    return store, recordings


def ascend_check(store, recordings: Path, out: Path, **env) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PATH=f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}",
                       PYTHONPATH=os.pathsep.join([str(fake_mxsdk_path()), str(REPO)]),
                       PYTHON=sys.executable, FAKE_MXSDK_DIR=str(recordings), FAKE_NPU_CHIP="310P3",
                       SSDSTACK_STORE_DIR=str(store.root), SSDSTACK_WORK_DIR=str(out.parent / "work"), **env)
    return subprocess.run([str(REPO / "scripts" / "ascend-check.sh"), "--model", "demo", "--out", str(out)],
                          env=environment, cwd=out.parent, capture_output=True, text=True, timeout=300)


def test_check_passes_and_reports_when_the_npu_agrees(recorded_store, tmp_path):
    store, recordings = recorded_store
    done = ascend_check(store, recordings, tmp_path / "report")

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["passed"] is True
    assert [s["step"] for s in report["steps"]] == [
        "npu-smi", "atc", "mindx-sdk", "model", "convert-atc", "convert-onnxruntime", "evaluate-onnxruntime",
        "evaluate-mxsdk", "agreement"]
    assert all(step["passed"] for step in report["steps"])
    summary = report["summary"]
    assert (summary["soc_version"], summary["version"], summary["agreement"]) == ("Ascend310P3", 1, 1.0)
    assert summary["mAP"] == summary["onnxruntime_mAP"] and summary["images_per_s"] > 0
    assert "**PASSED**" in (tmp_path / "report" / "report.md").read_text()
    manifest = store.manifest("demo", 1)
    assert manifest["serving"]["atc"]["details"]["soc_version"] == "Ascend310P3"
    assert manifest["serving"]["atc"]["details"]["image_format"] == "yuv420sp"  # 160 px suits DVPP
    assert "evaluation_mxsdk-synth-val_detections" in manifest["artefacts"]
    assert manifest["metrics"]["served"]["engine"] == "mxsdk"


def test_check_fails_when_the_npu_disagrees(recorded_store, tmp_path):
    store, recordings = recorded_store
    for recording in (recordings / "json").iterdir():
        recording.write_text("{}")  # the stream finds nothing
    done = ascend_check(store, recordings, tmp_path / "report")

    assert done.returncode == 1
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["passed"] is False and all(step["passed"] for step in report["steps"])
    assert report["summary"]["agreement"] == 0.0


def test_check_stops_at_the_first_missing_piece(recorded_store, tmp_path):
    store, recordings = recorded_store
    done = ascend_check(store, recordings, tmp_path / "report", FAKE_NPU_COUNT="0")

    assert done.returncode == 1
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [(s["step"], s["passed"]) for s in report["steps"]] == [("npu-smi", False)]
    assert "lists no NPU" in report["steps"][0]["error"]
    assert "atc" not in store.manifest("demo", 1).get("serving", {})
