"""Inference engines, by name; ``select_engine("auto")`` takes the first available."""
from __future__ import annotations

from inferencer.backends.base import InferenceEngine
from inferencer.backends.onnxruntime import OnnxRuntimeEngine
from ssdstack.errors import BackendUnavailable

# Order matters for "auto": the first available engine wins.
ENGINES: dict[str, type[InferenceEngine]] = {
    OnnxRuntimeEngine.name: OnnxRuntimeEngine,
}


def select_engine(name: str, **options) -> InferenceEngine:
    """A new, unloaded engine called ``name`` (or the first available for ``"auto"``),
    built with ``options`` (e.g. ``intra_op_threads``).

    Raises BackendUnavailable for an unknown name or an engine whose libraries are not
    installed here, naming what to install.
    """
    if name == "auto":
        classes = list(ENGINES.values())
        for cls in classes:
            if cls().is_available():
                return cls(**options)
        raise BackendUnavailable("no inference engine is available here: "
                                 + "; ".join(cls().missing() for cls in classes))
    if name not in ENGINES:
        raise BackendUnavailable(f"unknown inference engine {name!r}; this build has {sorted(ENGINES)} or 'auto'")
    engine = ENGINES[name](**options)
    if not engine.is_available():
        raise BackendUnavailable(engine.missing())
    return engine


__all__ = ["ENGINES", "InferenceEngine", "select_engine"]
