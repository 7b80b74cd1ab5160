"""The trainer's stages (train, import, load, export) as the worker serves them (see
:mod:`ssdstack.jobs.pipeline`); every job that makes a version from MindSpore weights
runs them."""
from __future__ import annotations

from celery import Celery

from ssdstack.jobs.context import JobContext
from ssdstack.jobs.pipeline import TRAINER
from ssdstack.jobs.specs import ExportSpec, ImportSpec, TrainSpec
from ssdstack.jobs.stage_data import Published, Trained
from ssdstack.settings import WorkerSettings
from ssdstack.worker import WorkerRuntime
from trainer.ascendjob import Cluster
from trainer.publish import export_version
from trainer.service import import_weights, load_version, remove_unneeded_job_folders, train_weights


def stage_runners(settings: WorkerSettings) -> dict:
    """Stage name -> function, for the trainer's stages."""
    cluster = Cluster(settings.trainer_image, settings.k8s_namespace, settings.store_pvc)
    device = settings.train_device

    def train(ctx: JobContext, spec: TrainSpec) -> Trained:
        return train_weights(spec, settings.store_dir, settings.work_dir / ctx.job_id, ctx, device, cluster)

    def import_(ctx: JobContext, spec: ImportSpec) -> Trained:
        return import_weights(spec, settings.store_dir, settings.work_dir / ctx.job_id, ctx, device)

    def load(ctx: JobContext, spec: ExportSpec) -> Trained:
        return load_version(spec, settings.store_dir, ctx, device)

    def export(ctx: JobContext, data: Trained) -> Published:
        return export_version(data, settings.store_dir, settings.work_dir / ctx.job_id, ctx.job_id, ctx)

    return {"train": train, "import": import_, "load": load, "export": export}


def register(app: Celery, runtime: WorkerRuntime) -> None:
    settings = runtime.settings

    def clean_up(_job_id: str) -> None:
        # Checkpoints and trained weights only serve this route's stages: once a job has
        # left them (finished, handed on, or ended by the reaper), they are never read again.
        remove_unneeded_job_folders(settings.store_dir, settings.work_dir, runtime.done_here)

    runtime.serve(app, TRAINER, stage_runners(settings), after=clean_up)
