"""Inference engines, by name; ``"auto"`` takes the first available one that the
version was converted for."""
from __future__ import annotations

from inferencer.backends.base import InferenceEngine
from inferencer.backends.mxsdk.engine import MxSdkEngine
from inferencer.backends.onnxruntime import OnnxRuntimeEngine
from ssdstack.errors import BackendUnavailable, Conflict
from ssdstack.model_store import FP32, artefact_kind
from ssdstack.settings import WorkerSettings

# Order matters for "auto": the first available engine wins (the NPU where there is one).
ENGINES: dict[str, type[InferenceEngine]] = {
    MxSdkEngine.name: MxSdkEngine,
    OnnxRuntimeEngine.name: OnnxRuntimeEngine,
}


def engine_options(settings: WorkerSettings) -> dict[str, dict]:
    """Each engine's constructor options from the worker's settings."""
    return {
        OnnxRuntimeEngine.name: {"intra_op_threads": settings.infer_intra_op_threads or None},
        MxSdkEngine.name: {"preprocessing": settings.mxsdk_preprocessing, "device_id": settings.mxsdk_device_id,
                           "timeout_ms": settings.mxsdk_timeout_ms, "soc_version": settings.ascend_soc_version,
                           "postprocess_lib": settings.mxsdk_postprocess_lib, "work_dir": settings.work_dir},
    }


def select_engine(name: str, options: dict[str, dict] | None = None, manifest: dict | None = None,
                  precision: str = FP32) -> InferenceEngine:
    """A new, unloaded engine called ``name``, built with ``options[name]``, to load the
    artefact in ``precision``.

    ``"auto"``: the first available engine, or with ``manifest``, the first available
    one whose artefact in ``precision`` the version has. Raises BackendUnavailable for an
    unknown name or an engine whose libraries are not installed here (naming what to
    install), Conflict when no engine here can serve the version or the precision.
    """
    options = options or {}
    if name == "auto":
        available = [cls for cls in ENGINES.values() if cls().is_available()]
        if not available:
            raise BackendUnavailable("no inference engine is available here: "
                                     + "; ".join(cls().missing() for cls in ENGINES.values()))
        if manifest is not None:
            artefacts = manifest.get("artefacts", {})
            servable = [cls for cls in available
                        if precision in cls.precisions and artefact_kind(cls.artefact, precision) in artefacts]
            if not servable:
                raise Conflict(f"model {manifest.get('name')!r} version {manifest.get('version')} has no "
                               f"{precision} artefact for the engines here "
                               f"({', '.join(cls.name for cls in available)}): convert it for one of them")
            available = servable
        name = available[0].name
    elif name not in ENGINES:
        raise BackendUnavailable(f"unknown inference engine {name!r}; this build has {sorted(ENGINES)} or 'auto'")
    engine = ENGINES[name](**options.get(name, {}))
    if not engine.is_available():
        raise BackendUnavailable(engine.missing())
    if precision not in engine.precisions:
        raise Conflict(f"the {name} engine serves {', '.join(engine.precisions)} artefacts, not {precision}")
    engine.precision = precision
    return engine


__all__ = ["ENGINES", "InferenceEngine", "engine_options", "select_engine"]
