"""The Open Inference Protocol (KServe v2) on the gateway, short of an inferencer: bodies
as tritonclient builds them read back to the same image and options, responses that
tritonclient reads back to the detections, and every refusal a 400 (or 401/404/503) in
the protocol's error shape that leaves nothing behind. tests/integration/test_oip_client.py
runs tritonclient against the real stack."""
from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
import tritonclient.http as triton

from gateway.oip import HEADER_LENGTH, infer_response, parse_infer
from ingest_gateway import KEY
from ssdstack.detect_protocol import DetectAnswer
from ssdstack.errors import InvalidInput
from ssdstack.model_store import ModelStore

IMAGE = b"\xff\xd8\xff\xe0 not UTF-8: \x80\x81 an image file's bytes"
ANSWER = DetectAnswer(model="demo", version=3, width=640, height=480, detections=[
    {"label": "cat", "label_id": 2, "score": 0.9731, "box": [10.25, 20.5, 300.75, 400.0]},
    {"label": "dog", "label_id": 1, "score": 0.4102, "box": [0.0, 1.5, 639.0, 479.0]},
])


def triton_body(inputs, outputs=None, **parameters) -> tuple[bytes, str | None]:
    """What tritonclient sends for ``inputs``: the body and its header-length header."""
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs,
                                                                         parameters=parameters or None)
    return body, None if json_size is None else str(json_size)


def bytes_input(element: bytes, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([element], dtype=object), binary_data=binary)
    return tensor


