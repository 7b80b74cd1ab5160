"""k8s/components/sentinel/start-redis.sh, run as a pod would run it: the role it gives
Redis from what the Sentinels say, and that the password goes into a file, never onto
the command line. ``hostname``, ``redis-cli`` and ``redis-server`` are fakes on PATH;
``/run`` is a tmpfs in a private mount namespace (``unshare -Urm``)."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from needs import program

K8S = Path(__file__).resolve().parents[2] / "k8s"
SCRIPT = K8S / "components" / "sentinel" / "start-redis.sh"
PASSWORD = "s3cret-pw"
GATEWAY_PASSWORD = "gateway-s3cret-pw"
FAKES = {
    "hostname": 'echo "$FAKE_HOSTNAME"\n',
    # What the Sentinels answer to get-master-addr-by-name: host, then port; nothing when
    # no Sentinel is up (an empty FAKE_MASTER).
    "redis-cli": '[ -n "$FAKE_MASTER" ] || exit 1\n'
                 '[ -z "${REDISCLI_AUTH:-}" ] || { echo "a Sentinel has no password" >&2; exit 3; }\n'
                 'printf "%s\\n6379\\n" "$FAKE_MASTER"\n',
    "redis-server": 'printf "%s\\n" "$*" > "$OUT/argv"\ncat /run/redis/auth.conf > "$OUT/auth.conf"\n',
}


def _start(tmp_path: Path, hostname: str, service: str, default_master: str, sentinel_says: str) -> tuple[str, str]:
    """``(redis-server's arguments, the auth.conf it was given)``."""
    unshare = program("unshare")
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    for name, body in FAKES.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "OUT": str(out), "FAKE_HOSTNAME": hostname,
           "FAKE_MASTER": sentinel_says, "REDIS_SERVICE": service, "DEFAULT_MASTER": default_master,
           "SSDSTACK_REDIS_PASSWORD": PASSWORD, "SSDSTACK_REDIS_PASSWORD_GATEWAY": GATEWAY_PASSWORD,
           "REDISCLI_AUTH": PASSWORD, "REDIS_CONFIG_DIR": str(K8S / "base")}
    done = subprocess.run([unshare, "-Urm", "sh", "-c", 'mount -t tmpfs tmpfs /run && mkdir /run/redis && exec sh "$0"',
                           str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return (out / "argv").read_text().strip(), (out / "auth.conf").read_text()


@pytest.mark.parametrize("hostname, service, default, sentinel_says, follows", [
    ("redis-0", "redis", "self", "", None),  # the group's first start: redis-0 is the master
    ("redis-replica-0", "redis-replica", "redis-0.redis", "", "redis-0.redis"),
    ("redis-0", "redis", "self", "redis-replica-0.redis-replica", "redis-replica-0.redis-replica"),  # failed over
    ("redis-replica-0", "redis-replica", "redis-0.redis", "redis-replica-0.redis-replica", None),  # promoted
])
def test_redis_starts_in_the_role_the_sentinels_give_it(tmp_path, hostname, service, default, sentinel_says, follows):
    argv, auth = _start(tmp_path, hostname, service, default, sentinel_says)
    assert argv == str(K8S / "base" / "redis.conf") and PASSWORD not in argv
    lines = auth.splitlines()
    users = [line for line in lines if line.startswith("user ")]
    assert [line.split()[1] for line in users] == ["default", "gateway", "inferencer", "worker", "keda"]
    digest = hashlib.sha256(GATEWAY_PASSWORD.encode()).hexdigest()
    assert users[1].startswith(f"user gateway reset on #{digest} ") and GATEWAY_PASSWORD not in auth
    assert "user worker reset off " in auth  # no password given: it cannot log in
    assert lines[len(users):] == [f'masterauth "{PASSWORD}"', f"replica-announce-ip {hostname}.{service}",
                                  *([f"replicaof {follows} 6379"] if follows else [])]
