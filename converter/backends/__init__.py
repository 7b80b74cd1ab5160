"""Conversion backends, by name; ``select_backend("auto")`` takes the first available."""
from __future__ import annotations

from converter.backends.atc.backend import AtcBackend, target_chip_known
from converter.backends.base import ConverterBackend, ConvertResult
from converter.backends.onnxruntime import OnnxRuntimeBackend
from ssdstack.errors import BackendUnavailable

# Order matters for "auto": the first available backend wins (atc where CANN is installed
# and the target chip is known).
BACKENDS: dict[str, type[ConverterBackend]] = {
    AtcBackend.name: AtcBackend,
    OnnxRuntimeBackend.name: OnnxRuntimeBackend,
}


def select_backend(name: str, default_soc_version: str | None = None) -> ConverterBackend:
    """The backend called ``name``, or the first available one for ``"auto"``; ``atc`` counts
    as available for ``"auto"`` only when the target chip is known (``default_soc_version``,
    the converter's setting, or the host's NPU).

    Raises BackendUnavailable for an unknown name or a backend whose libraries or tools
    are not installed here, naming what to install.
    """
    if name == "auto":
        backends = [cls() for cls in BACKENDS.values()]
        for backend in backends:
            if backend.is_available() and (backend.name != AtcBackend.name or target_chip_known(default_soc_version)):
                return backend
        raise BackendUnavailable("no converter backend is available here: "
                                 + "; ".join(b.missing() for b in backends))
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown converter backend {name!r}; this build has {sorted(BACKENDS)} or 'auto'")
    backend = BACKENDS[name]()
    if not backend.is_available():
        raise BackendUnavailable(backend.missing())
    return backend


__all__ = ["BACKENDS", "ConvertResult", "ConverterBackend", "select_backend"]
