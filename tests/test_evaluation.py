"""COCO evaluation and its report, on hand-made ground truth whose per-class AP is known exactly.

Every detection either equals a ground-truth box (a match at every IoU threshold) or
overlaps none, so AP at IoU .5, .75 and averaged over .50:.95 are all the same number.
"""
from __future__ import annotations

import copy
import csv
import json
import struct
import subprocess
import sys

import numpy as np
import pytest

import ssdstack.evaluation as evaluation_module
from ssdstack.evaluation import (COCO_METRIC_NAMES, REPORT_FILES, EngineEvaluation, coco_evaluate,
                                 evaluate_detections, stage_report, write_report)

CAT, DOG, HORSE, BIRD = 1, 2, 4, 5
# horse: two boxes found at scores .9 and .7 with a miss at .8 between them. The
# precision envelope is 1 up to recall .5 and 2/3 after, so AP = (51 * 1 + 50 * 2/3) / 101.
HORSE_AP = round((51 + 50 * 2 / 3) / 101, 6)

GROUND_TRUTH = {
    "images": [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 100},
               {"id": 2, "file_name": "2.jpg", "width": 100, "height": 100}],
    "categories": [{"id": CAT, "name": "cat"}, {"id": DOG, "name": "dog"},
                   {"id": HORSE, "name": "horse"}, {"id": BIRD, "name": "bird"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": CAT, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": CAT, "bbox": [50, 10, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": CAT, "bbox": [0, 80, 10, 10], "area": 100, "iscrowd": 1},
        {"id": 4, "image_id": 1, "category_id": DOG, "bbox": [60, 60, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 5, "image_id": 2, "category_id": HORSE, "bbox": [10, 50, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 6, "image_id": 2, "category_id": HORSE, "bbox": [50, 50, 20, 20], "area": 400, "iscrowd": 0},
    ],
}
RESULTS = [
    {"image_id": 1, "category_id": CAT, "score": 0.9, "bbox": [10.0, 10.0, 20.0, 20.0]},
    {"image_id": 2, "category_id": CAT, "score": 0.8, "bbox": [50.0, 10.0, 30.0, 30.0]},
    {"image_id": 1, "category_id": DOG, "score": 0.95, "bbox": [0.0, 0.0, 10.0, 10.0]},  # the dog is elsewhere
    {"image_id": 2, "category_id": HORSE, "score": 0.9, "bbox": [10.0, 50.0, 20.0, 20.0]},
    {"image_id": 2, "category_id": HORSE, "score": 0.8, "bbox": [80.0, 0.0, 10.0, 10.0]},
    {"image_id": 2, "category_id": HORSE, "score": 0.7, "bbox": [50.0, 50.0, 20.0, 20.0]},
    {"image_id": 1, "category_id": BIRD, "score": 0.5, "bbox": [40.0, 40.0, 10.0, 10.0]},  # no bird exists
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def annotation_file(tmp_path):
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps(GROUND_TRUTH))
    return path


@pytest.fixture
def evaluated(annotation_file) -> EngineEvaluation:
    return EngineEvaluation(engine="onnxruntime", images=2, images_per_s=12.5, results=copy.deepcopy(RESULTS),
                            scores=evaluate_detections(annotation_file, copy.deepcopy(RESULTS)))


def test_per_class_ap_is_exact(annotation_file):
    scores = evaluate_detections(annotation_file, RESULTS)

    assert scores.per_class == [
        {"category_id": CAT, "name": "cat", "AP": 1.0, "AP50": 1.0, "AP75": 1.0, "ground_truth": 2},
        {"category_id": DOG, "name": "dog", "AP": 0.0, "AP50": 0.0, "AP75": 0.0, "ground_truth": 1},
        {"category_id": HORSE, "name": "horse", "AP": HORSE_AP, "AP50": HORSE_AP, "AP75": HORSE_AP,
         "ground_truth": 2},
        {"category_id": BIRD, "name": "bird", "AP": None, "AP50": None, "AP75": None, "ground_truth": 0},
    ]
    assert tuple(scores.coco) == COCO_METRIC_NAMES
    assert scores.coco["AP"] == scores.coco["AP50"] == pytest.approx((1.0 + 0.0 + HORSE_AP) / 3, abs=1e-6)
    assert coco_evaluate(annotation_file, RESULTS) == scores.coco


def test_precision_recall_curves(annotation_file):
    scores = evaluate_detections(annotation_file, RESULTS)

    np.testing.assert_allclose(scores.recall, np.linspace(0, 1, 101))
    assert scores.precision_50.shape == scores.precision_mean.shape == (4, 101)
    cat, dog, horse, bird = scores.precision_50
    assert (cat == 1).all() and (dog == 0).all() and np.isnan(bird).all()
    np.testing.assert_allclose(horse, np.where(scores.recall <= 0.5, 1.0, 2 / 3))
    np.testing.assert_allclose(scores.precision_mean, scores.precision_50)  # exact boxes match at every IoU
    for curve in scores.precision_50[:3]:
        assert (np.diff(curve) <= 0).all(), "COCO's interpolated precision never rises with recall"


def test_results_are_not_changed_by_evaluation(annotation_file):
    results = copy.deepcopy(RESULTS)
    evaluate_detections(annotation_file, results)
    assert results == RESULTS  # pycocotools' loadRes adds area/id/iscrowd to what it is given


def test_no_detections_scores_zero_where_there_is_ground_truth(annotation_file):
    scores = evaluate_detections(annotation_file, [])

    assert [row["AP"] for row in scores.per_class] == [0.0, 0.0, 0.0, None]
    assert scores.coco["AP"] == 0.0 and scores.coco["AR_100"] == 0.0
    assert scores.coco["AP_large"] == -1.0  # no large box in the ground truth, as pycocotools says
    assert (scores.precision_50[:3] == 0).all() and np.isnan(scores.precision_50[3]).all()


def test_report_folder_holds_every_part(tmp_path, evaluated):
    folder = tmp_path / "evaluation" / "onnxruntime-synth-val"

    files = write_report(folder, evaluated, "synth", "val")

    assert files == REPORT_FILES
    assert sorted(p.name for p in folder.iterdir()) == sorted(files.values())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics == {"coco": evaluated.scores.coco, "per_class": evaluated.scores.per_class,
                       "engine": "onnxruntime", "images": 2, "images_per_s": 12.5, "dataset": "synth",
                       "split": "val"}
    with open(folder / "per_class_ap.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == ["cat", "dog", "horse", "bird"]
    assert rows[2] == {"category_id": "4", "name": "horse", "AP": str(HORSE_AP), "AP50": str(HORSE_AP),
                       "AP75": str(HORSE_AP), "ground_truth": "2"}
    assert rows[3]["AP"] == rows[3]["AP50"] == "" and rows[3]["ground_truth"] == "0"
    png = (folder / "pr_curves.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and 10_000 < len(png) < 2_000_000
    width, height = struct.unpack(">II", png[16:24])  # IHDR, the first chunk
    assert width == 1200 and 500 <= height <= 1200
    assert json.loads((folder / "detections.json").read_text()) == RESULTS
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no scratch left beside it


def test_failed_write_leaves_no_report(tmp_path, evaluated, monkeypatch):
    def broken_plot(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(evaluation_module, "plot_pr_curves", broken_plot)

    parent = tmp_path / "evaluation"
    parent.mkdir()

    with pytest.raises(RuntimeError, match="disk full"):
        write_report(parent / "report", evaluated, "synth", "val")
    assert list(parent.iterdir()) == []


def test_existing_report_folder_is_refused(tmp_path, evaluated):
    (tmp_path / "report").mkdir()
    with pytest.raises(FileExistsError):
        write_report(tmp_path / "report", evaluated, "synth", "val")


def test_stage_report_names_artefacts_by_engine_dataset_and_split(tmp_path, evaluated):
    artefacts = stage_report(tmp_path, evaluated, "synth", "val")

    assert artefacts == {f"evaluation_onnxruntime-synth-val_{part}": f"evaluation/onnxruntime-synth-val/{file}"
                         for part, file in REPORT_FILES.items()}
    assert all((tmp_path / file).is_file() for file in artefacts.values())


def test_importing_evaluation_does_not_load_matplotlib():
    code = "import sys, ssdstack.evaluation; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
