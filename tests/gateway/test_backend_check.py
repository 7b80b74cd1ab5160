"""Which jobs fail at submission because the live workers lack the backend they name; the
gateway knows only what the workers' heartbeats say (their backends and install hints)."""
from __future__ import annotations

import pytest

from converter.backends import BACKENDS
from gateway.routes.jobs import missing_backend
from inferencer.backends import ENGINES
from ssdstack.jobs.specs import ConvertSpec, PipelineSpec

REGISTRIES = {"convert": BACKENDS, "infer": ENGINES}


def worker(worker_id: str, queue: str, *backends: str) -> dict:
    """A heartbeat record, as a worker whose usable backends are ``backends`` writes it."""
    details = [{"name": name, "usable": name in backends, "artefact": cls.artefact, "install_hint": cls.install_hint}
               for name, cls in REGISTRIES[queue].items()]
    return {"worker_id": worker_id, "queues": [queue], "backends": {queue: list(backends)},
            "backend_details": {queue: details}}


def previous_release(record: dict) -> dict:
    """The heartbeat of a worker of the previous release: usable backends by name only."""
    return {key: value for key, value in record.items() if key != "backend_details"}


CPU_CONVERTER = worker("converter@cpu:1", "convert", "onnxruntime")
ASCEND_CONVERTER = worker("converter@npu:1", "convert", "atc", "onnxruntime")
CPU_INFERENCER = worker("inferencer@cpu:1", "infer", "onnxruntime")
NPU_INFERENCER = worker("inferencer@npu:1", "infer", "mxsdk", "onnxruntime")
ATC_CONVERT = ConvertSpec(model="m", version=1, backend="atc")
ATC_PIPELINE = PipelineSpec(dataset="d", backend="atc")


@pytest.mark.parametrize("spec, workers", [
    (ConvertSpec(model="m", version=1), [CPU_CONVERTER]),  # auto: each worker picks
    (ATC_CONVERT, []),  # no live converter yet: the job waits for one
    (ATC_CONVERT, [ASCEND_CONVERTER, CPU_INFERENCER]),
    (ATC_PIPELINE, [ASCEND_CONVERTER, NPU_INFERENCER]),
    (ATC_PIPELINE, [CPU_INFERENCER]),  # no converter yet to say what atc makes: the job waits
    (ATC_CONVERT, [previous_release(ASCEND_CONVERTER)]),
    (ATC_PIPELINE, [previous_release(ASCEND_CONVERTER), CPU_INFERENCER]),  # what atc makes is unknown: waits
], ids=["auto", "no-workers", "atc-convert", "atc-pipeline", "pipeline-no-converter", "previous-release",
        "previous-release-pipeline"])
def test_runnable_jobs_pass(spec, workers):
    assert missing_backend(spec, workers) == ""


@pytest.mark.parametrize("spec, workers, words", [
    (ATC_CONVERT, [CPU_CONVERTER], ["converter@cpu:1: onnxruntime", "CANN toolkit"]),
    # Celery gives the task to any worker on the queue: one without atc fails it by chance.
    (ATC_CONVERT, [ASCEND_CONVERTER, CPU_CONVERTER], ["converter@cpu:1", "every converter"]),
    (ATC_PIPELINE, [ASCEND_CONVERTER, CPU_INFERENCER], ["'mxsdk'", "inferencer@cpu:1", "mxVision"]),
    (ATC_CONVERT, [ASCEND_CONVERTER, previous_release(CPU_CONVERTER)], ["converter@cpu:1: onnxruntime",
                                                                        "CANN toolkit"]),
], ids=["cpu-only", "mixed-queue", "pipeline-without-npu-inferencer", "previous-release-without-atc"])
def test_a_backend_some_worker_lacks_is_named(spec, workers, words):
    message = missing_backend(spec, workers)
    assert all(word in message for word in words), message
