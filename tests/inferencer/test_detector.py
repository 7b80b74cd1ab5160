"""Detector: decode -> resize -> ONNX Runtime engine -> postprocess -> original-image pixels."""
from __future__ import annotations

import dataclasses
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from converter.service import convert_version
from inferencer.backends import select_engine
from ssdstack.detection.detector import Detector
from ssdstack.detection.nms import postprocess
from ssdstack.errors import BackendUnavailable, InvalidImage, InvalidInput
from ssdstack.images import resize_stretch
from ssdstack.jobs.context import LocalContext
from ssdstack.model_store import ModelStore

WIDTH, HEIGHT = 240, 130


@pytest.fixture
def detector(tmp_path, publish_model) -> Detector:
    store = ModelStore(tmp_path / "store")
    version = publish_model(store)
    convert_version(store, "demo", version, "onnxruntime", LocalContext(quiet=True))
    manifest = store.manifest("demo", version)
    engine = select_engine("onnxruntime", {"onnxruntime": {"intra_op_threads": 2}})
    engine.load(store.version_dir("demo", version), manifest)
    return Detector(engine, manifest, "demo", version)


def photo(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> np.ndarray:
    """Smooth random colour blobs: less like noise than uniform pixels, so scores spread."""
    small = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def encoded(rgb: np.ndarray, image_format: str = "PNG", **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=image_format, **save_args)
    return buffer.getvalue()


def test_boxes_are_in_original_pixels_of_a_non_square_image(detector):
    rgb = photo()

    result = detector.detect(encoded(rgb), score_threshold=0.05)

    boxes, scores = detector.engine.predict(resize_stretch(rgb, detector.image_size))
    config = dataclasses.replace(detector.postprocess, score_threshold=0.05)
    want_boxes, want_scores, want_labels = postprocess(boxes, scores, config)
    want_pixels = want_boxes[:, [1, 0, 3, 2]] * np.array([WIDTH, HEIGHT, WIDTH, HEIGHT])
    assert (result["model"], result["version"], result["width"], result["height"]) == ("demo", 1, WIDTH, HEIGHT)
    detections = result["detections"]
    assert len(detections) == len(want_labels) > 0
    np.testing.assert_allclose([d["box"] for d in detections], want_pixels, atol=0.006)
    np.testing.assert_allclose([d["score"] for d in detections], want_scores, atol=6e-5)
    assert [d["label_id"] for d in detections] == want_labels.tolist()
    assert [d["label"] for d in detections] == [detector.labels[i - 1] for i in want_labels]
    assert all(0 <= d["box"][0] <= d["box"][2] <= WIDTH and 0 <= d["box"][1] <= d["box"][3] <= HEIGHT
               for d in detections)


def test_exif_orientation_gives_the_rotated_frame(detector):
    rgb = photo()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display

    result = detector.detect(encoded(rgb, image_format="JPEG", exif=exif.tobytes(), quality=95))

    assert (result["width"], result["height"]) == (HEIGHT, WIDTH)


def test_overrides_apply_and_are_validated(detector):
    rgb = photo()
    assert len(detector.detect_array(rgb, score_threshold=0.0, max_detections=3)["detections"]) == 3
    assert detector.detect_array(rgb, score_threshold=1.0)["detections"] == []
    with pytest.raises(InvalidInput, match="score_threshold"):
        detector.detect_array(rgb, score_threshold=1.5)
    with pytest.raises(InvalidInput, match="max_detections"):
        detector.detect_array(rgb, max_detections=0)
    with pytest.raises(InvalidImage):
        detector.detect(b"not an image")


def test_one_engine_serves_concurrent_requests(detector):
    images = [photo(seed=seed) for seed in range(4)] * 3
    serial = [detector.detect_array(image) for image in images]

    with ThreadPoolExecutor(max_workers=6) as pool:
        parallel = list(pool.map(detector.detect_array, images))

    assert parallel == serial


def test_unknown_engine_is_unavailable():
    with pytest.raises(BackendUnavailable, match="unknown inference engine 'mindx'"):
        select_engine("mindx")
