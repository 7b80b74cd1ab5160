"""How redis_d4674f2.json was made: with a checkout of d4674f2 (main before issue 11) first
on PYTHONPATH and a fresh Redis at URL, ``python capture.py URL > redis_d4674f2.json``
writes job records as that release does and prints every key it left, with its type,
TTL and value. tests/test_migration.py loads them into today's code."""
import json
import sys

from ssdstack.jobs.records import JobStore
from ssdstack.jobs.pipeline import JOB_TYPES

url = sys.argv[1]
jobs = JobStore.from_url(url, retention_s=30 * 24 * 3600)
pipeline = JOB_TYPES["pipeline"]
spec = {"type": "pipeline", "dataset": "golden", "model": "golden", "architecture": "ssd_lite_mobilenet_v2",
        "epochs": 2, "batch_size": 8, "lr": 0.05, "checkpoint_every": 1, "backend": "onnxruntime",
        "tolerance": 0.0001, "max_map_drop": 0.01, "deploy": True}
running = jobs.create("pipeline", spec, pipeline.stage_names)["id"]
jobs.mark_running(running, "trainer@old-host:41")
for index, output in ((0, {"model": "golden", "labels": ["a"], "schema_version": 1}),
                      (1, {"model": "golden", "version": 2, "metrics": {}, "training": {}, "schema_version": 1})):
    jobs.advance_stage(running, pipeline.stages[index].name, index)
    jobs.stage_started(running, index)
jobs.stage_done(running, 1, {"model": "golden", "version": 2, "metrics": {"trained": {"AP": 0.3}}, "training": {},
                             "schema_version": 1}, {"model": "golden", "version": 2, "metrics": {"trained": {"AP": 0.3}}})
jobs.advance_stage(running, "convert", 2)
jobs.mark_running(running, "converter@old-host:42")
jobs.stage_started(running, 2)
jobs.log(running, "trained and exported")
queued = jobs.create("train", {"type": "train", "dataset": "golden", "model": "golden"}, ["train", "export"])["id"]
jobs.log(queued, "queued")
done = jobs.create("evaluate", {"type": "evaluate", "model": "golden", "version": 2, "dataset": None, "split": "val"},
                   ["evaluate"])["id"]
jobs.mark_running(done, "inferencer@old-host:43")
jobs.stage_started(done, 0)
jobs.stage_done(done, 0, {"model": "golden", "version": 2, "metrics": {"served": {"AP": 0.3}}, "engine": "onnxruntime",
                          "schema_version": 1}, {"model": "golden", "version": 2})
jobs.succeed(done, {"model": "golden", "version": 2, "metrics": {"served": {"AP": 0.3}}})
cancelling = jobs.create("train", {"type": "train", "dataset": "golden", "model": "golden"}, ["train", "export"])["id"]
jobs.mark_running(cancelling, "trainer@old-host:41")
jobs.request_cancel(cancelling)
client = jobs.redis
keys = {}
for key in sorted(client.scan_iter()):
    kind = client.type(key)
    value = {"hash": client.hgetall, "list": lambda k: client.lrange(k, 0, -1), "string": client.get,
             "zset": lambda k: client.zrange(k, 0, -1, withscores=True), "set": lambda k: sorted(client.smembers(k))}[kind](key)
    keys[key] = {"type": kind, "ttl": client.ttl(key), "value": value}
print(json.dumps({"commit": "d4674f2", "jobs": {"running_pipeline_at_convert": running, "queued_train": queued,
                                                "succeeded_evaluate": done, "running_train_cancel_requested": cancelling},
                  "keys": keys}, indent=1, sort_keys=True))
