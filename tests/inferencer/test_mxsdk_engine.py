"""MindX SDK engine (``mxsdk``): generated stream files, result mapping, errors and refusals.

No MindX SDK, CANN or NPU exists here: the strict fake in tests/fakes/ascend/ stands in for
the SDK's ``StreamManagerApi`` (its answers are recordings made from ONNX Runtime's), and
its ``atc`` and ``npu-smi`` for CANN and the driver. The golden pipeline, postprocess
config and labels file are written by hand from ../shared/ASCEND.md ("MindX SDK"); the run
on a real NPU is a documented manual procedure.
"""
from __future__ import annotations

import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from converter.service import convert_version
from fakes.ascend import recording
from inferencer.backends import select_engine
from inferencer.backends.mxsdk import engine as mxsdk
from inferencer.backends.onnxruntime import OnnxRuntimeEngine
from inferencer.backends.mxsdk.dvpp import baseline_jpeg, dvpp_jpeg_info
from ssdstack.detection.detector import Detector
from ssdstack.errors import (BackendUnavailable, Conflict, InvalidImage, InvalidInput, ServiceUnavailable,
                             UpstreamTimeout)
from ssdstack.images import decode_image, resize_stretch
from ssdstack.jobs.context import LocalContext
from ssdstack.jobs.specs import AtcOptions
from ssdstack.model_store import ModelStore

FAKE_BIN = Path(recording.__file__).resolve().parent / "bin"
STREAM = b"ssdstack_demo_v1"
MAX_PIXELS = 50_000_000


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """The fake SDK's ``FAKE`` state, reset, with the fake atc and npu-smi (a 310P3) on PATH."""
    monkeypatch.setenv("PATH", f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NPU_CHIP", "310P3")
    monkeypatch.syspath_prepend(str(recording.fake_mxsdk_path()))
    import StreamManagerApi

    StreamManagerApi.FAKE.reset()
    StreamManagerApi.FAKE.recordings_dir = tmp_path / "rec"
    yield StreamManagerApi.FAKE
    mxsdk.close_shared_manager()
    StreamManagerApi.FAKE.reset()


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "store")


@pytest.fixture
def version(fake, store, publish_model):
    """``version(image_format="yuv420sp", onnxruntime=True, atc=True) -> (v, manifest)``: a new
    version of ``demo`` converted for ONNX Runtime and with the fake ``atc``."""
    def make(image_format: str = "yuv420sp", onnxruntime: bool = True, atc: bool = True) -> tuple[int, dict]:
        v = publish_model(store)
        if onnxruntime:
            convert_version(store, "demo", v, "onnxruntime", LocalContext(quiet=True))
        if atc:
            convert_version(store, "demo", v, "atc", LocalContext(quiet=True),
                            atc=AtcOptions(soc_version="Ascend310P3", image_format=image_format))
        return v, store.manifest("demo", v)
    return make


@pytest.fixture
def load(tmp_path, store):
    """``load(engine_name, v, manifest, **mxsdk_options) -> Detector`` over a loaded engine."""
    def make(name: str, v: int, manifest: dict, **options) -> Detector:
        engine = select_engine(name, {"mxsdk": {**options, "work_dir": tmp_path / "work"}})
        engine.load(store.version_dir("demo", v), manifest)
        return engine.detector(manifest, "demo", v)
    return make


