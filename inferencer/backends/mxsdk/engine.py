"""MindX SDK engine: serves a version's ``model.om`` through an mxVision stream on the NPU.

Calls follow the vendor's Python samples (../shared/ASCEND.md): one ``StreamManagerApi``
per process, initialised once; a stream per served version; ``SendDataWithUniqueId`` /
``GetResultWithUniqueId`` for JPEG bytes, ``SendProtobuf`` / ``GetProtobuf`` for tensors.
Calls on a stream are not thread-safe, and the request threads of the inferencer share
the manager, so every call pair runs under one process-wide lock.

Preprocessing (see :mod:`inferencer.backends.mxsdk.config`): ``dvpp`` sends JPEG bytes (re-encoded
by the detector when DVPP cannot decode the original; the ``.om`` must have the yuv420sp
AIPP, and the input size must suit DVPP: width a multiple of 16, height of 2); ``cpu``
sends the host-resized uint8 image (rgb or bgr AIPP). ``auto`` follows the image format the ``.om`` was converted for. A 300x300 model
is not DVPP-sized (300 is not a multiple of 16), so it is converted for rgb and served
with ``cpu`` preprocessing; the NPU still normalises it in AIPP.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from inferencer.backends.base import InferenceEngine
from inferencer.backends.mxsdk.config import (INFER_PLUGIN, INPUT_PLUGIN, dvpp_pipeline, labels_file,
                                              postprocess_config, stream_name, tensor_pipeline)
from inferencer.backends.mxsdk.dvpp import DvppDetector
from ssdstack.ascend import dvpp_fits, host_soc_version
from ssdstack.detection.detector import Detector
from ssdstack.errors import BackendUnavailable, Conflict, InvalidInput, ServiceUnavailable, UpstreamTimeout
from ssdstack.model_store import SERVING_OM

TENSOR_TYPE = "MxTools.MxpiTensorPackageList"
# MxpiTensor.tensorDataType (MindX TensorDataType, numbered as ACL's aclDataType):
# 0 float32, 1 float16, 2 int8, 3 int32, 4 uint8.
_DTYPES = {0: np.float32, 1: np.float16}
_UINT8 = 4


class StreamManager:
    """The process's ``StreamManagerApi``: initialised once, each call under one lock.

    A request waits for the lock at most its own timeout: ``GetProtobuf`` takes no
    timeout, so a frame the stream never answers would otherwise hold every request
    thread of the process for good; they fail with a timeout instead.
    """

    def __init__(self):
        try:
            import StreamManagerApi as mx  # optional runtime: the MindX SDK exists only on Ascend hosts
        except (ImportError, OSError) as error:  # e.g. the SDK's .so files not on LD_LIBRARY_PATH
            raise BackendUnavailable(f"the MindX SDK does not load ({type(error).__name__}: {error}): "
                                     f"{MxSdkEngine.install_hint}") from None

        self._mx = mx
        self._api = mx.StreamManagerApi()
        self._lock = threading.Lock()
        self._streams: set[bytes] = set()
        with self._lock:
            ret = self._api.InitManager()
        if ret != 0:
            raise ServiceUnavailable(f"MindX SDK InitManager failed with {ret}: check the NPU driver and "
                                     "that mxVision's set_env.sh was sourced")

    def ensure_stream(self, name: bytes, pipeline: dict) -> None:
        """Create the stream ``name`` from ``pipeline`` unless this process already did."""
        with self._lock:
            if name in self._streams:
                return
            ret = self._api.CreateMultipleStreams(json.dumps(pipeline).encode())
            if ret != 0:
                raise ServiceUnavailable(f"MindX SDK could not create stream {name.decode()!r} (error {ret}); "
                                         "see the SDK log for the plugin that failed")
            self._streams.add(name)

    def infer_jpeg(self, name: bytes, jpeg: bytes, timeout_ms: int) -> bytes:
        """Send JPEG bytes to an image stream; returns its serialised result (JSON bytes)."""
        data_input = self._mx.MxDataInput()
        data_input.data = jpeg
        with self._locked(name, timeout_ms):
            unique_id = self._api.SendDataWithUniqueId(name, 0, data_input)
            if unique_id < 0:
                raise ServiceUnavailable(f"MindX SDK refused the image on stream {name.decode()!r} "
                                         f"(SendDataWithUniqueId returned {unique_id})")
            result = self._api.GetResultWithUniqueId(name, unique_id, timeout_ms)
        _raise_for(result.errorCode, _text(result.errorMsg), name, timeout_ms)
        return result.data

    def infer_tensor(self, name: bytes, tensor: np.ndarray, timeout_ms: int, device_id: int = 0) -> list[np.ndarray]:
        """Send a uint8 tensor to a model-only stream on ``device_id``; returns the model's outputs."""
        import MxpiDataType_pb2 as mxpi  # the MindX SDK's, as StreamManagerApi above

        packages = mxpi.MxpiTensorPackageList()
        item = packages.tensorPackageVec.add().tensorVec.add()
        item.deviceId = device_id  # the stream's device (stream_config deviceId)
        item.memType = 0
        item.tensorShape.extend(tensor.shape)
        item.tensorDataType = _UINT8
        item.dataStr = np.ascontiguousarray(tensor, np.uint8).tobytes()
        item.tensorDataSize = len(item.dataStr)
        message = self._mx.MxProtobufIn()
        message.key = INPUT_PLUGIN.encode()
        message.type = TENSOR_TYPE.encode()
        message.protobuf = packages.SerializeToString()
        messages = self._mx.InProtobufVector()
        messages.push_back(message)
        keys = self._mx.StringVector()
        keys.push_back(INFER_PLUGIN.encode())
        with self._locked(name, timeout_ms):
            ret = self._api.SendProtobuf(name, 0, messages)
            if ret != 0:
                raise ServiceUnavailable(f"MindX SDK refused the tensor on stream {name.decode()!r} "
                                         f"(SendProtobuf returned {ret})")
            results = self._api.GetProtobuf(name, 0, keys)
        if results.size() == 0:
            raise ServiceUnavailable(f"MindX SDK returned no result on stream {name.decode()!r}")
        _raise_for(results[0].errorCode, _text(getattr(results[0], "errorMsg", "")), name, timeout_ms)
        outputs = mxpi.MxpiTensorPackageList()
        outputs.ParseFromString(results[0].messageBuf)
        arrays = []
        for tensor_out in outputs.tensorPackageVec[0].tensorVec:
            dtype = _DTYPES.get(tensor_out.tensorDataType)
            if dtype is None:
                raise ServiceUnavailable(f"the model returned tensor type {tensor_out.tensorDataType}; "
                                         "convert it with output_type FP32 or FP16")
            arrays.append(np.frombuffer(tensor_out.dataStr, dtype).reshape(tuple(tensor_out.tensorShape))
                          .astype(np.float32))
        return arrays

    @contextlib.contextmanager
    def _locked(self, name: bytes, timeout_ms: int) -> Iterator[None]:
        if not self._lock.acquire(timeout=timeout_ms / 1000):
            raise UpstreamTimeout(f"MindX SDK stream {name.decode()!r} is still busy with an earlier request "
                                  f"after {timeout_ms} ms")
        try:
            yield
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._streams:
                self._api.DestroyAllStreams()
            self._streams.clear()


