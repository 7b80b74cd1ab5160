"""Every job type, declared once: its spec, its ordered stages, and for each stage the
Celery task and queue that run it and the typed data it reads and writes.

A job's id is the first stage's Celery task id; the message carries only the job id and
the stage's name, and the stage re-reads the spec and the earlier stages' outputs from
the job record. Consecutive stages on one route run in one delivery, each recorded in
the job record (export straight after training on the trainer, deploy after evaluate on
the inferencer); the last of them hands the job to the next route. No task names its
successor: the worker runtime (:mod:`ssdstack.worker`) asks the :class:`JobType`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Union

from celery import Celery
from pydantic import BaseModel, Field

from ssdstack.celery_app import CONVERT_QUEUE, INFER_QUEUE, TRAIN_QUEUE
from ssdstack.jobs.records import JobStore
from ssdstack.jobs.specs import ConvertSpec, EvaluateSpec, ExportSpec, ImportSpec, PipelineSpec, TrainSpec
from ssdstack.jobs.stage_data import (
    Converted,
    ConvertInput,
    Deployed,
    DeployInput,
    Evaluated,
    EvaluateInput,
    Published,
    StageOutput,
    Trained,
)


@dataclass(frozen=True)
class Route:
    """Where a stage runs: a worker queue, and the Celery task that takes job messages
    from it (one job task per worker kind; the stage's name travels in the message)."""

    queue: str
    task: str


# Task names are part of the wire protocol between services; never rename one lightly.
TRAINER = Route(TRAIN_QUEUE, "trainer.train")
CONVERTER = Route(CONVERT_QUEUE, "converter.convert")
EVALUATOR = Route(INFER_QUEUE, "inferencer.evaluate")


@dataclass(frozen=True)
class Stage:
    """``reads``: the spec class (the stage gets the spec itself) or a model assembled from
    the spec and earlier outputs; ``writes``: the output it returns."""

    name: str
    route: Route
    reads: type[BaseModel]
    writes: type[StageOutput]
    summary: str


TRAIN = Stage("train", TRAINER, TrainSpec, Trained, "check the dataset, train, measure the trained mAP")
IMPORT = Stage("import", TRAINER, ImportSpec, Trained, "check a checkpoint against the architecture, measure its mAP")
LOAD = Stage("load", TRAINER, ExportSpec, Trained, "take a published version's weights and manifest")
EXPORT = Stage("export", TRAINER, Trained, Published, "export MINDIR/ONNX/AIR and reference.npz, publish a version")
CONVERT = Stage("convert", CONVERTER, ConvertInput, Converted, "build the serving artefact, check it against "
                "reference.npz")
EVALUATE = Stage("evaluate", EVALUATOR, EvaluateInput, Evaluated, "served mAP of the artefact on a split")
DEPLOY = Stage("deploy", EVALUATOR, DeployInput, Deployed, "deploy gate (max_map_drop), then serve the version")


@dataclass(frozen=True)
class JobType:
    name: str
    spec: type[BaseModel]
    stages: tuple[Stage, ...]

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
    JobType("train", TrainSpec, (TRAIN, EXPORT)),
    JobType("pipeline", PipelineSpec, (TRAIN, EXPORT, CONVERT, EVALUATE, DEPLOY)),
    JobType("import", ImportSpec, (IMPORT, EXPORT)),
    JobType("export", ExportSpec, (LOAD, EXPORT)),
    JobType("convert", ConvertSpec, (CONVERT,)),
    JobType("evaluate", EvaluateSpec, (EVALUATE,)),
)}

# What POST /v1/jobs accepts: one of the job types' specs, told apart by ``type``.
JobSpec = Annotated[Union[tuple(job.spec for job in JOB_TYPES.values())], Field(discriminator="type")]


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
    (no ``stages`` field) has only its result, which becomes the base."""
    entries = job.get("stages")
    if entries is None:
        return {}, dict(job.get("result") or {})
    by_name = {stage.name: stage for stage in job_type.stages}
    return {entry["name"]: by_name[entry["name"]].writes.model_validate(entry["output"])
            for entry in entries if entry.get("output") is not None}, {}


def send_stage(app: Celery, jobs: JobStore, job_id: str, job_type: JobType, index: int) -> None:
    """Queue stage ``index`` of the job, then record it as the job's current stage.

    Sending first means a crash in between leaves a message and an older recorded stage
    (the message still runs); the other order could leave a recorded stage whose message
    was never sent, and the job would wait forever. The first stage's task id is the job id.
    """
    stage = job_type.stages[index]
    task_id = job_id if index == 0 else f"{job_id}.{stage.name}"
    app.send_task(stage.route.task, args=[job_id], kwargs={"stage": stage.name}, task_id=task_id,
                  queue=stage.route.queue, ignore_result=True)
    jobs.advance_stage(job_id, stage.name, index)


def run_in_process(job_type: JobType, spec: BaseModel, runners: dict, ctx) -> dict[str, Any]:
    """Run every stage of a job here, in order, with ``runners`` (stage name -> function,
    as a worker serves them) and ``ctx`` (a :class:`~ssdstack.jobs.context.JobContext`);
    returns the job's result. What the CLI's local verbs do instead of queueing a job."""
    outputs: dict[str, StageOutput] = {}
    for index, stage in enumerate(job_type.stages):
        outputs[stage.name] = runners[stage.name](ctx, job_type.input_for(index, spec, outputs, {}))
    return job_type.result(outputs, {})