def jpeg(width: int = 320, height: int = 240, seed: int = 0, **save_args) -> bytes:
    """Noise with a few filled rectangles, saved as a JPEG (quality 90 unless told)."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        draw.rectangle([x, y, x + width // 3, y + height // 3], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    buffer = io.BytesIO()
    image.save(buffer, format=save_args.pop("format", "JPEG"), **({"quality": 90} | save_args))
    return buffer.getvalue()


def convert_mode(data: bytes, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert(mode).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def record_reference(fake, reference: Detector, data: bytes) -> dict:
    """Record ONNX Runtime's detections of ``data`` as the device's answer; return them."""
    result = reference.detect(data)
    labels = ["background", *reference.labels]
    recording.write_json_recording(fake.recordings_dir, data, recording.mxpi_objects(result["detections"], labels))
    return result


def test_generated_stream_files_match_the_vendor_layout(fake, version, load, tmp_path, store):
    v, manifest = version("yuv420sp")
    load("mxsdk", v, manifest)

    folder = tmp_path / "work" / "mxsdk" / "demo-v1"
    om = str((store.version_dir("demo", v) / manifest["artefacts"]["serving_om"]["file"]).resolve())
    assert om.endswith("model.om")
    assert fake.pipelines[STREAM] == {
        "stream_config": {"deviceId": "0"},
        "appsrc0": {"props": {"blocksize": "409600"}, "factory": "appsrc", "next": "mxpi_imagedecoder0"},
        "mxpi_imagedecoder0": {"props": {"handleMethod": "ascend"}, "factory": "mxpi_imagedecoder",
                               "next": "mxpi_imageresize0"},
        "mxpi_imageresize0": {"props": {"handleMethod": "ascend", "resizeType": "Resizer_Stretch",
                                        "resizeHeight": "160", "resizeWidth": "160"},
                              "factory": "mxpi_imageresize", "next": "mxpi_tensorinfer0"},
        "mxpi_tensorinfer0": {"props": {"dataSource": "mxpi_imageresize0", "modelPath": om},
                              "factory": "mxpi_tensorinfer", "next": "mxpi_objectpostprocessor0"},
        "mxpi_objectpostprocessor0": {"props": {"dataSource": "mxpi_tensorinfer0",
                                                "postProcessConfigPath": str(folder / "postprocess.cfg"),
                                                "labelPath": str(folder / "labels.names"),
                                                "postProcessLibPath": "libSsdMobilenetFpn_MindsporePost.so"},
                                      "factory": "mxpi_objectpostprocessor", "next": "mxpi_dataserialize0"},
        "mxpi_dataserialize0": {"props": {"outputDataKeys": "mxpi_objectpostprocessor0"},
                                "factory": "mxpi_dataserialize", "next": "appsink0"},
        "appsink0": {"factory": "appsink"},
    }
    config = dict(line.split("=", 1) for line in (folder / "postprocess.cfg").read_text().splitlines())
    assert config.keys() == {"CLASS_NUM", "SCORE_THRESH", "IOU_THRESH", "CHECK_MODEL"}
    assert (config["CLASS_NUM"], config["CHECK_MODEL"]) == ("3", "true")
    assert float(config["SCORE_THRESH"]) == manifest["postprocess"]["score_threshold"]
    assert float(config["IOU_THRESH"]) == manifest["postprocess"]["iou_threshold"]
    labels = manifest["labels"]
    assert len(labels) == 2
    assert (folder / "labels.names").read_text() == f"background\n{labels[0]}\n{labels[1]}\n"


def test_dvpp_answers_map_to_the_onnxruntime_detections(fake, version, load):
    v, manifest = version("yuv420sp")
    device, reference = load("mxsdk", v, manifest), load("onnxruntime", v, manifest)
    assert device.engine.preprocessing == "dvpp"
    image = jpeg()
    expected = record_reference(fake, reference, image)
    assert len(expected["detections"]) >= 3

    assert device.detect(image) == expected
    assert fake.sent == [(STREAM, image)]
    scores = sorted({d["score"] for d in expected["detections"]}, reverse=True)
    threshold = (scores[1] + scores[2]) / 2
    assert device.detect(image, score_threshold=threshold) == reference.detect(image, score_threshold=threshold)
    assert len(device.detect(image, score_threshold=threshold)["detections"]) == 2
    assert device.detect(image, max_detections=1) == reference.detect(image, max_detections=1)
    with pytest.raises(InvalidInput, match="lower score_threshold"):
        device.detect(image, score_threshold=manifest["postprocess"]["score_threshold"] / 2)
    with pytest.raises(InvalidInput, match="higher iou_threshold"):
        device.detect(image, iou_threshold=manifest["postprocess"]["iou_threshold"] + 0.1)

    empty = jpeg(seed=1)
    recording.write_json_recording(fake.recordings_dir, empty, {})
    assert device.detect(empty) == {"model": "demo", "version": v, "width": 320, "height": 240, "detections": []}


def test_cpu_mode_sends_the_resized_image_and_matches_onnxruntime(fake, version, load):
    v, manifest = version("rgb")
    device, reference = load("mxsdk", v, manifest, device_id=1), load("onnxruntime", v, manifest)
    assert device.engine.preprocessing == "cpu" and type(device) is Detector
    assert fake.pipelines[STREAM]["stream_config"] == {"deviceId": "1"}

    for image in (jpeg(), jpeg(seed=2, format="PNG")):
        resized = resize_stretch(decode_image(image), 160)
        boxes, scores = reference.engine.predict(resized)
        recording.write_tensor_recording(fake.recordings_dir, resized.tobytes(), [boxes[None], scores[None]])

        result = device.detect(image)

        assert fake.sent[-1] == (STREAM, resized.tobytes())
        assert result == reference.detect(image)
        assert result["detections"]


def test_concurrent_requests_are_serialised_by_the_engine(fake, version, load):
    v, manifest = version("yuv420sp")
    device, reference = load("mxsdk", v, manifest), load("onnxruntime", v, manifest)
    image = jpeg()
    expected = record_reference(fake, reference, image)
    fake.call_sleep_s = 0.01

    def three(_) -> list[dict]:
        return [device.detect(image) for _ in range(3)]

    with ThreadPoolExecutor(8) as pool:
        results = [result for batch in pool.map(three, range(8)) for result in batch]

    assert results == [expected] * 24
    assert len(fake.sent) == 24 and not fake.errors


def test_one_manager_serves_every_loaded_version(fake, version, load):
    first, second = version("yuv420sp"), version("rgb")
    load("mxsdk", *first)
    load("mxsdk", *second)

    assert fake.init_calls == 1
    assert set(fake.pipelines) == {b"ssdstack_demo_v1", b"ssdstack_demo_v2"}
    mxsdk.close_shared_manager()
    assert fake.destroy_calls == 1 and not fake.pipelines


@pytest.mark.parametrize("knob, value, match", [
    ("result_error", (1001, "plugin failed"), "1001"),
    ("send_ret", -1, "SendDataWithUniqueId"),
])
def test_sdk_error_codes_become_service_unavailable(fake, version, load, knob, value, match):
    v, manifest = version("yuv420sp")
    device = load("mxsdk", v, manifest)
    image = jpeg()
    recording.write_json_recording(fake.recordings_dir, image, {})
    setattr(fake, knob, value)

    with pytest.raises(ServiceUnavailable, match=match):
        device.detect(image)


def test_no_result_within_the_timeout_is_an_upstream_timeout(fake, version, load):
    v, manifest = version("yuv420sp")
    device = load("mxsdk", v, manifest, timeout_ms=100)
    image = jpeg()
    recording.write_json_recording(fake.recordings_dir, image, {})
    fake.result_delay_ms = 5000

    with pytest.raises(UpstreamTimeout, match="100 ms"):
        device.detect(image)


def test_a_tensor_send_failure_and_a_stream_that_never_answers(fake, version, load):
    v, manifest = version("rgb")
    device = load("mxsdk", v, manifest, timeout_ms=200)
    image = jpeg()
    fake.send_ret = 1  # SendProtobuf answers an error code: 0 is success, failures are positive
    with pytest.raises(ServiceUnavailable, match="SendProtobuf returned 1"):
        device.detect(image)

    # GetProtobuf has no timeout: while one request waits on it, the others give up after theirs.
    fake.send_ret = None
    resized = resize_stretch(decode_image(image), 160)
    recording.write_tensor_recording(fake.recordings_dir, resized.tobytes(), [np.zeros((1, 540, 4)),
                                                                              np.zeros((1, 540, 3))])
    fake.result_delay_ms = 1500
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(device.detect, image)
        _wait_until_inside_the_sdk()
        with pytest.raises(UpstreamTimeout, match="still busy"):
            pool.submit(device.detect, image).result()
        assert not slow.done()  # it gave up while the slow call was still inside the SDK
        assert slow.result()["detections"] == []


def _wait_until_inside_the_sdk(limit_s: float = 10.0) -> None:
    """Bounded wait until a call holds the fake SDK's re-entry guard (the slow request is in)."""
    import StreamManagerApi

    deadline = time.monotonic() + limit_s
    while not StreamManagerApi._GUARD.locked():
        assert time.monotonic() < deadline, "the slow request never reached the SDK"
        time.sleep(0.01)