def pixels_input(pixels: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("pixels", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    return tensor


def test_an_encoded_image_in_binary_form_is_read_back_with_its_options():
    body, header = triton_body([bytes_input(IMAGE)], score_threshold=0.3, max_detections=7)
    asked = parse_infer(body, header)
    assert asked.image == IMAGE and asked.pixels is None
    assert asked.overrides == {"score_threshold": 0.3, "iou_threshold": None, "max_detections": 7}
    # No outputs named: tritonclient asks for every output in binary form.
    assert asked.outputs == {"boxes": True, "scores": True, "labels": True, "label_names": True}


def test_an_encoded_image_in_json_is_base64_text():
    body, header = triton_body([bytes_input(base64.b64encode(IMAGE), binary=False)],
                               outputs=[triton.InferRequestedOutput("scores", binary_data=False)])
    assert header is None
    asked = parse_infer(body, header)
    assert asked.image == IMAGE and asked.outputs == {"scores": False}


@pytest.mark.parametrize("binary", [True, False])
def test_a_pixel_tensor_is_read_back_row_by_row(binary):
    pixels = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
    asked = parse_infer(*triton_body([pixels_input(pixels, binary)]))
    assert asked.pixels == [5, 4]
    assert asked.image == bytes(range(60))  # row by row, channels innermost


@pytest.mark.parametrize("binary", [True, False])
def test_the_response_reads_back_in_tritonclient_as_the_detections(binary):
    body, header = triton_body([bytes_input(IMAGE)], outputs=[
        triton.InferRequestedOutput(name, binary_data=binary) for name in ("boxes", "scores", "labels", "label_names")])
    asked = parse_infer(body, header)
    asked.id = "request-7"
    content, headers, media_type = infer_response(ANSWER, asked)
    assert media_type == ("application/octet-stream" if binary else "application/json")
    result = triton.InferResult.from_response_body(content, header_length=headers.get(HEADER_LENGTH) and int(
        headers[HEADER_LENGTH]))
    assert result.get_response()["model_version"] == "3" and result.get_response()["id"] == "request-7"
    np.testing.assert_array_equal(result.as_numpy("boxes"), np.float32([[10.25, 20.5, 300.75, 400.0],
                                                                        [0.0, 1.5, 639.0, 479.0]]))
    np.testing.assert_array_equal(result.as_numpy("scores"), np.float32([0.9731, 0.4102]))
    assert result.as_numpy("labels").dtype == np.int64 and result.as_numpy("labels").tolist() == [2, 1]
    assert [bytes(name).decode() if binary else name for name in result.as_numpy("label_names")] == ["cat", "dog"]


def test_no_detections_are_empty_tensors_of_the_right_shape():
    asked = parse_infer(*triton_body([bytes_input(IMAGE)]))
    content, headers, _ = infer_response(DetectAnswer(model="demo", version=1, width=1, height=1, detections=[]),
                                         asked)
    result = triton.InferResult.from_response_body(content, header_length=int(headers[HEADER_LENGTH]))
    assert result.as_numpy("boxes").shape == (0, 4) and result.as_numpy("label_names").shape == (0,)


def hand_body(inputs: list[dict], binary: bytes = b"", **request) -> tuple[bytes, str | None]:
    header = json.dumps({"inputs": inputs, **request}).encode()
    return header + binary, str(len(header)) if binary else None


ELEMENT = struct.pack("<I", len(IMAGE)) + IMAGE
REFUSED = {
    "wrong datatype": (hand_body([{"name": "image", "datatype": "FP32", "shape": [1], "data": [1.0]}]),
                       "must be BYTES"),
    "wrong shape": (hand_body([{"name": "image", "datatype": "BYTES", "shape": [2],
                                "parameters": {"binary_data_size": len(ELEMENT)}}], ELEMENT), "shape [1]"),
    "wrong input name": (hand_body([{"name": "input_0", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}]),
                         "unknown input 'input_0'"),
    "two inputs": (hand_body([{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}] * 2),
                   "2 inputs"),
    "pixels not RGB": (hand_body([{"name": "pixels", "datatype": "UINT8", "shape": [2, 2, 4], "data": [0] * 16}]),
                       "[H, W, 3]"),
    "pixels as floats": (hand_body([{"name": "pixels", "datatype": "UINT8", "shape": [1, 1, 3],
                                     "data": [0.5, 1, 2]}]), "integers from 0 to 255"),
    "pixels over 255": (hand_body([{"name": "pixels", "datatype": "UINT8", "shape": [1, 1, 3],
                                    "data": [0, 256, 2]}]), "integers from 0 to 255"),
    "pixel count": (hand_body([{"name": "pixels", "datatype": "UINT8", "shape": [2, 2, 3], "data": [0] * 11}]),
                    "12 elements"),
    "not base64": (hand_body([{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["not base64!"]}]),
                   "base64"),
    "size mismatch": (hand_body([{"name": "image", "datatype": "BYTES", "shape": [1],
                                  "parameters": {"binary_data_size": 99}}], ELEMENT), "binary_data_size 99"),
    "element length": (hand_body([{"name": "image", "datatype": "BYTES", "shape": [1],
                                   "parameters": {"binary_data_size": len(ELEMENT)}}], ELEMENT[1:] + b"x"),
                       "4-byte little-endian length"),
    "unknown parameter": (hand_body([{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}],
                                    parameters={"score_treshold": 0.5}), "score_treshold"),
    "threshold out of range": (hand_body([{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}],
                                         parameters={"score_threshold": 2}), "score_threshold"),
    "unknown output": (hand_body([{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}],
                                 outputs=[{"name": "masks"}]), "unknown output 'masks'"),
    "not JSON": ((b"\x00\x01", None), "not JSON"),
    "header past the body": ((b"{}", "99"), "Inference-Header-Content-Length"),
    "deep nesting": ((b"[" * 100_000 + b"]" * 100_000, None), "request"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_malformed_request_is_refused_naming_the_problem(case):
    (body, header), named = REFUSED[case]
    with pytest.raises(InvalidInput) as refused:
        parse_infer(body, header)
    assert named in refused.value.message


@pytest.fixture
def stored(gateway, publish_model, tmp_path):
    """The gateway, with model ``demo`` version 1 in its store (not deployed)."""
    publish_model(ModelStore(tmp_path / "store"))
    return gateway


def test_health_and_server_metadata_need_no_key(gateway):
    client, _, _ = gateway
    assert client.get("/v2/health/live").json() == {"live": True}
    not_ready = client.get("/v2/health/ready")  # no inferencer heartbeat
    assert not_ready.status_code == 503 and not_ready.json() == {"ready": False}
    assert client.get("/v2").json() == {"name": "ssdstack", "version": "0.1.0", "extensions": ["binary_tensor_data"]}


def test_model_metadata_names_the_inputs_and_outputs(stored):
    client, _, _ = stored
    for path in ("/v2/models/demo", "/v2/models/demo/versions/1"):
        metadata = client.get(path, headers=KEY).json()
        assert metadata["versions"] == ["1"]
        assert {(t["name"], t["datatype"]) for t in metadata["inputs"]} == {("image", "BYTES"), ("pixels", "UINT8")}
        assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == [
            ("boxes", "FP32", [-1, 4]), ("scores", "FP32", [-1]), ("labels", "INT64", [-1]),
            ("label_names", "BYTES", [-1])]


@pytest.mark.parametrize("path, status, message", [
    ("/v2/models/nothing", 404, "no model named 'nothing'"),
    ("/v2/models/demo/versions/2", 404, "has no version 2"),
    ("/v2/models/demo/versions/v1", 400, "version"),
    ("/v2/models/demo/ready", 400, "no deployed version"),
])
def test_errors_are_in_the_protocol_shape(stored, path, status, message):
    client, _, _ = stored
    answer = client.get(path, headers=KEY)
    assert answer.status_code == status
    assert list(answer.json()) == ["error"] and message in answer.json()["error"]


def test_infer_needs_a_key_and_answers_in_the_protocol_shape(stored):
    client, what_is_there, _ = stored
    before = what_is_there()
    body, header = triton_body([bytes_input(IMAGE)])
    headers = {HEADER_LENGTH: header, "Content-Type": "application/octet-stream"}
    refused = client.post("/v2/models/demo/infer", content=body, headers=headers)
    assert refused.status_code == 401 and "API key" in refused.json()["error"]
    no_inferencer = client.post("/v2/models/demo/infer", content=body, headers=dict(headers, **KEY))
    assert no_inferencer.status_code == 503 and "no inferencer" in no_inferencer.json()["error"]
    assert what_is_there() == before


@pytest.mark.parametrize("case", ["wrong datatype", "wrong input name", "size mismatch", "unknown output"])
def test_a_malformed_infer_is_a_400_that_leaves_nothing(stored, case):
    client, what_is_there, _ = stored
    before = what_is_there()
    (body, header), named = REFUSED[case]
    headers = dict(KEY, **({HEADER_LENGTH: header} if header else {}))
    answer = client.post("/v2/models/demo/infer", content=body, headers=headers)
    assert answer.status_code == 400 and named in answer.json()["error"]
    assert what_is_there() == before


def test_a_version_that_is_not_deployed_does_not_infer(stored):
    client, what_is_there, _ = stored
    before = what_is_there()
    body, header = triton_body([bytes_input(IMAGE)])
    answer = client.post("/v2/models/demo/versions/1/infer", content=body, headers=dict(KEY, **{HEADER_LENGTH: header}))
    assert answer.status_code == 400 and "version 1 is not deployed" in answer.json()["error"]
    assert what_is_there() == before
