"""Which detector serves a model name: the deployed version, reloaded when deployment changes."""
from __future__ import annotations

import threading

from inferencer.backends import select_engine
from inferencer.detector import Detector
from ssdstack.errors import InvalidInput, NoDeployedModel
from ssdstack.model_store import ModelStore


class ModelRepository:
    """Maps model names to loaded :class:`Detector` s of their deployed versions.

    Every :meth:`get` reads the store's ``deployed`` record (a small json file), so a new
    deployment is served from the next request on, without a restart. A replaced detector
    is not closed: requests already holding it finish on the old version.
    """

    def __init__(self, store: ModelStore, engine_name: str, engine_options: dict[str, dict] | None = None):
        """``engine_name``: an engine, or ``"auto"`` (per version, the first available engine
        it was converted for); ``engine_options``: constructor options per engine name."""
        self.store = store
        self.engine_name = engine_name
        self.engine_options = dict(engine_options or {})
        select_engine(engine_name, self.engine_options)  # fail at start-up, not on the first request
        self._detectors: dict[str, Detector] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def get(self, name: str | None = None) -> Detector:
        """The detector of ``name``'s deployed version; ``None``: the only deployed model.

        Raises NotFound for an unknown model, NoDeployedModel when it (or, for ``None``,
        any model) has no deployment, InvalidInput when ``None`` is ambiguous.
        """
        if name is None:
            name = self._only_deployed()
        version = self._deployed_version(name)
        detector = self._detectors.get(name)
        if detector is not None and detector.version == version:
            return detector
        with self._lock(name):
            # Read the record again: a thread that waited here may hold an older one.
            version = self._deployed_version(name)
            detector = self._detectors.get(name)
            if detector is None or detector.version != version:
                detector = self._load(name, version)
                self._detectors[name] = detector
            return detector

    def loaded(self) -> dict[str, int]:
        """``{name: version}`` of the detectors loaded now."""
        return {name: detector.version for name, detector in list(self._detectors.items())}

    def _only_deployed(self) -> str:
        names = self.store.deployed_models()
        if not names:
            raise NoDeployedModel("no model is deployed: deploy one, or name the model")
        if len(names) > 1:
            raise InvalidInput(f"several models are deployed ({', '.join(names)}): name one", details={"models": names})
        return names[0]

    def _deployed_version(self, name: str) -> int:
        record = self.store.deployed(name)
        if record is None:
            self.store.versions(name)  # raises NotFound for a model that does not exist
            raise NoDeployedModel(f"model {name!r} has no deployed version: deploy one first")
        return int(record["version"])

    def _load(self, name: str, version: int) -> Detector:
        manifest = self.store.manifest(name, version)
        engine = select_engine(self.engine_name, self.engine_options, manifest)
        engine.load(self.store.version_dir(name, version), manifest)
        return engine.detector(manifest, name, version)

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._load_locks.setdefault(name, threading.Lock())
