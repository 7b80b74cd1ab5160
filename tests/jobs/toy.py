"""Toy job types for the runtime's and the reaper's tests: declared here, so that only the
runtime is under test."""
from __future__ import annotations

from typing import Literal

from celery.exceptions import Retry
from pydantic import BaseModel

from ssdstack.jobs.pipeline import JobType, Route, Stage
from ssdstack.jobs.stage_data import StageOutput

HERE = Route("toy-here", "toy.here")
ELSEWHERE = Route("toy-elsewhere", "toy.elsewhere")


class ToySpec(BaseModel):
    type: Literal["toy"] = "toy"
    start: int = 1


class Counted(StageOutput):
    count: int

    def result(self) -> dict:
        return {"count": self.count}


class Doubled(StageOutput):
    doubled: int

    def result(self) -> dict:
        return {"doubled": self.doubled, "nested": {"from": "double"}}


TOY = JobType("toy", ToySpec, (
    Stage("count", HERE, ToySpec, Counted),
    Stage("double", HERE, Counted, Doubled),
    Stage("report", ELSEWHERE, Doubled, Counted),  # on another route
))
# A record written before stages had names says "toy.here" where it means "count".
LEGACY_STAGE = "toy.here"


class FakeTask:
    """What run_job uses of a bound Celery task."""

    def __init__(self):
        self.retried = {}

    def retry(self, **options):
        self.retried = options
        return Retry(f"retry in {options['countdown']}", when=options["countdown"])
