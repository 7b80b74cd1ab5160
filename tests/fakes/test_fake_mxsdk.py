"""The MindX SDK test fake accepts what the vendor's samples do and rejects the rest loudly."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from .ascend import recording

JPEG = b"\xff\xd8\xff\xe0 not really a jpeg but starts like one"


@pytest.fixture
def mx():
    """The fake's modules (``api``, ``pb``) and its ``FAKE`` state, reset."""
    folder = str(recording.fake_mxsdk_path())
    sys.path.insert(0, folder)
    try:
        api = importlib.import_module("StreamManagerApi")
        pb = importlib.import_module("MxpiDataType_pb2")
        assert Path(api.__file__).parent == Path(folder), "imported something other than the fake"
        api.FAKE.reset()
        yield SimpleNamespace(api=api, pb=pb, FAKE=api.FAKE)
        api.FAKE.reset()
    finally:
        sys.path.remove(folder)


def image_pipeline(folder: Path, resize_width: str = "320") -> dict:
    for name in ("model.om", "post.cfg", "labels.names"):
        (folder / name).write_text("dummy")
    return {"detect": {
        "stream_config": {"deviceId": "0"},
        "appsrc0": {"factory": "appsrc", "next": "mxpi_imagedecoder0"},
        "mxpi_imagedecoder0": {"factory": "mxpi_imagedecoder", "next": "mxpi_imageresize0"},
        "mxpi_imageresize0": {"factory": "mxpi_imageresize", "next": "mxpi_tensorinfer0",
                              "props": {"resizeWidth": resize_width, "resizeHeight": "320"}},
        "mxpi_tensorinfer0": {"factory": "mxpi_tensorinfer", "next": "mxpi_objectpostprocessor0",
                              "props": {"modelPath": str(folder / "model.om")}},
        "mxpi_objectpostprocessor0": {"factory": "mxpi_objectpostprocessor", "next": "mxpi_dataserialize0",
                                      "props": {"postProcessConfigPath": str(folder / "post.cfg"),
                                                "labelPath": str(folder / "labels.names"),
                                                "postProcessLibPath": "libSsdMobilenetFpn_MindsporePost.so"}},
        "mxpi_dataserialize0": {"factory": "mxpi_dataserialize", "next": "appsink0",
                                "props": {"outputDataKeys": "mxpi_objectpostprocessor0"}},
        "appsink0": {"factory": "appsink"},
    }}


def tensor_pipeline(folder: Path) -> dict:
    (folder / "model.om").write_text("dummy")
    return {"infer": {
        "appsrc0": {"factory": "appsrc", "next": "mxpi_tensorinfer0"},
        "mxpi_tensorinfer0": {"factory": "mxpi_tensorinfer", "next": "appsink0",
                              "props": {"modelPath": str(folder / "model.om")}},
        "appsink0": {"factory": "appsink"},
    }}


def started(mx, pipeline: dict):
    manager = mx.api.StreamManagerApi()
    assert manager.InitManager() == 0
    assert manager.CreateMultipleStreams(json.dumps(pipeline).encode()) == 0, mx.FAKE.errors
    return manager


def jpeg_input(mx, data: bytes = JPEG):
    data_input = mx.api.MxDataInput()
    data_input.data = data
    return data_input


def tensor_vector(mx, array: np.ndarray, data_type: int = 4, size: int | None = None):
    packages = mx.pb.MxpiTensorPackageList()
    tensor = packages.tensorPackageVec.add().tensorVec.add()
    tensor.deviceId, tensor.memType, tensor.tensorDataType = 0, 0, data_type
    tensor.tensorShape.extend(array.shape)
    tensor.dataStr = array.tobytes()
    tensor.tensorDataSize = len(tensor.dataStr) if size is None else size
    item = mx.api.MxProtobufIn()
    item.key, item.type, item.protobuf = b"appsrc0", b"MxTools.MxpiTensorPackageList", packages.SerializeToString()
    vector = mx.api.InProtobufVector()
    vector.push_back(item)
    return vector


