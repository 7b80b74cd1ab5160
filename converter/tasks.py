"""The converter's stage, convert, as the worker serves it (see :mod:`ssdstack.jobs.pipeline`)."""
from __future__ import annotations

from celery import Celery

from converter.backends.base import Int8Settings
from converter.service import convert_version
from ssdstack.jobs.context import JobContext
from ssdstack.jobs.pipeline import CONVERTER
from ssdstack.jobs.stage_data import Converted, ConvertInput
from ssdstack.model_store import ModelStore, remove_older_than
from ssdstack.settings import WorkerSettings
from ssdstack.worker import WorkerRuntime


def stage_runners(settings: WorkerSettings) -> dict:
    """Stage name -> function, for the converter's stages."""
    store = ModelStore(settings.store_dir)
    atc_logs = settings.work_dir / "atc-logs"

    def convert(ctx: JobContext, data: ConvertInput) -> Converted:
        # A failed ATC run's logs are kept for as long as the job record that names them.
        remove_older_than(atc_logs, settings.job_retention)
        backend = data.backend if data.backend != "auto" else settings.convert_backend
        int8 = Int8Settings(calibration_images=settings.int8_calibration_images,
                            min_images=settings.int8_gate_min_images, max_map_drop=data.max_map_drop)
        return convert_version(store, data.model, data.version, backend, ctx, tolerance=data.tolerance,
                               atc=data.atc, default_soc_version=settings.ascend_soc_version or None,
                               log_dir=atc_logs / ctx.job_id, precision=data.precision, int8=int8)

    return {"convert": convert}


def register(app: Celery, runtime: WorkerRuntime) -> None:
    runtime.serve(app, CONVERTER, stage_runners(runtime.settings))
