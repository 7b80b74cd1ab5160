"""Load on the detect path: the gateway as its own process, and a stand-in inferencer at
the Redis boundary whose speed the test sets (capacity is then known, not guessed).

The stand-in reads what the real inferencer reads: Celery's message on the ``infer``
list (kombu's JSON envelope, base64 body), the image through
:class:`~ssdstack.detect_payloads.DetectPayloads`, and answers on the reply list. It
writes heartbeats in the form ``live_workers`` reads, for every queue, so that the
gateway and ``/readyz`` see live workers.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis

from cli.processes import free_port
from polling import wait_for
from ssdstack.celery_app import INFER_QUEUE, QUEUES
from ssdstack.detect_payloads import DetectPayloads
from ssdstack.heartbeats import write_heartbeat

REPO_ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def gateway_process(folder: Path, redis_url: str, api_keys: str, **settings) -> Iterator[str]:
    """``python -m gateway`` on a free port, until the block ends; its base URL."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), SSDSTACK_REDIS_URL=redis_url, SSDSTACK_API_KEYS=api_keys,
               SSDSTACK_PORT=str(port), SSDSTACK_STORE_DIR=str(folder / "store"),
               **{f"SSDSTACK_{name.upper()}": str(value) for name, value in settings.items()})
    log = (folder / "gateway.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, cwd=folder, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url) or process.poll() is not None, 60, "the gateway to listen", interval=0.1)
        assert process.poll() is None, (folder / "gateway.log").read_text()[-3000:]
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class StandInInferencer:
    def __init__(self, redis_url: str):
        self.redis = redis.Redis.from_url(redis_url)
        self.payloads = DetectPayloads(self.redis)
        self.answered = 0
        self.expired = 0

    def beat(self, ttl_s: float = 120) -> None:
        for queue in QUEUES:
            record = {"worker_id": f"stand-in-{queue}", "service": queue, "queues": [queue], "backends": {},
                      "time": time.time()}
            write_heartbeat(self.redis, record, ttl_s)

    def answer_one(self, timeout: float = 0.2) -> bool:
        """Take one queued request and answer it; False when none came within ``timeout``."""
        popped = self.redis.brpop([INFER_QUEUE], timeout=timeout)
        if popped is None:
            return False
        envelope = json.loads(popped[1])
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        request = args[0]
        image = self.payloads.take(request["image_key"])
        if image is None:
            self.expired += 1
            return True
        reply = {"schema_version": 1, "model": "stand-in", "version": 1, "width": len(image), "height": 1,
                 "detections": []}
        self.redis.rpush(request["reply_key"], json.dumps(reply))
        self.redis.expire(request["reply_key"], 60)
        self.answered += 1
        return True

    @contextlib.contextmanager
    def serving(self, per_second: float) -> Iterator[None]:
        """Answer at most ``per_second`` requests a second in a thread, until the block ends."""
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                started = time.monotonic()
                if self.answer_one():
                    stop.wait(max(0.0, 1 / per_second - (time.monotonic() - started)))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(10)
