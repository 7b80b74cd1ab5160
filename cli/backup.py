"""``ssdstack store backup DIR`` and ``ssdstack store restore DIR``: the model store and the
Redis state (job records and history, queues, idempotency keys) together, checked.

A backup takes Redis first, then the store: every version a job record names was
published before the record said so, and is in the copy. It leaves out what belongs to
processes alive now (worker heartbeats, job leases, the reaper's lock, messages a worker
holds unacknowledged, detect replies): after a restore, the reaper sends every unfinished
job again at its stage, which resumes from its checkpoint in the restored store.

``DIR/backup.json`` is written last: a folder without it is no backup. It holds the
SHA-256 of ``redis.jsonl`` (one key per line: name, TTL, Redis DUMP payload) and the
consistency check's findings: every artefact against its manifest's SHA-256, every
deployment against its version, every finished job's version against the store.
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import redis

from ssdstack.jobs.records import PREFIX, SUCCEEDED, JobStore
from ssdstack.model_store import ModelStore

FORMAT = 1
MANIFEST = "backup.json"
REDIS_FILE = "redis.jsonl"
STORE_FOLDER = "store"
# Keys of live processes, not of the stack's state.
LIVE_KEYS = ("ssdstack:job:*:lease", "ssdstack:worker:*", "ssdstack:workers", "ssdstack:reaper:*",
             "ssdstack:reply:*", "unacked", "unacked_index", "unacked_mutex", "celery-task-meta-*")
SCAN_BATCH = 1000


class BackupError(Exception):
    """The backup or restore cannot go on; the message says why."""


def _live(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in LIVE_KEYS)


def backup(store_dir: Path, client: redis.Redis, out: Path) -> dict:
    """Write a backup of ``store_dir`` and ``client``'s database into the empty (or new)
    folder ``out``; its summary, as ``backup.json`` holds it."""
    if out.exists() and any(out.iterdir()):
        raise BackupError(f"{out} is not empty: back up into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    kept = skipped = 0
    digest = hashlib.sha256()
    records = []
    with (out / REDIS_FILE).open("wb") as lines:
        for raw in client.scan_iter(count=SCAN_BATCH):
            key = raw.decode()
            if _live(key):
                skipped += 1
                continue
            dump, ttl = client.dump(raw), client.pttl(raw)
            if dump is None:  # expired between SCAN and DUMP
                continue
            if _is_job_record(key) and (fields := client.hgetall(raw)):
                records.append(_decoded(fields))
            line = json.dumps({"key": key, "ttl_ms": max(ttl, 0), "dump": base64.b64encode(dump).decode()}).encode()
            lines.write(line + b"\n")
            digest.update(line + b"\n")
            kept += 1
    source = Path(store_dir)
    for entry in sorted(source.iterdir()) if source.is_dir() else []:
        if entry.name != ".tmp" and entry.is_dir():
            shutil.copytree(entry, out / STORE_FOLDER / entry.name, symlinks=True)
    (out / STORE_FOLDER).mkdir(exist_ok=True)
    summary = {"format": FORMAT, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "redis_keys": kept, "redis_keys_left_out": skipped, "redis_sha256": digest.hexdigest(),
               "store_files": sum(1 for p in (out / STORE_FOLDER).rglob("*") if p.is_file()),
               "problems": consistency_problems(out / STORE_FOLDER, records)}
    (out / MANIFEST).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def restore(backup_dir: Path, store_dir: Path, client: redis.Redis) -> dict:
    """Restore a backup into an empty store and a Redis database without job records;
    the backup's summary with the restored state's findings as ``problems``."""
    summary = _checked_summary(backup_dir)
    store_dir = Path(store_dir)
    if store_dir.is_dir() and any(p.name != ".tmp" for p in store_dir.iterdir()):
        raise BackupError(f"the store {store_dir} is not empty: restore into an empty one")
    if next(client.scan_iter(match=f"{PREFIX}*", count=SCAN_BATCH), None) is not None:
        raise BackupError("Redis already holds job records: restore into an empty database")
    shutil.copytree(backup_dir / STORE_FOLDER, store_dir, symlinks=True, dirs_exist_ok=True)
    pipe = client.pipeline(transaction=False)
    for entry in _lines(backup_dir / REDIS_FILE):
        pipe.restore(entry["key"], entry["ttl_ms"], base64.b64decode(entry["dump"]), replace=True)
    pipe.execute()
    return dict(summary, problems=consistency_problems(store_dir, _job_records(client)))


def _checked_summary(backup_dir: Path) -> dict:
    path = backup_dir / MANIFEST
    if not path.exists():
        raise BackupError(f"{backup_dir} has no {MANIFEST}: not a complete backup")
    summary = json.loads(path.read_text())
    if summary.get("format") != FORMAT:
        raise BackupError(f"{path} is format {summary.get('format')!r}; this release reads format {FORMAT}")
    actual = hashlib.sha256((backup_dir / REDIS_FILE).read_bytes()).hexdigest()
    if actual != summary["redis_sha256"]:
        raise BackupError(f"{backup_dir / REDIS_FILE} does not match the SHA-256 in {MANIFEST}: damaged")
    return summary


def _lines(path: Path):
    with path.open("rb") as lines:
        for line in lines:
            yield json.loads(line)


def _is_job_record(key: str) -> bool:
    """``ssdstack:job:<id>``, not its ``:log``, ``:cancel`` or ``:lease``."""
    return key.startswith(PREFIX) and ":" not in key[len(PREFIX):]


def _job_records(client: redis.Redis) -> list[dict]:
    names = [key for key in client.scan_iter(match=f"{PREFIX}*", count=SCAN_BATCH) if _is_job_record(key.decode())]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    return [_decoded(raw) for raw in pipe.execute() if raw]


def _decoded(raw: dict[bytes, bytes]) -> dict:
    """A job record as :meth:`JobStore.decode` reads it, from a client without decoding."""
    return JobStore.decode({key.decode(): value.decode() for key, value in raw.items()})


def consistency_problems(store_dir: Path, records: list[dict]) -> list[str]:
    """What does not hold together in a store and its job records: artefacts that do not
    match their manifest, deployments of missing versions, finished jobs whose version is
    missing."""
    models = ModelStore(store_dir)
    problems = []
    for model in models.models():
        for version in model["versions"]:
            damaged = models.verify(model["name"], version)
            if damaged:
                problems.append(f"{model['name']} v{version}: {', '.join(damaged)} missing or not matching its sha256")
        if model["deployed"] is not None and model["deployed"] not in model["versions"]:
            problems.append(f"{model['name']}: deployed version {model['deployed']} is not in the store")
    known = {(model["name"], version) for model in models.models() for version in model["versions"]}
    for record in records:
        result = record.get("result") or {}
        name, version = result.get("model"), result.get("version")
        if record.get("state") == SUCCEEDED and name and version and (name, version) not in known:
            problems.append(f"job {record['id']} produced {name} v{version}, which is not in the store")
    return problems