def test_the_postprocessor_library_is_found_in_the_sdk(fake, version, load, monkeypatch, tmp_path):
    v, manifest = version("yuv420sp")
    sdk = tmp_path / "mxVision"
    monkeypatch.setenv("MX_SDK_HOME", str(sdk))
    with pytest.raises(BackendUnavailable, match="modelpostprocessors/libSsdMobilenetFpn_MindsporePost.so"):
        load("mxsdk", v, manifest)

    library = sdk / "lib" / "modelpostprocessors" / "libSsdMobilenetFpn_MindsporePost.so"
    library.parent.mkdir(parents=True)
    library.write_bytes(b"\x7fELF")
    load("mxsdk", v, manifest)
    assert fake.pipelines[STREAM]["mxpi_objectpostprocessor0"]["props"]["postProcessLibPath"] == str(library)


@pytest.mark.parametrize("class_id, class_name", [(7, None), (1, "not-a-label")])
def test_objects_of_other_classes_are_refused(fake, version, load, class_id, class_name):
    v, manifest = version("yuv420sp")
    device = load("mxsdk", v, manifest)
    image = jpeg()
    name = class_name or manifest["labels"][0]
    recording.write_json_recording(fake.recordings_dir, image, [{
        "x0": 1.0, "y0": 2.0, "x1": 30.0, "y1": 40.0,
        "classVec": [{"classId": class_id, "className": name, "confidence": 0.9}]}])

    with pytest.raises(ServiceUnavailable, match=f"class {class_id}"):
        device.detect(image)


