"""Run the stack (Redis, three Celery workers, the gateway) as local background processes.

Layout under ``var_dir``::

    log/<service>.log   the service's stdout and stderr, appended across runs
    run/<service>.pid   line 1 the pid; line 2 (Linux) the process start time in clock
                        ticks since boot, so that a recycled pid is never taken for ours
    run/<worker>.alive  the worker's liveness file (SSDSTACK_HEARTBEAT_FILE)
    run/redis-*         the Redis users' passwords and the ``user`` directives made from
                        them (cli.redis_users): each service logs in as its own user
    redis/              Redis's --dir: its append-only file (fsync every second), so jobs
                        and their history outlive ``down`` and ``up``
    store/              the model store (SSDSTACK_STORE_DIR)
    work/               the workers' cwd and SSDSTACK_WORK_DIR

Each service leads its own session and process group, so stopping it also reaches any
children it spawned, and a later process (``make down``) can stop it from its pid file.
The workers and the gateway run under :mod:`cli.supervise`, which starts one again when it
crashes; the pid file names the supervisor. Everything listens on 127.0.0.1 only.
"""
from __future__ import annotations

import http.client
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import redis

from cli.processes import find_redis_server, group_alive, log_tail, pid_alive, proc_stat, signal_group, start_ticks
from cli.redis_users import ADMIN, SERVICE_USERS, RedisUsers

# The folder holding the ssdstack, trainer, converter, inferencer and gateway packages.
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_API_KEY = "local-dev-key"
STARTUP_GRACE = 1.0  # seconds a fresh process must survive to count as started
KILL_WAIT = 5.0  # seconds to wait for a group to vanish after SIGKILL
POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service: its command, full environment and working folder."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path | None = None

