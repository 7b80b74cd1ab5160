"""The detect path under load, against the gateway process and a real Redis: a flood is
refused with 503 + Retry-After before Redis fills, and waiting detects hold no thread.
Figures go to var/detect-load.json (docs/reliability.md quotes them)."""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from detect_load import StandInInferencer, gateway_process
from live_gateway import KEY_ENTRIES, KEYS
from polling import wait_for
from ssdstack.celery_app import INFER_QUEUE

FIGURES = Path(__file__).resolve().parents[2] / "var" / "detect-load.json"
MIB = 1024 * 1024


def record(name: str, figures: dict) -> None:
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    known = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    FIGURES.write_text(json.dumps(dict(known, **{name: figures}), indent=1) + "\n")


async def detect(client: httpx.AsyncClient, image: bytes) -> httpx.Response:
    return await client.post("/v1/detect", files={"file": ("x.jpg", image)}, headers={"X-API-Key": KEYS["read"]})


@pytest.fixture
def limited_redis(clean_redis):
    """The test Redis with a memory limit set by the test (noeviction: a write past it fails)."""
    client = redis.Redis.from_url(clean_redis)
    client.config_set("maxmemory-policy", "noeviction")
    yield client
    client.config_set("maxmemory", 0)


def test_a_detect_flood_is_refused_before_redis_fills(limited_redis, clean_redis, tmp_path):
    capacity, budget, margin, image_size = 5, 4 * MIB, 8 * MIB, 256 * 1024
    baseline = limited_redis.info("memory")["used_memory"]
    # Past budget + margin every write fails (noeviction): records, heartbeats, everything.
    limited_redis.config_set("maxmemory", baseline + budget + margin)
    stand_in = StandInInferencer(clean_redis)
    stand_in.beat()
    peak, beats, stop = [baseline], [], threading.Event()

    def watch() -> None:  # Redis memory, and a worker's heartbeat write, all through the flood
        while not stop.wait(0.05):
            peak.append(limited_redis.info("memory")["used_memory"])
            stand_in.beat()
            beats.append(time.monotonic())

    async def flood(url: str) -> tuple[list[httpx.Response], httpx.Response, float]:
        image = os.urandom(image_size)
        limits = httpx.Limits(max_connections=400)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            tasks, started = [], time.monotonic()
            for _ in range(10 * capacity * 5):  # 10x capacity for 5 s
                tasks.append(asyncio.create_task(detect(client, image)))
                await asyncio.sleep(1 / (10 * capacity))
            sending = time.monotonic() - started
            job = await client.post("/v1/jobs", json={"type": "train", "dataset": "d", "model": "m", "epochs": 1},
                                    headers={"X-API-Key": KEYS["submit"]})
            return await asyncio.gather(*tasks), job, sending

    watcher = threading.Thread(target=watch, daemon=True)
    with gateway_process(tmp_path, clean_redis, KEY_ENTRIES, rate_limit="", detect_timeout=20,
                         detect_budget_bytes=budget, detect_max_queued=64, max_image_bytes=MIB) as url:
        with stand_in.serving(per_second=capacity):
            watcher.start()
            answers, job, sending = asyncio.run(flood(url))
            stop.set()
            watcher.join(10)
    statuses = [answer.status_code for answer in answers]
    refused = [answer for answer in answers if answer.status_code == 503]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert refused and all(answer.headers.get("Retry-After") == "1" and
                           answer.json()["error"]["code"] == "overloaded" for answer in refused)
    assert job.status_code == 202, job.text
    assert max(peak) < baseline + budget + margin
    assert len(beats) > 10  # each a successful write; a failed one raises in the watcher
    record("flood", {"requests": len(answers), "seconds": round(sending, 1), "capacity_per_s": capacity,
                     "offered_per_s": round(len(answers) / sending, 1),
                     "image_bytes": image_size, "answered_200": statuses.count(200), "refused_503": len(refused),
                     "refused_share": round(len(refused) / len(answers), 3), "budget_bytes": budget,
                     "redis_growth_peak_bytes": max(peak) - baseline, "margin_bytes": margin,
                     "heartbeat_writes": len(beats)})


def test_two_hundred_waiting_detects_hold_no_thread(clean_redis, tmp_path):
    stand_in = StandInInferencer(clean_redis)
    stand_in.beat()
    waiting = 200

    async def scenario(url: str) -> tuple[list[httpx.Response], list[httpx.Response]]:
        limits = httpx.Limits(max_connections=waiting + 20)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            detects = [asyncio.create_task(detect(client, b"\xff\xd8" + bytes(1024))) for _ in range(waiting)]
            await asyncio.to_thread(wait_for, lambda: stand_in.redis.llen(INFER_QUEUE) == waiting, 60,
                                    f"{waiting} detects queued", 0.1)
            # Every detect is waiting for its answer: the other routes answer all the same.
            others = [await client.get("/readyz", timeout=10),
                      await client.get("/v1/jobs", headers={"X-API-Key": KEYS["read"]}, timeout=10)]
            await asyncio.to_thread(lambda: [stand_in.answer_one(timeout=5) for _ in range(waiting)])
            return await asyncio.gather(*detects), others

    # Four threads: the old design, a thread per waiting detect, froze at the fifth.
    with gateway_process(tmp_path, clean_redis, KEY_ENTRIES, rate_limit="", detect_timeout=120, threads=4) as url:
        answers, others = asyncio.run(scenario(url))
    assert [answer.status_code for answer in others] == [200, 200], [answer.text for answer in others]
    assert [answer.status_code for answer in answers] == [200] * waiting, {a.text for a in answers if a.status_code != 200}
    assert stand_in.answered == waiting
