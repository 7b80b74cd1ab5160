"""What every conversion backend looks like.

A backend turns a version's exported model into a serving artefact and checks that
artefact against the version's ``reference.npz``. Heavy libraries are imported inside
``convert`` only, so that listing backends never needs them installed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ssdstack.backends import Backend
from ssdstack.datasets.coco import CocoSplit
from ssdstack.jobs.context import JobContext
from ssdstack.jobs.specs import AtcOptions
from ssdstack.model_store import FP32


@dataclass(frozen=True)
class Int8Settings:
    """How INT8 conversions calibrate and are judged: the first ``calibration_images`` of
    the calibration split calibrate; the served mAP on the validation split (``min_images``
    at least) may fall at most ``max_map_drop`` below the FP32 artefact's."""

    calibration_images: int = 100
    min_images: int = 200
    max_map_drop: float = 0.01


@dataclass(frozen=True)
class Int8Options:
    """An INT8 conversion's ``settings`` and the splits of the version's own dataset it
    calibrates on (``calibration``) and is judged on (``validation``)."""

    calibration: CocoSplit
    validation: CocoSplit
    settings: Int8Settings = field(default_factory=Int8Settings)


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert; each backend reads its own fields.

    ``tolerance``: the accuracy check's bound on max abs differences; ``atc``: the ``atc``
    backend's options, validated with the job's spec; ``soc_version``: its target chip,
    resolved (the options', the converter's setting or the host's NPU); ``log_dir``: where
    a tool's detailed logs go (default: inside the staging folder); ``precision``: the
    artefact's (one of the backend's :attr:`ConverterBackend.precisions`), with ``int8``
    its calibration and gate.
    """

    tolerance: float = 1e-4
    atc: AtcOptions = field(default_factory=AtcOptions)
    soc_version: str | None = None
    log_dir: Path | None = None
    precision: str = FP32
    int8: Int8Options | None = None


@dataclass
class ConvertResult:
    """``file`` (in the ``out_dir`` given to ``convert``) becomes artefact ``artefact_kind``,
    and each of ``extra`` (kind -> file in ``out_dir``) an artefact beside it.

    ``check`` is the accuracy check's dict (see :func:`converter.check.check_against_reference`),
    or ``{"passed": None, "reason": ...}`` for an artefact that cannot run here;
    ``details`` says how the artefact was made (source, tool versions, settings);
    ``batch`` is the artefact's batch axis: 1, or a name when it takes any number of images;
    ``record``: more of what the manifest's serving record keeps (an INT8 artefact's
    calibration and gate).
    """

    artefact_kind: str
    file: Path
    check: dict
    details: dict = field(default_factory=dict)
    extra: dict[str, Path] = field(default_factory=dict)
    batch: int | str = 1
    record: dict = field(default_factory=dict)


class ConverterBackend(Backend):
    """Base class: subclasses set the class attributes and implement :meth:`convert`."""

    kind = "converter backend"
    # The precisions of artefact it makes.
    precisions: tuple[str, ...] = (FP32,)

    def convert(self, version_dir: Path, manifest: dict, out_dir: Path, options: ConvertOptions,
                ctx: JobContext) -> ConvertResult:
        """Convert the version in ``version_dir`` (described by ``manifest``) into ``out_dir``."""
        raise NotImplementedError
