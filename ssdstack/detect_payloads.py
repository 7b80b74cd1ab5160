"""Detect images waiting in Redis for an inferencer, under a budget.

The gateway stores each image's bytes under its own key, with a TTL of the detect
timeout, and sends only the key in the task (:mod:`ssdstack.detect_protocol`). Admission
and release are Lua scripts, so that every gateway replica and inferencer sees one count:
an image is admitted only while the images held number fewer than ``max_queued`` and their
bytes, this one's included, fit in ``budget_bytes``. An inferencer takes an image (read
and delete at once); an image whose detect timed out has expired and cannot be taken, so
an expired detect never starts. Expired images leave the count at the next admission.

The same class serves a ``redis.Redis`` client (calls return values) and a
``redis.asyncio.Redis`` one (calls return awaitables).
"""
from __future__ import annotations

import uuid

IMAGE_PREFIX = "ssdstack:detect:image:"
HELD = "ssdstack:detect:held"  # sorted set: image key -> deadline (ms, Redis clock)
SIZES = "ssdstack:detect:sizes"  # hash: image key -> bytes
TOTAL = "ssdstack:detect:bytes"  # the bytes of every image held

_FORGET = """
local function forget(key)
  local size = redis.call('HGET', KEYS[2], key)
  if size then
    redis.call('DECRBY', KEYS[3], size)
    redis.call('HDEL', KEYS[2], key)
  end
  redis.call('ZREM', KEYS[1], key)
end
"""
# KEYS: held, sizes, total, image key. ARGV: image, ttl ms, budget bytes, max held.
# Returns 1 when admitted, 0 when refused.
_ADMIT = _FORGET + """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do forget(key) end
local size = string.len(ARGV[1])
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) or total + size > tonumber(ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), KEYS[4])
redis.call('HSET', KEYS[2], KEYS[4], size)
redis.call('INCRBY', KEYS[3], size)
return 1
"""
# KEYS: held, sizes, total, image key. Returns the image, or nil once it expired.
_TAKE = _FORGET + """
local image = redis.call('GET', KEYS[4])
redis.call('DEL', KEYS[4])
forget(KEYS[4])
return image
"""


def new_image_key() -> str:
    return f"{IMAGE_PREFIX}{uuid.uuid4().hex}"


class DetectPayloads:
    def __init__(self, client):
        self._admit = client.register_script(_ADMIT)
        self._take = client.register_script(_TAKE)

    def admit(self, image_key: str, image: bytes, ttl_s: float, budget_bytes: int, max_queued: int):
        """Store ``image`` under ``image_key`` for ``ttl_s``: 1 when admitted, 0 when the
        budget or the count is spent (nothing is stored then)."""
        return self._admit(keys=[HELD, SIZES, TOTAL, image_key],
                           args=[image, max(1, int(ttl_s * 1000)), budget_bytes, max_queued])

    def take(self, image_key: str):
        """The image's bytes, removed from Redis and from the count; None once it expired
        (or was taken). The gateway takes back an image it gave up on."""
        return self._take(keys=[HELD, SIZES, TOTAL, image_key])
