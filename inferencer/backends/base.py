"""What every inference engine looks like.

An engine instance serves one model version: :meth:`load` reads the version's serving
artefact (the kind named by :attr:`serving_kind`), :meth:`predict` runs the network on
one resized image. Decoding, resizing and postprocessing are the detector's, the same
for every engine, except for an engine that :attr:`takes_encoded_images` (the MindX
stream decoding JPEGs on the NPU), which answers :meth:`detect_encoded` instead.
Heavy libraries are imported inside ``load`` only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ssdstack.backends import Backend
from ssdstack.errors import Conflict, ServiceUnavailable
from ssdstack.model_store import sha256_file


class InferenceEngine(Backend):
    """Base class: subclasses set the class attributes and implement ``load`` and ``predict``."""

    kind = "inference engine"
    serving_kind: str = ""  # manifest artefact kind the engine loads
    takes_encoded_images = False  # True: detect_encoded, not predict

    def serving_file(self, version_dir: Path, manifest: dict) -> Path:
        """The version's :attr:`serving_kind` artefact, checked against its sha256.

        Raises Conflict if the version was not converted for this engine, and
        ServiceUnavailable if the file is missing or damaged.
        """
        entry = manifest.get("artefacts", {}).get(self.serving_kind)
        if entry is None:
            raise Conflict(f"model {manifest.get('name')!r} version {manifest.get('version')} has no "
                           f"{self.serving_kind} artefact: convert it for the {self.name} engine first")
        path = Path(version_dir) / entry["file"]
        if not path.exists() or sha256_file(path) != entry["sha256"]:
            raise ServiceUnavailable(f"{path} is missing or does not match its sha256 in the manifest")
        return path

    def load(self, version_dir: Path, manifest: dict) -> None:
        raise NotImplementedError

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``image`` ``[S, S, 3]`` uint8 RGB -> ``(boxes [P, 4] normalised (y0, x0, y1, x1),
        scores [P, C] with column 0 the background)``. Safe to call from several threads."""
        raise NotImplementedError

    def detect_encoded(self, image: bytes, labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image file bytes -> ``(boxes [N, 4] pixels (x0, y0, x1, y1) of the stored frame,
        scores [N], class ids [N] in 1..K)``, thresholded and NMS'd with the manifest's
        postprocess settings. Only for engines that :attr:`takes_encoded_images`."""
        raise NotImplementedError
