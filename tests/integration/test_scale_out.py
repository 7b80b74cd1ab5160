"""Scale out: the session's stack runs two inferencers on the one infer queue; concurrent
detects are shared between them, and /metrics counts each one's answers."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from itest import MODEL
from polling import wait_for

pytestmark = pytest.mark.slow
ANSWERED = re.compile(r'^ssdstack_detects_total\{worker="(inferencer@[^"]+)",outcome="answered"\} (\d+)$', re.M)


def answered(client) -> dict[str, int]:
    """Detects each inferencer answered, as /metrics has them."""
    return {worker: int(count) for worker, count in ANSWERED.findall(client.http.get("/metrics").text)}


def test_two_inferencers_share_concurrent_detects(pipeline, client, stack):
    client.deploy(MODEL, pipeline["result"]["version"])
    images = [path.read_bytes() for path in sorted((stack.store_dir / "datasets" / "synth" / "val").glob("*.jpg"))[:8]]
    before = answered(client)
    assert len(before) == 2, f"two inferencers heartbeat: {before}"
    requests = 48
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda index: client.detect(images[index % len(images)], model=MODEL),
                                range(requests)))
    assert all(answer["model"] == MODEL for answer in answers)
    wait_for(lambda: sum(answered(client).values()) - sum(before.values()) >= requests, 30,
             "the inferencers' heartbeats to count the detects")
    gained = {worker: count - before.get(worker, 0) for worker, count in answered(client).items()}
    assert sum(gained.values()) == requests
    assert all(count > 0 for count in gained.values()), f"both inferencers answered some: {gained}"
