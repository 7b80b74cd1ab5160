"""Strict test fake of MindX SDK (mxVision) ``StreamManagerApi``.

Built from the vendor's documented API and samples; no real SDK was available. It checks
every call the way the SDK would (a nonzero code and a reason in ``FAKE.errors``) and
raises on programming errors (wrong types, no ``InitManager``, two threads inside the API
at once). Inference answers come from recordings keyed by the SHA-256 of the sent bytes:
``<FAKE.recordings_dir>/json/<sha>.json`` and ``<FAKE.recordings_dir>/tensors/<sha>.npz``
(see ``recording.py``). Tests inspect and change the module-level ``FAKE``; a subprocess
is configured with ``FAKE_MXSDK_DIR`` (recordings) and its ``behaviour.json`` (knobs).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import MxpiDataType_pb2 as MxpiDataType

ERROR_CODE = 1  # generic failure code of this fake
TIMEOUT_CODE = 2001
SEND_FAILED = -1  # SendDataWithUniqueId / SendProtobuf failures are negative
TENSOR_TYPE = b"MxTools.MxpiTensorPackageList"
JPEG_SOI = b"\xff\xd8"
FACTORIES = frozenset({"appsrc", "appsink", "mxpi_imagedecoder", "mxpi_imageresize", "mxpi_tensorinfer",
                       "mxpi_objectpostprocessor", "mxpi_dataserialize", "queue"})
# tensorDataType (MindX TensorDataType, the ACL numbering) -> bytes per item:
# float32, float16, int8, int32, uint8.
ITEM_SIZES = {0: 4, 1: 2, 2: 1, 3: 4, 4: 1}
# Plugins must appear in this order along the chain (queues anywhere): GStreamer caps
# negotiation fails otherwise.
_RANKS = {"appsrc": 0, "mxpi_imagedecoder": 1, "mxpi_imageresize": 2, "mxpi_tensorinfer": 3,
          "mxpi_objectpostprocessor": 4, "mxpi_dataserialize": 5, "appsink": 6}
_KNOBS = ("init_ret", "create_ret", "send_ret", "result_error", "result_delay_ms", "call_sleep_s")


@dataclass
class _Stream:
    plugins: dict[str, dict]
    chain: list[str]
    kind: str  # "image" (JPEG in, JSON out) or "tensor" (protobuf in and out)
    device_id: int
    pending: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # id -> (how sent, bytes)


class FakeState:
    """Knobs tests set and records tests inspect; ``reset()`` restores the defaults."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.init_ret = 0
        self.create_ret = 0
        self.send_ret: int | None = None
        self.result_error: tuple[int, str] | None = None
        self.result_delay_ms = 0
        self.call_sleep_s = 0.005
        self.recordings_dir: Path | None = None
        self.calls: list[tuple[str, str]] = []
        self.init_calls = 0
        self.destroy_calls = 0
        self.pipelines: dict[bytes, dict] = {}
        self.errors: list[str] = []
        self.sent: list[tuple[bytes, bytes]] = []
        self._streams: dict[bytes, _Stream] = {}
        self._next_id = 0

    def load_env(self) -> None:
        """Apply ``FAKE_MXSDK_DIR``: recordings there, knobs from its ``behaviour.json``."""
        folder = os.environ.get("FAKE_MXSDK_DIR")
        if not folder:
            return
        self.recordings_dir = Path(folder)
        behaviour = self.recordings_dir / "behaviour.json"
        if behaviour.exists():
            knobs = json.loads(behaviour.read_text())
            unknown = set(knobs) - set(_KNOBS)
            if unknown:
                raise ValueError(f"{behaviour}: unknown fake knobs {sorted(unknown)}")
            for name, value in knobs.items():
                setattr(self, name, tuple(value) if name == "result_error" and value else value)


FAKE = FakeState()
FAKE.load_env()
# Non-blocking on purpose: product code must serialise its own calls into the SDK.
_GUARD = threading.Lock()


class _Reject(Exception):
    """A call the SDK would answer with an error code; the message goes to FAKE.errors."""


def _failed(code: int, message: str) -> int:
    FAKE.errors.append(message)
    return code


def _require_bytes(value, what: str) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{what} must be bytes, got {type(value).__name__}")


