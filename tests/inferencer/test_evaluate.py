"""Served evaluation: the converted model on a stored dataset, its report published with the version."""
from __future__ import annotations

import json

import pytest

from converter.service import convert_version
from inferencer.evaluate import evaluate_served
from ssdstack.evaluation import REPORT_FILES
from ssdstack.jobs.context import LocalContext
from ssdstack.model_store import ModelStore

REPORT = "evaluation/onnxruntime-synth-val"


@pytest.fixture
def store(store_with_dataset) -> ModelStore:
    """Dataset "synth" and model "demo" v1 trained on it, converted."""
    convert_version(store_with_dataset, "demo", 1, "onnxruntime", LocalContext(quiet=True))
    return store_with_dataset


def evaluate(store: ModelStore) -> dict:
    return evaluate_served(store.root, "demo", 1, None, "val", "onnxruntime", LocalContext(quiet=True))


def test_report_is_published_with_the_version(store):
    served = evaluate(store)

    manifest = store.manifest("demo", 1)
    assert manifest["metrics"]["served"] == served
    assert (served["engine"], served["dataset"], served["split"], served["report"]) == (
        "onnxruntime", "synth", "val", REPORT)
    assert served["images"] == 3 and served["images_per_s"] > 0
    assert [row["name"] for row in served["per_class"]] == manifest["labels"]
    report = {kind: entry["file"] for kind, entry in manifest["artefacts"].items() if kind.startswith("evaluation_")}
    assert report == {f"evaluation_onnxruntime-synth-val_{part}": f"{REPORT}/{file}"
                      for part, file in REPORT_FILES.items()}
    assert store.verify("demo", 1) == []
    metrics = json.loads(store.artefact_path("demo", 1, "evaluation_onnxruntime-synth-val_metrics").read_text())
    assert metrics["coco"] == served["coco"] and metrics["per_class"] == served["per_class"]
    detections = json.loads(store.artefact_path("demo", 1, "evaluation_onnxruntime-synth-val_detections").read_text())
    assert {d["image_id"] for d in detections} <= {4, 5, 6}  # the val split's images
    png = store.artefact_path("demo", 1, "evaluation_onnxruntime-synth-val_pr_curves").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_evaluating_again_replaces_the_report(store):
    evaluate(store)
    before = store.manifest("demo", 1)

    evaluate(store)

    after = store.manifest("demo", 1)
    assert set(after["artefacts"]) == set(before["artefacts"])
    assert after["metrics"]["served"]["coco"] == before["metrics"]["served"]["coco"]  # same engine, same images
    assert store.verify("demo", 1) == []
    assert sorted(p.name for p in (store.version_dir("demo", 1) / REPORT).iterdir()) == sorted(REPORT_FILES.values())
    assert sorted(p.name for p in (store.version_dir("demo", 1) / "evaluation").iterdir()) == [REPORT.split("/")[1]]
    assert not any(store.tmp_dir.iterdir())  # the replaced report left with its staging folder
