"""Job specifications: what a client may submit, validated by pydantic.

Unknown fields are rejected so that a typo (``epoch`` for ``epochs``) is a 422 naming the
field rather than a silently ignored setting.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ssdstack.ascend import SOC_VERSIONS
from ssdstack.names import CHECKPOINT_FILE, NAME
from ssdstack.recipes import ARCHITECTURES, DEFAULT_ARCHITECTURE

Name = Annotated[str, Field(pattern=f"^{NAME}$", description="a-z, 0-9, '.', '_', '-'")]
Architecture = Literal[tuple(ARCHITECTURES)]
ConvertBackend = Literal["auto", "onnxruntime", "atc"]
# A serving artefact's precision (ssdstack.model_store.PRECISIONS). FP16 is not offered:
# on this CPU class ONNX Runtime runs it slower than FP32 (docs/architecture.md).
Precision = Literal["fp32", "int8"]
# A checkpoint file in the store's ``checkpoints/`` folder (``PUT /v1/checkpoints/{name}``).
CheckpointFile = Annotated[str, Field(pattern=f"^{CHECKPOINT_FILE}$",
                                      description="a .ckpt file uploaded to /v1/checkpoints")]
# A published version (``<model>:<version>``) or an uploaded checkpoint file.
CheckpointRef = Annotated[str, Field(pattern=f"^({NAME}:[1-9][0-9]{{0,8}}|{CHECKPOINT_FILE})$",
                                     description="'<model>:<version>' or an uploaded .ckpt file")]
ExportFormat = Literal["MINDIR", "ONNX", "AIR"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainSpec(_Spec):
    """Train a model on an uploaded dataset and publish it as a new version."""

    type: Literal["train"] = "train"
    dataset: Name
    model: Name = "ssd"
    architecture: Architecture = DEFAULT_ARCHITECTURE
    epochs: int | None = Field(default=None, ge=1, le=10_000, description="default: the recipe's")
    batch_size: int | None = Field(default=None, ge=1, le=1024)
    lr: float | None = Field(default=None, gt=0, le=10)
    warmup_epochs: float | None = Field(default=None, ge=0)
    weight_decay: float | None = Field(default=None, ge=0, le=1)
    loss_scale: float | None = Field(default=None, ge=1, le=2**24)
    checkpoint_every: int = Field(default=1, ge=1, description="epochs between checkpoints")
    keep_checkpoint_max: int = Field(default=2, ge=1, le=1000, description="newest resume checkpoints kept")
    eval_every: int | None = Field(default=None, ge=1, description="epochs between val mAP checks; the "
                                   "version is built from the best checkpoint by mAP")
    seed: int = Field(default=0, ge=0)
    device: Literal["auto", "CPU", "GPU", "Ascend"] = "auto"
    pretrained: CheckpointRef | None = Field(default=None, description="start from a whole-network checkpoint")
    backbone_checkpoint: CheckpointFile | None = Field(default=None, description="feature-extractor weights")
    head_filter: Literal["auto", "none"] | list[Annotated[str, Field(min_length=1)]] = Field(
        default="auto", description="pretrained parameters not to load: 'auto' = head parameters whose "
        "shape differs (another class count), 'none', or a list of name prefixes")
    freeze: Literal["none", "backbone"] = "none"
    amp_level: Literal["auto", "O0", "O1", "O2", "O3"] = Field(
        default="auto", description="MindSpore AMP level; auto = O2 on Ascend, O0 elsewhere")
    loss_scale_mode: Literal["fixed", "dynamic"] = "fixed"
    clip_global_norm: float | None = Field(default=None, gt=0, description="default: the recipe's (FPN: 1.0)")
    devices: int = Field(default=1, ge=1, le=64, description="data-parallel processes on the trainer's node, "
                         "or per node with nodes > 1")
    launcher: Literal["msrun", "rank_table"] = "msrun"
    nodes: int = Field(default=1, ge=1, le=1024, description="> 1: the ranks run as an AscendJob on the "
                       "cluster's Ascend 910 nodes (rendered for you to submit; docs/ascend.md)")


class AtcOptions(_Spec):
    """How the ``atc`` backend builds an ``.om`` (flags of CANN's ATC; see docs/ascend.md)."""

    soc_version: Literal[SOC_VERSIONS] | None = Field(
        default=None, description="target chip; default: the converter's SSDSTACK_ASCEND_SOC_VERSION, "
        "else the chip npu-smi shows on the converter's host")
    precision_mode: Literal["force_fp16", "allow_fp32_to_fp16", "allow_mix_precision", "must_keep_origin_dtype",
                            "force_fp32"] = "allow_fp32_to_fp16"
    output_type: Literal["FP32", "FP16"] = "FP32"
    image_format: Literal["auto", "rgb", "bgr", "yuv420sp"] = Field(
        default="auto", description="what the served images arrive as: yuv420sp is the DVPP JPEG decoder's "
        "output; auto = yuv420sp when the input size suits DVPP (width multiple of 16, height of 2), else rgb")
    batch_size: int = Field(default=1, ge=1, le=256, description="static batch")
    dynamic_batch: list[Annotated[int, Field(ge=1, le=256)]] | None = Field(
        default=None, min_length=2, max_length=100, description="batch sizes of a dynamic-batch OM")
    op_select_implmode: Literal["high_precision", "high_performance"] = "high_precision"

    @field_validator("dynamic_batch")
    @classmethod
    def _distinct_batches(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if len(set(value)) < 2:
            raise ValueError("a dynamic batch needs at least two different sizes; use batch_size for one")
        return sorted(set(value))

    source: Literal["auto", "air", "onnx"] = Field(
        default="auto", description="auto = the AIR when the version has one (Ascend trainer), else the ONNX")
    timeout_s: int = Field(default=3600, ge=10, le=24 * 3600)


class ConvertSpec(_Spec):
    """Convert a published version for a serving backend; checks it against reference.npz."""

    type: Literal["convert"] = "convert"
    model: Name
    version: int = Field(ge=1)
    backend: ConvertBackend = "auto"
    tolerance: float = Field(default=1e-4, gt=0, le=1)
    atc: AtcOptions = Field(default_factory=AtcOptions)
    precision: Precision = Field(default="fp32", description="int8: ONNX Runtime static quantisation, calibrated "
                                 "on the version's dataset and gated on its served mAP")
    max_map_drop: float = Field(default=0.01, ge=0, le=1,
                                description="int8: largest allowed served mAP drop from the FP32 artefact's")

    @model_validator(mode="after")
    def _int8_backend(self) -> "ConvertSpec":
        if self.precision == "int8" and self.backend == "atc":
            raise ValueError("int8 with the atc backend needs AMCT (the Ascend Model Compression Toolkit), which "
                             "this release does not run: use backend onnxruntime, or precision fp32")
        return self


class EvaluateSpec(_Spec):
    """COCO mAP of a version's served artefact on a dataset split (default: its training dataset)."""

    type: Literal["evaluate"] = "evaluate"
    model: Name
    version: int = Field(ge=1)
    dataset: Name | None = None
    split: Literal["train", "val"] = "val"


class ImportSpec(_Spec):
    """Turn an existing MindSpore checkpoint into a model version (validated, exported)."""

    type: Literal["import"] = "import"
    checkpoint: CheckpointFile
    architecture: Architecture
    labels: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        min_length=1, description="class names without background, in the checkpoint's order")
    model: Name = "ssd"
    dataset: Name | None = Field(default=None, description="a dataset whose val split gives the trained mAP")
    device: Literal["auto", "CPU", "GPU", "Ascend"] = "auto"


class ExportSpec(_Spec):
    """Export a version's weights again, as a new version (e.g. AIR on an Ascend trainer)."""

    type: Literal["export"] = "export"
    model: Name
    version: int = Field(ge=1)
    formats: list[ExportFormat] = Field(default=["MINDIR", "ONNX"], min_length=1)
    device: Literal["auto", "CPU", "GPU", "Ascend"] = "auto"


class PipelineSpec(TrainSpec):
    """train -> export -> convert -> evaluate -> deploy, as one job."""

    type: Literal["pipeline"] = "pipeline"
    backend: ConvertBackend = "auto"
    tolerance: float = Field(default=1e-4, gt=0, le=1)
    atc: AtcOptions = Field(default_factory=AtcOptions)
    max_map_drop: float = Field(default=0.01, ge=0, le=1, description="largest allowed AP drop, served vs trained")
    deploy: bool = True
    deploy_if_match: int | None = Field(
        default=None, ge=0, description="deploy only while this version is the deployed one (0: while none is); "
                                        "default: the one deployed when the job is submitted, so that a deploy "
                                        "made meanwhile is kept")


class IngestSpec(_Spec):
    """Unpack, validate and store an uploaded dataset archive. Made by ``POST
    /v1/datasets`` (which spooled the archive as ``upload``), never submitted directly."""

    type: Literal["ingest"] = "ingest"
    dataset: Name
    format: Literal["auto", "coco", "voc", "text"] = "auto"
    upload: str = Field(pattern=r"^[0-9a-f]{32}$", description="the spooled archive's id")
