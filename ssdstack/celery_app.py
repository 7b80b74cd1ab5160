"""Celery app factory: one configuration for the gateway (which only sends tasks by
name) and the three workers (which each register their own tasks)."""
from __future__ import annotations

import redis
from celery import Celery
from kombu.transport import redis as kombu_redis

from ssdstack.redis_client import is_sentinel
from ssdstack.settings import CommonSettings

# The queues workers take tasks from. Tasks and their routes are declared where they are
# defined as a protocol: job stages in ssdstack.jobs.pipeline, detection in
# ssdstack.detect_protocol; every send names its queue.
TRAIN_QUEUE, CONVERT_QUEUE, INFER_QUEUE, EVALUATE_QUEUE = "train", "convert", "infer", "evaluate"
QUEUES = (TRAIN_QUEUE, CONVERT_QUEUE, INFER_QUEUE, EVALUATE_QUEUE)


class _ClosedIsLost:
    """A kombu Redis channel that, used after its connection closed, fails as a lost
    connection. Celery 5.7 / kombu 5.7 run the acks still pending when Redis drops on the
    closed channel; kombu's own channel then raises AttributeError, which ends the worker
    ("Unrecoverable error"), where a connection error is logged and ridden out."""

    def _connparams(self, asynchronous=False):
        if self.connection is None or self.connection.client is None:
            raise redis.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous)


class _Channel(_ClosedIsLost, kombu_redis.Channel):
    pass


class _SentinelChannel(_ClosedIsLost, kombu_redis.SentinelChannel):
    pass


class RedisTransport(kombu_redis.Transport):
    Channel = _Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = _SentinelChannel


def create_app(settings: CommonSettings, name: str = "ssdstack") -> Celery:
    app = Celery(name, broker=settings.redis_url, backend=settings.redis_url, set_as_current=False)
    # Unacknowledged messages older than the visibility timeout go back to their queue;
    # every worker with a free event loop sweeps for them every few seconds (kombu's
    # default sweeps only every ~100 s).
    transport = {"visibility_timeout": settings.visibility_timeout,
                 "unacked_restore_interval": 5, "unacked_restore_throttle": 1}
    if is_sentinel(settings.redis_url):
        transport["master_name"] = settings.redis_sentinel_master
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=INFER_QUEUE,
        broker_transport=f"{__name__}:{'SentinelTransport' if is_sentinel(settings.redis_url) else 'RedisTransport'}",
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        result_expires=3600,
        # One long job at a time per worker process; a message is acknowledged only after
        # its task returns, so a crashed worker's job is delivered again.
        worker_prefetch_multiplier=1,
        task_reject_on_worker_lost=True,
        # Job tasks record their own failures; one that raises could not reach Redis to do
        # so. Leaving its message unacknowledged brings it back after the visibility timeout.
        task_acks_on_failure_or_timeout=False,
        broker_connection_retry_on_startup=True,
        # Ride out a Redis outage of any length: the worker keeps reconnecting, its running
        # job goes on, and its liveness file (not the broker) decides when it is restarted.
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        task_track_started=False,
    )
    return app
