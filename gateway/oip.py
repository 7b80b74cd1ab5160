"""The KServe Open Inference Protocol (v2) over HTTP for detection: an inference request
in, the image it carries out; detections in, the inference response out.

A request is JSON: ``{"id"?, "parameters"?, "inputs": [{"name", "datatype", "shape",
"data"?, "parameters"?}], "outputs"?: [{"name", "parameters"?}]}``. With the binary
tensor extension (what ``tritonclient`` sends by default) the body is that JSON, its
length in the ``Inference-Header-Content-Length`` header, followed by the bytes of each
input whose ``parameters.binary_data_size`` gives their length, in the order listed.

Exactly one input, either of:

* ``image``: ``BYTES`` shape ``[1]``, an encoded image file (any format Pillow reads). In
  binary form a ``BYTES`` element is a 4-byte little-endian length and the bytes; in JSON
  an image is not text, so its element is the file in base64.
* ``pixels``: ``UINT8`` shape ``[H, W, 3]``, RGB, row by row.

Request parameters ``score_threshold``, ``iou_threshold`` and ``max_detections`` override
the model's postprocess, as the query of ``/v1/detect`` does. The outputs, each of ``N``
detections, best first: ``boxes`` ``FP32 [N, 4]`` (pixels: x_min, y_min, x_max, y_max),
``scores`` ``FP32 [N]``, ``labels`` ``INT64 [N]`` (1..K) and ``label_names`` ``BYTES
[N]``. An output is sent in binary form when its ``parameters.binary_data`` is true, or,
for outputs not listed, when the request's ``parameters.binary_data_output`` is.

Errors are :class:`~ssdstack.errors.InvalidInput` (400) naming what is wrong; the gateway
answers them in the protocol's shape, ``{"error": "<message>"}``.
"""
from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ssdstack.detect_protocol import DetectAnswer
from ssdstack.errors import InvalidInput

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_EXTENSION = "binary_tensor_data"
IMAGE_INPUT, PIXELS_INPUT = "image", "pixels"
INPUTS = [{"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [1]},
          {"name": PIXELS_INPUT, "datatype": "UINT8", "shape": [-1, -1, 3]}]
OUTPUTS = [{"name": "boxes", "datatype": "FP32", "shape": [-1, 4]},
           {"name": "scores", "datatype": "FP32", "shape": [-1]},
           {"name": "labels", "datatype": "INT64", "shape": [-1]},
           {"name": "label_names", "datatype": "BYTES", "shape": [-1]}]
_TAKES = "this model takes 'image' (BYTES [1], an encoded image file) or 'pixels' (UINT8 [H, W, 3], RGB)"
# Nesting in an inference request's JSON: a tensor's data nests once per axis.
MAX_JSON_DEPTH = 16


class _Tensor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    datatype: str
    shape: list[int]
    data: list | None = None
    parameters: dict = Field(default_factory=dict)


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict = Field(default_factory=dict)


class _Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score_threshold: float | None = Field(default=None, ge=0, le=1)
    iou_threshold: float | None = Field(default=None, gt=0, le=1)
    max_detections: int | None = Field(default=None, ge=1, le=1000)
    binary_data_output: bool = False


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: _Parameters = Field(default_factory=_Parameters)
    inputs: list[_Tensor] = Field(min_length=1)
    outputs: list[_Output] | None = None


@dataclass
class InferRequest:
    """What an inference request asks: ``image`` (file bytes, or raw pixels when
    ``pixels`` gives their ``[H, W]``), the postprocess ``overrides``, and per output
    wanted whether it goes in binary form."""

    image: bytes
    pixels: list[int] | None
    overrides: dict
    outputs: dict[str, bool] = field(default_factory=dict)
    id: str | None = None


def parse_infer(body: bytes, header_length: str | None) -> InferRequest:
    """The request in ``body``; ``header_length``: the ``Inference-Header-Content-Length``
    header (None: the body is all JSON)."""
    header, binary = _split(body, header_length)
    try:
        raw = json.loads(header)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise InvalidInput(f"the inference request is not JSON: {error}") from None
    if _depth(raw) > MAX_JSON_DEPTH:
        raise InvalidInput(f"the inference request nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        request = _Request.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "request"
        raise InvalidInput(f"invalid inference request at {where}: {first['msg']}") from None
    if len(request.inputs) != 1:
        raise InvalidInput(f"{len(request.inputs)} inputs given: {_TAKES}, one of them")
    tensor = request.inputs[0]
    data = _binary_data(tensor, binary)
    if tensor.name == IMAGE_INPUT:
        image, pixels = _image(tensor, data), None
    elif tensor.name == PIXELS_INPUT:
        image, pixels = _pixels(tensor, data), tensor.shape[:2]
    else:
        raise InvalidInput(f"unknown input {tensor.name!r}: {_TAKES}")
    overrides = request.parameters.model_dump(exclude={"binary_data_output"})
    return InferRequest(image=image, pixels=pixels, overrides=overrides, id=request.id,
                        outputs=_outputs(request.outputs, request.parameters.binary_data_output))


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise InvalidInput(f"{HEADER_LENGTH} {header_length!r} is not a length within the body "
                           f"({len(body)} bytes)")
    return body[:int(header_length)], body[int(header_length):]


def _depth(value, level: int = 1) -> int:
    """How deep ``value`` nests, counted no further than one past the bound."""
    if level > MAX_JSON_DEPTH or not isinstance(value, (dict, list)):
        return level
    children = value.values() if isinstance(value, dict) else value
    return max((_depth(child, level + 1) for child in children), default=level)


def _binary_data(tensor: _Tensor, binary: bytes) -> bytes | None:
    """The tensor's bytes from the binary part (None: its data is in the JSON)."""
    extra = set(tensor.parameters) - {"binary_data_size"}
    if extra:
        raise InvalidInput(f"input {tensor.name!r}: parameters {sorted(extra)} are not supported "
                           "(only binary_data_size)")
    size = tensor.parameters.get("binary_data_size")
    if size is None:
        if binary:
            raise InvalidInput(f"{len(binary)} bytes follow the JSON header but no input names a binary_data_size")
        if tensor.data is None:
            raise InvalidInput(f"input {tensor.name!r} has no data and no binary_data_size")
        return None
    if tensor.data is not None:
        raise InvalidInput(f"input {tensor.name!r} has both data and a binary_data_size")
    if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
        raise InvalidInput(f"input {tensor.name!r}: binary_data_size {size!r}, but {len(binary)} bytes follow "
                           "the JSON header")
    return binary


def _image(tensor: _Tensor, data: bytes | None) -> bytes:
    if tensor.datatype != "BYTES" or tensor.shape != [1]:
        raise InvalidInput(f"input 'image' must be BYTES of shape [1] (one encoded image file), got "
                           f"{tensor.datatype} {tensor.shape}")
    if data is None:
        (element,) = _flat(tensor.data, 1, "image")
        if not isinstance(element, str):
            raise InvalidInput("input 'image' in JSON is the image file in base64 text")
        try:
            return base64.b64decode(element, validate=True)
        except binascii.Error as error:
            raise InvalidInput(f"input 'image' in JSON is the image file in base64 text: {error}") from None
    if len(data) < 4 or struct.unpack_from("<I", data)[0] != len(data) - 4:
        raise InvalidInput("input 'image' in binary form is one BYTES element: a 4-byte little-endian length, "
                           "then that many bytes of the image file")
    return data[4:]


def _pixels(tensor: _Tensor, data: bytes | None) -> bytes:
    shape = tensor.shape
    if tensor.datatype != "UINT8" or len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
        raise InvalidInput(f"input 'pixels' must be UINT8 of shape [H, W, 3] (RGB), got {tensor.datatype} {shape}")
    count = shape[0] * shape[1] * 3
    if data is None:
        values = np.asarray(_flat(tensor.data, count, "pixels"))
        if values.dtype.kind not in "iu" or values.min() < 0 or values.max() > 255:
            raise InvalidInput("input 'pixels' must hold integers from 0 to 255")
        return values.astype(np.uint8).tobytes()
    if len(data) != count:
        raise InvalidInput(f"input 'pixels' of shape {shape} is {count} bytes, got {len(data)}")
    return data


def _flat(data: list, count: int, name: str) -> list:
    """``data`` flattened (the protocol allows nested or flat lists), of ``count`` elements."""
    flat = list(data)
    while any(isinstance(item, list) for item in flat):
        flat = [leaf for item in flat for leaf in (item if isinstance(item, list) else [item])]
    if len(flat) != count:
        raise InvalidInput(f"input {name!r}: its shape holds {count} elements, its data {len(flat)}")
    return flat


def _outputs(requested: list[_Output] | None, binary_default: bool) -> dict[str, bool]:
    known = [output["name"] for output in OUTPUTS]
    if requested is None:
        return {name: binary_default for name in known}
    wanted = {}
    for output in requested:
        if output.name not in known:
            raise InvalidInput(f"unknown output {output.name!r}: this model gives {known}")
        extra = set(output.parameters) - {"binary_data"}
        if extra:
            raise InvalidInput(f"output {output.name!r}: parameters {sorted(extra)} are not supported "
                               "(only binary_data)")
        wanted[output.name] = bool(output.parameters.get("binary_data", binary_default))
    return wanted


def infer_response(answer: DetectAnswer, request: InferRequest) -> tuple[bytes, dict[str, str], str]:
    """``(body, headers, media type)`` of the response to ``request`` with ``answer``."""
    detections = answer.detections
    tensors = {
        "boxes": np.array([d.box for d in detections], np.float32).reshape(-1, 4),
        "scores": np.array([d.score for d in detections], np.float32),
        "labels": np.array([d.label_id for d in detections], np.int64),
        "label_names": [d.label for d in detections],
    }
    datatypes = {output["name"]: output["datatype"] for output in OUTPUTS}
    outputs, buffers = [], []
    for name, binary in request.outputs.items():
        value = tensors[name]
        entry = {"name": name, "datatype": datatypes[name],
                 "shape": list(value.shape) if isinstance(value, np.ndarray) else [len(value)]}
        if binary:
            raw = _serialised(value)
            entry["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
        else:
            entry["data"] = value.ravel().tolist() if isinstance(value, np.ndarray) else value
        outputs.append(entry)
    response = {"model_name": answer.model, "model_version": str(answer.version), "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    header = json.dumps(response).encode()
    if not buffers:
        return header, {}, "application/json"
    return header + b"".join(buffers), {HEADER_LENGTH: str(len(header))}, "application/octet-stream"


def _serialised(value) -> bytes:
    """A tensor's binary form: raw little-endian values, or for BYTES each element's
    4-byte little-endian length and bytes."""
    if isinstance(value, np.ndarray):
        return value.astype(value.dtype.newbyteorder("<")).tobytes()
    return b"".join(struct.pack("<I", len(encoded)) + encoded for encoded in (text.encode() for text in value))
