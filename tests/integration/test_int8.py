"""INT8 on the real stack: a convert job quantises the pipeline's trained model, calibrated
on its own dataset and gated on its served mAP; FP32 and INT8 then sit side by side, and
a deploy names the precision. A graph whose activation scales are 100x too small is
refused by the gate, and by the reference check. The stack's gate needs 50 validation
images (the demo dataset has 80; the shipped default is 200)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from cli.client import ApiError
from converter.backends.int8 import (INT8_CHECK_STATISTIC, INT8_TOLERANCE_BOXES, INT8_TOLERANCE_SCORES,
                                     calibration_images, gate, quantise)
from converter.backends.onnxruntime import ARTEFACT_FILE, fold_preprocessing
from converter.check import check_against_reference
from itest import MODEL
from polling import wait_for
from ssdstack.datasets.coco import load_coco_split
from ssdstack.model_store import ModelStore

pytestmark = pytest.mark.slow
# What this test's job allows: it proves the plumbing (calibration, both mAPs stored, FP32
# and INT8 side by side, deploy by precision). The demo's small ssd_lite at 160 pixels
# loses up to 0.075 mAP to INT8 on some training runs (heads in FP32, percentile or
# entropy calibration, symmetric activations and a float first convolution were tried:
# 0.066 to 0.10), so the shipped bound (0.01) refuses it there, as it should; the refusal
# is shown below with activation scales 100x too small.
MAX_MAP_DROP = 0.1


@pytest.fixture(scope="module")
def int8_job(pipeline, client) -> dict:
    version = pipeline["result"]["version"]
    job = client.submit({"type": "convert", "model": MODEL, "version": version, "backend": "onnxruntime",
                         "precision": "int8", "max_map_drop": MAX_MAP_DROP})
    return client.wait(job["id"], timeout=900, interval=2)


def test_int8_is_calibrated_on_the_versions_data_and_gated(int8_job, pipeline, client):
    assert int8_job["state"] == "succeeded", int8_job["error"]
    version = pipeline["result"]["version"]
    gated = int8_job["result"]["conversion"]["gate"]
    assert gated["passed"] and gated["images"] == 80 and gated["split"] == "val"
    assert gated["fp32_map"] > 0.1, "a trained model: the gate compares real numbers"
    assert gated["fp32_map"] - gated["int8_map"] == pytest.approx(gated["drop"], abs=1e-4) and gated["drop"] <= MAX_MAP_DROP
    manifest = client.get(f"/v1/models/{MODEL}/versions/{version}")
    int8 = manifest["serving"]["onnxruntime/int8"]
    assert manifest["serving"]["onnxruntime"]["precision"] == "fp32"  # the pipeline's FP32, kept beside it
    assert int8["precision"] == "int8" and int8["artefact"] == "serving_onnxruntime_int8"
    assert int8["check"]["passed"] and int8["check"]["statistic"] == "mean"
    assert (int8["check"]["tolerance"], int8["check"]["score_tolerance"]) == (0.02, 0.05)
    assert int8["calibration"]["dataset"] == "synth" and len(int8["calibration"]["images"]) == 100
    assert "model.ort.int8.onnx" in {entry["file"] for entry in manifest["artefacts"].values()}


def test_a_deploy_names_the_precision_and_detect_serves_it(int8_job, pipeline, client, stack):
    version = pipeline["result"]["version"]
    image = sorted((stack.store_dir / "datasets" / "synth" / "val").glob("*.jpg"))[0].read_bytes()
    try:
        deployed = client.deploy(MODEL, version, precision="int8")
        assert deployed["precision"] == "int8" and deployed["backends"] == ["onnxruntime/int8"]
        served = client.detect(image, model=MODEL)
        assert served["detections"], "the INT8 artefact finds what the FP32 one does in a validation image"

        def serving_int8() -> bool:  # the inferencers' next heartbeat says what they serve
            workers = client.get("/v1/backends")["workers"]
            return any(w.get("serving", {}).get(MODEL, {}).get("precision") == "int8" for w in workers)

        wait_for(serving_int8, 30, "an inferencer's heartbeat to say it serves INT8")
    finally:
        client.deploy(MODEL, version)  # FP32 again, as the other test files expect it


def test_bad_precisions_are_refused_at_submission(pipeline, client):
    version = pipeline["result"]["version"]
    for spec, status, words in [
        ({"precision": "fp16"}, 422, "convert.precision"),
        ({"precision": "int8", "backend": "atc"}, 422, "AMCT"),
    ]:
        with pytest.raises(ApiError) as refused:
            client.submit(dict({"type": "convert", "model": MODEL, "version": version}, **spec))
        assert refused.value.status == status and words in str(refused.value.body), refused.value.body
    with pytest.raises(ApiError) as refused:
        client.deploy(MODEL, version, precision="int4")
    assert refused.value.status == 422


def test_activation_scales_100x_too_small_fail_the_gate(pipeline, stack, tmp_path):
    models = ModelStore(stack.store_dir)
    version = pipeline["result"]["version"]
    manifest = models.manifest(MODEL, version)
    folder = models.version_dir(MODEL, version)
    folded = onnx.load(str(folder / manifest["artefacts"]["onnx"]["file"]))
    fold_preprocessing(folded, manifest["image_size"], manifest["preprocessing"]["mean"],
                       manifest["preprocessing"]["std"])
    onnx.save(folded, str(tmp_path / "folded.onnx"))
    dataset = stack.store_dir / "datasets" / "synth"
    images, _ = calibration_images(load_coco_split(dataset, "train"), 20, manifest["image_size"])
    quantise(tmp_path / "folded.onnx", tmp_path / "int8.onnx", images, tmp_path)
    broken = onnx.load(str(tmp_path / "int8.onnx"))
    shrunk = _shrink_activation_scales(broken, 100)
    assert shrunk > 50, "the network's activations are quantised"
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    reference = folder / manifest["artefacts"]["reference"]["file"]
    bounds = (INT8_TOLERANCE_BOXES, INT8_TOLERANCE_SCORES, INT8_CHECK_STATISTIC)
    assert not check_against_reference(tmp_path / "broken.onnx", reference, *bounds)["passed"]
    fp32 = folder / manifest["artefacts"]["serving_onnxruntime"]["file"]
    assert fp32.name == ARTEFACT_FILE
    validation = load_coco_split(dataset, "val")
    judged = gate(fp32, tmp_path / "broken.onnx", manifest, validation, max_map_drop=0.02, min_images=50)
    assert not judged["passed"] and judged["drop"] > 0.02, judged
    honest = gate(fp32, tmp_path / "int8.onnx", manifest, validation, max_map_drop=0.02, min_images=50)
    assert honest["fp32_map"] == judged["fp32_map"] and honest["int8_map"] > judged["int8_map"]


def _shrink_activation_scales(model, factor: float) -> int:
    """Divide the scale of every activation QuantizeLinear (weights are stored quantised,
    so every QuantizeLinear left quantises an activation) by ``factor``; how many."""
    initialisers = {tensor.name: tensor for tensor in model.graph.initializer}
    scales = {node.input[1] for node in model.graph.node if node.op_type == "QuantizeLinear"}
    for name in scales:
        tensor = initialisers[name]
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) / np.float32(factor), name))
    return len(scales)
