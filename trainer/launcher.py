"""Starting the ranks of a data-parallel training on one node, without MindSpore.

Two launchers. ``msrun`` (MindSpore's dynamic cluster; CPU, GPU and Ascend) starts a
scheduler plus one worker per device and writes ``<log_dir>/worker_<rank>.log`` and
``scheduler.log``. ``rank_table`` (Ascend/HCCL only) is the legacy way: one process per
card with ``RANK_TABLE_FILE``/``RANK_SIZE``/``RANK_ID``/``DEVICE_ID``; we write its logs
under the same names, so :func:`launch` follows rank 0 the same way for both.

Inside a rank, :class:`RankContext` prints rank 0's progress and log lines, which
:func:`relay_to` turns back into calls on the job's context here; :mod:`trainer.parallel`
joins the group and averages the gradients.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

from ssdstack.errors import JobFailed
from ssdstack.jobs.context import JobCancelled

Launcher = Literal["msrun", "rank_table"]
LAUNCHERS = ("msrun", "rank_table")

# Variables that place a process in a cluster; a launcher's own process must not pass
# stale ones (say, from an outer job) to the ranks it starts.
CLUSTER_VARIABLES = ("MS_ROLE", "MS_NODE_ID", "MS_SCHED_HOST", "MS_SCHED_PORT", "MS_WORKER_NUM",
                     "MS_TOPO_TIMEOUT", "RANK_ID", "RANK_SIZE", "RANK_TABLE_FILE", "DEVICE_ID",
                     "MINDSPORE_HCCL_CONFIG_PATH")
# Marks every process of one launch (msrun, its scheduler, workers, log tails), so that
# all of them can be found and killed, even workers msrun started in sessions of their own.
LAUNCH_TAG = "SSDSTACK_LAUNCH_ID"
LOG_TAIL_LINES = 30

_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")
_MSRUN_WORKER_FAILED = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)")


@dataclass(frozen=True)
class LaunchPlan:
    """How to start ``devices`` data-parallel ranks on this node."""

    devices: int
    log_dir: Path
    launcher: Launcher = "msrun"
    device_target: str = "CPU"
    master_addr: str = "127.0.0.1"
    master_port: int = 8118
    rank_table_file: Path | None = None   # rank_table only: the HCCL rank table json
    python: str = sys.executable          # msrun and the ranks run this interpreter
    hccl_connect_timeout_s: int = 600
    hccl_exec_timeout_s: int = 1800

    def __post_init__(self):
        if self.devices < 1:
            raise ValueError(f"devices must be at least 1, got {self.devices}")
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS}, got {self.launcher!r}")
        if not 1024 <= self.master_port <= 65535:
            raise ValueError(f"master_port must be in 1024..65535, got {self.master_port}")
        if self.launcher == "rank_table":
            if self.device_target != "Ascend":
                raise ValueError(f"the rank_table launcher needs Ascend (HCCL), not {self.device_target}; "
                                 "use msrun")
            if self.rank_table_file is None:
                raise ValueError("the rank_table launcher needs rank_table_file")


@dataclass(frozen=True)
class RankProcess:
    """One process to start: ``argv`` with exactly ``env``; ``log`` is where its output goes
    (``None`` for msrun itself, whose workers write their own logs)."""

    argv: list[str]
    env: dict[str, str]
    log: Path | None
    rank: int | None


class RankFailed(JobFailed):
    """A rank exited non-zero; ``details`` holds its rank, exit code, log path and log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (bound and released, so a small race remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def worker_log(plan: LaunchPlan, rank: int) -> Path:
    """The log of ``rank``: msrun's own name for it, which the rank-table launcher reuses."""
    return Path(plan.log_dir) / f"worker_{rank}.log"


def _hccl_env(plan: LaunchPlan) -> dict[str, str]:
    return {"HCCL_CONNECT_TIMEOUT": str(plan.hccl_connect_timeout_s),
            "HCCL_EXEC_TIMEOUT": str(plan.hccl_exec_timeout_s)}


def _clean(base_env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in base_env.items() if k not in CLUSTER_VARIABLES}


def msrun_process(plan: LaunchPlan, entry_args: Sequence[str], base_env: Mapping[str, str]) -> RankProcess:
    """``msrun ... python <entry_args>``. msrun runs its task through the name ``python``
    looked up on ``PATH`` (a full interpreter path would be taken for a script), so the
    plan's interpreter directory goes first on ``PATH``."""
    bin_dir = str(Path(plan.python).parent)
    argv = [os.path.join(bin_dir, "msrun"), "--worker_num", str(plan.devices),
            "--local_worker_num", str(plan.devices), "--master_addr", plan.master_addr,
            "--master_port", str(plan.master_port), "--node_rank", "0", "--log_dir", str(plan.log_dir),
            "--join", "True", "python", *entry_args]
    env = _clean(base_env)
    env["PATH"] = os.pathsep.join([bin_dir, *filter(None, [base_env.get("PATH")])])
    if plan.device_target == "Ascend":
        env.update(_hccl_env(plan))
    return RankProcess(argv=argv, env=env, log=None, rank=None)


def rank_table_processes(plan: LaunchPlan, entry_args: Sequence[str],
                         base_env: Mapping[str, str]) -> list[RankProcess]:
    """One ``python <entry_args>`` per card, rank ``i`` on device ``i``."""
    processes = []
    for rank in range(plan.devices):
        env = _clean(base_env)
        env.update({"RANK_TABLE_FILE": str(plan.rank_table_file), "RANK_SIZE": str(plan.devices),
                    "RANK_ID": str(rank), "DEVICE_ID": str(rank), **_hccl_env(plan)})
        processes.append(RankProcess(argv=[plan.python, *entry_args], env=env, log=worker_log(plan, rank),
                                     rank=rank))
    return processes


def launch_processes(plan: LaunchPlan, entry_args: Sequence[str],
                     base_env: Mapping[str, str]) -> list[RankProcess]:
    if plan.launcher == "msrun":
        return [msrun_process(plan, entry_args, base_env)]
    return rank_table_processes(plan, entry_args, base_env)


class _LogFollower:
    """Hands complete new lines of a growing file to ``on_line``."""

    def __init__(self, path: Path, on_line: Callable[[str], None]):
        self.path, self.on_line = path, on_line
        self.offset, self.partial = 0, b""

    def poll(self, final: bool = False) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        if final and self.partial:
            lines, self.partial = [*lines, self.partial], b""
        for line in lines:
            self.on_line(line.decode("utf-8", "replace").rstrip("\r"))


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        return path.read_text("utf-8", "replace").splitlines()[-lines:]
    except FileNotFoundError:
        return []


def _tagged_processes(tag: str) -> list:
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(LAUNCH_TAG) == tag:
                found.append(process)
        except psutil.Error:
            continue
    return found


def _kill_launch(tag: str, started: Sequence[subprocess.Popen]) -> None:
    """SIGKILL every process of the launch and their process groups, then reap ours."""
    own_group = os.getpgrp()
    pids = {p.pid for p in started if p.poll() is None} | {p.pid for p in _tagged_processes(tag)}
    for pid in pids:
        try:
            group = os.getpgid(pid)
            if group != own_group:
                os.killpg(group, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
    for process in started:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    psutil.wait_procs(_tagged_processes(tag), timeout=5)


def _msrun_workers(msrun: subprocess.Popen) -> dict[int, int]:
    """``{pid: rank}`` of msrun's running workers, which msrun starts as session leaders."""
    workers = {}
    try:
        children = psutil.Process(msrun.pid).children()
    except psutil.Error:
        return workers
    for child in children:
        try:
            if os.getsid(child.pid) == child.pid and "MS_NODE_ID" in (env := child.environ()):
                workers[child.pid] = int(env["MS_NODE_ID"])
        except (psutil.Error, OSError, ValueError):
            continue
    return workers


def _failure(plan: LaunchPlan, rank: int | None, exit_code: int | None, launcher_log: Path | None) -> JobFailed:
    if rank is None:
        # No pid to go by (the rank died before we saw it): the rank whose log ends in a
        # traceback, else the only rank whose log says anything (one that exited with a
        # message before the others, waiting to join, printed a line).
        tails = {r: _tail(worker_log(plan, r), 200) for r in range(plan.devices)}
        rank = next((r for r, tail in tails.items() if any("Traceback" in line for line in tail)), None)
        speaking = [r for r, tail in tails.items() if any(line.strip() for line in tail)]
        rank = rank if rank is not None or len(speaking) != 1 else speaking[0]
    if rank is None:
        log = launcher_log or Path(plan.log_dir) / "scheduler.log"
        return JobFailed(f"{plan.launcher} failed (exit code {exit_code})",
                         details={"exit_code": exit_code, "log": str(log), "log_tail": _tail(log)})
    log = worker_log(plan, rank)
    tail = _tail(log)
    # The exception line, not the C++ runtime's shutdown chatter printed after it.
    last = next((line for line in reversed(tail) if _EXCEPTION_LINE.match(line)),
                next((line for line in reversed(tail) if line.strip()), ""))
    return RankFailed(f"rank {rank} of {plan.devices} exited with code {exit_code}: {last}",
                      details={"rank": rank, "exit_code": exit_code, "log": str(log), "log_tail": tail})


class _MsrunWatch:
    """Decides from outside whether an msrun launch finished, and how.

    msrun reaps its workers, so their exit codes reach us only through its log line
    "Worker process <pid> exit with exception. Error code: <n>"; the pid names the rank.
    After a failure msrun waits for its scheduler, up to the cluster timeout (600 s) when
    a worker died before joining, so we stop everything as soon as the line appears, or
    when all workers are gone and msrun still runs ``WORKERS_GONE_GRACE_S`` later.
    """

    WORKERS_GONE_GRACE_S = 20.0

    def __init__(self, plan: LaunchPlan, msrun: subprocess.Popen, log: Path):
        self.plan, self.msrun, self.log = plan, msrun, log
        self.workers: dict[int, int] = {}  # pid -> rank, every worker seen so far
        self.failed: tuple[int, int] | None = None
        self.lines = _LogFollower(log, self._scan)
        self.all_gone_since: float | None = None

    def _scan(self, line: str) -> None:
        if self.failed is None and (match := _MSRUN_WORKER_FAILED.search(line)):
            self.failed = (int(match[1]), int(match[2]))

    def check(self) -> bool:
        """True once msrun succeeded; raises the failure otherwise, ``False`` while running."""
        running = _msrun_workers(self.msrun)
        self.workers.update(running)
        self.lines.poll()
        code = self.msrun.poll()
        if self.failed is not None:
            pid, exit_code = self.failed
            raise _failure(self.plan, self.workers.get(pid), exit_code, self.log)
        if code == 0:
            return True
        if code is not None:
            raise _failure(self.plan, None, code, self.log)
        if len(self.workers) == self.plan.devices and not running:
            self.all_gone_since = self.all_gone_since or time.monotonic()
            if time.monotonic() - self.all_gone_since > self.WORKERS_GONE_GRACE_S:
                raise _failure(self.plan, None, None, self.log)
        return False


class _RankWatch:
    """The rank-table launch: its processes are ours, exit codes included."""

    def __init__(self, plan: LaunchPlan, ranks: Sequence[subprocess.Popen]):
        self.plan, self.ranks = plan, ranks

    def check(self) -> bool:
        codes = [p.poll() for p in self.ranks]
        bad = next((rank for rank, code in enumerate(codes) if code not in (None, 0)), None)
        if bad is not None:
            raise _failure(self.plan, bad, codes[bad], None)
        return all(code == 0 for code in codes)


def launch(plan: LaunchPlan, entry_args: Sequence[str], timeout_s: float,
           on_line: Callable[[str], None] = lambda line: None,
           cancelled: Callable[[], bool] = lambda: False, poll_s: float = 0.2) -> None:
    """Run ``python <entry_args>`` on ``plan.devices`` ranks and wait for all of them.

    Rank 0's output lines go to ``on_line`` as they are written. Every process of the
    launch is killed on cancel (then :class:`JobCancelled`), on timeout (:class:`JobFailed`)
    and when a rank fails (:class:`RankFailed`, naming the rank, with its log tail).
    """
    log_dir = Path(plan.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("worker_*.log"):
        old.unlink()
    tag = uuid.uuid4().hex
    specs = launch_processes(plan, entry_args, {**os.environ, LAUNCH_TAG: tag})
    rank0 = _LogFollower(worker_log(plan, 0), on_line)
    started: list[subprocess.Popen] = []
    try:
        for spec in specs:
            # msrun's stdout repeats every worker log (it tails them); its stderr has its own
            # messages, the failure line among them.
            log = spec.log or log_dir / "msrun.log"
            with open(log, "wb") as out:
                # One process group for the launch: msrun leads its own (its workers it puts
                # in sessions of their own); the rank-table ranks join the first rank's.
                group = started[0].pid if started else 0
                started.append(subprocess.Popen(
                    spec.argv, env=spec.env, stdin=subprocess.DEVNULL, process_group=group,
                    stdout=subprocess.DEVNULL if spec.log is None else out, stderr=out))
        watch = (_MsrunWatch(plan, started[0], log_dir / "msrun.log") if plan.launcher == "msrun"
                 else _RankWatch(plan, started))
        deadline = time.monotonic() + timeout_s
        while True:
            rank0.poll()
            if cancelled():
                raise JobCancelled(f"cancelled; all {plan.devices} ranks stopped")
            if time.monotonic() > deadline:
                raise JobFailed(f"distributed training did not finish within {timeout_s:.0f} s; all ranks stopped",
                                details={"log_dir": str(log_dir)})
            if watch.check():
                return
            time.sleep(poll_s)
    finally:
        # Whatever happened, nothing of this launch outlives it (msrun's log tails included).
        _kill_launch(tag, started)
        rank0.poll(final=True)


_PROGRESS, _LOG = "@progress ", "@log "


class RankContext:
    """The :class:`~ssdstack.jobs.context.JobContext` of code inside a rank: rank 0 prints
    progress and log lines that :func:`relay_to` turns back into calls on the job's context
    in the launching process; other ranks stay quiet. Cancelling is the launcher's business
    (it kills every rank), so :meth:`cancelled` is always false here."""

    def __init__(self, rank: int, job_id: str = "rank"):
        self.rank, self.job_id = rank, job_id

    def progress(self, **fields) -> None:
        if self.rank == 0:
            print(_PROGRESS + json.dumps(fields), flush=True)

    def log(self, message: str) -> None:
        if self.rank == 0:
            print(_LOG + message.replace("\n", " "), flush=True)

    def cancelled(self) -> bool:
        return False


def relay_to(ctx) -> Callable[[str], None]:
    """An ``on_line`` for :func:`launch` that forwards rank 0's :class:`RankContext` lines to ``ctx``."""

    def on_line(line: str) -> None:
        if line.startswith(_PROGRESS):
            ctx.progress(**json.loads(line[len(_PROGRESS):]))
        elif line.startswith(_LOG):
            ctx.log(line[len(_LOG):])

    return on_line
