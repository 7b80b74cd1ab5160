"""What every conversion backend looks like.

A backend turns a version's exported model into a serving artefact and checks that
artefact against the version's ``reference.npz``. Heavy libraries are imported inside
``convert`` only, so that listing backends never needs them installed.
"""
from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ssdstack.jobs.context import JobContext


@dataclass
class ConvertResult:
    """``file`` (in the ``out_dir`` given to ``convert``) becomes artefact ``artefact_kind``.

    ``check`` is the accuracy check's dict (see :func:`converter.check.check_against_reference`);
    ``details`` says how the artefact was made (source, tool versions, settings).
    """

    artefact_kind: str
    file: Path
    check: dict
    details: dict = field(default_factory=dict)


class ConverterBackend:
    """Base class: subclasses set the class attributes and implement :meth:`convert`."""

    name: str = ""
    artefact_kind: str = ""
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
        return f"converter backend {self.name!r} needs {', '.join(parts)}: {self.install_hint}"

    def _missing_parts(self) -> list[str]:
        modules = [f"python module {m!r}" for m in self.python_modules if importlib.util.find_spec(m) is None]
        programs = [f"program {p!r} on PATH" for p in self.executables if shutil.which(p) is None]
        return modules + programs

    def convert(self, version_dir: Path, manifest: dict, out_dir: Path, options: dict,
                ctx: JobContext) -> ConvertResult:
        """Convert the version in ``version_dir`` (described by ``manifest``) into ``out_dir``.

        ``options["tolerance"]`` is the accuracy check's bound on max abs differences.
        """
        raise NotImplementedError
