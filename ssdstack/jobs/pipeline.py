"""Every job type, declared once: its spec, its ordered stages, and for each stage the
Celery task and queue that run it and the typed data it reads and writes.

A message carries only the job id, and its Celery task id names the stage
(:func:`stage_in_message`); the stage re-reads the spec and the earlier stages' outputs
from the job record. Consecutive stages on one route run in one delivery, each recorded in
the job record (export straight after training on the trainer, deploy after evaluate on
the inferencer); the last of them hands the job to the next route. No task names its
successor: the worker runtime (:mod:`ssdstack.worker`) asks the :class:`JobType`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Union

from celery import Celery
from pydantic import BaseModel, Field

from ssdstack.celery_app import CONVERT_QUEUE, EVALUATE_QUEUE, TRAIN_QUEUE
from ssdstack.jobs.context import JobContext
from ssdstack.jobs.records import JobStore
from ssdstack.jobs.specs import ConvertSpec, EvaluateSpec, ExportSpec, ImportSpec, IngestSpec, PipelineSpec, TrainSpec
from ssdstack.jobs.stage_data import (Converted, ConvertInput, Deployed, DeployInput, Evaluated, EvaluateInput,
                                      Ingested, Published, StageOutput, Trained)


@dataclass(frozen=True)
class Route:
    """Where a stage runs: a worker queue, and the Celery task that takes job messages
    from it (one job task per worker kind; the message's task id names the stage)."""

    queue: str
    task: str


# A stage function: what the stage reads (its Stage.reads) -> what it writes.
StageRunner = Callable[[JobContext, BaseModel], StageOutput]
# Task names are part of the wire protocol between services; never rename one lightly.
TRAINER = Route(TRAIN_QUEUE, "trainer.train")
CONVERTER = Route(CONVERT_QUEUE, "converter.convert")
# Evaluation, deploy and dataset ingest run in their own worker process (the evaluator)
# on their own queue: a Celery worker shares one pool across its queues, so evaluations on
# the inferencer would take the threads detection needs, and ingest in the gateway its
# memory and request time.
EVALUATOR = Route(EVALUATE_QUEUE, "inferencer.evaluate")


@dataclass(frozen=True)
class Stage:
    """``reads``: the spec class (the stage gets the spec itself) or a model assembled from
    the spec and earlier outputs; ``writes``: the output it returns."""

    name: str
    route: Route
    reads: type[BaseModel]
    writes: type[StageOutput]


# Check the dataset, train, measure the trained mAP.
TRAIN = Stage("train", TRAINER, TrainSpec, Trained)
# Check an uploaded checkpoint against the architecture, measure its mAP.
IMPORT = Stage("import", TRAINER, ImportSpec, Trained)
# Take a published version's weights and manifest, to export them again.
LOAD = Stage("load", TRAINER, ExportSpec, Trained)
# Export MINDIR / ONNX / AIR with reference.npz, and publish the version.
EXPORT = Stage("export", TRAINER, Trained, Published)
# Build the serving artefact, checked against reference.npz.
CONVERT = Stage("convert", CONVERTER, ConvertInput, Converted)
# The served artefact's mAP on a split.
EVALUATE = Stage("evaluate", EVALUATOR, EvaluateInput, Evaluated)
# The deploy gate (max_map_drop), then the version is served.
DEPLOY = Stage("deploy", EVALUATOR, DeployInput, Deployed)
# Unpack, validate and store an uploaded dataset archive.
INGEST = Stage("ingest", EVALUATOR, IngestSpec, Ingested)


HOUR = 3600.0


@dataclass(frozen=True)
class JobType:
    """``time_limit``: seconds a job may run from its first start, resumes included, unless
    ``SSDSTACK_TIME_LIMITS`` names its type."""

    name: str
    spec: type[BaseModel]
    stages: tuple[Stage, ...]
    time_limit: float = 6 * HOUR

    @property
    def stage_names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    def index(self, stage: str) -> int:
        """The position of stage ``stage``. Records and messages written before stages had
        names carry a task name instead: that is the first stage the task ran."""
        names = self.stage_names
        if stage in names:
            return names.index(stage)
        for index, candidate in enumerate(self.stages):
            if candidate.route.task == stage:
                return index
        raise ValueError(f"job type {self.name!r} has no stage {stage!r}; its stages are {names}")

    def segment(self, index: int) -> range:
        """The run of consecutive stages on stage ``index``'s route, which one delivery runs."""
        route = self.stages[index].route
        start, stop = index, index + 1
        while start > 0 and self.stages[start - 1].route == route:
            start -= 1
        while stop < len(self.stages) and self.stages[stop].route == route:
            stop += 1
        return range(start, stop)

    def input_for(self, index: int, spec: BaseModel, outputs: dict[str, StageOutput],
                  base: dict[str, Any]) -> BaseModel:
        """What stage ``index`` reads: the spec itself, or its ``reads`` model validated from
        the spec, ``base`` (a schema-0 record's result) and the outputs so far, later ones winning."""
        reads = self.stages[index].reads
        if isinstance(spec, reads):
            return spec
        earlier = [outputs[stage.name].model_dump() for stage in self.stages[:index] if stage.name in outputs]
        return reads.model_validate(merge(spec.model_dump(), base, *earlier))

    def result(self, outputs: dict[str, StageOutput], base: dict[str, Any]) -> dict[str, Any]:
        """The job's result: ``base`` merged with each output's contribution, in stage order."""
        return merge(base, *(outputs[stage.name].result() for stage in self.stages if stage.name in outputs))


JOB_TYPES: dict[str, JobType] = {job.name: job for job in (
    JobType("train", TrainSpec, (TRAIN, EXPORT), time_limit=72 * HOUR),
    JobType("pipeline", PipelineSpec, (TRAIN, EXPORT, CONVERT, EVALUATE, DEPLOY), time_limit=80 * HOUR),
    JobType("import", ImportSpec, (IMPORT, EXPORT)),
    JobType("export", ExportSpec, (LOAD, EXPORT)),
    JobType("convert", ConvertSpec, (CONVERT,)),
    JobType("evaluate", EvaluateSpec, (EVALUATE,)),
    JobType("ingest", IngestSpec, (INGEST,)),
)}
# Jobs another route makes (POST /v1/datasets makes ingest jobs).
MADE_BY_ROUTES = {"ingest"}

# What POST /v1/jobs accepts: one of the job types' specs, told apart by ``type``.
JobSpec = Annotated[Union[tuple(job.spec for job in JOB_TYPES.values() if job.name not in MADE_BY_ROUTES)],
                    Field(discriminator="type")]


def merge(*parts: dict[str, Any]) -> dict[str, Any]:
    """Dicts merged left to right: nested dicts merged, anything else replaced."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = value
    return merged


def recorded_outputs(job_type: JobType, job: dict) -> tuple[dict[str, StageOutput], dict[str, Any]]:
    """``(outputs by stage name, base)`` of a job record. A record from before stage outputs
    has only a result, which becomes the base: as it is (no ``stages`` field yet), or as
    kept in ``legacy_result`` once a worker of this release listed its stages."""
    entries = job.get("stages")
    if entries is None:
        return {}, dict(job.get("result") or {})
    by_name = {stage.name: stage for stage in job_type.stages}
    return ({entry["name"]: by_name[entry["name"]].writes.model_validate(entry["output"])
             for entry in entries if entry.get("output") is not None}, dict(job.get("legacy_result") or {}))


def run_stage(stage: Stage, runner: StageRunner, ctx: JobContext, data: BaseModel) -> StageOutput:
    """``runner(ctx, data)``, checked to return what ``stage`` writes."""
    output = runner(ctx, data)
    if not isinstance(output, stage.writes):
        raise TypeError(f"stage {stage.name} returned {type(output).__name__}, not {stage.writes.__name__}")
    return output


def stage_in_message(task_id: str, job_id: str) -> str | None:
    """The stage a job message's Celery task id names: None (the job's first stage) for
    the job id itself, ``<stage>`` for ``<job id>.<stage>``. Messages from before stages had
    names read ``<job id>.<task name>``, which :meth:`JobType.index` maps to the stage."""
    if task_id == job_id:
        return None
    prefix = f"{job_id}."
    if not task_id.startswith(prefix):
        raise ValueError(f"task id {task_id!r} names no stage of job {job_id}")
    return task_id[len(prefix):]


def send_stage(app: Celery, jobs: JobStore, job_id: str, job_type: JobType, index: int) -> None:
    """Queue stage ``index`` of the job, then record it as the job's current stage.

    Sending first means a crash in between leaves a message and an older recorded stage
    (the message still runs); the other order could leave a recorded stage whose message
    was never sent, and the job would wait forever. The message is the job id alone, as
    in the previous release; the task id names the stage (:func:`stage_in_message`).
    """
    stage = job_type.stages[index]
    app.send_task(stage.route.task, args=[job_id], task_id=stage_task_id(job_id, job_type, index),
                  queue=stage.route.queue, ignore_result=True)
    jobs.advance_stage(job_id, stage.name, index)


def stage_task_id(job_id: str, job_type: JobType, index: int) -> str:
    """The Celery task id of the message for stage ``index``: the job id for the first stage,
    ``<job id>.<stage>`` for the others (read back by :func:`stage_in_message`)."""
    return job_id if index == 0 else f"{job_id}.{job_type.stages[index].name}"


def run_in_process(job_type: JobType, spec: BaseModel, runners: Mapping[str, StageRunner],
                   ctx: JobContext) -> dict[str, Any]:
    """Run every stage of a job here, in order, with ``runners`` (stage name -> function,
    as a worker serves them); returns the job's result. What the CLI's local verbs do
    instead of queueing a job."""
    outputs: dict[str, StageOutput] = {}
    for index, stage in enumerate(job_type.stages):
        outputs[stage.name] = run_stage(stage, runners[stage.name], ctx, job_type.input_for(index, spec, outputs, {}))
    return job_type.result(outputs, {})
