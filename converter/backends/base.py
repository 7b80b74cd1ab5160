"""What every conversion backend looks like.

A backend turns a version's exported model into a serving artefact and checks that
artefact against the version's ``reference.npz``. Heavy libraries are imported inside
``convert`` only, so that listing backends never needs them installed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ssdstack.backends import Backend
from ssdstack.jobs.context import JobContext


@dataclass
class ConvertResult:
    """``file`` (in the ``out_dir`` given to ``convert``) becomes artefact ``artefact_kind``,
    and each of ``extra`` (kind -> file in ``out_dir``) an artefact beside it.

    ``check`` is the accuracy check's dict (see :func:`converter.check.check_against_reference`),
    or ``{"passed": None, "reason": ...}`` for an artefact that cannot run here;
    ``details`` says how the artefact was made (source, tool versions, settings).
    """

    artefact_kind: str
    file: Path
    check: dict
    details: dict = field(default_factory=dict)
    extra: dict[str, Path] = field(default_factory=dict)


class ConverterBackend(Backend):
    """Base class: subclasses set the class attributes and implement :meth:`convert`."""

    kind = "converter backend"
    artefact_kind: str = ""

    def convert(self, version_dir: Path, manifest: dict, out_dir: Path, options: dict,
                ctx: JobContext) -> ConvertResult:
        """Convert the version in ``version_dir`` (described by ``manifest``) into ``out_dir``.

        ``options``: ``tolerance`` (the accuracy check's bound on max abs differences),
        ``atc`` (:class:`ssdstack.jobs.specs.AtcOptions` as a dict),
        ``default_soc_version`` (the worker's setting) and ``log_dir`` (where a tool's detailed
        logs go); each backend reads its own.
        """
        raise NotImplementedError