class LocalStack:
    """The stack's processes under one ``var_dir``; see the module docstring for its layout.

    Any number of ``LocalStack`` objects (in any number of processes) may manage the same
    ``var_dir``: all state lives in its pid files.
    """

    def __init__(
        self,
        var_dir: Path,
        redis_port: int = 6379,
        gateway_port: int = 8000,
        api_key: str = DEFAULT_API_KEY,
        extra_env: dict[str, str] | None = None,
        python: str = sys.executable,
        infer_concurrency: int = 4,
        inferencers: int = 1,
    ):
        # Absolute, since workers run with var/work as their cwd.
        self.var_dir = Path(var_dir).resolve()
        self.redis_port = redis_port
        self.gateway_port = gateway_port
        self.python = python
        self.infer_concurrency = infer_concurrency
        if inferencers < 1:
            raise ValueError(f"a stack needs at least one inferencer, not {inferencers}")
        self.inferencers = inferencers
        self.log_dir = self.var_dir / "log"
        self.run_dir = self.var_dir / "run"
        self.redis_dir = self.var_dir / "redis"
        self.store_dir = self.var_dir / "store"
        self.work_dir = self.var_dir / "work"
        self.redis_users = RedisUsers(self.run_dir, redis_port)
        self.extra_env = extra_env or {}
        self.env = self._environment(api_key)
        # Popen objects of the processes this object started, by pid: kept so that they
        # are reaped (no zombies) and their exit codes can be reported.
        self._children: dict[int, subprocess.Popen] = {}

    @property
    def admin_url(self) -> str:
        """Redis as its ``default`` user, who may run every command (tests, backups)."""
        return self.redis_users.url(ADMIN)

    def redis(self, **options) -> redis.Redis:
        """A client for the stack's Redis as its ``default`` user."""
        return redis.Redis.from_url(self.admin_url, **options)

    def _environment(self, api_key: str) -> dict[str, str]:
        env = dict(os.environ)
        # Importable without an install: the repo root goes first on PYTHONPATH.
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if part
        )
        env.update(
            SSDSTACK_STORE_DIR=str(self.store_dir),
            SSDSTACK_WORK_DIR=str(self.work_dir),
            SSDSTACK_API_KEYS=api_key,
            # The stack listens on 127.0.0.1 only; its default key is short to type.
            SSDSTACK_ALLOW_SHORT_API_KEYS="true",
            SSDSTACK_PORT=str(self.gateway_port),
            SSDSTACK_HOST="127.0.0.1",
            SSDSTACK_INFER_CONCURRENCY=str(self.infer_concurrency),
            # Batches of up to the inferencer's threads: one batch runs at a time.
            **({"SSDSTACK_INFER_MAX_BATCH": str(self.infer_concurrency)} if self.infer_concurrency > 1
               else {"SSDSTACK_INFER_BATCHING": "false"}),
            PYTHONUNBUFFERED="1",
        )
        # MindSpore logs every graph-compile warning unless told otherwise (3 = errors only).
        env.setdefault("GLOG_v", "3")
        env.update(self.extra_env)
        return env

    def _service_env(self, name: str, **more: str) -> dict[str, str]:
        """The environment of service ``name``: its own Redis user, unless ``extra_env``
        names a Redis URL for all."""
        url = self.extra_env.get("SSDSTACK_REDIS_URL") or self.redis_users.url(SERVICE_USERS[name])
        return dict(self.env, SSDSTACK_REDIS_URL=url, **more)

    # --- what runs ---------------------------------------------------------------------

    def services(self) -> list[ServiceSpec]:
        """redis, trainer, converter, inferencer (then inferencer-2 ... for more), evaluator,
        gateway: the order ``up`` starts them in. Inferencers this object was not asked for
        but whose pid files are there (another ``LocalStack`` started them) are listed too,
        so that ``down`` and ``status`` reach them."""

        supervised = [self.python, "-m", "cli.supervise", "--", self.python, "-m"]

        def worker(name: str, queue: str, *pool: str, module: str = "", user: str = "") -> ServiceSpec:
            argv = [*supervised, "celery", "-A", module or f"{name}.worker", "worker", "-Q", queue,
                    "-n", f"{name}@%h", "--pool", *pool, "--loglevel", "INFO"]
            env = self._service_env(user or name, SSDSTACK_HEARTBEAT_FILE=str(self.liveness_path(name)))
            return ServiceSpec(name, argv, env, self.work_dir)

        inferencers = [worker(name, "infer", "threads", "--concurrency", str(self.infer_concurrency),
                              module="inferencer.worker", user="inferencer") for name in self._inferencer_names()]

        redis_argv = [
            find_redis_server(), str(self.redis_users_path), "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--dir", str(self.redis_dir), "--save", "", "--appendonly", "yes",
            "--appendfsync", "everysec", "--protected-mode", "yes",
        ]
        return [
            ServiceSpec("redis", redis_argv, self.env),
            worker("trainer", "train", "solo"),
            worker("converter", "convert", "solo"),
            *inferencers,
            worker("evaluator", "evaluate", "solo", module="inferencer.evaluator"),
            ServiceSpec("gateway", [*supervised, "gateway"], self._service_env("gateway")),
        ]

    def _inferencer_names(self) -> list[str]:
        numbers = [path.stem.removeprefix("inferencer-") for path in self.run_dir.glob("inferencer-*.pid")]
        count = max([self.inferencers, *(int(number) for number in numbers if number.isdigit())])
        return ["inferencer", *(f"inferencer-{number}" for number in range(2, count + 1))]

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    @property
    def redis_users_path(self) -> Path:
        """Redis's configuration file: the ``user`` directives, written before it starts."""
        return self.run_dir / "redis-users.conf"

    def liveness_path(self, name: str) -> Path:
        """The worker's liveness file (SSDSTACK_HEARTBEAT_FILE), as Kubernetes probes read it."""
        return self.run_dir / f"{name}.alive"

    def _pid_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    # --- pid files ---------------------------------------------------------------------

    def _read_pid(self, name: str) -> tuple[int, str | None] | None:
        """(pid, start ticks or None) from the pid file; None if missing or unreadable."""
        try:
            lines = self._pid_path(name).read_text().split()
            return int(lines[0]), (lines[1] if len(lines) > 1 else None)
        except (OSError, ValueError, IndexError):
            return None

    def _write_pid(self, name: str, pid: int) -> None:
        ticks = start_ticks(pid)
        staging = self._pid_path(name).with_suffix(".pid.tmp")
        staging.write_text(f"{pid}\n{ticks}\n" if ticks else f"{pid}\n")
        os.replace(staging, self._pid_path(name))  # a reader never sees half a pid file

    def _reap(self, pid: int) -> None:
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            del self._children[pid]

    def _live_pid(self, name: str) -> int | None:
        """The pid in ``name``'s pid file if that process is running and is the one we started."""
        record = self._read_pid(name)
        if record is None:
            return None
        pid, ticks = record
        self._reap(pid)
        if not pid_alive(pid):
            return None
        if ticks is not None and start_ticks(pid) not in (None, ticks):
            return None  # the pid now belongs to some later, unrelated process
        return pid

    def _group_to_signal(self, name: str) -> int | None:
        """The process group to stop for ``name``, or None if nothing of it is left."""
        record = self._read_pid(name)
        if record is None:
            return None
        pid = record[0]
        if self._live_pid(name) is not None:
            return pid
        # The leader is gone. While any member of its group lives, Linux does not hand its
        # pid to a new process, so a live group of that id can only be its orphans.
        if not pid_alive(pid) and group_alive(pid):
            return pid
        return None

    def _exited(self, name: str) -> bool:
        """Whether ``name`` has a pid file but its process is no longer running."""
        return self._read_pid(name) is not None and self._live_pid(name) is None

    # --- starting ----------------------------------------------------------------------

    def _spec(self, name: str) -> ServiceSpec:
        specs = {spec.name: spec for spec in self.services()}
        if name not in specs:
            raise ValueError(f"unknown service {name!r}; known: {', '.join(specs)}")
        return specs[name]

    def _spawn(self, spec: ServiceSpec) -> subprocess.Popen:
        pid = self._live_pid(spec.name)
        if pid is not None:
            raise RuntimeError(
                f"{spec.name} is already running (pid {pid}, {self._pid_path(spec.name)})"
            )
        for folder in (self.log_dir, self.run_dir, self.redis_dir, self.store_dir, self.work_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if spec.name == "redis":
            self.redis_users.write_config(self.redis_users_path)
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.log_path(spec.name).open("ab") as log:
            log.write(f"\n=== {stamp} starting {spec.name}: {shlex.join(spec.argv)}\n".encode())
            log.flush()
            try:
                child = subprocess.Popen(
                    spec.argv, env=spec.env, cwd=spec.cwd, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            except OSError as exc:
                raise RuntimeError(f"cannot start {spec.name} ({spec.argv[0]}): {exc}") from exc
        self._children[child.pid] = child
        self._write_pid(spec.name, child.pid)
        return child

    def _confirm_started(self, started: dict[str, subprocess.Popen]) -> None:
        """Raise if any just-spawned process exits within STARTUP_GRACE seconds."""
        deadline = time.monotonic() + STARTUP_GRACE
        for name, child in started.items():
            try:
                code = child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                continue
            self._pid_path(name).unlink(missing_ok=True)
            raise RuntimeError(
                f"{name} exited with code {code} right after starting; "
                f"last lines of {self.log_path(name)}:\n{log_tail(self.log_path(name))}"
            )

    def _start_missing(self, specs: list[ServiceSpec]) -> None:
        started = {s.name: self._spawn(s) for s in specs if self._live_pid(s.name) is None}
        self._confirm_started(started)

    def start(self, name: str) -> int:
        """Start one service in the background and return its pid.

        Refuses if its pid file names a live process; raises with the log's tail if the
        process exits within STARTUP_GRACE seconds.
        """
        child = self._spawn(self._spec(name))
        self._confirm_started({name: child})
        return child.pid

    def up(self, wait_ready: bool = True, timeout: float = 120) -> None:
        """Start every service not yet running, Redis first, and wait until it answers.

        With ``wait_ready``, then wait until the gateway's /readyz answers 200. All of this
        is bounded by ``timeout`` seconds; on failure the RuntimeError carries the tail of
        every service's log, and what did start keeps running (call ``down``).
        """
        deadline = time.monotonic() + timeout
        specs = self.services()
        self._start_missing([spec for spec in specs if spec.name == "redis"])
        # Workers and gateway connect at start-up: give them a broker that answers.
        self.wait_redis(timeout=max(1.0, deadline - time.monotonic()))
        self._start_missing([spec for spec in specs if spec.name != "redis"])
        if wait_ready:
            self._wait_ready(deadline, timeout)

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        url = f"http://127.0.0.1:{self.gateway_port}/readyz"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        names = [spec.name for spec in self.services()]
        last = "no answer"
        while True:
            try:
                with opener.open(url, timeout=2) as response:
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read(300).decode('utf-8', 'replace')}"
                exc.close()
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            dead = [name for name in names if self._exited(name)]
            if dead:
                raise RuntimeError(
                    f"{', '.join(dead)} exited while waiting for {url}\n{self._log_tails()}"
                )
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"gateway not ready at {url} after {timeout:g} s (last: {last})\n"
                    f"{self._log_tails()}"
                )
            time.sleep(0.5)

    def wait_redis(self, timeout: float = 20) -> None:
        """Wait until Redis on ``redis_port`` answers PING."""
        client = self.redis(socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError as exc:
                    last = exc
                if self._exited("redis"):
                    raise RuntimeError(
                        f"redis exited; last lines of {self.log_path('redis')}:\n"
                        f"{log_tail(self.log_path('redis'))}"
                    )
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"redis on 127.0.0.1:{self.redis_port} did not answer PING within "
                        f"{timeout:g} s ({last}); last lines of {self.log_path('redis')}:\n"
                        f"{log_tail(self.log_path('redis'))}"
                    )
                time.sleep(POLL_INTERVAL)
        finally:
            client.close()

    # --- stopping ----------------------------------------------------------------------

    def _wait_group_gone(self, pgid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._reap(pgid)
            if not group_alive(pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL)

    def _end(self, name: str, timeout: float, sig: int) -> None:
        pgid = self._group_to_signal(name)
        if pgid is not None:
            signal_group(pgid, sig)
            gone = self._wait_group_gone(pgid, timeout)
            if not gone and sig != signal.SIGKILL:
                signal_group(pgid, signal.SIGKILL)
                gone = self._wait_group_gone(pgid, KILL_WAIT)
            if not gone:
                raise RuntimeError(f"{name} (process group {pgid}) survived SIGKILL")
        self._pid_path(name).unlink(missing_ok=True)

    def stop(self, name: str, timeout: float = 20) -> None:
        """SIGTERM ``name``'s process group, SIGKILL it after ``timeout`` s; drop the pid file.

        A missing or stale pid file (its process gone) is not an error.
        """
        self._end(name, timeout, signal.SIGTERM)

    def kill(self, name: str) -> None:
        """SIGKILL ``name``'s process group at once, supervisor included; drop the pid file."""
        self._end(name, KILL_WAIT, signal.SIGKILL)

    def supervised_pid(self, name: str) -> int | None:
        """The pid of the process ``name``'s supervisor runs now, if any."""
        supervisor = self._live_pid(name)
        if supervisor is None:
            return None
        children = [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()
                    and (proc_stat(int(entry.name)) or [None, None])[1] == str(supervisor)]
        return children[0] if children else None

    def crash(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` (SIGKILL: a crash, an out-of-memory kill) to the process ``name``'s
        supervisor runs, which then starts it again; the pid signalled."""
        pid = self.supervised_pid(name)
        if pid is None:
            raise RuntimeError(f"{name} has no supervised process running")
        os.kill(pid, sig)
        return pid

    def down(self) -> None:
        """Stop every service in reverse start order, then any other pid file in run/."""
        names = [spec.name for spec in reversed(self.services())]
        if self.run_dir.is_dir():
            names += sorted(p.stem for p in self.run_dir.glob("*.pid") if p.stem not in names)
        errors = []
        for name in names:
            try:
                self.stop(name)
            except (RuntimeError, OSError) as exc:
                errors.append(f"{name}: {exc}")
        if errors:
            raise RuntimeError("could not stop: " + "; ".join(errors))

    # --- reporting ---------------------------------------------------------------------

    def status(self) -> dict[str, dict]:
        """name -> {"pid": pid from the pid file or None, "running": bool, "log": path}."""
        report = {}
        for spec in self.services():
            record = self._read_pid(spec.name)
            report[spec.name] = {
                "pid": record[0] if record else None,
                "running": self._live_pid(spec.name) is not None,
                "log": str(self.log_path(spec.name)),
            }
        return report

    def _log_tails(self) -> str:
        return "\n".join(
            f"--- {spec.name}: last lines of {self.log_path(spec.name)} ---\n"
            f"{log_tail(self.log_path(spec.name))}"
            for spec in self.services()
        )
