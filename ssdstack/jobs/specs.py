"""Job specifications: what a client may submit, validated by pydantic.

Unknown fields are rejected so that a typo (``epoch`` for ``epochs``) is a 422 naming the
field rather than a silently ignored setting.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="a-z, 0-9, '.', '_', '-'")]
ARCHITECTURE_NAMES = ("ssd300_mobilenet_v2", "ssd_lite_mobilenet_v2")
Architecture = Literal["ssd300_mobilenet_v2", "ssd_lite_mobilenet_v2"]
ConvertBackend = Literal["auto", "onnxruntime"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainSpec(_Spec):
    """Train a model on an uploaded dataset and publish it as a new version."""

    type: Literal["train"] = "train"
    dataset: Name
    model: Name = "ssd"
    architecture: Architecture = "ssd300_mobilenet_v2"
    epochs: int | None = Field(default=None, ge=1, le=10_000, description="default: the recipe's")
    batch_size: int | None = Field(default=None, ge=1, le=1024)
    lr: float | None = Field(default=None, gt=0, le=10)
    warmup_epochs: float | None = Field(default=None, ge=0)
    weight_decay: float | None = Field(default=None, ge=0, le=1)
    loss_scale: float | None = Field(default=None, ge=1, le=2**24)
    checkpoint_every: int = Field(default=1, ge=1, description="epochs between checkpoints")
    seed: int = Field(default=0, ge=0)
    device: Literal["auto", "CPU", "GPU", "Ascend"] = "auto"


class ConvertSpec(_Spec):
    """Convert a published version for a serving backend; checks it against reference.npz."""

    type: Literal["convert"] = "convert"
    model: Name
    version: int = Field(ge=1)
    backend: ConvertBackend = "auto"
    tolerance: float = Field(default=1e-4, gt=0, le=1)


class EvaluateSpec(_Spec):
    """COCO mAP of a version's served artefact on a dataset split (default: its training dataset)."""

    type: Literal["evaluate"] = "evaluate"
    model: Name
    version: int = Field(ge=1)
    dataset: Name | None = None
    split: Literal["train", "val"] = "val"


class PipelineSpec(TrainSpec):
    """train -> export -> convert -> evaluate -> deploy, as one job."""

    type: Literal["pipeline"] = "pipeline"
    backend: ConvertBackend = "auto"
    tolerance: float = Field(default=1e-4, gt=0, le=1)
    max_map_drop: float = Field(default=0.01, ge=0, le=1, description="largest allowed AP drop, served vs trained")
    deploy: bool = True


JobSpec = Annotated[Union[TrainSpec, ConvertSpec, EvaluateSpec, PipelineSpec], Field(discriminator="type")]
