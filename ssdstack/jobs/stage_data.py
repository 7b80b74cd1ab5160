"""What the stages of a job read and write: typed hand-offs between services.

A stage reads one model, assembled from the job's spec and the outputs of the stages
before it (later outputs win; unknown fields are ignored), and writes one
:class:`StageOutput`, which the job record keeps with its ``schema_version``. An
output's :meth:`~StageOutput.result` is what it adds to the job's ``result`` (the user's
view); outputs merge into it in stage order, nested dicts merged.

Records written before stage outputs existed (schema 0) have only their ``result``; it
stands in for the outputs (see :func:`ssdstack.jobs.pipeline.recorded_outputs`).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ssdstack.jobs.specs import AtcOptions, ConvertBackend, Name, Precision

SCHEMA_VERSION = 1


class StageData(BaseModel):
    """Base of everything a stage reads or writes."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class StageOutput(StageData):
    schema_version: int = SCHEMA_VERSION

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"stage output schema {value} is not one this release reads ({SCHEMA_VERSION})")
        return value

    def result(self) -> dict[str, Any]:
        """What this output adds to the job's result."""
        return {}


class VersionRef(StageData):
    """A published model version."""

    model: Name
    version: int = Field(ge=1)


class Trained(StageOutput):
    """Weights ready to publish as a new version (train, import or load -> export).

    ``weights``: a MindSpore checkpoint file. ``manifest``: the version's manifest less
    what publishing fills in (name, version, time, artefacts; see
    :func:`trainer.publish.version_manifest`). ``formats``: what to export (None: the
    device's default). The reference inputs of ``reference.npz`` are the images of
    ``reference_file`` when given, else the first val images of ``reference_dataset``,
    else fixed noise. ``report_files`` (artefact kind -> file under ``report_root``) is
    the trained-mAP report that travels into the version.
    """

    model: Name
    weights: str
    manifest: dict[str, Any]
    device: str
    formats: list[str] | None = None
    reference_file: str | None = None
    reference_dataset: str | None = None
    report_root: str | None = None
    report_files: dict[str, str] = Field(default_factory=dict)

    def result(self) -> dict[str, Any]:
        trained = (self.manifest.get("metrics") or {}).get("trained")
        return {"model": self.model, "metrics": {"trained": trained["coco"]} if trained else {},
                "training": self.manifest.get("training", {})}


class Published(StageOutput):
    """A new version in the store (export)."""

    model: Name
    version: int = Field(ge=1)
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)

    def result(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "metrics": self.metrics, "training": self.training}


class ConvertInput(VersionRef):
    backend: ConvertBackend = "auto"
    tolerance: float = Field(default=1e-4, gt=0, le=1)
    atc: AtcOptions = Field(default_factory=AtcOptions)
    precision: Precision = "fp32"
    max_map_drop: float = Field(default=0.01, ge=0, le=1)


class Converted(StageOutput):
    """A serving artefact added to a version, with its accuracy check (convert)."""

    model: Name
    version: int = Field(ge=1)
    backend: str
    artefact: str
    check: dict[str, Any]
    precision: Precision = "fp32"
    gate: dict[str, Any] | None = None

    def result(self) -> dict[str, Any]:
        # Both places, as both answers had them before stages were typed: a convert job's
        # result at its top, a pipeline's under "conversion".
        conversion = {"backend": self.backend, "artefact": self.artefact, "check": self.check}
        if self.precision != "fp32":
            conversion.update(precision=self.precision, gate=self.gate)
        return {"model": self.model, "version": self.version, **conversion, "conversion": conversion}


class EvaluateInput(VersionRef):
    dataset: Name | None = None
    split: Literal["train", "val"] = "val"


class Evaluated(StageOutput):
    """``metrics.served``: the served artefact's COCO numbers on a split (evaluate); the full
    record is the version's ``metrics.served``."""

    model: Name
    version: int = Field(ge=1)
    metrics: dict[str, dict[str, float]]
    engine: str

    def result(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "metrics": self.metrics}


class DeployInput(VersionRef):
    """``metrics``: ``trained`` and ``served`` COCO numbers, as the job's result holds them."""

    metrics: dict[str, dict[str, float]]
    max_map_drop: float = Field(default=0.01, ge=0, le=1)
    deploy: bool = True
    deploy_if_match: int | None = Field(default=None, ge=0)


class Deployed(StageOutput):
    """The version passed the deploy gate; ``deployed`` is the store's record, None when the
    spec asked not to deploy or (``skipped`` says why) another version was deployed meanwhile."""

    deployed: dict[str, Any] | None
    skipped: str | None = None

    def result(self) -> dict[str, Any]:
        if self.skipped is not None:
            return {"deploy_skipped": self.skipped}
        return {"deployed": self.deployed} if self.deployed is not None else {}


class Ingested(StageOutput):
    """A dataset stored (ingest): its ``dataset.json``."""

    dataset: dict[str, Any]

    def result(self) -> dict[str, Any]:
        return {"dataset": self.dataset}
