"""k8s/base/redis-users.acl and redis-users.sh, loaded by a real redis-server as compose,
Kubernetes and the local stack load them (every test Redis does, tests/conftest.py): who may log in, and what each user may not do.
That each service may do what it needs is checked where the services run: the integration
and fault suites fail on any refusal in Redis's ACL log (tests/redis_acl.py)."""
from __future__ import annotations

import hashlib

import pytest
import redis
import yaml

from cli.redis_users import ACL_FILE, RENDER_SCRIPT, SERVICE_USERS, acl_users
from deploy_manifests import REPO_ROOT, overlay_dirs, rendered
from redis_acl import PASSWORDS, render

# Commands only an operator may run. Each is refused for its name, before its arguments count.
OPERATOR_ONLY = [("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "maxmemory"), ("KEYS", "*"), ("ACL", "LIST"),
                 ("DEBUG", "SLEEP", "0"), ("SHUTDOWN", "NOSAVE"), ("REPLICAOF", "NO", "ONE"), ("MONITOR",),
                 ("MODULE", "LIST"), ("SCRIPT", "FLUSH"), ("CLIENT", "KILL", "ID", "1"), ("SAVE",),
                 ("EVAL", "return 1", "0")]


@pytest.fixture
def server(clean_redis) -> int:
    """The port of a test Redis, which loads the ACL file as the stack does (conftest.py)."""
    return redis.Redis.from_url(clean_redis).connection_pool.connection_kwargs["port"]


def _as(port: int, user: str, **options) -> redis.Redis:
    return redis.Redis(port=port, username=user, password=PASSWORDS[user], socket_timeout=5, **options)


def test_the_file_names_every_user_a_service_logs_in_as():
    assert acl_users()[0] == "default"
    assert set(SERVICE_USERS.values()) | {"keda"} == set(acl_users()) - {"default"}


def test_no_one_logs_in_without_a_password_or_with_a_wrong_one(server):
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=server, socket_timeout=5).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=server, username="gateway", password=PASSWORDS["worker"], socket_timeout=5).ping()


@pytest.mark.parametrize("user", ["gateway", "inferencer", "worker"])
def test_a_service_user_does_its_work_and_nothing_of_an_operators(server, user):
    client = _as(server, user)
    assert client.ping()
    client.hset(f"ssdstack:test:{user}", "state", "queued")
    assert client.hget(f"ssdstack:test:{user}", "state") == b"queued"
    for command in OPERATOR_ONLY:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)


def test_a_script_runs_with_its_callers_rights_only(server):
    gateway = _as(server, "gateway")
    gateway.set("ssdstack:test:kept", b"1")
    script = gateway.register_script("return redis.call('FLUSHALL')")
    # Redis 7 says "no permissions", Redis 6.2 "can't run this command".
    with pytest.raises(redis.ResponseError, match="(?i)no permissions|can't run this command"):
        script()
    assert gateway.get("ssdstack:test:kept") == b"1"


def test_only_the_workers_consume_queues(server):
    _as(server, "gateway").lpush("infer", b"message")
    with pytest.raises(redis.exceptions.NoPermissionError):
        _as(server, "gateway").brpop(["infer"], timeout=1)
    assert _as(server, "inferencer").brpop(["infer"], timeout=1) == (b"infer", b"message")


def test_keda_reads_the_infer_queues_length_and_nothing_else(server):
    _as(server, "default").rpush("infer", b"a", b"b")
    keda = _as(server, "keda")
    assert keda.llen("infer") == 2
    with pytest.raises(redis.exceptions.NoPermissionError):
        keda.llen("train")
    with pytest.raises(redis.exceptions.NoPermissionError):
        keda.lrange("infer", 0, -1)


def test_a_user_without_a_password_is_off():
    done = render({"SSDSTACK_REDIS_PASSWORD": PASSWORDS["default"]})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    digest = hashlib.sha256(PASSWORDS["default"].encode()).hexdigest()
    assert lines[0] == f"user default reset on #{digest} ~* &* +@all"
    assert all(line.startswith(f"user {user} reset off ") for line, user in zip(lines[1:], acl_users()[1:]))
    assert "SSDSTACK_REDIS_PASSWORD_GATEWAY is not set: Redis user gateway is off" in done.stderr


@pytest.mark.parametrize("env, says", [
    ({}, "set SSDSTACK_REDIS_PASSWORD"),
    ({"SSDSTACK_REDIS_PASSWORD": "has space"}, "SSDSTACK_REDIS_PASSWORD may hold only"),
    ({"SSDSTACK_REDIS_PASSWORD": "good-one", "SSDSTACK_REDIS_PASSWORD_WORKER": "p@ss"},
     "SSDSTACK_REDIS_PASSWORD_WORKER may hold only"),
])
def test_the_script_refuses_a_missing_or_unusable_password(env, says):
    done = render(env)
    assert done.returncode != 0 and says in done.stderr


@pytest.mark.parametrize("overlay", overlay_dirs(), ids=lambda path: path.name)
def test_kubernetes_loads_the_same_two_files(overlay):
    maps = [doc for doc in rendered(overlay) if doc["kind"] == "ConfigMap"
            and doc["metadata"]["name"].startswith("redis-config")]
    assert len(maps) == 1
    assert maps[0]["data"]["redis-users.acl"] == ACL_FILE.read_text()
    assert maps[0]["data"]["redis-users.sh"] == RENDER_SCRIPT.read_text()


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.sentinel.yml"])
def test_compose_mounts_the_same_two_files(name):
    model = yaml.safe_load((REPO_ROOT / name).read_text())
    redis_services = [service for key, service in model["services"].items() if key in ("redis", "redis-replica")]
    assert redis_services
    for service in redis_services:
        mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in service["volumes"]}
        assert mounts["./k8s/base/redis-users.acl"] == "/etc/ssdstack/redis-users.acl"
        assert mounts["./k8s/base/redis-users.sh"] == "/etc/ssdstack/redis-users.sh"
        assert "redis-users.sh /etc/ssdstack/redis-users.acl" in service["command"][-1]
