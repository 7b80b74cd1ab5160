"""The real stack for integration tests: Redis, three Celery workers and the gateway as
subprocesses on 127.0.0.1, in a temporary folder, with short timeouts so that crash
recovery is observable within a test run."""
from __future__ import annotations

import pytest

from ssdstack.client import Client
from ssdstack.localstack import LocalStack, free_port

API_KEY = "integration-test-key"
# Heartbeats every second, dead after 6 s; unacked messages come back after 30 s.
FAST_RECOVERY = {"SSDSTACK_HEARTBEAT_INTERVAL": "1", "SSDSTACK_HEARTBEAT_TTL": "6",
                 "SSDSTACK_VISIBILITY_TIMEOUT": "30", "SSDSTACK_DETECT_TIMEOUT": "30",
                 "SSDSTACK_INFER_BACKEND": "onnxruntime"}


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("stack"), redis_port=free_port(), gateway_port=free_port(),
                       api_key=API_KEY, extra_env=FAST_RECOVERY, infer_concurrency=2)
    try:
        stack.up(wait_ready=True, timeout=180)
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def client(stack):
    client = Client(f"http://127.0.0.1:{stack.gateway_port}", API_KEY, timeout=120)
    yield client
    client.close()