def test_image_round_trip_answers_the_recording(mx, tmp_path):
    mx.FAKE.recordings_dir = tmp_path / "rec"
    detections = [{"label": "cat", "label_id": 1, "score": 0.9, "box": [1, 2, 30, 40]}]
    recording.write_json_recording(tmp_path / "rec", JPEG, recording.mxpi_objects(detections, ["bg", "cat"]))
    manager = started(mx, image_pipeline(tmp_path))
    unique_id = manager.SendDataWithUniqueId(b"detect", 0, jpeg_input(mx))
    assert unique_id >= 0
    result = manager.GetResultWithUniqueId(b"detect", unique_id, 3000)
    assert (result.errorCode, result.errorMsg) == (0, "")
    assert json.loads(result.data)["MxpiObject"][0]["classVec"][0] == {"classId": 1, "className": "cat",
                                                                       "confidence": 0.9}
    assert manager.GetResultWithUniqueId(b"detect", unique_id, 3000).errorCode != 0  # fetched already
    recording.write_json_recording(tmp_path / "rec", JPEG, None)
    assert manager.SendData(b"detect", 0, jpeg_input(mx)) == 0
    assert manager.GetResult(b"detect", 0, 3000).data == b"{}"
    assert mx.FAKE.sent == [(b"detect", JPEG)] * 2 and b"detect" in mx.FAKE.pipelines
    assert manager.DestroyAllStreams() == 0 and mx.FAKE.destroy_calls == 1


def test_programming_errors_raise(mx, tmp_path):
    with pytest.raises(TypeError):
        jpeg_input(mx, "a str, not bytes")
    with pytest.raises(RuntimeError, match="before InitManager"):
        mx.api.StreamManagerApi().CreateMultipleStreams(b"{}")
    manager = started(mx, image_pipeline(tmp_path))
    with pytest.raises(TypeError):
        manager.SendDataWithUniqueId(b"detect", False, jpeg_input(mx))
    with pytest.raises(TypeError):
        manager.SendDataWithUniqueId("detect", 0, jpeg_input(mx))
    with pytest.raises(ValueError):
        manager.GetResult(b"detect", 0, 0)


def test_unknown_stream_is_an_error_code(mx, tmp_path):
    manager = started(mx, image_pipeline(tmp_path))
    assert manager.SendDataWithUniqueId(b"nope", 0, jpeg_input(mx)) < 0
    assert manager.GetResultWithUniqueId(b"nope", 0, 3000).errorCode != 0
    assert "does not exist" in mx.FAKE.errors[0]


def test_resize_width_must_be_a_multiple_of_16(mx, tmp_path):
    manager = mx.api.StreamManagerApi()
    assert manager.InitManager() == 0
    pipeline = json.dumps(image_pipeline(tmp_path, resize_width="300")).encode()
    assert manager.CreateMultipleStreams(pipeline) != 0
    assert "resizeWidth" in mx.FAKE.errors[-1] and not mx.FAKE.pipelines


def test_non_jpeg_bytes_give_a_negative_id(mx, tmp_path):
    manager = started(mx, image_pipeline(tmp_path))
    assert manager.SendDataWithUniqueId(b"detect", 0, jpeg_input(mx, b"\x89PNG\r\n")) < 0
    assert "JPEG" in mx.FAKE.errors[-1] and not mx.FAKE.sent


def test_missing_recording_is_an_error_code(mx, tmp_path):
    mx.FAKE.recordings_dir = tmp_path
    manager = started(mx, image_pipeline(tmp_path))
    result = manager.GetResultWithUniqueId(b"detect", manager.SendDataWithUniqueId(b"detect", 0, jpeg_input(mx)), 3000)
    assert result.errorCode != 0 and recording.sha256_hex(JPEG) in result.errorMsg