_shared: StreamManager | None = None
_shared_guard = threading.Lock()


def shared_manager() -> StreamManager:
    """The process-wide manager, created on first use and closed at exit."""
    global _shared
    with _shared_guard:
        if _shared is None:
            _shared = StreamManager()
            atexit.register(close_shared_manager)
        return _shared


def close_shared_manager() -> None:
    """Destroy the process's streams (at exit, or when a worker shuts its engines down)."""
    global _shared
    with _shared_guard:
        if _shared is not None:
            _shared.close()
            _shared = None


class MxSdkEngine(InferenceEngine):
    """Serves one version's ``model.om`` (see the module docstring)."""

    name = "mxsdk"
    artefact = SERVING_OM
    python_modules = ("StreamManagerApi",)
    executables = ("npu-smi",)
    install_hint = ("install MindX SDK mxVision and `source /usr/local/Ascend/mxVision/set_env.sh`, on a host "
                    "whose NPU is visible (npu-smi on PATH, /dev/davinci* mapped into the container)")

    def __init__(self, preprocessing: str = "auto", device_id: int = 0, timeout_ms: int = 3000,
                 soc_version: str = "", postprocess_lib: str = "libSsdMobilenetFpn_MindsporePost.so",
                 work_dir: Path = Path("var/work")):
        if preprocessing not in ("auto", "dvpp", "cpu"):
            raise InvalidInput(f"MindX preprocessing must be auto, dvpp or cpu, got {preprocessing!r}")
        self.requested_preprocessing = preprocessing
        self.device_id = int(device_id)
        self.timeout_ms = int(timeout_ms)
        self.soc_version = soc_version
        self.postprocess_lib = postprocess_lib
        self.work_dir = Path(work_dir)
        self.preprocessing = ""
        self.image_size = 0
        self.swap_channels = False
        self._stream = b""
        self._manager: StreamManager | None = None

    def detector(self, manifest: dict, name: str, version: int) -> Detector:
        """With ``dvpp`` preprocessing, a detector that sends the image file to the stream."""
        if self.preprocessing == "dvpp":
            return DvppDetector(self, manifest, name, version)
        return super().detector(manifest, name, version)

    def load(self, version_dir: Path, manifest: dict) -> None:
        om = self.serving_file(version_dir, manifest)
        built = manifest["serving"]["atc"]["details"]
        label = f"{manifest['name']} v{manifest['version']}"
        chip = self.soc_version or host_soc_version()
        if chip is None:
            raise BackendUnavailable(f"no NPU is visible to serve {label}: {self.install_hint}")
        if built["soc_version"] != chip:
            raise Conflict(f"{om.name} of {label} was built for {built['soc_version']}, this inferencer's NPU is "
                           f"{chip}: convert the version with atc.soc_version {chip} (as a new version)")
        batches = built.get("dynamic_batch") or [built.get("batch_size", 1)]
        if 1 not in batches:
            raise Conflict(f"{om.name} of {label} takes batches of {batches}; this engine sends one image at a "
                           "time: convert with batch_size 1 or a dynamic_batch list that includes 1")
        self.image_size = int(manifest["image_size"])
        self.preprocessing = self._preprocessing(built["image_format"], label)
        self.swap_channels = built["image_format"] == "bgr"

        folder = self.work_dir / "mxsdk" / f"{manifest['name']}-v{manifest['version']}"
        folder.mkdir(parents=True, exist_ok=True)
        self._stream = stream_name(manifest["name"], manifest["version"])
        if self.preprocessing == "dvpp":
            _write_atomic(folder / "postprocess.cfg", postprocess_config(manifest))
            _write_atomic(folder / "labels.names", labels_file(manifest))
            library = postprocess_library(self.postprocess_lib)
            pipeline = dvpp_pipeline(self._stream, str(om.resolve()), str((folder / "postprocess.cfg").resolve()),
                                     str((folder / "labels.names").resolve()), library, self.image_size,
                                     self.device_id)
        else:
            pipeline = tensor_pipeline(self._stream, str(om.resolve()), self.device_id)
        _write_atomic(folder / "pipeline.json", json.dumps(pipeline, indent=2))
        self._manager = shared_manager()
        self._manager.ensure_stream(self._stream, pipeline)

    def _preprocessing(self, image_format: str, label: str) -> str:
        wanted = self.requested_preprocessing
        if wanted == "auto":
            wanted = "dvpp" if image_format == "yuv420sp" else "cpu"
        if wanted == "dvpp" and image_format != "yuv420sp":
            raise Conflict(f"DVPP preprocessing needs an .om converted with image_format yuv420sp; {label}'s "
                           f"is {image_format}")
        if wanted == "cpu" and image_format == "yuv420sp":
            raise Conflict(f"cpu preprocessing sends RGB tensors; {label}'s .om expects yuv420sp: convert it "
                           "with image_format rgb")
        if wanted == "dvpp" and not dvpp_fits(self.image_size, self.image_size):
            raise Conflict(f"DVPP resizes to widths that are multiples of 16 and heights of 2; {label} takes "
                           f"{self.image_size}x{self.image_size}: serve it with cpu preprocessing")
        return wanted

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Host-preprocessed path (``cpu``): see :meth:`InferenceEngine.predict`."""
        if self._manager is None:
            raise RuntimeError("MxSdkEngine.predict before load")
        if self.preprocessing != "cpu":
            raise RuntimeError("predict is the cpu-preprocessing path; this engine decodes on the device")
        size = self.image_size
        if image.shape != (size, size, 3) or image.dtype != np.uint8:
            raise ValueError(f"expected a [{size}, {size}, 3] uint8 image, got {list(image.shape)} {image.dtype}")
        tensor = image[None, :, :, ::-1] if self.swap_channels else image[None]
        outputs = self._manager.infer_tensor(self._stream, tensor, self.timeout_ms, self.device_id)
        if len(outputs) != 2 or outputs[0].ndim != 3 or outputs[0].shape[-1] != 4:
            raise ServiceUnavailable(f"the model returned {[list(o.shape) for o in outputs]}; expected boxes "
                                     "[1, P, 4] and scores [1, P, C]")
        return outputs[0][0], outputs[1][0]

    def detect_encoded(self, jpeg: bytes, labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Device-decoded path (``dvpp``): ``(boxes [N, 4] pixels x0, y0, x1, y1 of the stored
        frame, scores [N], labels [N] in 1..K)`` from the SDK's SSD postprocessor."""
        if self._manager is None:
            raise RuntimeError("MxSdkEngine.detect_encoded before load")
        raw = self._manager.infer_jpeg(self._stream, jpeg, self.timeout_ms)
        return parse_objects(raw, labels)


