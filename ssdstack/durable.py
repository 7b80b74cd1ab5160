"""Writes that survive a power cut: data reaches the disk before a rename publishes it, and
the rename itself reaches the disk before anyone is told it happened.

A rename is atomic, but not durable: without an fsync of the file (or every file of a
folder) first, a crash can leave the new name pointing at empty or partial data, and
without an fsync of the parent folder after, the rename itself can be lost.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import uuid
from pathlib import Path

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_SYNCFS = getattr(_libc, "syncfs", None)
# A full disk or quota: the request cannot be stored, which says 507 rather than 500.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def sync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: Path) -> None:
    """Make the entries of folder ``path`` (names created, renamed, removed) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(root: Path) -> None:
    """Make every file and folder under ``root`` durable: one ``syncfs`` of its filesystem
    (Linux), else an fsync of each."""
    if _SYNCFS is not None:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _SYNCFS(fd) == 0:
                return
        finally:
            os.close(fd)
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            sync_file(Path(folder) / name)
        sync_dir(Path(folder))


def publish_rename(source: Path, target: Path, replace: bool = False) -> None:
    """Rename ``source`` (a file or a folder, already complete) to ``target`` durably: its
    content synced first, the rename synced after. ``replace``: ``os.replace`` (a file over
    a file), else ``os.rename``."""
    if source.is_dir():
        sync_tree(source)
    else:
        sync_file(source)
    (os.replace if replace else os.rename)(source, target)
    sync_dir(target.parent)


def no_space(error: BaseException) -> bool:
    """Whether ``error`` is the filesystem saying it is full."""
    return isinstance(error, OSError) and error.errno in NO_SPACE


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a sibling temp file, fsync, then rename over ``path``."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(temp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    sync_dir(path.parent)