def test_device_time_beyond_the_timeout_times_out(mx, tmp_path):
    mx.FAKE.recordings_dir = tmp_path
    recording.write_json_recording(tmp_path, JPEG, [])
    manager = started(mx, image_pipeline(tmp_path))
    unique_id = manager.SendDataWithUniqueId(b"detect", 0, jpeg_input(mx))
    mx.FAKE.result_delay_ms = 5000
    result = manager.GetResultWithUniqueId(b"detect", unique_id, 50)
    assert result.errorCode == mx.api.TIMEOUT_CODE and "timeout" in result.errorMsg
    mx.FAKE.result_delay_ms = 0
    assert manager.GetResultWithUniqueId(b"detect", unique_id, 50).errorCode == 0  # still waiting to be fetched


def test_two_threads_inside_the_api_at_once_raise(mx, tmp_path):
    manager = started(mx, image_pipeline(tmp_path))
    mx.FAKE.call_sleep_s = 0.05
    barrier, raised = threading.Barrier(2), []

    def send() -> None:
        barrier.wait()
        try:
            manager.SendDataWithUniqueId(b"detect", 0, jpeg_input(mx))
        except RuntimeError as exc:
            raised.append(str(exc))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert raised and "two threads at once" in raised[0]


def test_tensor_round_trip_answers_the_recording(mx, tmp_path):
    mx.FAKE.recordings_dir = tmp_path
    image = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    outputs = [np.ones((1, 5, 4), np.float32), np.full((1, 5, 3), 0.5, np.float32)]
    recording.write_tensor_recording(tmp_path, image.tobytes(), outputs)
    manager = started(mx, tensor_pipeline(tmp_path))
    assert manager.SendProtobuf(b"infer", 0, tensor_vector(mx, image)) == 0
    assert manager.SendDataWithUniqueId(b"infer", 0, jpeg_input(mx)) < 0  # not an image stream
    keys = mx.api.StringVector()
    keys.push_back(b"mxpi_tensorinfer0")
    answer = manager.GetProtobuf(b"infer", 0, keys)
    assert answer.size() == len(answer) == 1 and answer[0].errorCode == 0, answer[0].errorMsg
    assert answer[0].type == b"MxTools.MxpiTensorPackageList"
    tensors = mx.pb.MxpiTensorPackageList.FromString(answer[0].messageBuf).tensorPackageVec[0].tensorVec
    for tensor, expected in zip(tensors, outputs, strict=True):
        assert tensor.tensorDataType == 0 and tuple(tensor.tensorShape) == expected.shape
        np.testing.assert_array_equal(np.frombuffer(tensor.dataStr, np.float32).reshape(expected.shape), expected)
    assert manager.GetProtobuf(b"infer", 0, keys)[0].errorCode != 0  # nothing left to fetch


def test_tensor_size_mismatch_is_rejected(mx, tmp_path):
    manager = started(mx, tensor_pipeline(tmp_path))
    image = np.zeros((1, 4, 4, 3), np.uint8)
    assert manager.SendProtobuf(b"infer", 0, tensor_vector(mx, image, size=10)) < 0
    assert manager.SendProtobuf(b"infer", 0, tensor_vector(mx, image, data_type=0)) < 0  # float32 needs 4x bytes
    assert all("disagree" in error for error in mx.FAKE.errors) and not mx.FAKE.sent
    with pytest.raises(TypeError):
        mx.pb.MxpiTensor().dataStr = "not bytes"


def test_a_subprocess_is_configured_by_the_environment(tmp_path):
    recording.write_behaviour(tmp_path, init_ret=5)
    script = ("import StreamManagerApi as s\n"
              "print(s.StreamManagerApi().InitManager(), s.FAKE.recordings_dir, s.FAKE.errors)")
    env = dict(os.environ, PYTHONPATH=str(recording.fake_mxsdk_path()), FAKE_MXSDK_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"5 {tmp_path} ['InitManager: 5 forced")
