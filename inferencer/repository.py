"""Which detector serves a model name: the deployed version, loaded before it is switched to."""
from __future__ import annotations

import logging
import threading
import time

from inferencer.backends import select_engine
from inferencer.batching import BatchPolicy, batching
from ssdstack.detection.detector import Detector
from ssdstack.errors import InvalidInput, NoDeployedModel
from ssdstack.model_store import ModelStore

log = logging.getLogger(__name__)
# Seconds before a version that failed to load is tried again (a new deployment is tried at once).
RETRY_FAILED_LOAD_S = 60.0


class ModelRepository:
    """Maps model names to loaded :class:`Detector` s of their deployed versions.

    Every :meth:`get` reads the store's ``deployed`` record (a small json file), so a new
    deployment is served without a restart. The new version is loaded first; requests go
    on to the old one meanwhile, and keep going to it when the load fails (tried again
    after RETRY_FAILED_LOAD_S, and :meth:`status` says so). A replaced detector is not
    closed: requests already holding it finish on the old version.
    """

    def __init__(self, store: ModelStore, engine_name: str, engine_options: dict[str, dict] | None = None,
                 batch_policy: BatchPolicy | None = None):
        """``engine_name``: an engine, or ``"auto"`` (per version, the first available engine
        it was converted for); ``engine_options``: constructor options per engine name;
        ``batch_policy``: how concurrent detects share engine calls (None: they do not)."""
        self.store = store
        self.engine_name = engine_name
        self.engine_options = dict(engine_options or {})
        self.batch_policy = batch_policy
        select_engine(engine_name, self.engine_options)  # fail at start-up, not on the first request
        self._detectors: dict[str, Detector] = {}
        self._failed: dict[str, dict] = {}  # name -> {"version", "error", "at"} of its last failed load
        self._load_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def get(self, name: str | None = None) -> Detector:
        """The detector of ``name``'s deployed version; ``None``: the only deployed model.

        Raises NotFound for an unknown model, NoDeployedModel when it (or, for ``None``,
        any model) has no deployment, InvalidInput when ``None`` is ambiguous.
        """
        if name is None:
            name = self._only_deployed()
        deployed = self._deployed(name)
        detector = self._detectors.get(name)
        if detector is not None and _serves(detector) == deployed:
            self._failed.pop(name, None)  # deployed back to what is served: no failed load stands
            return detector
        if detector is not None and self._failed_lately(name, deployed):
            return detector
        lock = self._lock(name)
        if not lock.acquire(blocking=detector is None):
            return detector  # another request is loading the new version: this one is served by the old
        try:
            # Read the record again: a thread that waited here may hold an older one.
            deployed = self._deployed(name)
            detector = self._detectors.get(name)
            if detector is None or _serves(detector) != deployed:
                detector = self._switch(name, deployed, detector)
            return detector
        finally:
            lock.release()

    def _switch(self, name: str, deployed: tuple[int, str], serving: Detector | None) -> Detector:
        """Load the ``(version, precision)`` deployed and serve it from now on; on failure,
        go on serving ``serving`` (raise when there is none)."""
        version, precision = deployed
        try:
            loaded = self._load(name, version, precision)
        except Exception as error:  # any engine failure: the old version keeps serving
            self._failed[name] = {"version": version, "precision": precision,
                                  "error": f"{type(error).__name__}: {error}", "at": time.time()}
            if serving is None:
                raise
            log.error("model %s version %s failed to load; still serving version %s: %s", name, version,
                      serving.version, error)
            return serving
        self._failed.pop(name, None)
        self._detectors[name] = loaded
        return loaded

    def _failed_lately(self, name: str, deployed: tuple[int, str]) -> bool:
        failed = self._failed.get(name)
        return (failed is not None and (failed["version"], failed["precision"]) == deployed
                and time.time() - failed["at"] < RETRY_FAILED_LOAD_S)

    def loaded(self) -> dict[str, int]:
        """``{name: version}`` of the detectors loaded now."""
        return {name: detector.version for name, detector in list(self._detectors.items())}

    def status(self) -> dict[str, dict]:
        """Per model loaded or tried: the version served, and the last failed load if any."""
        names = set(self._detectors) | set(self._failed)
        return {name: {"serving": self._detectors[name].version if name in self._detectors else None,
                       "precision": self._detectors[name].precision if name in self._detectors else None,
                       "load_failed": self._failed.get(name)} for name in sorted(names)}

    def _only_deployed(self) -> str:
        names = self.store.deployed_models()
        if not names:
            raise NoDeployedModel("no model is deployed: deploy one, or name the model")
        if len(names) > 1:
            raise InvalidInput(f"several models are deployed ({', '.join(names)}): name one", details={"models": names})
        return names[0]

    def _deployed(self, name: str) -> tuple[int, str]:
        """``(version, precision)`` deployed for ``name``."""
        deployed = self.store.deployed_serving(name)
        if deployed is None:
            self.store.versions(name)  # raises NotFound for a model that does not exist
            raise NoDeployedModel(f"model {name!r} has no deployed version: deploy one first")
        return deployed

    def _load(self, name: str, version: int, precision: str) -> Detector:
        manifest = self.store.manifest(name, version)
        engine = select_engine(self.engine_name, self.engine_options, manifest, precision)
        engine.load(self.store.version_dir(name, version), manifest)
        return batching(engine, self.batch_policy).detector(manifest, name, version)

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._load_locks.setdefault(name, threading.Lock())


def _serves(detector: Detector) -> tuple[int, str]:
    return detector.version, detector.precision
