"""What every worker process shares: heartbeats, and running a job's stages under a lease.

Heartbeats: a thread writes the worker's record (queues, backends with their install
hints, time; :mod:`ssdstack.heartbeats`) every ``heartbeat_interval`` seconds. Another
touches the liveness file that Kubernetes probes read, whether Redis answers or not, for
up to ``redis_outage_grace`` seconds of outage: an outage restarts no worker. A wedged worker stops touching it. Another thread runs the reaper's sweeps
(:mod:`ssdstack.jobs.reaper`).

Stages: :meth:`WorkerRuntime.serve` registers the task of one :class:`Route`; a message
carries a job id and its task id names a stage (:func:`~ssdstack.jobs.pipeline.stage_in_message`);
the runtime runs that stage and the ones after it on the same route
(:meth:`JobType.segment`), recording each, then hands the job to the next route or
records its result. Stage functions are looked up by stage name in the
``runners`` the service gives; the order of stages is only in
:data:`ssdstack.jobs.pipeline.JOB_TYPES`.

Leases: the runtime takes the job's lease (a token unique to this run) before it runs a
stage and renews it meanwhile. A message delivered again while another live run holds
the lease is put back with a delay instead of being run twice; once the lease has
expired (its worker died), the job runs again from its current stage, which resumes
from its checkpoint. A run that loses its lease stops at its next cancel check and
records nothing: the job belongs to whoever holds the lease now.

Watchdog: while a stage runs, the lease's renewer also fails the job once it is past its
type's time limit or has reported no progress for ``stall_timeout`` seconds, and stops the
run; when the stage does not return within a lease TTL, the process exits, to be restarted
(its body cannot be interrupted from another thread).

Shutdown: on SIGTERM (Celery's warm shutdown) a running stage sees ``cancelled()`` and
stops at its next check (the trainer checkpoints first); the job goes back to its queue at
that stage, to resume on another worker, and counts as no failed attempt.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import redis
from celery import Celery, Task
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from ssdstack.durable import no_space
from ssdstack.errors import InsufficientStorage, NotFound, SsdStackError
from ssdstack.heartbeats import remove_heartbeat, write_heartbeat
from ssdstack.jobs.context import JobCancelled
from ssdstack.jobs.pipeline import (JOB_TYPES, JobType, Route, StageRunner, recorded_outputs, run_stage, send_stage,
                                   stage_in_message)
from ssdstack.jobs.reaper import Reaper
from ssdstack.jobs.records import SUCCEEDED, TERMINAL, JobStore
from ssdstack.jobs.run_context import RedisJobContext, RidingOut, Stopped
from ssdstack.model_store import remove_stale_scratch
from ssdstack.redis_client import ride_out
from ssdstack.settings import WorkerSettings

log = logging.getLogger(__name__)
# Exit status of a worker whose job body did not stop after the watchdog failed its job.
EXIT_WEDGED = 70


class WorkerRuntime:
    """Per-process state of one worker service (trainer, converter or inferencer).

    ``backends`` returns, per queue, the backends the service knows as
    :func:`ssdstack.backends.describe` gives them; ``notes`` are extra fields of the
    heartbeat's ``backends`` (the trainer's configured device); ``serving`` returns what
    an inferencer serves (per model, the version, and a failed load), and ``detects`` its
    detect requests by outcome since it started, for the heartbeat.
    """

    def __init__(self, service: str, queues: list[str], settings: WorkerSettings,
                 backends: Callable[[], dict[str, list[dict]]], notes: Mapping[str, object] | None = None,
                 job_types: Mapping[str, JobType] = JOB_TYPES, serving: Callable[[], dict] | None = None,
                 detects: Callable[[], dict] | None = None):
        self.service = service
        self.queues = queues
        self.settings = settings
        self.backends = backends
        self.notes = dict(notes or {})
        self.serving = serving
        self.detects = detects
        self.job_types = job_types
        unknown = sorted(set(settings.time_limits) - set(job_types))
        if unknown:
            raise ValueError(f"SSDSTACK_TIME_LIMITS names no job type {unknown}; the types are {sorted(job_types)}")
        self.worker_id = f"{service}@{socket.gethostname()}:{os.getpid()}"
        self.jobs = JobStore.from_url(settings.redis_url, retention_s=settings.job_retention,
                                      sentinel_master=settings.redis_sentinel_master)
        # What records a job's stages and end: waits out a Redis outage (progress does not).
        self.steady = RidingOut(self.jobs, settings.redis_outage_grace)
        self.app: Celery | None = None
        self.route: Route | None = None
        self.runners: dict[str, StageRunner] = {}
        self.reaper: Reaper | None = None
        self.shutting_down = threading.Event()
        self.wedged = threading.Event()
        self._redis_reached = time.monotonic()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- heartbeats --------------------------------------------------------------
    def install(self) -> None:
        """Heartbeat and sweep while this process's Celery worker runs; stop running stages
        when it is told to shut down."""
        worker_ready.connect(lambda **_: self._on_ready(), weak=False)
        worker_shutting_down.connect(lambda **_: self.shutting_down.set(), weak=False)
        worker_shutdown.connect(lambda **_: self.stop_heartbeats(), weak=False)

    def _on_ready(self) -> None:
        removed = remove_stale_scratch(self.settings.store_dir)
        if removed:
            log.info("removed %d stale scratch entries from the store: %s", len(removed), removed[:10])
        try:
            adopted = self.jobs.list_unfinished_as_active()
        except redis.RedisError as error:
            log.warning("cannot list unfinished jobs for the reaper yet: %s", error)
        else:
            if adopted:
                log.info("listed %d unfinished jobs from before the reaper for it to sweep", adopted)
        self.start_heartbeats()

    def heartbeat_once(self) -> None:
        now = time.time()
        details = self.backends()
        usable = {queue: [entry["name"] for entry in entries if entry["usable"]] for queue, entries in details.items()}
        record = {"worker_id": self.worker_id, "service": self.service, "queues": self.queues,
                  "backends": dict(usable, **self.notes), "backend_details": details, "time": now,
                  "pid": os.getpid(), "host": socket.gethostname()}
        if self.serving is not None:
            record["serving"] = self.serving()
        if self.detects is not None:
            record["detects"] = self.detects()
        write_heartbeat(self.jobs.redis, record, self.settings.heartbeat_ttl)
        self._redis_reached = time.monotonic()

    def touch_liveness(self) -> bool:
        """Write the liveness file unless the worker is wedged or Redis has been out of reach
        for longer than ``redis_outage_grace``; whether it was written."""
        outage = time.monotonic() - self._redis_reached
        if not self.settings.heartbeat_file or self.wedged.is_set() or outage > self.settings.redis_outage_grace:
            return False
        Path(self.settings.heartbeat_file).write_text(str(time.time()))
        return True

    def start_heartbeats(self) -> None:
        def beat() -> None:
            while not self._stop.is_set():
                try:
                    self.heartbeat_once()
                except Exception as error:  # a missed beat is logged; the next one tries again
                    log.warning("heartbeat failed: %s", error)
                self._stop.wait(self.settings.heartbeat_interval)

        def live() -> None:  # its own thread: a Redis call that hangs must not hold it up
            while not self._stop.is_set():
                try:
                    self.touch_liveness()
                except OSError as error:
                    log.warning("liveness file %s not written: %s", self.settings.heartbeat_file, error)
                self._stop.wait(self.settings.heartbeat_interval)

        def sweep() -> None:
            while not self._stop.wait(self.settings.heartbeat_interval):
                try:
                    self.reaper.sweep()
                except Exception as error:  # the next sweep tries again
                    log.warning("reaper sweep failed: %s", error)

        self._threads = [threading.Thread(target=beat, name="heartbeat", daemon=True),
                         threading.Thread(target=live, name="liveness", daemon=True)]
        if self.reaper is not None:
            self._threads.append(threading.Thread(target=sweep, name="reaper", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop_heartbeats(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        try:
            remove_heartbeat(self.jobs.redis, self.worker_id)
        except redis.RedisError:
            pass

    # -- stages ------------------------------------------------------------------
    def serve(self, app: Celery, route: Route, runners: Mapping[str, StageRunner],
              after: Callable[[str], None] | None = None) -> None:
        """Register ``route``'s task on ``app``, which also sends this worker's hand-offs: it
        runs the stages due on ``route`` with ``runners`` (stage name -> function), then
        calls ``after(job_id)``.

        Raises ValueError at start-up when a stage on ``route`` has no runner.
        """
        due_here = {stage.name for job in self.job_types.values() for stage in job.stages if stage.route == route}
        missing = sorted(due_here - set(runners))
        if missing:
            raise ValueError(f"the {self.service} runs {route.task} but has no function for stage(s) {missing}")
        self.app, self.route, self.runners = app, route, dict(runners)
        self.reaper = Reaper(app, self.jobs, self.settings, self.job_types, owner=self.worker_id)

        # Not shared: each app (a worker, or one of a test's) keeps its own task.
        @app.task(name=route.task, bind=True, acks_late=True, ignore_result=True, shared=False)
        def run(task: Task, job_id: str) -> None:
            try:
                self.run_job(task, job_id, stage_in_message(task.request.id, job_id))
            finally:
                if after is not None:
                    after(job_id)

    def done_here(self, job_id: str) -> bool:
        """Whether the job needs this route no more: finished, gone, or at a stage elsewhere.
        False when Redis cannot say."""
        try:
            job = self.jobs.get(job_id)
        except NotFound:
            return True
        except redis.RedisError as error:
            log.warning("job %s: cannot tell whether it left %s: %s", job_id, self.route, error)
            return False
        job_type = self.job_types.get(job["type"])
        if job["state"] in TERMINAL or job_type is None:
            return True
        return bool(job.get("stage")) and job_type.stages[job_type.index(job["stage"])].route != self.route

    def run_job(self, task: Task, job_id: str, stage: str | None) -> None:
        """Run the job's stages due on this route, from ``stage`` (what the message names;
        None: the job's first stage), under the job's lease; record each stage, then hand
        the job on or record success, failure or cancel.

        Never raises, except Celery's retry for a job another live run holds: a failing job
        must not take the worker down.
        """
        job = self._runnable(job_id, stage)
        if job is None:
            return
        job_type = self.job_types[job["type"]]
        ctx = RedisJobContext(self.jobs, job_id, self.shutting_down)
        with self._lease(task, ctx, self.settings.time_limits.get(job_type.name, job_type.time_limit)):
            handoff = self._run_under_lease(ctx, job_type, stage)
        if handoff is not None:
            # After the lease is released, so that the next route's (or, for a stage handed
            # back on shutdown, another) worker can take it at once.
            ctx.progress(stage=f"queued:{job_type.stages[handoff].name}")
            ride_out(self.settings.redis_outage_grace, send_stage, self.app, self.steady, job_id, job_type, handoff)

    def _runnable(self, job_id: str, stage: str | None) -> dict | None:
        """The job record when the message should run, else None (dropped, or the job failed
        for a type or stage this release does not know)."""
        try:
            job = self.jobs.get(job_id)
        except SsdStackError:
            log.warning("dropping message for unknown job %s", job_id)
            return None
        if job["state"] in TERMINAL:
            log.info("job %s already %s; not running it again", job_id, job["state"])
            return None
        job_type = self.job_types.get(job["type"])
        if job_type is None:
            self.jobs.fail(job_id, "unknown_job_type", f"this {self.service} knows no job type {job['type']!r}")
            return None
        try:
            start = self._first_due(job_type, job, stage)
        except ValueError as error:  # a stage this release does not have
            self.jobs.fail(job_id, "unknown_stage", str(error))
            return None
        if start is None:
            log.info("job %s is at stage %s; dropping a stale message for %s", job_id, job.get("stage"), stage)
            return None
        return job

    @contextlib.contextmanager
    def _lease(self, task: Task, ctx: RedisJobContext, time_limit: float) -> Iterator[None]:
        """Hold the job's lease (a token unique to this run) while the block runs, renewing
        it and watching the run (see the module's Watchdog); sets ``ctx.lease_lost`` once
        another run has taken the lease over. Raises Celery's retry, back to this route's
        queue after one TTL, while another live run holds it."""
        job_id, ttl = ctx.job_id, self.settings.heartbeat_ttl
        token = f"{self.worker_id}/{uuid.uuid4().hex[:12]}"
        if not self.jobs.acquire_lease(job_id, token, ttl):
            holder = self.jobs.lease_holder(job_id)
            log.info("job %s is held by live run %s; checking again in %.0f s", job_id, holder, ttl)
            raise task.retry(countdown=ttl, max_retries=None, queue=self.route.queue)
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.settings.heartbeat_interval):
                try:
                    if self._overdue(ctx, time_limit):
                        self._stop_wedged(ctx, done)
                        return
                    if not self.jobs.acquire_lease(job_id, token, ttl):
                        log.error("job %s: lease taken over by %s; stopping", job_id, self.jobs.lease_holder(job_id))
                        ctx.lease_lost.set()
                        return
                except redis.RedisError as error:
                    log.warning("lease renewal for %s failed: %s", job_id, error)

        renewer = threading.Thread(target=renew, name=f"lease-{job_id[:8]}", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join(timeout=5)
            self.steady.release_lease(job_id, token)

    def _overdue(self, ctx: RedisJobContext, time_limit: float) -> bool:
        """Fail the job when it is past its time limit or has stalled; whether it was."""
        if ctx.started_at is None:
            ctx.started_at = self.jobs.get(ctx.job_id).get("started_at")
        started = ctx.started_at or time.time()
        quiet = time.monotonic() - ctx.last_activity
        if time.time() - started > time_limit:
            code, message = "time_limit", (f"the job ran past its time limit of {time_limit:.0f} s "
                                           f"(SSDSTACK_TIME_LIMITS)")
        elif quiet > self.settings.stall_timeout:
            code, message = "stalled", (f"the job reported no progress for {quiet:.0f} s (SSDSTACK_STALL_TIMEOUT is "
                                        f"{self.settings.stall_timeout:.0f} s): a library or engine call hung")
        else:
            return False
        ctx.lease_lost.set()  # the run records nothing more, and stops at its next check
        if self.jobs.fail(ctx.job_id, code, message):
            self.jobs.log(ctx.job_id, f"failed: {message}")
        log.error("job %s: %s", ctx.job_id, message)
        return True

    def _stop_wedged(self, ctx: RedisJobContext, done: threading.Event) -> None:
        """Give a run the watchdog stopped one lease TTL to return; else end this process,
        whose supervisor (Kubernetes, compose, the local stack) starts a fresh one."""
        if done.wait(self.settings.heartbeat_ttl):
            return
        self.wedged.set()
        log.critical("job %s: the stage did not stop within %.0f s of being failed; exiting so that the "
                     "worker is restarted", ctx.job_id, self.settings.heartbeat_ttl)
        logging.shutdown()
        os._exit(EXIT_WEDGED)

    def _run_under_lease(self, ctx: RedisJobContext, job_type: JobType, stage: str | None) -> int | None:
        """Re-read the job (another run may have moved it on before this one took the lease)
        and run its due stages; the stage to hand on to, or None. Records every outcome."""
        job_id = ctx.job_id
        try:
            job = self.steady.get(job_id)
            start = None if job["state"] in TERMINAL else self._first_due(job_type, job, stage)
            if start is None:
                return None
            ctx.stage_index = start
            if ctx.cancelled():
                raise JobCancelled(f"cancelled before {job_type.stages[start].name} started")
            if not self.steady.mark_running(job_id, self.worker_id):
                return None
            return self._run_segment(ctx, job_type, job, start)
        except Stopped:
            return None
        except Exception as error:
            if ctx.lease_lost.is_set():  # the job belongs to the run that holds the lease now
                log.info("job %s: stopped after losing its lease (%s: %s)", job_id, type(error).__name__, error)
            elif self._handed_back(ctx, job_type, error):
                return ctx.stage_index
            else:
                self._record_failure(ctx, error)
        return None

    def _handed_back(self, ctx: RedisJobContext, job_type: JobType, error: Exception) -> bool:
        """Whether a stage stopped by this worker's shutdown (not by a cancel request) went
        back to queued, to be sent again."""
        if not (isinstance(error, JobCancelled) and ctx.interrupted.is_set() and ctx.stage_index is not None):
            return False
        if self.steady.cancel_requested(ctx.job_id):
            return False
        handed = self.steady.requeue(ctx.job_id, ctx.stage_index, f"{self.worker_id} shut down")
        if handed:
            ctx.log(f"handed back at stage {job_type.stages[ctx.stage_index].name}: {self.worker_id} is shutting "
                    f"down ({error})")
        return handed

    def _record_failure(self, ctx: RedisJobContext, error: Exception) -> None:
        if isinstance(error, JobCancelled):
            self.steady.mark_cancelled(ctx.job_id, str(error))
            ctx.log(f"cancelled: {error}")
        elif isinstance(error, SsdStackError):
            self.steady.fail(ctx.job_id, error.code, error.message, error.details)
            ctx.log(f"failed: {error.message}")
        elif no_space(error):
            message = f"the store has no space left ({error}); nothing partial was kept: free space, then resubmit"
            self.steady.fail(ctx.job_id, InsufficientStorage.code, message)
            ctx.log(f"failed: {message}")
        else:  # a bug or an unexpected library error: the job fails, the worker lives
            log.error("job %s crashed", ctx.job_id, exc_info=error)
            self.steady.fail(ctx.job_id, "internal_error", f"{type(error).__name__}: {error}",
                           "".join(traceback.format_exception(error, limit=8)).splitlines()[-12:])

    def _first_due(self, job_type: JobType, job: dict, stage: str | None) -> int | None:
        """The stage this message runs first, or None when the message is stale.

        A message for a stage behind the job's current one is stale, unless both are on
        one route: then the delivery that ran the earlier stage died in the middle of the
        run, and the job goes on from its current stage.
        """
        current = job_type.index(job["stage"]) if job.get("stage") else None
        wanted = 0 if stage is None else job_type.index(stage)
        if job_type.stages[wanted].route != self.route:
            log.warning("job %s: stage %s does not run on %s", job["id"], job_type.stages[wanted].name, self.route)
            return None
        if current is not None and wanted < current:
            return current if current in job_type.segment(wanted) else None
        return wanted

    def _run_segment(self, ctx: RedisJobContext, job_type: JobType, job: dict, start: int) -> int | None:
        """Run stages ``start``.. on this route; the index of the stage to hand on to, or None
        when the job is done. Stages already recorded as succeeded are not run again.
        Raises Stopped once the lease is lost or the job ended elsewhere (cancelled)."""
        job_id = job["id"]
        spec = job_type.spec.model_validate(job["spec"])
        if job.get("stages") is None:
            self.steady.adopt_legacy(job_id, job_type.stage_names, start)
            job = self.steady.get(job_id)
        outputs, base = recorded_outputs(job_type, job)
        states = [entry["state"] for entry in job["stages"]]
        segment = job_type.segment(start)
        for index in range(start, segment.stop):
            stage = job_type.stages[index]
            if states[index] == SUCCEEDED and stage.name in outputs:
                continue
            if index > start and ctx.interrupted.is_set():
                return index  # this worker is shutting down: the next stage goes back to the queue
            self._check_still_ours(ctx)
            self.steady.advance_stage(job_id, stage.name, index)
            if not self.steady.stage_started(job_id, index):
                raise Stopped
            ctx.stage_index = index
            ctx.progress(stage=stage.name)
            outputs[stage.name] = run_stage(stage, self.runners[stage.name], ctx,
                                            job_type.input_for(index, spec, outputs, base))
            self._check_still_ours(ctx)
            if not self.steady.stage_done(job_id, index, outputs[stage.name].model_dump(mode="json"),
                                        job_type.result(outputs, base)):
                raise Stopped
        if segment.stop < len(job_type.stages):
            return segment.stop
        self.steady.succeed(job_id, job_type.result(outputs, base))
        ctx.log("succeeded")
        return None

    @staticmethod
    def _check_still_ours(ctx: RedisJobContext) -> None:
        if ctx.lease_lost.is_set():
            raise Stopped
