"""One served model version: image bytes in, detections in original-image pixels out.

The host path, the same for every engine: decode, resize, the engine's network, the
shared NMS. An engine that decodes on its device gives its own subclass
(:meth:`inferencer.backends.base.InferenceEngine.detector`). It lives in the core, free
of any model runtime, because the converter's INT8 gate scores artefacts through the
same path the inferencer serves them on.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from ssdstack.detection.boxes import normalised_to_pixels
from ssdstack.detection.nms import PostprocessConfig, postprocess
from ssdstack.errors import InvalidInput
from ssdstack.images import decode_for_model, resize_stretch

DEFAULT_MAX_PIXELS = 50_000_000


class Engine(Protocol):
    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[S, S, 3]`` uint8 RGB -> ``(boxes [P, 4] normalised (y0, x0, y1, x1), scores [P, C])``."""


class Detector:
    """A loaded ``engine`` (of the version's artefact in ``precision``) plus what the
    version's ``manifest`` says about labels and postprocess. ``jpeg_draft``: decode large
    JPEGs at reduced size (:func:`ssdstack.images.decode_for_model`).

    Thread-safe: it holds no per-request state, and engines are safe to share.
    """

    def __init__(self, engine: Engine, manifest: dict, name: str, version: int, precision: str = "fp32",
                 jpeg_draft: bool = True):
        self.engine = engine
        self.jpeg_draft = jpeg_draft
        self.name = name
        self.version = int(version)
        self.precision = precision
        self.image_size = int(manifest["image_size"])
        self.labels = tuple(manifest["labels"])
        known = {f.name for f in dataclasses.fields(PostprocessConfig)}
        self.postprocess = PostprocessConfig(**{k: v for k, v in manifest.get("postprocess", {}).items() if k in known})

    def detect(self, image_bytes: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, score_threshold: float | None = None,
               iou_threshold: float | None = None, max_detections: int | None = None,
               exif_transpose: bool = True) -> dict:
        """Decode ``image_bytes`` (any format Pillow reads; EXIF orientation applied unless
        ``exif_transpose`` is False) and detect.

        Raises InvalidImage for bytes that are not a usable image, InvalidInput for bad
        overrides. See :meth:`detect_array` for the result.
        """
        rgb, width, height = decode_for_model(image_bytes, self.image_size if self.jpeg_draft else None, max_pixels,
                                              exif_transpose)
        return self._detect(rgb, width, height, score_threshold, iou_threshold, max_detections)

    def detect_array(self, rgb: np.ndarray, score_threshold: float | None = None, iou_threshold: float | None = None,
                     max_detections: int | None = None) -> dict:
        """Detect in an ``[H, W, 3]`` uint8 RGB image.

        Returns ``{"model", "version", "width": W, "height": H, "detections": [{"label",
        "label_id" (1..K), "score", "box": [x_min, y_min, x_max, y_max]}]}``, best score
        first, boxes in pixels of the given image (2 decimals), scores to 4 decimals.
        The manifest's postprocess settings apply unless overridden here.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InvalidInput(f"expected an [H, W, 3] uint8 RGB image, got {list(rgb.shape)} {rgb.dtype}")
        height, width = rgb.shape[:2]
        return self._detect(rgb, width, height, score_threshold, iou_threshold, max_detections)

    def _detect(self, rgb: np.ndarray, width: int, height: int, score_threshold, iou_threshold,
                max_detections) -> dict:
        """Detect in ``rgb``, a ``width`` x ``height`` image (decoded at that size or smaller)."""
        config = self._config(score_threshold, iou_threshold, max_detections)
        boxes, scores = self.engine.predict(resize_stretch(rgb, self.image_size))
        kept_boxes, kept_scores, labels = postprocess(boxes, scores, config)
        return self._answer(normalised_to_pixels(kept_boxes, width, height), kept_scores, labels, width, height)

    def _answer(self, pixels: np.ndarray, scores: np.ndarray, labels: np.ndarray, width: int, height: int) -> dict:
        detections = [
            {"label": self.labels[label - 1], "label_id": int(label), "score": round(float(score), 4),
             "box": [round(float(v), 2) for v in box]}
            for box, score, label in zip(pixels, scores, labels)
        ]
        return {"model": self.name, "version": self.version, "width": int(width), "height": int(height),
                "detections": detections}

    def _config(self, score_threshold, iou_threshold, max_detections) -> PostprocessConfig:
        overrides = {}
        if score_threshold is not None:
            if not 0.0 <= score_threshold <= 1.0:
                raise InvalidInput(f"score_threshold must be in [0, 1], got {score_threshold}")
            overrides["score_threshold"] = float(score_threshold)
        if iou_threshold is not None:
            if not 0.0 <= iou_threshold <= 1.0:
                raise InvalidInput(f"iou_threshold must be in [0, 1], got {iou_threshold}")
            overrides["iou_threshold"] = float(iou_threshold)
        if max_detections is not None:
            if not 1 <= max_detections <= 10_000:
                raise InvalidInput(f"max_detections must be in [1, 10000], got {max_detections}")
            overrides["max_detections"] = int(max_detections)
        return dataclasses.replace(self.postprocess, **overrides)
