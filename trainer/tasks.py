"""Celery tasks of the trainer: thin wrappers around :mod:`trainer.service`."""
from __future__ import annotations

from celery import Celery

from ssdstack.celery_app import CONVERT_TASK, TRAIN_TASK
from ssdstack.jobs.pipeline import parse_spec, send_stage
from ssdstack.jobs.specs import PipelineSpec
from ssdstack.worker import WorkerRuntime


def register(app: Celery, runtime: WorkerRuntime) -> None:
    settings = runtime.settings

    @app.task(name=TRAIN_TASK, bind=True, acks_late=True, ignore_result=True)
    def train(task, job_id: str) -> None:
        def body(ctx):
            # MindSpore is imported here, in the worker process that runs the job, never
            # at module import (the gateway imports nothing of the trainer).
            from trainer.service import train_and_publish

            job = runtime.jobs.get(job_id)
            spec = parse_spec(job)
            published = (job["result"] or {}).get("version")
            if published is None:
                result = train_and_publish(spec, settings.store_dir, settings.work_dir / job_id, job_id, ctx)
                for key, value in result.items():
                    runtime.jobs.set_result_field(job_id, key, value)
            else:
                ctx.log(f"version {published} was already published by an earlier delivery")
                result = job["result"]
            if isinstance(spec, PipelineSpec):
                ctx.progress(stage="queued:convert")
                send_stage(app, runtime.jobs, CONVERT_TASK, job_id)
                return None
            return result

        runtime.run_job(task, job_id, body)
