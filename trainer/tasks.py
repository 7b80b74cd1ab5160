"""Celery tasks of the trainer: thin wrappers around :mod:`trainer.service`."""
from __future__ import annotations

import shutil

from celery import Celery

from ssdstack.celery_app import CONVERT_TASK, TRAIN_TASK
from ssdstack.jobs.pipeline import parse_spec
from ssdstack.jobs.records import TERMINAL
from ssdstack.jobs.specs import ExportSpec, ImportSpec, PipelineSpec
from ssdstack.model_store import ModelStore
from ssdstack.worker import NextStage, WorkerRuntime
from trainer.ascendjob import Cluster
from trainer.service import export_and_publish, import_and_publish, published_result, run_dir_for, train_and_publish

# Every job that makes a version from MindSpore weights runs here: train, pipeline, import, export.
PUBLISHERS = {ImportSpec: import_and_publish, ExportSpec: export_and_publish}


def register(app: Celery, runtime: WorkerRuntime) -> None:
    settings = runtime.settings
    store = ModelStore(settings.store_dir)
    cluster = Cluster(settings.trainer_image, settings.k8s_namespace, settings.store_pvc)

    @app.task(name=TRAIN_TASK, bind=True, acks_late=True, ignore_result=True)
    def train(task, job_id: str) -> None:
        def body(ctx):
            job = runtime.jobs.get(job_id)
            spec = parse_spec(job)
            # A delivery after a crash that followed publishing must not train again.
            published = store.version_by_job(spec.model, job_id)
            if published is None:
                publish = PUBLISHERS.get(type(spec), train_and_publish)
                options = {"cluster": cluster} if publish is train_and_publish else {}
                result = publish(spec, settings.store_dir, settings.work_dir / job_id, job_id, ctx,
                                 default_device=settings.train_device, **options)
            else:
                ctx.log(f"version {published['version']} was already published by an earlier delivery")
                result = published_result(published)
            if isinstance(spec, PipelineSpec):
                runtime.jobs.merge_result(job_id, result)
                return NextStage(CONVERT_TASK)
            return result

        try:
            runtime.run_job(task, job_id, body)
        finally:
            if runtime.jobs.state(job_id) in TERMINAL:
                # Checkpoints only serve a resume; a finished job is never resumed.
                shutil.rmtree(run_dir_for(settings.store_dir, job_id), ignore_errors=True)
                shutil.rmtree(settings.work_dir / job_id, ignore_errors=True)
