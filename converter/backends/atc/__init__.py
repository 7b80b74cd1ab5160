"""The ATC backend (CANN's ``atc`` -> ``model.om``), with the AIPP config it bakes in."""
from converter.backends.atc.backend import AtcBackend

__all__ = ["AtcBackend"]
