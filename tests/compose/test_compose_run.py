"""``make test-compose``: build every image, bring the stack up with compose, run the demo
pipeline over REST from the host, and take it down again.

Runs only when asked (``SSDSTACK_COMPOSE_TEST=1``, which ``make test-compose`` sets); then
a missing engine is a failure, not a skip. With podman as set up by
../shared/tools/container-engine.sh, images are built from the local stand-in bases and
health is proven by polling ``/readyz`` and by ``podman healthcheck run`` once per
container (podman here runs no healthchecks by itself). The summary (build, start and
pipeline times, image sizes) is printed and written to ``var/compose-run.json``.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cli.client import Client
from cli.demo import DemoConfig, run_demo
from redis_acl import CONNECTION_SETUP

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "trainer", "converter", "inferencer", "evaluator")
# One image per Dockerfile; the evaluator runs the inferencer's.
IMAGES = ("gateway", "trainer", "converter", "inferencer")
BASE_IMAGE = os.environ.get("SSDSTACK_TEST_BASE_IMAGE", "localhost/python:3.11-slim-bookworm")
REDIS_IMAGE = os.environ.get("SSDSTACK_TEST_REDIS_IMAGE", "localhost/redis:7")
PROJECT = "ssdstack-compose-test"

pytestmark = [pytest.mark.compose, pytest.mark.slow]


@pytest.fixture(scope="module")
def engine() -> str:
    if os.environ.get("SSDSTACK_COMPOSE_TEST") != "1":
        pytest.skip("the compose run is opt-in: `make test-compose`")
    missing = [tool for tool in ("podman", "podman-compose") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"make test-compose needs {', '.join(missing)}: run ../shared/tools/container-engine.sh setup")
    return "podman"


def run(*command: str, timeout: float = 1800, env: dict | None = None, check: bool = True) -> str:
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}")
    return done.stdout


def acl_refusals(raw: str) -> list[tuple[str, str, str]]:
    """(user, reason, object) of each entry of ``redis-cli acl log`` (raw output: each
    field's name on a line, its value on the next), but failed logins and the client
    commands redis-py sends as it connects (tests/redis_acl.py)."""
    lines = raw.splitlines()
    entries, entry = [], {}
    for name, value in zip(lines, lines[1:]):
        if name == "count" and entry:
            entries.append(entry)
            entry = {}
        if name in ("reason", "object", "username") and name not in entry:
            entry[name] = value
    entries += [entry] if entry else []
    return [(e.get("username"), e.get("reason"), e.get("object")) for e in entries
            if e.get("reason") != "auth" and e.get("object") not in CONNECTION_SETUP]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_stack_runs_the_demo_pipeline_under_compose(engine, tmp_path):
    summary: dict = {"engine": engine, "base_image": BASE_IMAGE, "images": {}}
    started = time.monotonic()
    for service in IMAGES:
        image = f"ssdstack-{service}:0.1.0"
        run(engine, "build", "--format", "docker", "--network", "host", "--ulimit", "nofile=20000:20000",
            "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", image, "-f", f"docker/{service}.Dockerfile", ".")
        size = int(run(engine, "image", "inspect", image, "--format", "{{.Size}}").strip())
        summary["images"][service] = {"bytes": size}
    base_size = int(run(engine, "image", "inspect", BASE_IMAGE, "--format", "{{.Size}}").strip())
    for entry in summary["images"].values():
        entry["added_bytes"] = entry["bytes"] - base_size
    summary["build_s"] = round(time.monotonic() - started, 1)

    port, api_key = free_port(), secrets.token_hex(16)
    passwords = {f"SSDSTACK_REDIS_PASSWORD{suffix}": secrets.token_hex(16)
                 for suffix in ("", "_GATEWAY", "_INFERENCER", "_WORKER")}
    env = dict(os.environ, **passwords, SSDSTACK_API_KEYS=api_key,
               SSDSTACK_PORT=str(port), REDIS_IMAGE=REDIS_IMAGE, BASE_IMAGE=BASE_IMAGE)
    compose = ["podman-compose", "-p", PROJECT, "-f", "docker-compose.yml", "-f", "tests/compose/podman.override.yml"]
    run(*compose, "down", "-v", env=env, check=False)
    try:
        started = time.monotonic()
        run(*compose, "up", "-d", "--no-build", env=env, timeout=600)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "/readyz never answered 200:\n" + run(
                *compose, "logs", "--tail", "30", env=env, check=False)[-6000:]
            time.sleep(2)
        summary["start_s"] = round(time.monotonic() - started, 1)

        containers = run(engine, "ps", "--filter", f"label=io.podman.compose.project={PROJECT}",
                         "--format", "{{.Names}}").split()
        assert len(containers) == len(SERVICES) + 1, containers  # redis and the services
        for name in containers:
            run(engine, "healthcheck", "run", name)  # exit 0: healthy
        summary["healthchecks"] = sorted(containers)

        started = time.monotonic()
        client = Client(base, api_key, timeout=120)
        try:
            status = run_demo(client, tmp_path, DemoConfig(), out=sys.stderr)
        finally:
            client.close()
        summary["pipeline_s"] = round(time.monotonic() - started, 1)
        assert status == 0, "the demo pipeline failed against the compose stack"

        gateway = next(name for name in containers if "gateway" in name)
        manifest = json.loads(run(engine, "exec", gateway, "cat", "/data/store/models/demo/1/manifest.json"))
        assert "serving_onnxruntime" in manifest["artefacts"]  # converted, in the shared volume

        # Each service logged in as its own Redis user (k8s/base/redis-users.acl) and was
        # refused nothing.
        redis_container = next(name for name in containers if "redis" in name)
        users = run(engine, "exec", redis_container, "sh", "-c",
                    'REDISCLI_AUTH="$SSDSTACK_REDIS_PASSWORD" redis-cli client list')
        summary["redis_users"] = sorted({field[5:] for field in users.split() if field.startswith("user=")})
        assert {"gateway", "inferencer", "worker"} <= set(summary["redis_users"]), users
        log = run(engine, "exec", redis_container, "sh", "-c",
                  'REDISCLI_AUTH="$SSDSTACK_REDIS_PASSWORD" redis-cli acl log 128')
        assert not acl_refusals(log), acl_refusals(log)
    finally:
        run(*compose, "down", "-v", env=env, check=False, timeout=600)
        out = REPO / "var" / "compose-run.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2), file=sys.stderr)
