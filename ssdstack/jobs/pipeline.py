"""Hand a job from one stage's worker to the next.

A pipeline job is one record that moves train -> convert -> evaluate(+deploy): each
stage's task, when done, stores its output in the job's result and sends the next
stage's task by name, with the job id as the only argument.
"""
from __future__ import annotations

from celery import Celery

from ssdstack.celery_app import CONVERT_TASK, EVALUATE_TASK, TASK_QUEUES, TRAIN_TASK
from ssdstack.jobs.records import JobStore
from ssdstack.jobs.specs import ConvertSpec, EvaluateSpec, ExportSpec, ImportSpec, PipelineSpec, TrainSpec

SPEC_TYPES = {"train": TrainSpec, "convert": ConvertSpec, "evaluate": EvaluateSpec, "pipeline": PipelineSpec,
              "import": ImportSpec, "export": ExportSpec}


def parse_spec(job: dict):
    return SPEC_TYPES[job["type"]].model_validate(job["spec"])


# Stages in pipeline order: a message for a stage behind the job's current one is stale.
STAGE_ORDER = {TRAIN_TASK: 0, CONVERT_TASK: 1, EVALUATE_TASK: 2}


def stage_is_behind(task_name: str, current: str | None) -> bool:
    return current is not None and STAGE_ORDER[task_name] < STAGE_ORDER[current]


def send_stage(app: Celery, jobs: JobStore, task_name: str, job_id: str, first: bool = False) -> None:
    """Queue ``task_name`` for ``job_id``, then record it as the job's current stage.

    Sending first means a crash in between leaves a message and an older recorded stage
    (the message still runs); the other order could leave a recorded stage whose message
    was never sent, and the job would wait forever. The first stage's Celery task id is
    the job id.
    """
    task_id = job_id if first else f"{job_id}.{task_name}"
    app.send_task(task_name, args=[job_id], task_id=task_id, queue=TASK_QUEUES[task_name], ignore_result=True)
    jobs.advance_stage(job_id, task_name, STAGE_ORDER[task_name])


def target_version(job: dict, spec) -> tuple[str, int]:
    """The (model, version) a convert or evaluate stage works on."""
    if isinstance(spec, PipelineSpec):
        result = job["result"] or {}
        return spec.model, int(result["version"])
    return spec.model, spec.version
