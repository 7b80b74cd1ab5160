"""A Redis client from the stack's Redis URL: a plain server (``redis://``, ``rediss://``,
``unix://``) or the master of a Sentinel group (``sentinel://h1:26379;sentinel://h2:26379/0``,
the form Celery and kombu take, with the group's name in ``SSDSTACK_REDIS_SENTINEL_MASTER``).

With Sentinel, every command goes to the group's current master; after a failover the
client finds the new one on its next connection. :func:`ride_out` retries a call while
Redis cannot be reached.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import kombu.exceptions
import redis
import redis.asyncio

log = logging.getLogger(__name__)
SENTINEL_SCHEME = "sentinel://"
SENTINEL_SEPARATOR = ";"


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME)


def sentinel_hosts(url: str) -> tuple[list[tuple[str, int]], dict[str, str], int]:
    """``(sentinels as (host, port), the master's credentials, db)`` of a ``sentinel://``
    URL; the credentials (``username``, ``password``) and db are those any part gives."""
    hosts, credentials, db = [], {}, 0
    for part in url.split(SENTINEL_SEPARATOR):
        parsed = urlsplit(part.strip())
        if parsed.scheme != "sentinel" or not parsed.hostname:
            raise ValueError(f"{part!r} is not sentinel://host:port")
        hosts.append((parsed.hostname, parsed.port or 26379))
        if parsed.username:
            credentials["username"] = unquote(parsed.username)
        if parsed.password:
            credentials["password"] = unquote(parsed.password)
        path = parsed.path.strip("/")
        db = int(path) if path.isdigit() else db
    return hosts, credentials, db


def connect(url: str, sentinel_master: str = "mymaster", asynchronous: bool = False, **options):
    """A client for ``url`` (a ``redis.asyncio`` one when ``asynchronous``); ``options``
    are redis-py connection options."""
    library = redis.asyncio if asynchronous else redis
    if not is_sentinel(url):
        return library.Redis.from_url(url, **options)
    hosts, credentials, db = sentinel_hosts(url)
    timeouts = {key: options[key] for key in ("socket_timeout", "socket_connect_timeout") if key in options}
    return library.Sentinel(hosts, sentinel_kwargs=timeouts, **timeouts).master_for(
        sentinel_master, db=db, **credentials, **options)


# Redis (records or broker) out of reach for now.
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, kombu.exceptions.OperationalError)
FIRST_RETRY_S, MAX_RETRY_S = 0.5, 5.0


def ride_out(grace_s: float, call: Callable, *args, **kwargs):
    """``call(*args, **kwargs)``, tried again while Redis cannot be reached, for up to
    ``grace_s`` seconds; then the last error is raised."""
    deadline = time.monotonic() + grace_s
    delay = FIRST_RETRY_S
    while True:
        try:
            return call(*args, **kwargs)
        except UNREACHABLE as error:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Redis out of reach (%s); %s again in %.1f s", error, getattr(call, "__name__", call), delay)
            time.sleep(delay)
            delay = min(2 * delay, MAX_RETRY_S)
