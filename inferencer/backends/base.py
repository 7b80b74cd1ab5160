"""What every inference engine looks like.

An engine instance serves one model version: :meth:`load` reads the version's serving
artefact (the kind named by :attr:`artefact`), :meth:`predict` runs the network on
one resized image, and :meth:`detector` gives the :class:`~ssdstack.detection.detector.Detector`
that decodes, resizes and postprocesses around it, the same for every engine unless the
engine decodes on its device (the MindX stream with DVPP gives its own).
Heavy libraries are imported inside ``load`` only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ssdstack.backends import Backend
from ssdstack.detection.detector import Detector
from ssdstack.errors import Conflict, ServiceUnavailable
from ssdstack.model_store import FP32, artefact_kind, sha256_file


class InferenceEngine(Backend):
    """Base class: subclasses set the class attributes and implement ``load`` and ``predict``
    (and ``predict_batch`` where the loaded artefact takes more than one image at once)."""

    kind = "inference engine"
    # Images one engine call may take, as the loaded artefact allows (1: one at a time).
    max_batch = 1
    # The precisions of artefact it serves; ``precision`` is the one it loads
    # (select_engine sets it).
    precisions: tuple[str, ...] = (FP32,)
    precision = FP32

    def serving_file(self, version_dir: Path, manifest: dict) -> Path:
        """The version's :attr:`artefact` artefact in :attr:`precision`, checked against its sha256.

        Raises Conflict if the version was not converted for this engine, and
        ServiceUnavailable if the file is missing or damaged.
        """
        kind = artefact_kind(self.artefact, self.precision)
        entry = manifest.get("artefacts", {}).get(kind)
        if entry is None:
            raise Conflict(f"model {manifest.get('name')!r} version {manifest.get('version')} has no "
                           f"{kind} artefact: convert it for the {self.name} engine in {self.precision} first")
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

    def predict_batch(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``images`` ``[B, S, S, 3]`` uint8 -> ``(boxes [B, P, 4], scores [B, P, C])``, as
        :meth:`predict` gives them per image; here, one :meth:`predict` call each."""
        results = [self.predict(image) for image in images]
        return np.stack([boxes for boxes, _ in results]), np.stack([scores for _, scores in results])

    def detector(self, manifest: dict, name: str, version: int) -> Detector:
        """The detector serving this loaded engine as version ``version`` of model ``name``."""
        return Detector(self, manifest, name, version, self.precision)
