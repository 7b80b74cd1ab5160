"""The stack's Redis users in tests: every test Redis loads k8s/base/redis-users.acl
through redis-users.sh, as compose, Kubernetes and the local stack do, with these
passwords; and what Redis's ACL log says the services were refused. A service whose user
lacks a command it sends shows up in the log, even where the service swallowed the error
and carried on."""
from __future__ import annotations

import subprocess

import redis

from cli.redis_users import ACL_FILE, RENDER_SCRIPT, acl_users, password_variable

PASSWORDS = {user: f"{user}-test-password-0123456789" for user in acl_users()}
# redis-py sends CLIENT SETINFO (which no user is granted: redis-users.acl) and CLIENT
# MAINT_NOTIFICATIONS when it connects, and carries on when they are refused; Redis logs
# them as refusals, so they are left out here.
CONNECTION_SETUP = {"client"}


def render(env: dict[str, str]) -> subprocess.CompletedProcess:
    """redis-users.sh run on the ACL file with ``env`` (and PATH) as its environment."""
    return subprocess.run(["sh", str(RENDER_SCRIPT), str(ACL_FILE)], env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=30)


def users_config() -> str:
    """The ``user`` directives for a test Redis, with :data:`PASSWORDS`."""
    done = render({password_variable(user): password for user, password in PASSWORDS.items()})
    assert done.returncode == 0, done.stderr
    return done.stdout


def url(port: int, user: str) -> str:
    return f"redis://{user}:{PASSWORDS[user]}@127.0.0.1:{port}/0"


def denials(client: redis.Redis) -> list[str]:
    """``user: reason object (count)`` for each refusal in the ACL log, but failed logins."""
    return [f"{entry['username']}: {entry['reason']} {entry['object']} (x{entry['count']})"
            for entry in client.acl_log(count=128)
            if entry["reason"] != "auth" and entry["object"] not in CONNECTION_SETUP]
