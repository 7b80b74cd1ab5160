"""Helpers that write recordings for the MindX SDK test fake (``python/StreamManagerApi.py``).

The fake is built from the vendor's documented API and samples. It answers a request with
the recording named by the SHA-256 of the bytes sent (the JPEG, or the tensor's
``dataStr``): ``json/<sha>.json`` for image streams, ``tensors/<sha>.npz`` for tensor streams.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def fake_mxsdk_path() -> Path:
    """The folder to put on sys.path / PYTHONPATH instead of the SDK's python folder."""
    return Path(__file__).resolve().parent / "python"


def sha256_hex(sent: bytes) -> str:
    return hashlib.sha256(sent).hexdigest()


def write_json_recording(recordings_dir: Path | str, sent: bytes, objects: list[dict] | None) -> Path:
    """Record what an image stream answers for ``sent``: ``{"MxpiObject": objects}``, or ``{}``."""
    path = Path(recordings_dir) / "json" / f"{sha256_hex(sent)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"MxpiObject": objects} if objects else {}))
    return path


def write_tensor_recording(recordings_dir: Path | str, sent: bytes, outputs: Sequence[np.ndarray]) -> Path:
    """Record a tensor stream's outputs for the tensor bytes ``sent`` (stored as float32)."""
    if not outputs:
        raise ValueError("a tensor recording needs at least one output")
    path = Path(recordings_dir) / "tensors" / f"{sha256_hex(sent)}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"output_{i}": np.asarray(array, dtype=np.float32) for i, array in enumerate(outputs)})
    return path


def write_behaviour(recordings_dir: Path | str, **knobs) -> Path:
    """Write ``behaviour.json``: knobs a fake imported with ``FAKE_MXSDK_DIR`` starts with."""
    path = Path(recordings_dir) / "behaviour.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(knobs))
    return path


def mxpi_objects(detections: Sequence[dict], labels: Sequence[str] | None) -> list[dict]:
    """Our detection dicts (label, label_id, score, box [x0, y0, x1, y1] in original-image
    pixels) as MxpiObject dicts. ``labels``, when given, are the label file's names indexed
    by classId; a detection whose label disagrees is a broken test and raises."""
    objects = []
    for detection in detections:
        class_id, name = int(detection["label_id"]), str(detection["label"])
        if labels is not None and (not 0 <= class_id < len(labels) or labels[class_id] != name):
            raise ValueError(f"detection {detection} disagrees with labels {list(labels)}")
        x0, y0, x1, y1 = (float(v) for v in detection["box"])
        objects.append({"x0": x0, "y0": y0, "x1": x1, "y1": y1,
                        "classVec": [{"classId": class_id, "className": name,
                                      "confidence": float(detection["score"])}]})
    return objects
