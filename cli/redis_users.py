"""The local stack's Redis users: those of ``k8s/base/redis-users.acl``, the ACL file
compose and Kubernetes load too, written out by the same script (``redis-users.sh``).

Each user's password is made once per var folder and kept in ``run/redis-passwords.json``
(mode 0600), so every ``LocalStack`` on that folder, in any process, logs in alike and
the passwords outlive ``down`` and ``up``.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path
from urllib.parse import quote

K8S_BASE = Path(__file__).resolve().parent.parent / "k8s" / "base"
ACL_FILE = K8S_BASE / "redis-users.acl"
RENDER_SCRIPT = K8S_BASE / "redis-users.sh"
# The Redis user each service logs in as; the trainer, converter and evaluator share one.
SERVICE_USERS = {"gateway": "gateway", "inferencer": "inferencer", "trainer": "worker", "converter": "worker",
                 "evaluator": "worker"}
ADMIN = "default"


def acl_users(acl_file: Path = ACL_FILE) -> list[str]:
    """The user names of an ACL file, in its order."""
    names = []
    for line in acl_file.read_text().splitlines():
        words = line.split()
        if words and words[0] == "user":
            names.append(words[1])
    return names


def password_variable(user: str) -> str:
    """The environment variable redis-users.sh reads ``user``'s password from."""
    if user == ADMIN:
        return "SSDSTACK_REDIS_PASSWORD"
    return "SSDSTACK_REDIS_PASSWORD_" + user.upper().replace("-", "_")


class RedisUsers:
    """The passwords of one var folder's Redis users, and the files and URLs made from them."""

    def __init__(self, run_dir: Path, port: int):
        self.path = run_dir / "redis-passwords.json"
        self.port = port
        self._passwords: dict[str, str] | None = None

    def passwords(self) -> dict[str, str]:
        """user -> password; made (for every user of the ACL file) if the folder has none."""
        if self._passwords is None:
            try:
                self._passwords = json.loads(self.path.read_text())
            except FileNotFoundError:
                self._passwords = self._create()
        return self._passwords

    def _create(self) -> dict[str, str]:
        made = {user: secrets.token_urlsafe(24) for user in acl_users()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another LocalStack on this folder made them first
            return json.loads(self.path.read_text())
        with os.fdopen(descriptor, "w") as handle:
            json.dump(made, handle)
        return made

    def url(self, user: str) -> str:
        return f"redis://{quote(user)}:{quote(self.passwords()[user])}@127.0.0.1:{self.port}/0"

    def write_config(self, target: Path) -> None:
        """Write the ``user`` directives for Redis (mode 0600), as compose and Kubernetes do."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        env.update({password_variable(user): password for user, password in self.passwords().items()})
        done = subprocess.run(["sh", str(RENDER_SCRIPT), str(ACL_FILE)], env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{RENDER_SCRIPT.name} failed: {done.stderr.strip()}")
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(done.stdout)
