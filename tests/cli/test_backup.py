"""``ssdstack store backup`` / ``restore`` on a real Redis and real store folders: what is
kept, what is left out (live processes' keys), the checks, and what a restore refuses."""
from __future__ import annotations

import json

import pytest
import redis

from cli.backup import BackupError, backup, restore
from ssdstack.jobs.records import ACTIVE, JobStore
from ssdstack.model_store import ModelStore


def _published(store_dir) -> ModelStore:
    store = ModelStore(store_dir)
    with store.staging() as staged:
        (staged / "model.onnx").write_bytes(b"weights")
        store.publish("m", staged, {"labels": ["a"], "serving": {"onnxruntime": {"artefact": "serving_onnxruntime"}}},
                      {"onnx": "model.onnx"})
    store.deploy("m", 1)
    return store


@pytest.fixture
def live(clean_redis, tmp_path):
    """A store with m v1 deployed; a finished job that made it, a running one with a lease.
    Database 1 is where restores go."""
    _raw(clean_redis, 1).flushdb()
    store = _published(tmp_path / "store")
    jobs = JobStore.from_url(clean_redis, retention_s=3600)
    done = jobs.create("train", {"type": "train", "dataset": "d"}, ["train", "export"])["id"]
    jobs.log(done, "trained")
    jobs.succeed(done, {"model": "m", "version": 1})
    running = jobs.create("train", {"type": "train", "dataset": "d"}, ["train", "export"])["id"]
    jobs.mark_running(running, "trainer@host:1")
    jobs.acquire_lease(running, "trainer@host:1/run", 60)
    jobs.redis.set("ssdstack:worker:trainer@host:1", "{}", ex=30)
    return store, jobs, done, running


def _raw(url: str, db: int) -> redis.Redis:
    return redis.Redis.from_url(url.rsplit("/", 1)[0] + f"/{db}")


def test_a_backup_restores_records_history_and_store_but_no_live_keys(live, clean_redis, tmp_path):
    store, jobs, done, running = live
    summary = backup(store.root, _raw(clean_redis, 0), tmp_path / "backup")
    assert summary["problems"] == [] and summary["redis_keys_left_out"] == 2  # the lease, the heartbeat
    assert json.loads((tmp_path / "backup" / "backup.json").read_text()) == summary

    restored = restore(tmp_path / "backup", tmp_path / "restored", _raw(clean_redis, 1))
    assert restored["problems"] == []
    again = JobStore(redis.Redis.from_url(clean_redis.rsplit("/", 1)[0] + "/1", decode_responses=True))
    assert again.get(done) == jobs.get(done) and again.logs(done) == jobs.logs(done)
    assert again.lease_holder(running) is None  # the reaper sends it again at its stage
    assert again.redis.sismember(ACTIVE, running) and again.redis.ttl(f"ssdstack:job:{done}") > 0
    copy = ModelStore(tmp_path / "restored")
    assert copy.verify("m", 1) == [] and copy.deployed_version("m") == 1


def test_a_damaged_or_unfinished_backup_and_a_used_target_are_refused(live, clean_redis, tmp_path):
    store, *_ = live
    backup(store.root, _raw(clean_redis, 0), tmp_path / "backup")
    with pytest.raises(BackupError, match="not empty"):
        backup(store.root, _raw(clean_redis, 0), tmp_path / "backup")
    with pytest.raises(BackupError, match="store .* is not empty"):
        restore(tmp_path / "backup", store.root, _raw(clean_redis, 1))
    with pytest.raises(BackupError, match="already holds job records"):
        restore(tmp_path / "backup", tmp_path / "elsewhere", _raw(clean_redis, 0))
    lines = tmp_path / "backup" / "redis.jsonl"
    lines.write_bytes(lines.read_bytes()[:-10] + b"0000000000")
    with pytest.raises(BackupError, match="damaged"):
        restore(tmp_path / "backup", tmp_path / "elsewhere", _raw(clean_redis, 1))
    (tmp_path / "backup" / "backup.json").unlink()
    with pytest.raises(BackupError, match="not a complete backup"):
        restore(tmp_path / "backup", tmp_path / "elsewhere", _raw(clean_redis, 1))


def test_the_consistency_check_names_what_does_not_hold_together(live, clean_redis, tmp_path):
    store, jobs, *_ = live
    (store.version_dir("m", 1) / "model.onnx").write_bytes(b"bit rot")
    orphan = jobs.create("train", {"type": "train", "dataset": "d"}, ["train", "export"])["id"]
    jobs.succeed(orphan, {"model": "gone", "version": 4})
    problems = backup(store.root, _raw(clean_redis, 0), tmp_path / "backup")["problems"]
    assert problems == ["m v1: onnx missing or not matching its sha256",
                        f"job {orphan} produced gone v4, which is not in the store"]
