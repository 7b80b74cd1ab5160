"""What every backend (converter or inference engine) shares: saying whether the
libraries and programs it needs are here, without importing them."""
from __future__ import annotations

import importlib.util
import shutil


class Backend:
    """Subclasses set ``name``, ``python_modules``, ``executables`` and ``install_hint``."""

    kind: str = "backend"                 # "converter backend", "inference engine"
    name: str = ""
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


def usable(registry: dict[str, type[Backend]], setting: str) -> list[str]:
    """The names in ``registry`` a worker can use: every available one for ``"auto"``,
    else the configured one if it is available (what the worker's heartbeat reports)."""
    return [name for name, cls in registry.items()
            if (setting == "auto" or name == setting) and cls().is_available()]
