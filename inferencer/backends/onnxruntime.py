"""ONNX Runtime engine: runs the converter's ``model.ort.onnx`` (preprocessing in the graph),
or its INT8 sibling ``model.ort.int8.onnx``.

A served graph whose input's first axis is named rather than fixed takes any number of
images in one run (:meth:`OnnxRuntimeEngine.predict_batch`); one converted before the
converter named it takes one image at a time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from inferencer.backends.base import InferenceEngine
from ssdstack.errors import InvalidInput
from ssdstack.model_store import FP32, INT8, SERVING_ONNXRUNTIME, serving_key


# The batch size a graph with a named batch axis is taken to allow (the batch policy
# decides the size actually run).
DYNAMIC_BATCH = 1024


class OnnxRuntimeEngine(InferenceEngine):
    """One ``InferenceSession`` on the CPU provider per loaded model.

    A session's ``run`` is thread-safe and releases the GIL, so one engine is shared by
    all request threads. ``intra_op_threads`` bounds the threads one ``run`` uses
    (None: ONNX Runtime's default, one per physical core). Idle intra-op threads do not
    spin: the gateway, Redis and the worker's own request threads share the cores, and a
    spinning pool takes CPU from them.
    """

    name = "onnxruntime"
    artefact = SERVING_ONNXRUNTIME
    precisions = (FP32, INT8)
    python_modules = ("onnxruntime",)
    install_hint = "pip install 'ssdstack[inferencer]' (onnxruntime)"

    def __init__(self, intra_op_threads: int | None = None):
        if intra_op_threads is not None and intra_op_threads < 0:
            raise InvalidInput(f"intra_op_threads must be >= 0 (0: ONNX Runtime's default), got {intra_op_threads}")
        self.intra_op_threads = intra_op_threads
        self._session = None
        self._input = "image"
        self._outputs = ["boxes", "scores"]
        self.image_size = 0

    def load(self, version_dir: Path, manifest: dict) -> None:
        import onnxruntime as ort  # optional runtime: listing engines must not need it

        path = self.serving_file(version_dir, manifest)
        serving = manifest.get("serving", {}).get(serving_key(self.name, self.precision), {})
        self._input = serving.get("input", {}).get("name", "image")
        self._outputs = list(serving.get("outputs", ["boxes", "scores"]))
        self.image_size = int(manifest["image_size"])
        options = ort.SessionOptions()
        if self.intra_op_threads:
            options.intra_op_num_threads = self.intra_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        batch_axis = self._session.get_inputs()[0].shape[0]
        self.max_batch = DYNAMIC_BATCH if not isinstance(batch_axis, int) else batch_axis

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = self.predict_batch(image[None])
        return boxes[0], scores[0]

    def predict_batch(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._session is None:
            raise RuntimeError("OnnxRuntimeEngine.predict_batch before load")
        size = self.image_size
        if images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
            raise ValueError(f"expected [B, {size}, {size}, 3] uint8 images, got {list(images.shape)} {images.dtype}")
        if len(images) > self.max_batch:
            return super().predict_batch(images)
        boxes, scores = self._session.run(self._outputs, {self._input: np.ascontiguousarray(images)})
        return boxes, scores
