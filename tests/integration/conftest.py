"""The real stack for integration tests: Redis, the Celery workers (two inferencers) and
the gateway as subprocesses on 127.0.0.1, in a temporary folder, with a short lease TTL so that crash
recovery is observable within a test run. The pipeline job (with a trainer crash in the
middle) is shared by the test files that read its outcome; no file depends on another
having run first."""
from __future__ import annotations

import pytest

from cli.client import Client
from cli.demo import upload_synthetic
from cli.localstack import LocalStack
from cli.processes import free_port
from itest import API_KEY, CONFIG, FAST_RECOVERY, MODEL, SECOND_API_KEY
from polling import wait_for
from redis_acl import denials


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("stack"), redis_port=free_port(), gateway_port=free_port(),
                       api_key=f"{API_KEY},{SECOND_API_KEY}", extra_env=FAST_RECOVERY, infer_concurrency=2,
                       inferencers=2)
    try:
        stack.up(wait_ready=True, timeout=180)
        yield stack
        refused = denials(stack.redis())
        assert not refused, f"Redis refused commands the services sent (k8s/base/redis-users.acl): {refused}"
    finally:
        stack.down()


@pytest.fixture(scope="session")
def client(stack):
    client = Client(f"http://127.0.0.1:{stack.gateway_port}", API_KEY, timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def dataset(client: Client, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("data")
    upload_synthetic(client, folder, "synth", images=CONFIG.images, classes=CONFIG.classes, seed=CONFIG.seed)
    return "synth"


@pytest.fixture(scope="session")
def pipeline(stack, client: Client, dataset: str) -> dict:
    """The demo's pipeline job, with the trainer worker killed after two checkpoints."""
    spec = {"type": "pipeline", "dataset": dataset, "model": MODEL, "architecture": CONFIG.architecture,
            "epochs": CONFIG.epochs, "batch_size": CONFIG.batch_size, "lr": CONFIG.lr, "checkpoint_every": 1}
    job = client.submit(spec)
    wait_for(lambda: (client.job(job["id"])["progress"].get("epoch") or 0) >= 3, 600, "epoch 3 to start")
    stack.kill("trainer")
    stack.start("trainer")
    return client.wait(job["id"], timeout=1500, interval=2)
