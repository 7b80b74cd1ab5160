"""What every backend (converter or inference engine) shares: saying whether the
libraries and programs it needs are here, without importing them."""
from __future__ import annotations

import importlib.util
import shutil


class Backend:
    """Subclasses set ``name``, ``artefact``, ``python_modules``, ``executables`` and ``install_hint``."""

    kind: str = "backend"                 # "converter backend", "inference engine"
    name: str = ""
    artefact: str = ""                    # the manifest artefact kind it makes (converter) or serves (engine)
    python_modules: tuple[str, ...] = ()  # importable modules the backend needs
    executables: tuple[str, ...] = ()     # programs it needs on PATH
    install_hint: str = ""                # how to get them, for missing()

    def is_available(self) -> bool:
        return not self._missing_parts()

    def missing(self) -> str:
        """Empty when available; otherwise what is missing and how to install it."""
        parts = self._missing_parts()
        if not parts:
            return ""
        return f"{self.kind} {self.name!r} needs {', '.join(parts)}: {self.install_hint}"

    def _missing_parts(self) -> list[str]:
        modules = [f"python module {m!r}" for m in self.python_modules if importlib.util.find_spec(m) is None]
        programs = [f"program {p!r} on PATH" for p in self.executables if shutil.which(p) is None]
        return modules + programs


def describe(registry: dict[str, type[Backend]], setting: str) -> list[dict]:
    """Every backend in ``registry`` as a worker's heartbeat reports it: ``name``,
    ``usable`` (available here and allowed by ``setting``, a name or ``"auto"``), the
    ``artefact`` kind it makes or serves, and ``install_hint`` for when it is missing."""
    return [{"name": name, "usable": (setting == "auto" or name == setting) and cls().is_available(),
             "artefact": cls.artefact, "install_hint": cls.install_hint} for name, cls in registry.items()]
