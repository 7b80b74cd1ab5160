"""Celery tasks of the converter: thin wrappers around :mod:`converter.service`."""
from __future__ import annotations

from celery import Celery

from ssdstack.celery_app import CONVERT_TASK, EVALUATE_TASK
from ssdstack.jobs.pipeline import parse_spec, target_version
from ssdstack.jobs.specs import PipelineSpec
from ssdstack.model_store import ModelStore, remove_older_than
from ssdstack.worker import NextStage, WorkerRuntime


def register(app: Celery, runtime: WorkerRuntime) -> None:
    store = ModelStore(runtime.settings.store_dir)
    atc_logs = runtime.settings.work_dir / "atc-logs"

    @app.task(name=CONVERT_TASK, bind=True, acks_late=True, ignore_result=True)
    def convert(task, job_id: str) -> None:
        def body(ctx):
            from converter.service import convert_version

            # A failed ATC run's logs are kept for as long as the job record that names them.
            remove_older_than(atc_logs, runtime.settings.job_retention)
            job = runtime.jobs.get(job_id)
            spec = parse_spec(job)
            name, version = target_version(job, spec)
            backend = spec.backend if spec.backend != "auto" else runtime.settings.convert_backend
            result = convert_version(store, name, version, backend, ctx, tolerance=spec.tolerance,
                                     atc=spec.atc.model_dump(),
                                     default_soc_version=runtime.settings.ascend_soc_version or None,
                                     log_dir=atc_logs / job_id)
            if isinstance(spec, PipelineSpec):
                runtime.jobs.merge_result(job_id, {"conversion": result})
                return NextStage(EVALUATE_TASK)
            return dict(result, model=name, version=version)

        runtime.run_job(task, job_id, body)
