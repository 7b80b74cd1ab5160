"""The Open Inference Protocol on the real stack, spoken by a real client
(``tritonclient[http]``): its answers equal ``/v1/detect``'s for the same image, in binary
and JSON form, for an encoded image and for a pixel tensor."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from itest import API_KEY, MODEL

pytestmark = pytest.mark.slow


def key() -> dict:
    """The key's header, a fresh dict each call: tritonclient writes its
    Inference-Header-Content-Length into the headers it is given."""
    return {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def served(pipeline, client, stack) -> tuple[triton.InferenceServerClient, int, bytes]:
    """(a tritonclient for the stack, the deployed version, a validation image)."""
    version = pipeline["result"]["version"]
    client.deploy(MODEL, version)
    image = sorted((stack.store_dir / "datasets" / "synth" / "val").glob("*.jpg"))[0].read_bytes()
    oip = triton.InferenceServerClient(f"127.0.0.1:{stack.gateway_port}", network_timeout=120)
    yield oip, version, image
    oip.close()


def as_v1(result: triton.InferResult, binary: bool = True) -> list[dict]:
    """The response's tensors as ``/v1/detect`` lists detections."""
    names = [bytes(name).decode() if binary else str(name) for name in result.as_numpy("label_names")]
    return [{"label": name, "label_id": int(label), "score": float(score), "box": [float(v) for v in box]}
            for name, label, score, box in zip(names, result.as_numpy("labels"), result.as_numpy("scores"),
                                               result.as_numpy("boxes"))]


def rounded(detections: list[dict]) -> list[dict]:
    """``/v1/detect``'s values as FP32 tensors carry them."""
    return [dict(d, score=float(np.float32(d["score"])), box=[float(np.float32(v)) for v in d["box"]])
            for d in detections]


def test_health_metadata_and_readiness(served):
    oip, version, _ = served
    assert oip.is_server_live() and oip.is_server_ready()
    assert "binary_tensor_data" in oip.get_server_metadata()["extensions"]
    metadata = oip.get_model_metadata(MODEL, headers=key())
    assert str(version) in metadata["versions"]
    assert oip.is_model_ready(MODEL, headers=key())
    assert oip.is_model_ready(MODEL, str(version), headers=key())
    assert not oip.is_model_ready("never-trained", headers=key())


@pytest.mark.parametrize("binary", [True, False])
def test_an_encoded_image_gets_the_v1_answer(served, client, binary):
    oip, version, image = served
    tensor = triton.InferInput("image", [1], "BYTES")
    element = image if binary else base64.b64encode(image)
    tensor.set_data_from_numpy(np.array([element], dtype=object), binary_data=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary)
               for name in ("boxes", "scores", "labels", "label_names")]
    result = oip.infer(MODEL, [tensor], outputs=outputs, headers=key(), request_id="same-image")
    expected = client.detect(image, model=MODEL)
    assert expected["detections"], "a trained model finds something in a validation image"
    assert as_v1(result, binary) == rounded(expected["detections"])
    assert result.get_response()["model_version"] == str(version) and result.get_response()["id"] == "same-image"


def test_a_pixel_tensor_gets_the_answer_of_its_lossless_image(served, client):
    oip, version, image = served
    pixels = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
    tensor = triton.InferInput("pixels", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels)
    result = oip.infer(MODEL, [tensor], model_version=str(version), headers=key(),
                       parameters={"score_threshold": 0.2, "max_detections": 5})
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, "PNG")
    expected = client.detect(png.getvalue(), model=MODEL, score_threshold=0.2, max_detections=5)
    assert as_v1(result) == rounded(expected["detections"])
    assert len(expected["detections"]) <= 5 and all(d["score"] >= 0.2 for d in expected["detections"])


def test_a_wrong_datatype_is_a_400_the_client_reports(served):
    oip, _, _ = served
    tensor = triton.InferInput("image", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 4), np.float32))
    with pytest.raises(InferenceServerException) as refused:
        oip.infer(MODEL, [tensor], headers=key())
    assert refused.value.status() == "400" and "must be BYTES" in refused.value.message()