@pytest.mark.parametrize("knob, value, match", [("init_ret", 5, "InitManager failed with 5"),
                                                ("create_ret", 3, "error 3")])
def test_a_manager_or_stream_failure_refuses_the_load(fake, version, load, knob, value, match):
    v, manifest = version("yuv420sp")
    setattr(fake, knob, value)

    with pytest.raises(ServiceUnavailable, match=match):
        load("mxsdk", v, manifest)


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return jpeg(exif=exif.tobytes())


@pytest.mark.parametrize("make, size", [
    (lambda: jpeg(format="PNG"), (320, 240)),
    (lambda: jpeg(progressive=True), (320, 240)),
    (lambda: convert_mode(jpeg(), "CMYK"), (320, 240)),
    (exif_rotated, (240, 320)),  # boxes in the displayed frame, as every engine gives them
], ids=["png", "progressive", "cmyk", "exif-rotated"])
def test_dvpp_gets_a_baseline_jpeg_of_what_its_decoder_cannot_take(fake, version, load, make, size):
    v, manifest = version("yuv420sp")
    device = load("mxsdk", v, manifest)
    data = make()
    sent, width, height = baseline_jpeg(data, MAX_PIXELS, exif_transpose=True)
    recording.write_json_recording(fake.recordings_dir, sent, {})

    result = device.detect(data)

    assert (result["width"], result["height"]) == (width, height) == size
    assert fake.sent == [(STREAM, sent)]
    info = dvpp_jpeg_info(sent, MAX_PIXELS)
    assert (info.sampling, info.orientation) == ("4:2:0", 1)


@pytest.mark.parametrize("data, match", [
    (b"not an image at all", "not an image Pillow can decode"),
    (jpeg(16, 16), "32x32 to 8192x8192"),
    (jpeg(16, 16, format="PNG"), "32x32 to 8192x8192"),
], ids=["garbage", "small-jpeg", "small-png"])
def test_dvpp_refuses_what_no_decoder_can_take(fake, version, load, data, match):
    v, manifest = version("yuv420sp")
    device = load("mxsdk", v, manifest)

    with pytest.raises(InvalidImage, match=match):
        device.detect(data)
    assert not fake.sent


def test_dvpp_takes_grayscale_and_the_stored_frame_of_a_rotated_jpeg(fake, version, load):
    v, manifest = version("yuv420sp")
    device = load("mxsdk", v, manifest)
    gray, rotated = convert_mode(jpeg(), "L"), exif_rotated()
    for image in (gray, rotated):
        recording.write_json_recording(fake.recordings_dir, image, {})

    assert device.detect(gray)["detections"] == []
    result = device.detect(rotated, exif_transpose=False)
    assert (result["width"], result["height"]) == (320, 240)
    assert fake.sent == [(STREAM, gray), (STREAM, rotated)]


def test_an_om_for_another_chip_is_refused(fake, version, load, monkeypatch):
    v, manifest = version("yuv420sp")
    monkeypatch.setenv("FAKE_NPU_CHIP", "310")

    with pytest.raises(Conflict, match=r"built for Ascend310P3, .* NPU is Ascend310:"):
        load("mxsdk", v, manifest)


def test_no_visible_npu_is_backend_unavailable(fake, version, load, monkeypatch):
    v, manifest = version("yuv420sp")
    monkeypatch.setenv("FAKE_NPU_COUNT", "0")

    with pytest.raises(BackendUnavailable, match="no NPU"):
        load("mxsdk", v, manifest)
    assert fake.init_calls == 0


@pytest.mark.parametrize("image_format, preprocessing, match", [
    ("rgb", "dvpp", "needs an .om converted with image_format yuv420sp"),
    ("yuv420sp", "cpu", "expects yuv420sp"),
])
def test_preprocessing_must_suit_the_om(fake, version, load, image_format, preprocessing, match):
    v, manifest = version(image_format)

    with pytest.raises(Conflict, match=match):
        load("mxsdk", v, manifest, preprocessing=preprocessing)


def test_a_version_without_an_om(fake, version, load, tmp_path):
    v, manifest = version(atc=False)

    with pytest.raises(Conflict, match="no serving_om artefact"):
        load("mxsdk", v, manifest)
    engine = select_engine("auto", {"mxsdk": {"work_dir": tmp_path / "work"}}, manifest)
    assert mxsdk.MxSdkEngine().is_available()
    assert isinstance(engine, OnnxRuntimeEngine)
