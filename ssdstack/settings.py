"""Settings from environment variables (prefix ``SSDSTACK_``), validated at start-up.

One class per process kind; each reads only what it needs. A bad value stops the process
with pydantic's message, which names the variable.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from limits import parse_many
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated, Literal

from ssdstack.api_keys import ApiKey, parse_entry
from ssdstack.ascend import SOC_VERSIONS
from ssdstack.redis_client import is_sentinel, sentinel_hosts


class CommonSettings(BaseSettings):
    """What every process (gateway and workers) shares."""

    model_config = SettingsConfigDict(env_prefix="SSDSTACK_", extra="ignore")

    # redis://, rediss://, unix://, or a Sentinel group: sentinel://h1:26379;sentinel://h2:26379/0
    # (its master's name in redis_sentinel_master).
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_sentinel_master: str = "mymaster"
    store_dir: Path = Path("var/store")
    work_dir: Path = Path("var/work")
    # Seconds the broker waits for an ack before redelivering an unacked (acks_late) task.
    # A crashed worker's job does not wait for it: the reaper sends its stage again once
    # the job's lease has expired. A redelivered message finds the job moved on and is dropped.
    visibility_timeout: int = Field(default=6 * 3600, ge=10)
    heartbeat_interval: float = Field(default=5.0, gt=0)
    # A heartbeat or job lease older than this is dead.
    heartbeat_ttl: float = Field(default=30.0, gt=0)
    # Finished jobs (record, log, cancel flag) are kept this long, then expire.
    job_retention: int = Field(default=30 * 24 * 3600, ge=60)
    # A job whose worker died this many times (its lease expired mid-stage) fails.
    max_attempts: int = Field(default=3, ge=1, le=100)
    # Dataset uploads: the archive (the gateway's bound), its members and unpacked bytes,
    # and each image's pixels (the ingest stage's bounds, and detect's).
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1)
    max_archive_members: int = Field(default=200_000, ge=1)
    max_unpacked_bytes: int = Field(default=20 * 1024**3, ge=1)
    max_image_pixels: int = Field(default=50_000_000, ge=1)

    @model_validator(mode="after")
    def _coherent_timing(self) -> "CommonSettings":
        if self.heartbeat_ttl < 2 * self.heartbeat_interval:
            raise ValueError("SSDSTACK_HEARTBEAT_TTL must be at least twice SSDSTACK_HEARTBEAT_INTERVAL, "
                             "or live workers and leases expire between renewals")
        if self.visibility_timeout <= self.heartbeat_ttl:
            raise ValueError("SSDSTACK_VISIBILITY_TIMEOUT must exceed SSDSTACK_HEARTBEAT_TTL")
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if is_sentinel(value):
            sentinel_hosts(value)  # raises ValueError naming the bad part
        elif not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss://, unix:// or sentinel://")
        return value


class WorkerSettings(CommonSettings):
    """A Celery worker (trainer, converter or inferencer)."""

    # Where the worker writes its liveness file for Kubernetes probes ("" = none). It is
    # written every heartbeat while the worker works, Redis or not, for up to
    # redis_outage_grace seconds of Redis outage; a wedged job stops it.
    heartbeat_file: str = ""
    redis_outage_grace: float = Field(default=600.0, gt=0)
    # Seconds a job may run, by job type, counted from its first start (resumes included),
    # e.g. SSDSTACK_TIME_LIMITS='{"train": 7200}'; a type not named keeps its JobType's limit.
    time_limits: dict[str, float] = Field(default_factory=dict)
    # Seconds a stage may go without reporting progress or a log line before it is failed
    # as stalled (a wedged engine, SDK or library call).
    stall_timeout: float = Field(default=3600.0, gt=0)
    infer_backend: str = "auto"
    convert_backend: str = "auto"
    # INT8 conversions: how many of the version's training images calibrate the
    # activation ranges, and how many validation images the accuracy gate needs at least.
    int8_calibration_images: int = Field(default=100, ge=1, le=10_000)
    int8_gate_min_images: int = Field(default=200, ge=1)
    train_device: str = "auto"
    # Inferencer: how many detect requests one process runs at once (threads).
    infer_concurrency: int = Field(default=4, ge=1, le=64)
    # Threads one ONNX Runtime run may use (0: one per physical core).
    infer_intra_op_threads: int = Field(default=0, ge=0, le=256)
    # Dynamic batching: concurrent detects for one model version share an engine call of
    # up to infer_max_batch images, collected for up to infer_max_delay_ms; at most
    # infer_concurrency / infer_max_batch calls run at once. Versions converted for batch 1
    # are served one image at a time whatever these say.
    infer_batching: bool = True
    infer_max_batch: int = Field(default=4, ge=2, le=64)
    infer_max_delay_ms: float = Field(default=2.0, ge=0, le=1000)
    # Ascend chip ("Ascend310P3"): the converter's default ATC target, and the chip an
    # inferencer serves on ("" = ask npu-smi).
    ascend_soc_version: str = ""
    # MindX SDK engine: where images are decoded and resized ("auto": dvpp when the model's
    # input suits DVPP, else cpu), the NPU it uses, and how long one image may take.
    mxsdk_preprocessing: Literal["auto", "dvpp", "cpu"] = "auto"
    mxsdk_device_id: int = Field(default=0, ge=0, le=63)
    mxsdk_timeout_ms: int = Field(default=3000, ge=10, le=600_000)
    mxsdk_postprocess_lib: str = "libSsdMobilenetFpn_MindsporePost.so"
    # Trainer, multi-node jobs (an AscendJob): the Ascend trainer image its pods run, their
    # namespace, and the model store's PersistentVolumeClaim.
    trainer_image: str = ""
    k8s_namespace: str = "ssdstack"
    store_pvc: str = "ssdstack-store"

    @model_validator(mode="after")
    def _batches_fit_the_threads(self) -> "WorkerSettings":
        if self.infer_batching and self.infer_concurrency < self.infer_max_batch:
            raise ValueError(f"SSDSTACK_INFER_CONCURRENCY ({self.infer_concurrency}) must be at least "
                             f"SSDSTACK_INFER_MAX_BATCH ({self.infer_max_batch}): a batch is that many detects "
                             "at once (or set SSDSTACK_INFER_BATCHING=false)")
        return self

    @field_validator("time_limits")
    @classmethod
    def _positive_limits(cls, value: dict[str, float]) -> dict[str, float]:
        if any(limit <= 0 for limit in value.values()):
            raise ValueError("every time limit must be a positive number of seconds")
        return value

    @field_validator("ascend_soc_version")
    @classmethod
    def _known_chip(cls, value: str) -> str:
        if value and value not in SOC_VERSIONS:
            raise ValueError(f"{value!r} is not an ATC soc_version; one of {', '.join(SOC_VERSIONS)}")
        return value


class GatewaySettings(CommonSettings):
    """The FastAPI gateway."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Comma-separated entries, each `<key>[:<scope>]` or `sha256:<hex digest>[:<scope>]`
    # (scopes: read, submit, admin; see ssdstack.api_keys).
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Keys shorter than 16 characters: only for a stack on 127.0.0.1 (the local stack).
    allow_short_api_keys: bool = False
    # Requests per API key across every gateway replica (shared in Redis), in the `limits`
    # notation: "100/second;3000/minute". Empty: no limit.
    rate_limit: str = "100/second;3000/minute"
    detect_timeout: float = Field(default=30.0, gt=0)
    # Threads for blocking endpoints (job, model and dataset routes; never a detect wait).
    threads: int = Field(default=64, ge=4, le=1024)
    max_json_bytes: int = Field(default=1024**2, ge=1024)
    max_image_bytes: int = Field(default=32 * 1024**2, ge=1)
    # Detect images wait in Redis for an inferencer: at most this many bytes and this many
    # images at once, across every replica; beyond either, a detect is answered 503 with
    # Retry-After before Redis can fill.
    detect_budget_bytes: int = Field(default=256 * 1024**2, ge=1024)
    detect_max_queued: int = Field(default=256, ge=1)
    # Detects one gateway process waits on at once (each holds a Redis connection).
    detect_max_waiting: int = Field(default=1024, ge=1, le=100_000)
    # Bytes of detect bodies one gateway process receives and holds at once (their
    # declared sizes; a body past 1 MiB is spooled to /tmp until its answer): past it, 503.
    detect_receive_budget_bytes: int = Field(default=512 * 1024**2, ge=1024)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        if value.strip():
            try:
                parse_many(value)
            except ValueError as error:
                raise ValueError(f"not a rate limit like '100/second;3000/minute': {error}") from None
        return value.strip()

    @model_validator(mode="after")
    def _valid_keys(self) -> "GatewaySettings":
        if not self.api_keys:
            raise ValueError("set at least one API key (comma-separated) in SSDSTACK_API_KEYS")
        for position, entry in enumerate(self.api_keys, 1):
            try:
                parse_entry(entry, self.allow_short_api_keys)
            except ValueError as error:
                raise ValueError(f"SSDSTACK_API_KEYS entry {position}: {error}") from None
        if self.max_image_bytes > min(self.detect_budget_bytes, self.detect_receive_budget_bytes):
            raise ValueError("SSDSTACK_DETECT_BUDGET_BYTES and SSDSTACK_DETECT_RECEIVE_BUDGET_BYTES must each hold "
                             "at least one image of SSDSTACK_MAX_IMAGE_BYTES")
        return self

    def keyring(self) -> list[ApiKey]:
        return [parse_entry(entry, self.allow_short_api_keys) for entry in self.api_keys]


@lru_cache
def worker_settings() -> WorkerSettings:
    return WorkerSettings()


@lru_cache
def gateway_settings() -> GatewaySettings:
    return GatewaySettings()