def postprocess_library(setting: str) -> str:
    """The SSD postprocessor library: a bare file name is looked up in
    ``$MX_SDK_HOME/lib/modelpostprocessors/``, where mxVision installs its postprocessors."""
    library = Path(setting)
    sdk_home = os.environ.get("MX_SDK_HOME")
    if not library.is_absolute() and sdk_home:
        library = Path(sdk_home) / "lib" / "modelpostprocessors" / library
    if library.is_absolute() and not library.is_file():
        raise BackendUnavailable(f"the MindX postprocessor {library} does not exist: install mxVision's model "
                                 "postprocessors or set SSDSTACK_MXSDK_POSTPROCESS_LIB to its path")
    return str(library)


def _write_atomic(path: Path, text: str) -> None:
    """Concurrent loads of one version (serving and evaluating) never see a half-written file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def parse_objects(raw: bytes, labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``{"MxpiObject": [{"x0", "y0", "x1", "y1", "classVec": [{"classId", "className",
    "confidence"}]}]}`` (``{}`` when nothing was found) -> boxes, scores, class ids.

    Class ids count from 1 (line 0 of the labels file is ``background``); an id or name
    that does not match the version's labels means the stream serves other files than
    this version's, which is an error, not a detection.
    """
    boxes, scores, classes = [], [], []
    try:
        objects = json.loads(raw or b"{}").get("MxpiObject", [])
        for index, item in enumerate(objects):
            best = max(item["classVec"], key=lambda c: c["confidence"])
            class_id = int(best["classId"])
            known = 1 <= class_id <= len(labels)
            if not known or best.get("className", labels[class_id - 1]) != labels[class_id - 1]:
                raise ServiceUnavailable(f"the MindX postprocessor returned class {class_id} "
                                         f"{best.get('className')!r} for object {index}; this version's classes "
                                         f"are {list(enumerate(labels, 1))}")
            boxes.append([float(item["x0"]), float(item["y0"]), float(item["x1"]), float(item["y1"])])
            scores.append(float(best["confidence"]))
            classes.append(class_id)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ServiceUnavailable(f"the MindX postprocessor returned a malformed result "
                                 f"({type(error).__name__}: {error}): {raw[:200]!r}") from None
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
            np.asarray(classes, np.int64))


def _raise_for(error_code: int, message: str, name: bytes, timeout_ms: int) -> None:
    if error_code == 0:
        return
    if "timeout" in message.lower() or "time out" in message.lower():
        raise UpstreamTimeout(f"MindX SDK stream {name.decode()!r} gave no result within {timeout_ms} ms "
                              f"(error {error_code}: {message})")
    raise ServiceUnavailable(f"MindX SDK stream {name.decode()!r} failed with error {error_code}: {message}")


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