def _require_int(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")


def _check_args(stream, index, timeout_ms=None) -> None:
    _require_bytes(stream, "stream name")
    _require_int(index, "plugin index")
    if timeout_ms is not None:
        _require_int(timeout_ms, "timeout_ms")
        if timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be > 0, got {timeout_ms}")


def _stream(name: bytes, index: int, kind: str) -> _Stream:
    stream = FAKE._streams.get(name)
    if stream is None:
        raise _Reject(f"stream {name!r} does not exist")
    if index != 0:
        raise _Reject(f"plugin index {index} on stream {name!r}: only appsrc0/appsink0 (index 0) exist")
    if stream.kind != kind:
        raise _Reject(f"stream {name!r} is of kind {stream.kind!r}; this call needs kind {kind!r}")
    return stream


def _summary(args: tuple) -> str:
    def one(value) -> str:
        if isinstance(value, bytes):
            return repr(value) if len(value) <= 40 else f"<{len(value)} bytes>"
        if isinstance(value, MxDataInput):
            return f"MxDataInput(<{len(value.data)} bytes>)"
        if isinstance(value, (StringVector, InProtobufVector)):
            return f"{type(value).__name__}[{len(value)}]"
        return repr(value)
    return ", ".join(one(value) for value in args)


def _api(method):
    """Entry guard: one thread inside the API at a time, and only after InitManager."""
    name = method.__name__

    @functools.wraps(method)
    def guarded(self, *args):
        if not _GUARD.acquire(blocking=False):
            raise RuntimeError(f"fake StreamManagerApi entered by two threads at once: {name} called "
                               "while another thread is inside the API (calls are not thread-safe)")
        try:
            FAKE.calls.append((name, _summary(args)))
            if name != "InitManager" and not self._ready:
                raise RuntimeError(f"{name} called before InitManager returned 0")
            time.sleep(FAKE.call_sleep_s)
            return method(self, *args)
        finally:
            _GUARD.release()
    return guarded


def _bytes_property(attribute: str) -> property:
    def getter(self) -> bytes:
        return getattr(self, "_" + attribute)

    def setter(self, value: bytes) -> None:
        _require_bytes(value, f"{type(self).__name__}.{attribute}")
        setattr(self, "_" + attribute, value)
    return property(getter, setter)


class MxDataInput:
    """Input of SendData*: ``data`` holds the encoded image bytes."""
    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data = b""

    data = _bytes_property("data")


class MxProtobufIn:
    """One protobuf input of SendProtobuf: ``key`` (plugin), ``type`` (message name), ``protobuf``."""
    __slots__ = ("_key", "_type", "_protobuf")

    def __init__(self) -> None:
        self._key = self._type = self._protobuf = b""

    key = _bytes_property("key")
    type = _bytes_property("type")
    protobuf = _bytes_property("protobuf")


class _Vector:
    """A SWIG std::vector look-alike holding one item type."""
    _item: type = object

    def __init__(self) -> None:
        self._items: list = []

    def push_back(self, item) -> None:
        if not isinstance(item, self._item):
            raise TypeError(f"{type(self).__name__}.push_back takes {self._item.__name__}, got {type(item).__name__}")
        self._items.append(item)

    def size(self) -> int:
        return len(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int):
        _require_int(index, "vector index")
        return self._items[index]


class StringVector(_Vector):
    _item = bytes


class InProtobufVector(_Vector):
    _item = MxProtobufIn


@dataclass(frozen=True)
class MxDataOutput:
    """Answer of GetResult / GetResultWithUniqueId."""
    errorCode: int
    errorMsg: str
    data: bytes


@dataclass(frozen=True)
class MxProtobufOut:
    """One item of GetProtobuf's answer."""
    errorCode: int
    errorMsg: str
    key: bytes
    type: bytes
    messageBuf: bytes


class MxProtobufOutVector(_Vector):
    _item = MxProtobufOut


def _string_props(where: str, props) -> dict[str, str]:
    if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
        raise _Reject(f"{where} must be an object of string values (MindX props are strings): {props!r}")
    return props


def _existing_file(where: str, props: dict, name: str) -> None:
    value = props.get(name, "")
    if not value or not Path(value).is_file():
        raise _Reject(f"{where}: {name} {value!r} is not an existing file")


def _multiple(where: str, props: dict, name: str, factor: int) -> None:
    value = props.get(name)
    if value is None:
        return
    if not value.isdigit() or int(value) <= 0 or int(value) % factor:
        raise _Reject(f"{where}: {name} {value!r} must be a positive multiple of {factor} (DVPP rule)")


def _check_plugin(stream: str, name: str, plugin, plugins: dict) -> None:
    where = f"stream {stream!r} plugin {name!r}"
    if not isinstance(plugin, dict):
        raise _Reject(f"{where} must be an object")
    unknown = set(plugin) - {"factory", "props", "next"}
    if unknown:
        raise _Reject(f"{where} has unknown keys {sorted(unknown)}")
    factory = plugin.get("factory")
    if factory not in FACTORIES:
        raise _Reject(f"{where}: unknown factory {factory!r}")
    props = _string_props(f"{where} props", plugin.get("props", {}))
    following = plugin.get("next")
    # This fake models one straight chain; branches ("next" lists) are not supported.
    if following is not None and (not isinstance(following, str) or following not in plugins):
        raise _Reject(f"{where}: next {following!r} does not name a plugin of the stream")
    if factory == "mxpi_tensorinfer":
        _existing_file(where, props, "modelPath")
    elif factory == "mxpi_objectpostprocessor":
        _existing_file(where, props, "postProcessConfigPath")
        _existing_file(where, props, "labelPath")
        if not props.get("postProcessLibPath"):
            raise _Reject(f"{where}: postProcessLibPath is empty")
    elif factory == "mxpi_imageresize":
        _multiple(where, props, "resizeWidth", 16)
        _multiple(where, props, "resizeHeight", 2)
    elif factory == "mxpi_dataserialize":
        keys = props.get("outputDataKeys", "")
        if not keys or any(key not in plugins for key in keys.split(",")):
            raise _Reject(f"{where}: outputDataKeys {keys!r} must name plugins of the stream")


def _parse_stream(name: str, spec) -> _Stream:
    if not isinstance(spec, dict):
        raise _Reject(f"stream {name!r} must be an object of plugins")
    plugins = {key: value for key, value in spec.items() if key != "stream_config"}
    config = _string_props(f"stream {name!r} stream_config", spec.get("stream_config", {}))
    device = config.get("deviceId", "0")
    if not device.isdigit():
        raise _Reject(f"stream {name!r}: deviceId {device!r} is not a number")
    for plugin_name, plugin in plugins.items():
        _check_plugin(name, plugin_name, plugin, plugins)
    if plugins.get("appsrc0", {}).get("factory") != "appsrc" or plugins.get("appsink0", {}).get("factory") != "appsink":
        raise _Reject(f"stream {name!r} needs an appsrc plugin named appsrc0 and an appsink plugin named appsink0")
    chain, current = [], "appsrc0"
    while current is not None and current not in chain:
        chain.append(current)
        current = plugins[current].get("next")
    if current is not None or chain[-1] != "appsink0" or set(chain) != set(plugins):
        raise _Reject(f"stream {name!r}: following next from appsrc0 must reach appsink0 through every plugin once; "
                      f"got {chain}")
    factories = [plugins[plugin]["factory"] for plugin in chain]
    ranks = [_RANKS[factory] for factory in factories if factory != "queue"]
    if ranks != sorted(ranks) or factories.count("appsrc") != 1 or factories.count("appsink") != 1:
        raise _Reject(f"stream {name!r}: plugins in an order the SDK cannot link: {factories}")
    if "mxpi_imageresize" in factories and "mxpi_imagedecoder" not in factories:
        raise _Reject(f"stream {name!r}: mxpi_imageresize needs an mxpi_imagedecoder before it")
    if "mxpi_objectpostprocessor" in factories and "mxpi_tensorinfer" not in factories:
        raise _Reject(f"stream {name!r}: mxpi_objectpostprocessor needs an mxpi_tensorinfer before it")
    kind = "image" if "mxpi_imagedecoder" in factories else "tensor"
    return _Stream(plugins=plugins, chain=chain, kind=kind, device_id=int(device))


def _parse_streams(raw: bytes) -> dict[bytes, tuple[dict, _Stream]]:
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Reject(f"pipeline is not JSON: {exc}") from None
    if not isinstance(config, dict) or not config:
        raise _Reject("pipeline must be a non-empty JSON object of streams")
    streams = {}
    for name, spec in config.items():
        if name.encode() in FAKE._streams:
            raise _Reject(f"stream {name!r} already exists")
        streams[name.encode()] = (spec, _parse_stream(name, spec))
    return streams


def _recording(folder: str, suffix: str, sent: bytes) -> Path:
    digest = hashlib.sha256(sent).hexdigest()
    if FAKE.recordings_dir is None:
        raise _Reject(f"no recording for sha256 {digest}: FAKE.recordings_dir is not set")
    path = Path(FAKE.recordings_dir) / folder / f"{digest}{suffix}"
    if not path.is_file():
        raise _Reject(f"no recording for sha256 {digest} ({path})")
    return path


def _image_answer(stream: _Stream, sent: bytes) -> bytes:
    serializers = [p for p in stream.plugins.values() if p["factory"] == "mxpi_dataserialize"]
    keys = serializers[0]["props"]["outputDataKeys"].split(",") if serializers else []
    # Only a serialised postprocessor output is the {"MxpiObject": [...]} JSON recordings hold.
    if not any(stream.plugins[key]["factory"] == "mxpi_objectpostprocessor" for key in keys):
        raise _Reject("the stream has no mxpi_dataserialize whose outputDataKeys names an mxpi_objectpostprocessor")
    data = _recording("json", ".json", sent).read_bytes()
    json.loads(data)  # a broken recording is the test's bug: let it raise
    return data


def _tensor_answer(stream: _Stream, sent: bytes) -> bytes:
    answer = MxpiDataType.MxpiTensorPackageList()
    package = answer.tensorPackageVec.add()
    with np.load(_recording("tensors", ".npz", sent), allow_pickle=False) as outputs:
        names = [f"output_{i}" for i in range(len(outputs.files))]
        if not names or sorted(names) != sorted(outputs.files):
            raise ValueError(f"tensor recording must hold output_0, output_1, ...; got {outputs.files}")
        for name in names:
            array = np.ascontiguousarray(outputs[name], dtype="<f4")
            tensor = package.tensorVec.add()
            tensor.deviceId, tensor.memType, tensor.tensorDataType = stream.device_id, 0, 0
            tensor.tensorShape.extend(int(n) for n in array.shape)
            tensor.dataStr = array.tobytes()
            tensor.tensorDataSize = array.nbytes
    return answer.SerializeToString()


def _check_tensor(stream: _Stream, vector: InProtobufVector) -> bytes:
    """Validate SendProtobuf's input; return the tensor's dataStr."""
    if len(vector) != 1:
        raise _Reject(f"expected exactly one MxProtobufIn, got {len(vector)}")
    item = vector[0]
    if item.key != b"appsrc0" or item.type != TENSOR_TYPE:
        raise _Reject(f"expected key b'appsrc0' and type {TENSOR_TYPE!r}, got {item.key!r} and {item.type!r}")
    try:
        packages = MxpiDataType.MxpiTensorPackageList.FromString(item.protobuf)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a rejected message
        raise _Reject(f"protobuf does not parse as MxpiTensorPackageList: {exc}") from None
    if len(packages.tensorPackageVec) != 1 or len(packages.tensorPackageVec[0].tensorVec) != 1:
        raise _Reject("expected exactly one tensor package holding exactly one tensor")
    tensor = packages.tensorPackageVec[0].tensorVec[0]
    if tensor.tensorDataType not in ITEM_SIZES:
        raise _Reject(f"tensorDataType {tensor.tensorDataType} is not one of {sorted(ITEM_SIZES)}")
    if tensor.memType != 0 or tensor.deviceId != stream.device_id:
        raise _Reject(f"tensor must be host memory (memType 0) on the stream's device {stream.device_id}, "
                      f"got memType {tensor.memType} deviceId {tensor.deviceId}")
    shape = list(tensor.tensorShape)
    expected = int(np.prod(shape, dtype=np.int64)) * ITEM_SIZES[tensor.tensorDataType]
    if not shape or min(shape) <= 0 or not expected == len(tensor.dataStr) == tensor.tensorDataSize:
        raise _Reject(f"tensor shape {shape} x {ITEM_SIZES[tensor.tensorDataType]} bytes, len(dataStr) "
                      f"{len(tensor.dataStr)} and tensorDataSize {tensor.tensorDataSize} disagree")
    return tensor.dataStr


def _wait(timeout_ms: int | None) -> bool:
    """Spend the simulated device time; False when it exceeds the caller's timeout."""
    delay = FAKE.result_delay_ms
    if timeout_ms is not None and delay > timeout_ms:
        time.sleep(min(timeout_ms, 200) / 1000)
        return False
    time.sleep(delay / 1000)
    return True


def _forced_error() -> tuple[int, str] | None:
    forced = FAKE.result_error
    if forced is None:
        return None
    code, message = forced
    if not isinstance(code, int) or not isinstance(message, str):
        raise ValueError(f"FAKE.result_error must be an (int, str) pair, got {forced!r}")
    FAKE.errors.append(f"result error {code} forced by FAKE.result_error: {message}")
    return code, message


class StreamManagerApi:
    """The stream manager: InitManager, CreateMultipleStreams, Send*/Get*, DestroyAllStreams."""

    def __init__(self) -> None:
        self._ready = False

    @_api
    def InitManager(self) -> int:
        FAKE.init_calls += 1
        if FAKE.init_ret != 0:
            return _failed(FAKE.init_ret, f"InitManager: {FAKE.init_ret} forced by FAKE.init_ret")
        self._ready = True
        return 0

    @_api
    def CreateMultipleStreams(self, pipeline: bytes) -> int:
        _require_bytes(pipeline, "pipeline")
        if FAKE.create_ret != 0:
            return _failed(FAKE.create_ret, f"CreateMultipleStreams: {FAKE.create_ret} forced by FAKE.create_ret")
        try:
            streams = _parse_streams(pipeline)
        except _Reject as exc:
            return _failed(ERROR_CODE, f"CreateMultipleStreams: {exc}")
        for name, (spec, stream) in streams.items():
            FAKE.pipelines[name] = spec
            FAKE._streams[name] = stream
        return 0

    def _send_image(self, method: str, stream_name, index, data_input, how: str, failure: int) -> int | None:
        """Queue an image; return the pending id, or None after recording why it failed."""
        _check_args(stream_name, index)
        if not isinstance(data_input, MxDataInput):
            raise TypeError(f"{method} takes an MxDataInput, got {type(data_input).__name__}")
        if FAKE.send_ret is not None:
            FAKE.errors.append(f"{method}: {FAKE.send_ret} forced by FAKE.send_ret")
            return None
        try:
            stream = _stream(stream_name, index, "image")
            if not data_input.data.startswith(JPEG_SOI):
                raise _Reject(f"data is not a JPEG (starts {data_input.data[:4]!r}); mxpi_imagedecoder decodes JPEG")
        except _Reject as exc:
            _failed(failure, f"{method}: {exc}")
            return None
        unique_id, FAKE._next_id = FAKE._next_id, FAKE._next_id + 1
        stream.pending[unique_id] = (how, data_input.data)
        FAKE.sent.append((stream_name, data_input.data))
        return unique_id

    @_api
    def SendDataWithUniqueId(self, stream_name: bytes, index: int, data_input: MxDataInput) -> int:
        unique_id = self._send_image("SendDataWithUniqueId", stream_name, index, data_input, "unique", SEND_FAILED)
        if unique_id is None:
            return SEND_FAILED if FAKE.send_ret is None else FAKE.send_ret
        return unique_id

    @_api
    def SendData(self, stream_name: bytes, index: int, data_input: MxDataInput) -> int:
        # The older API answers an APP_ERROR code: positive on failure, not negative.
        unique_id = self._send_image("SendData", stream_name, index, data_input, "plain", ERROR_CODE)
        if unique_id is None:
            return ERROR_CODE if FAKE.send_ret is None else FAKE.send_ret
        return 0

    def _get_json(self, method: str, stream_name, index, timeout_ms, pick) -> MxDataOutput:
        _check_args(stream_name, index, timeout_ms)
        try:
            stream = _stream(stream_name, index, "image")
            if not _wait(timeout_ms):
                raise TimeoutError(f"no result within timeout_ms={timeout_ms} (FAKE.result_delay_ms)")
            key = pick(stream)
            sent = stream.pending.pop(key)[1]
            forced = _forced_error()
            if forced:
                return MxDataOutput(forced[0], forced[1], b"")
            return MxDataOutput(0, "", _image_answer(stream, sent))
        except _Reject as exc:
            return MxDataOutput(_failed(ERROR_CODE, f"{method}: {exc}"), str(exc), b"")
        except TimeoutError as exc:
            return MxDataOutput(_failed(TIMEOUT_CODE, f"{method}: {exc}"), f"timeout: {exc}", b"")

    @_api
    def GetResultWithUniqueId(self, stream_name: bytes, unique_id: int, timeout_ms: int) -> MxDataOutput:
        _require_int(unique_id, "unique id")

        def pick(stream: _Stream) -> int:
            if stream.pending.get(unique_id, ("",))[0] != "unique":
                raise _Reject(f"unique id {unique_id} was not returned by SendDataWithUniqueId on "
                              f"{stream_name!r} or was already fetched")
            return unique_id
        return self._get_json("GetResultWithUniqueId", stream_name, 0, timeout_ms, pick)

    @_api
    def GetResult(self, stream_name: bytes, index: int, timeout_ms: int) -> MxDataOutput:
        def pick(stream: _Stream) -> int:
            waiting = [key for key, (how, _) in stream.pending.items() if how == "plain"]
            if not waiting:
                time.sleep(min(timeout_ms, 200) / 1000)
                raise TimeoutError("nothing sent with SendData is waiting")
            return waiting[0]
        return self._get_json("GetResult", stream_name, index, timeout_ms, pick)

    @_api
    def SendProtobuf(self, stream_name: bytes, index: int, vector: InProtobufVector) -> int:
        _check_args(stream_name, index)
        if not isinstance(vector, InProtobufVector):
            raise TypeError(f"SendProtobuf takes an InProtobufVector, got {type(vector).__name__}")
        if FAKE.send_ret is not None:
            return _failed(FAKE.send_ret, f"SendProtobuf: {FAKE.send_ret} forced by FAKE.send_ret")
        try:
            stream = _stream(stream_name, index, "tensor")
            data = _check_tensor(stream, vector)
        except _Reject as exc:
            return _failed(SEND_FAILED, f"SendProtobuf: {exc}")
        unique_id, FAKE._next_id = FAKE._next_id, FAKE._next_id + 1
        stream.pending[unique_id] = ("protobuf", data)
        FAKE.sent.append((stream_name, data))
        return 0

    @_api
    def GetProtobuf(self, stream_name: bytes, index: int, keys: StringVector) -> MxProtobufOutVector:
        _check_args(stream_name, index)
        if not isinstance(keys, StringVector):
            raise TypeError(f"GetProtobuf takes a StringVector of keys, got {type(keys).__name__}")
        answer = MxProtobufOutVector()
        names = [keys[i] for i in range(len(keys))] or [b""]

        def reply(code: int, message: str, buffer: bytes = b"") -> MxProtobufOutVector:
            for name in names:
                answer.push_back(MxProtobufOut(code, message, name, TENSOR_TYPE, buffer))
            return answer
        try:
            stream = _stream(stream_name, index, "tensor")
            waiting = [key for key, (how, _) in stream.pending.items() if how == "protobuf"]
            if not waiting:
                raise _Reject("nothing sent with SendProtobuf is waiting")
            _wait(None)  # GetProtobuf has no timeout: it just takes the device time
            sent = stream.pending.pop(waiting[0])[1]
            infer = {name for name, p in stream.plugins.items() if p["factory"] == "mxpi_tensorinfer"}
            if len(names) != 1 or names[0].decode(errors="replace") not in infer:
                raise _Reject(f"keys {names} must be exactly one mxpi_tensorinfer plugin of the stream, "
                              f"one of {sorted(infer)}")
            forced = _forced_error()
            if forced:
                return reply(*forced)
            return reply(0, "", _tensor_answer(stream, sent))
        except _Reject as exc:
            return reply(_failed(ERROR_CODE, f"GetProtobuf: {exc}"), str(exc))

    @_api
    def DestroyAllStreams(self) -> int:
        FAKE.destroy_calls += 1
        FAKE._streams.clear()
        FAKE.pipelines.clear()
        self._ready = False  # the manager is torn down too: reuse needs InitManager again
        return 0
