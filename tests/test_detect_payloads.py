"""The detect budget in a real Redis: what is admitted, what is refused, what an expired
image leaves behind (nothing)."""
from __future__ import annotations

import redis

from polling import wait_for
from ssdstack.detect_payloads import HELD, SIZES, TOTAL, DetectPayloads, new_image_key


def test_images_are_admitted_within_the_budget_and_the_count(clean_redis):
    client = redis.Redis.from_url(clean_redis)
    payloads = DetectPayloads(client)
    first, second, third = new_image_key(), new_image_key(), new_image_key()
    assert payloads.admit(first, b"a" * 600, 30, budget_bytes=1000, max_queued=2) == 1
    assert payloads.admit(second, b"b" * 401, 30, budget_bytes=1000, max_queued=2) == 0  # 1001 bytes
    assert payloads.admit(second, b"b" * 400, 30, budget_bytes=1000, max_queued=2) == 1  # exactly 1000
    assert payloads.admit(third, b"c", 30, budget_bytes=10_000, max_queued=2) == 0  # two held already
    assert not client.exists(third)
    assert int(client.get(TOTAL)) == 1000 and client.zcard(HELD) == 2
    assert payloads.take(first) == b"a" * 600
    assert payloads.take(first) is None
    assert int(client.get(TOTAL)) == 400 and client.zcard(HELD) == 1 and client.hlen(SIZES) == 1
    assert payloads.admit(third, b"c", 30, budget_bytes=10_000, max_queued=2) == 1


def test_an_expired_image_cannot_be_taken_and_leaves_the_count(clean_redis):
    client = redis.Redis.from_url(clean_redis)
    payloads = DetectPayloads(client)
    late = new_image_key()
    assert payloads.admit(late, b"x" * 100, 0.05, budget_bytes=100, max_queued=5) == 1
    wait_for(lambda: not client.exists(late), 10, "the image to expire", interval=0.02)
    assert payloads.take(late) is None  # the detect never starts
    fresh = new_image_key()
    assert payloads.admit(fresh, b"y" * 100, 30, budget_bytes=100, max_queued=5) == 1  # the budget came back
    assert client.zrange(HELD, 0, -1) == [fresh.encode()] and int(client.get(TOTAL)) == 100
