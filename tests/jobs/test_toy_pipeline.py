"""One pipeline definition is all a job type needs: a toy job type, declared here with its
spec, stages, routes and typed outputs, runs through a real Celery worker serving both
routes with the product's WorkerRuntime, over a real Redis broker, from the first stage
to its result. (One embedded worker: kombu's event loop takes one per process.)"""
from __future__ import annotations

import time
from typing import Literal

from celery.contrib.testing.worker import start_worker
from pydantic import BaseModel

from ssdstack.celery_app import create_app
from ssdstack.jobs.pipeline import JobType, Route, Stage, send_stage
from ssdstack.jobs.stage_data import StageOutput
from ssdstack.settings import WorkerSettings
from ssdstack.worker import WorkerRuntime

FIRST = Route("toy-first", "toy.first")
SECOND = Route("toy-second", "toy.second")


class WordsSpec(BaseModel):
    type: Literal["words"] = "words"
    text: str


class Split(StageOutput):
    words: list[str]

    def result(self) -> dict:
        return {"words": self.words}


class Counted(StageOutput):
    count: int

    def result(self) -> dict:
        return {"count": self.count}


class Shouted(StageOutput):
    shout: str

    def result(self) -> dict:
        return {"shout": self.shout}


WORDS = JobType("words", WordsSpec, (
    Stage("split", FIRST, WordsSpec, Split),
    Stage("count", FIRST, Split, Counted),  # in the same delivery
    Stage("shout", SECOND, Split, Shouted),  # handed on to the other route
))


def _runtime(app, settings: WorkerSettings, route: Route, runners: dict) -> WorkerRuntime:
    runtime = WorkerRuntime(route.queue, [route.queue], settings, lambda: {}, job_types={"words": WORDS})
    runtime.serve(app, route, runners)
    return runtime


def test_a_toy_job_type_runs_through_a_real_worker(clean_redis):
    settings = WorkerSettings(redis_url=clean_redis)
    deliveries: list[str] = []

    def split(ctx, spec: WordsSpec) -> Split:
        deliveries.append(f"split@{FIRST.queue}")
        return Split(words=spec.text.split())

    def count(ctx, data: Split) -> Counted:
        deliveries.append(f"count@{FIRST.queue}")
        return Counted(count=len(data.words))

    def shout(ctx, data: Split) -> Shouted:
        deliveries.append(f"shout@{SECOND.queue}")
        return Shouted(shout=" ".join(data.words).upper())

    app = create_app(settings, "toy")
    runtime = _runtime(app, settings, FIRST, {"split": split, "count": count})
    _runtime(app, settings, SECOND, {"shout": shout})
    job_id = runtime.jobs.create("words", WordsSpec(text="one two three").model_dump(), WORDS.stage_names)["id"]
    with start_worker(app, pool="solo", perform_ping_check=False, queues=[FIRST.queue, SECOND.queue]):
        send_stage(app, runtime.jobs, job_id, WORDS, 0)
        deadline = time.monotonic() + 60
        while runtime.jobs.state(job_id) not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.05)

    job = runtime.jobs.get(job_id)
    assert job["state"] == "succeeded", job["error"]
    assert job["result"] == {"words": ["one", "two", "three"], "count": 3, "shout": "ONE TWO THREE"}
    assert deliveries == ["split@toy-first", "count@toy-first", "shout@toy-second"]
    assert [(s["name"], s["state"]) for s in job["stages"]] == [
        ("split", "succeeded"), ("count", "succeeded"), ("shout", "succeeded")]
    assert job["attempts"] == 2  # one delivery per route: split and count ran in the first
