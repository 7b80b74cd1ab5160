"""The whole product over HTTP on real processes: upload -> pipeline (with a trainer crash
in the middle) -> served mAP -> detect -> cancel -> redeploy.

One training run serves the pipeline, crash-recovery and learnability checks.
"""
from __future__ import annotations

import io
import numpy as np
import pytest
from PIL import Image

from cli.client import ApiError
from cli.demo import best_match, held_out_image
from golden_answers import assert_superset
from itest import CONFIG, MODEL
from polling import wait_for

pytestmark = pytest.mark.slow


def test_pipeline_succeeds_and_deploys(pipeline, client):
    assert pipeline["state"] == "succeeded", pipeline["error"]
    result = pipeline["result"]
    assert result["deployed"]["version"] == result["version"]
    [model] = [m for m in client.get("/v1/models")["models"] if m["name"] == MODEL]
    assert result["version"] in model["versions"]
    assert [(s["name"], s["state"]) for s in pipeline["stages"]] == [
        (name, "succeeded") for name in ("train", "export", "convert", "evaluate", "deploy")]


def test_crashed_training_resumed_from_its_checkpoint_and_published_once(pipeline, client):
    result = pipeline["result"]
    assert result["training"]["resumed_from_epoch"] >= 2
    logs = client.get(f"/v1/jobs/{pipeline['id']}/logs")["lines"]
    assert any("resuming from epoch-" in line for line in logs), logs
    versions = client.get(f"/v1/models/{MODEL}/versions")["versions"]
    assert [v["version"] for v in versions if v["lineage"]["job_id"] == pipeline["id"]] == [result["version"]]


def test_served_model_learned_and_matches_its_reference(pipeline, client):
    manifest = client.get(f"/v1/models/{MODEL}/versions/{pipeline['result']['version']}")
    served = manifest["metrics"]["served"]
    assert served["engine"] == "onnxruntime" and served["split"] == "val"
    assert served["coco"]["AP50"] >= 0.5, served
    check = manifest["serving"]["onnxruntime"]["check"]
    assert check["passed"] and max(check["max_abs_diff_boxes"], check["max_abs_diff_scores"]) <= 1e-4
    assert abs(manifest["metrics"]["trained"]["coco"]["AP"] - served["coco"]["AP"]) <= 0.01
    assert set(manifest["artefacts"]) >= {"checkpoint", "mindir", "onnx", "reference", "labels",
                                          "serving_onnxruntime"}


def test_detect_finds_a_known_box_in_a_held_out_image(pipeline, client, tmp_path):
    image, boxes, labels, size = held_out_image(tmp_path / "held-out", seed=CONFIG.seed + 1000,
                                                classes=CONFIG.classes)
    answer = client.detect(image)
    assert [answer["width"], answer["height"]] == size
    iou, matched = best_match(answer["detections"], boxes, labels)
    assert iou >= 0.5, answer["detections"]


def _image_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_detect_rejects_bad_images_with_400(pipeline, client):
    jpeg = _image_bytes(Image.new("RGB", (64, 48), (200, 10, 10)), "JPEG")
    bomb = _image_bytes(Image.new("1", (12000, 12000)), "PNG")  # 144 Mpx: over the 50 Mpx default
    cases = {b"": "empty", b"hello, not an image": "not an image", jpeg[: len(jpeg) // 2]: "truncated",
             bomb: "decompression bomb"}
    for data, words in cases.items():
        with pytest.raises(ApiError) as raised:
            client.detect(data)
        assert raised.value.status == 400, raised.value.body
        assert words in raised.value.body["error"]["message"]


def test_detect_accepts_unusual_but_valid_images(pipeline, client):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the answer is in the rotated (70 x 50 -> 50 x 70) frame
    cases = {
        "grey": (_image_bytes(rgb.convert("L"), "PNG"), (70, 50)),
        "cmyk": (_image_bytes(rgb.convert("CMYK"), "JPEG"), (70, 50)),
        "16-bit": (_image_bytes(Image.fromarray((np.asarray(rgb.convert("L")).astype(np.uint16) * 257)), "PNG"),
                   (70, 50)),
        "palette": (_image_bytes(rgb.convert("P"), "PNG"), (70, 50)),
        "alpha": (_image_bytes(rgb.convert("RGBA"), "PNG"), (70, 50)),
        "exif-rotated": (_image_bytes(rgb, "JPEG", exif=exif), (50, 70)),
        "gif": (_image_bytes(rgb.convert("P"), "GIF", save_all=True, append_images=[rgb.convert("P")]), (70, 50)),
    }
    for name, (data, size) in cases.items():
        answer = client.detect(data, filename=f"{name}.img")
        assert [answer["width"], answer["height"]] == list(size), name


def test_deploying_another_version_switches_detect_without_restart(pipeline, client, dataset):
    first = pipeline["result"]["version"]
    job = client.wait(client.submit({"type": "train", "dataset": dataset, "model": MODEL,
                                     "architecture": CONFIG.architecture, "epochs": 1})["id"], timeout=600)
    assert job["state"] == "succeeded", job["error"]
    assert_superset("job_train", job, dataset)
    second = job["result"]["version"]
    with pytest.raises(ApiError) as raised:
        client.deploy(MODEL, second)  # not converted yet
    assert raised.value.status == 409
    convert = client.wait(client.submit({"type": "convert", "model": MODEL, "version": second})["id"], timeout=300)
    assert convert["state"] == "succeeded", convert["error"]
    assert_superset("job_convert", convert)
    jpeg = _image_bytes(Image.new("RGB", (90, 60), (30, 30, 30)), "JPEG")
    client.deploy(MODEL, second)
    assert client.detect(jpeg)["version"] == second
    client.deploy(MODEL, first)
    assert client.detect(jpeg)["version"] == first


def test_a_checkpoint_uploaded_over_rest_imports_as_a_version(pipeline, client, stack, dataset):
    source = client.get(f"/v1/models/{MODEL}/versions/{pipeline['result']['version']}")
    checkpoint = stack.store_dir / "models" / MODEL / str(source["version"]) / source["artefacts"]["checkpoint"]["file"]
    assert client.upload_checkpoint(checkpoint, "from-rest.ckpt")["bytes"] == checkpoint.stat().st_size
    job = client.wait(client.submit({"type": "import", "checkpoint": "from-rest.ckpt", "model": "imported",
                                     "architecture": CONFIG.architecture, "labels": source["labels"],
                                     "dataset": dataset})["id"], timeout=600)
    assert job["state"] == "succeeded", job["error"]
    assert_superset("job_import", job, dataset)
    assert job["result"]["metrics"]["trained"]["AP"] == pytest.approx(source["metrics"]["trained"]["coco"]["AP"],
                                                                       abs=1e-6)
    imported = client.get(f"/v1/models/imported/versions/{job['result']['version']}")
    assert imported["training"]["imported_from"] == "from-rest.ckpt" and imported["labels"] == source["labels"]


def test_cancel_stops_a_running_job_and_publishes_nothing(pipeline, client, dataset):
    job = client.submit({"type": "train", "dataset": dataset, "model": "cancelled",
                         "architecture": CONFIG.architecture, "epochs": 50})
    wait_for(lambda: client.job(job["id"])["progress"].get("step"), 300, "training to start")
    assert client.cancel(job["id"])["id"] == job["id"]
    final = client.wait(job["id"], timeout=120)
    assert final["state"] == "cancelled"
    with pytest.raises(ApiError) as raised:
        client.get("/v1/models/cancelled/versions")
    assert raised.value.status == 404
    with pytest.raises(ApiError) as raised:
        client.cancel(job["id"])
    assert raised.value.status == 409
