"""The broker transport the stack's Celery apps use, on a real Redis: kombu's Redis channel,
except that one used after its connection closed fails as a lost connection, which Celery
logs and rides out, instead of the AttributeError that ends a worker (Celery 5.7 / kombu
5.7 run the acks pending when Redis drops on the closed channel)."""
from __future__ import annotations

import pytest
import redis

from ssdstack.celery_app import RedisTransport, SentinelTransport, create_app
from ssdstack.redis_client import connect, sentinel_hosts
from ssdstack.settings import WorkerSettings


def test_a_channel_used_after_its_connection_closed_fails_as_a_lost_connection(clean_redis):
    app = create_app(WorkerSettings(redis_url=clean_redis))
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, RedisTransport)
        channel = connection.channel()
        app.send_task("toy.task", args=["j1"], queue="toy-queue", connection=connection)
        connection.close()
        with pytest.raises(redis.ConnectionError, match="closed") as raised:
            channel.qos.ack("1")  # what a pending ack does when it runs after the close
        assert isinstance(raised.value, connection.connection_errors)  # logged by Celery, not fatal
    assert redis.Redis.from_url(clean_redis).llen("toy-queue") == 1


def test_a_sentinel_url_gets_the_sentinel_transport():
    app = create_app(WorkerSettings(redis_url="sentinel://127.0.0.1:26379/0"))
    assert app.conf.broker_transport.endswith(":SentinelTransport")
    assert SentinelTransport.Channel._connparams is RedisTransport.Channel._connparams  # the same guard


def test_a_sentinel_url_names_the_masters_user_and_password():
    url = "sentinel://worker:pa%3Ass@10.0.0.1:26379;sentinel://10.0.0.2:26380/2"
    assert sentinel_hosts(url) == ([("10.0.0.1", 26379), ("10.0.0.2", 26380)],
                                   {"username": "worker", "password": "pa:ss"}, 2)
    master = connect(url, "mymaster")
    kwargs = master.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("worker", "pa:ss", 2)
    # The Sentinels themselves are asked without the master's credentials.
    sentinel = master.connection_pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
    assert (sentinel.get("username"), sentinel.get("password")) == (None, None)
