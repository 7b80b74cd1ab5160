"""The guard: an ASGI middleware that decides about a request before its body is read.

For a route that needs a key (one with an :class:`~gateway.deps.Access` dependency) it
answers 401 without a known key, 403 when the key's scope is too low, and 429 with
``Retry-After`` past the key's rate limit. For every route it bounds the body by the
route's kind (JSON, detect image, upload): 413 when ``Content-Length`` says more, or as
soon as more has streamed in. FastAPI reads a body before it runs a route's dependencies,
so none of this can be a dependency. It also gives each request an id
(``X-Request-ID``), which a 500's body carries instead of the error's text, and every
response its security headers (Content-Security-Policy, nosniff).
"""
from __future__ import annotations

import logging
import math
import time
import uuid

import redis
from limits import parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.deps import Access, access_of
from gateway.errors import domain_response, is_oip
from ssdstack.api_keys import ApiKey, digest_of, find
from ssdstack.errors import Forbidden, Overloaded, PayloadTooLarge, RateLimited, SsdStackError, Unauthorized
from ssdstack.settings import GatewaySettings

log = logging.getLogger(__name__)
# Room for the multipart envelope around a detect image.
MULTIPART_OVERHEAD = 64 * 1024
RATE_LIMIT_PREFIX = "ssdstack:ratelimit"
# Bodies that hold a detect image, counted against the receive budget.
IMAGE_BODIES = ("image", "tensor")
# A gateway at its bound on held images frees up as detects are answered.
RETRY_AFTER_S = 1
# On every response: the console (and any page) runs scripts, styles and requests from
# this origin only, inside no frame.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                           "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
# FastAPI's API docs pages load Swagger UI and ReDoc from their CDN, with an inline script.
DOCS_POLICY = ("default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
               "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https:; "
               "connect-src 'self'; frame-ancestors 'none'")
DOCS_PATHS = ("/docs", "/redoc")


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    policy = DOCS_POLICY if path.startswith(DOCS_PATHS) else CONTENT_SECURITY_POLICY
    return [(b"content-security-policy", policy.encode()), (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer")]


class BodyTooLarge(PayloadTooLarge):
    pass


class RateLimits:
    """Per-caller limits, counted in Redis so that every gateway replica shares them."""

    def __init__(self, client, spec: str):
        self.items = parse_many(spec) if spec else []
        storage = RedisStorage("async+redis://", implementation="redispy", key_prefix=RATE_LIMIT_PREFIX,
                               connection_pool=client.connection_pool)
        self.limiter = SlidingWindowCounterRateLimiter(storage)

    async def retry_after(self, caller: str) -> int | None:
        """Seconds until ``caller`` may call again, or None when this call is allowed.
        With Redis out of reach the call is allowed: the route then answers for itself."""
        try:
            for item in self.items:
                if not await self.limiter.hit(item, caller):
                    stats = await self.limiter.get_window_stats(item, caller)
                    return max(1, math.ceil(stats.reset_time - time.time()))
        except redis.RedisError as error:
            log.warning("rate limits not checked, Redis is out of reach: %s", error)
        return None


class Guard:
    def __init__(self, app: ASGIApp, routes: list[BaseRoute], settings: GatewaySettings, keys: list[ApiKey],
                 limits: RateLimits):
        self.app, self.routes, self.keys, self.limits = app, routes, keys, limits
        self.bounds = {"json": settings.max_json_bytes, "image": settings.max_image_bytes + MULTIPART_OVERHEAD,
                       # an inference request may carry the image in base64 (4 bytes per 3)
                       "tensor": settings.max_image_bytes * 4 // 3 + MULTIPART_OVERHEAD,
                       "upload": settings.max_upload_bytes}
        # Detect bodies being received or held (spooled to /tmp past 1 MiB) by this process.
        self.image_budget, self.image_bytes = settings.detect_receive_budget_bytes, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id

        extra = [(b"x-request-id", request_id.encode()), *security_headers(scope["path"])]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        access = self._route_access(scope)
        headers = Headers(scope=scope)
        refusal = await self._refusal(access, headers, state) if access else None
        bound = self.bounds[access.body if access else "json"]
        declared = headers.get("content-length", "")
        if refusal is None and declared.isdigit() and int(declared) > bound:
            refusal = BodyTooLarge(f"the body is {declared} bytes, over this route's limit of {bound} bytes")
        # What an image body takes of this process's budget: its declared size, or the bound;
        # never more than the whole budget, so that one request alone always gets through.
        held = min(int(declared) if declared.isdigit() else bound, self.image_budget) \
            if access and access.body in IMAGE_BODIES else 0
        if refusal is None and held and self.image_bytes + held > self.image_budget:
            refusal = Overloaded("this gateway is receiving as many detect images as it holds; retry shortly",
                                 RETRY_AFTER_S)
        if refusal is not None:
            return await domain_response(refusal, is_oip(scope["path"]))(scope, receive, send_with_id)
        self.image_bytes += held
        try:
            await self._bounded(scope, receive, send_with_id, bound)
        finally:
            self.image_bytes -= held

    async def _refusal(self, access: Access, headers: Headers, state: dict) -> SsdStackError | None:
        given = headers.get("x-api-key") or _bearer_token(headers.get("authorization", ""))
        if not given:
            return Unauthorized("missing API key: send X-API-Key or Authorization: Bearer")
        digest = digest_of(given)
        key = find(self.keys, digest)
        if key is None:
            return Unauthorized("invalid API key")
        if key.scope < access.scope:
            return Forbidden(f"this key has the {key.scope.name.lower()} scope; this route needs "
                             f"{access.scope.name.lower()}")
        state["caller"] = digest.hex()
        retry_after = await self.limits.retry_after(state["caller"])
        if retry_after is not None:
            return RateLimited(f"too many requests for this key; retry in {retry_after} s", retry_after)
        return None

    async def _bounded(self, scope: Scope, receive: Receive, send: Send, bound: int) -> None:
        """Run the app with a body counted as it streams; past ``bound`` the app's reads
        fail and the client gets 413, whatever the app made of the failure."""
        received = 0
        over = False
        started = False
        too_large = BodyTooLarge(f"the body is over this route's limit of {bound} bytes")

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > bound:
                    over = True
                    raise too_large
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:  # FastAPI turns a failed body read into a 400: answer for the body instead
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except BodyTooLarge:
            if started:
                raise
        if over and not started:
            await domain_response(too_large, is_oip(scope["path"]))(scope, receive, send)

    def _route_access(self, scope: Scope) -> Access | None:
        for route in self.routes:
            if route.matches(scope)[0] == Match.FULL:
                return access_of(getattr(route, "dependencies", []))
        return None


def _bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
