"""Dynamic batching on a real converted model (ONNX Runtime): batches form under concurrent
load, and every answer equals the answer of the same image run alone."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest

from converter.service import convert_version
from inferencer.backends import select_engine
from inferencer.batching import BatchingEngine, BatchPolicy, batch_policy, batching
from ssdstack.detection.detector import Detector
from ssdstack.images import resize_stretch
from ssdstack.jobs.context import LocalContext
from ssdstack.model_store import ModelStore, sha256_file
from ssdstack.settings import WorkerSettings
from test_detector import encoded, photo

# Source images of different sizes: the batch mixes them once resized.
SIZES = [(240, 130), (64, 300), (500, 500), (33, 47), (320, 180), (1000, 90), (128, 128), (77, 411)]


@pytest.fixture
def served(tmp_path, publish_model) -> tuple[ModelStore, int]:
    store = ModelStore(tmp_path / "store")
    version = publish_model(store)
    convert_version(store, "demo", version, "onnxruntime", LocalContext(quiet=True))
    return store, version


def _engine(store: ModelStore, version: int, manifest: dict | None = None):
    engine = select_engine("onnxruntime", {"onnxruntime": {"intra_op_threads": 1}})
    engine.load(store.version_dir("demo", version), manifest or store.manifest("demo", version))
    return engine


def _resized(size: int) -> list[np.ndarray]:
    return [resize_stretch(photo(width, height, seed), size) for seed, (width, height) in enumerate(SIZES)]


def test_the_served_artefact_runs_a_batch_as_it_runs_each_image_alone(served):
    store, version = served
    engine = _engine(store, version)
    images = _resized(engine.image_size)
    boxes, scores = engine.predict_batch(np.stack(images))
    assert engine.max_batch > len(images) and boxes.shape[0] == scores.shape[0] == len(images)
    for index, image in enumerate(images):
        alone_boxes, alone_scores = engine.predict(image)
        np.testing.assert_allclose(boxes[index], alone_boxes, atol=1e-5)
        np.testing.assert_allclose(scores[index], alone_scores, atol=1e-5)


def test_concurrent_detects_form_batches_and_get_the_answers_of_images_alone(served):
    store, version = served
    manifest = store.manifest("demo", version)
    alone = Detector(_engine(store, version), manifest, "demo", version)
    batched_engine = BatchingEngine(_engine(store, version), BatchPolicy(max_batch=4, max_delay_s=0.2))
    batched = Detector(batched_engine, manifest, "demo", version)
    bodies = [encoded(photo(width, height, seed)) for seed, (width, height) in enumerate(SIZES)] * 4
    start = threading.Barrier(len(bodies))

    def detect(body: bytes) -> dict:
        start.wait(30)  # all at once: the batcher sees them together
        return batched.detect(body, score_threshold=0.01)

    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(detect, bodies))

    assert sum(batched_engine.batches.values()) < len(bodies)  # fewer engine calls than requests
    assert max(batched_engine.batches) == 4 and sum(size * n for size, n in batched_engine.batches.items()) == 32
    for body, answer in zip(bodies, answers):
        want = alone.detect(body, score_threshold=0.01)
        assert answer["detections"], "a threshold this low keeps detections to compare"
        assert [d["label_id"] for d in answer["detections"]] == [d["label_id"] for d in want["detections"]]
        for got, expected in zip(answer["detections"], want["detections"]):
            np.testing.assert_allclose(got["box"], expected["box"], atol=0.01 + 1e-5)  # 2 decimals
            assert abs(got["score"] - expected["score"]) <= 1e-4 + 1e-5  # 4 decimals


def test_an_engine_failure_reaches_every_request_of_its_batch(served):
    store, version = served
    engine = _engine(store, version)
    batched = BatchingEngine(engine, BatchPolicy(max_batch=3, max_delay_s=0.2))
    wrong = np.zeros((engine.image_size + 1, engine.image_size + 1, 3), np.uint8)  # not the model's size
    right = _resized(engine.image_size)[0]
    start = threading.Barrier(3)

    def predict(image):
        start.wait(30)
        try:
            return batched.predict(image)
        except ValueError as error:
            return error

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(predict, [right, right, wrong]))
    # np.stack of a mixed batch fails, or the engine refuses the shape: either way each gets it.
    assert batched.batches == {3: 1} and all(isinstance(result, ValueError) for result in results)


def test_a_version_converted_for_batch_1_is_served_one_image_at_a_time(served, tmp_path):
    store, version = served
    manifest = store.manifest("demo", version)
    folder = store.version_dir("demo", version)
    served_file = folder / manifest["artefacts"]["serving_onnxruntime"]["file"]
    model = onnx.load(str(served_file))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 1  # as the converter wrote it before batching
    onnx.save(model, str(served_file))
    manifest["artefacts"]["serving_onnxruntime"]["sha256"] = sha256_file(served_file)
    engine = _engine(store, version, manifest)
    assert engine.max_batch == 1
    assert batching(engine, BatchPolicy(max_batch=4, max_delay_s=0.01)) is engine
    images = np.stack(_resized(engine.image_size)[:3])
    boxes, _ = engine.predict_batch(images)  # one run per image
    np.testing.assert_allclose(boxes[2], engine.predict(images[2])[0], atol=1e-6)


def test_the_policy_comes_from_the_settings():
    settings = WorkerSettings(infer_concurrency=8, infer_max_batch=4, infer_max_delay_ms=3)
    assert batch_policy(settings) == BatchPolicy(max_batch=4, max_delay_s=0.003, parallel=2)
    assert batch_policy(WorkerSettings(infer_batching=False)) is None
    with pytest.raises(ValueError, match="SSDSTACK_INFER_CONCURRENCY \\(2\\) must be at least SSDSTACK_INFER_MAX_BATCH"):
        WorkerSettings(infer_concurrency=2, infer_max_batch=4)
    with pytest.raises(ValueError, match="infer_max_batch"):
        WorkerSettings(infer_max_batch=1)
