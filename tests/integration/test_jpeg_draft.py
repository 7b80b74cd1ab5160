"""Large JPEGs decoded at reduced size for the model (Pillow's draft mode) keep what a full
decode finds: the pipeline's trained model on its validation images blown up twelve times
(camera-sized JPEGs, 1920 to 4800 pixels a side, decoded at 1/2 to 1/4), detected both ways in this process. Every
confident full-decode detection has a draft one of its label at IoU >= 0.95, and the mAP
moves by at most 0.005."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from inferencer.backends import select_engine
from itest import MODEL
from ssdstack.datasets.coco import load_coco_split
from ssdstack.detection.detector import Detector
from ssdstack.evaluation import evaluate_detections, served_results
from ssdstack.images import decode_for_model
from ssdstack.model_store import ModelStore

pytestmark = pytest.mark.slow
SCALE = 12


def blown_up(dataset, out):
    """The dataset's val split with every image and box SCALE times larger, as JPEGs."""
    annotations = json.loads((dataset / "annotations" / "instances_val.json").read_text())
    (out / "val").mkdir(parents=True)
    (out / "annotations").mkdir()
    for image in annotations["images"]:
        with Image.open(dataset / "val" / image["file_name"]) as source:
            source.resize((image["width"] * SCALE, image["height"] * SCALE), Image.BICUBIC).save(
                out / "val" / image["file_name"], "JPEG", quality=92)
        image.update(width=image["width"] * SCALE, height=image["height"] * SCALE)
    for box in annotations["annotations"]:
        box.update(bbox=[v * SCALE for v in box["bbox"]], area=box["area"] * SCALE ** 2)
    (out / "annotations" / "instances_val.json").write_text(json.dumps(annotations))
    return load_coco_split(out, "val")


def iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_draft_decoding_keeps_the_detections_and_the_map(pipeline, stack, tmp_path):
    models = ModelStore(stack.store_dir)
    version = pipeline["result"]["version"]
    manifest = models.manifest(MODEL, version)
    engine = select_engine("onnxruntime")
    engine.load(models.version_dir(MODEL, version), manifest)
    full = Detector(engine, manifest, MODEL, version, jpeg_draft=False)
    draft = Detector(engine, manifest, MODEL, version)
    split = blown_up(stack.store_dir / "datasets" / "synth", tmp_path / "big")
    reduced = 0
    for record in split.records:
        data = record.path.read_bytes()
        wanted, got = full.detect(data, exif_transpose=False), draft.detect(data, exif_transpose=False)
        assert (got["width"], got["height"]) == (wanted["width"], wanted["height"])
        reduced += decode_for_model(data, manifest["image_size"], exif_transpose=False)[0].shape[1] < record.width
        for detection in (d for d in wanted["detections"] if d["score"] >= 0.3):
            best = max((iou(detection["box"], other["box"]) for other in got["detections"]
                        if other["label"] == detection["label"]), default=0.0)
            assert best >= 0.95, (record.path.name, detection, got["detections"][:5])
    assert reduced == len(split.records), "every image was decoded at reduced size"
    scores = {name: evaluate_detections(split.annotation_file, served_results(
        detector, split.records, manifest["category_ids"], 50_000_000)).coco["AP"]
        for name, detector in (("full", full), ("draft", draft))}
    assert scores["full"] > 0.1 and abs(scores["full"] - scores["draft"]) <= 0.005, scores
    print(f"mAP full decode {scores['full']:.4f}, draft {scores['draft']:.4f}; "
          f"{reduced} of {len(split.records)} images reduced")
