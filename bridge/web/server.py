"""The HTTP side: NusaSMS's callbacks in; `/healthz` and `/metrics` out, to the admin only.

Validation happens here, once, at the edge; a request is answered 200 only after the
intake reports the callback committed to the database.

Two applications: the public one (callbacks, media) faces the internet; the admin one
(`/healthz`, `/metrics`) gets a listener of its own (`build_admin_app`), or its routes are
added to the public one behind a bearer token (`build_app(admin_token=...)`).

The port is open to anyone, so every connection is bounded: a request's head must arrive
within `head_timeout` of connecting (aiohttp's keep-alive timer also runs from the
connection's start), its body within `body_timeout`, an idle keep-alive connection is
closed after `head_timeout`, and at `max_connections` the oldest idle connection makes
room for a new one (or, if none is idle, the new one is closed at once, without a log line
per socket).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import resource
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from pydantic import BaseModel, ValidationError

from bridge.channels.intake import Intake
from bridge.channels.media import MediaLibrary
from bridge.core.logs import BackgroundLog
from bridge.core.metrics import Metrics
from bridge.core.store import StoreError
from bridge.core.workers import ErrorLog
from bridge.group.updates import SECRET_HEADER, WEBHOOK_PATH, WebhookInbox
from bridge.nusasms import InboxCallback, StatusCallback
from bridge.ops.health import Health

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """How long and how many: what one client may hold of the HTTP server."""

    # From connecting (or the end of the previous response) to a complete request head;
    # also how long an idle keep-alive connection stays open. A reverse proxy in front
    # should close its idle upstream connections sooner than this.
    head_timeout: float = 15.0
    # From the head to the complete body of a callback.
    body_timeout: float = 10.0
    max_connections: int = 512
    backlog: int = 256
    max_line_size: int = 4096
    max_field_size: int = 4096
    max_headers: int = 64
    # After an answer sent before its request's body was read (a 408, a 413), the rest of
    # the body is read and dropped this long, so the client sees the answer.
    lingering: float = 2.0


DEFAULT_LIMITS = ServerLimits()
# File descriptors kept free for the database, the API clients and the listening socket.
_RESERVED_DESCRIPTORS = 64

_Callback = TypeVar("_Callback", bound=BaseModel)
_OK_BODY = b'{"ok": true}'

INTAKE_KEY = web.AppKey("intake", Intake)
HEALTH_KEY = web.AppKey("health", Health)
SECRET_KEY = web.AppKey("callback_secret", bytes)
MEDIA_KEY = web.AppKey("media", MediaLibrary)
METRICS_KEY = web.AppKey("metrics", Metrics)
LIMITS_KEY = web.AppKey("limits", ServerLimits)
BUSY_KEY = web.AppKey("busy_connections", set)
WEBHOOK_KEY = web.AppKey("telegram_webhook", WebhookInbox)
ADMIN_TOKEN_KEY = web.AppKey("admin_token", bytes)


def build_app(
    *,
    intake: Intake,
    health: Health,
    callback_secret: str,
    media: MediaLibrary | None = None,
    metrics: Metrics | None = None,
    limits: ServerLimits = DEFAULT_LIMITS,
    telegram_webhook: WebhookInbox | None = None,
    admin_token: str | None = None,
) -> web.Application:
    """The public application: callbacks and media, and the admin routes if `admin_token`.

    Without a token, `/healthz` and `/metrics` are not here at all (404): they belong on
    the admin listener (`build_admin_app`).
    """
    app = _bounded_app(limits)
    app[INTAKE_KEY] = intake
    app[SECRET_KEY] = callback_secret.encode()
    app[METRICS_KEY] = metrics if metrics is not None else Metrics()
    app.router.add_post("/callbacks/{secret}/wa/inbox", _inbox)
    app.router.add_post("/callbacks/{secret}/wa/status", _status)
    if media is not None:
        app[MEDIA_KEY] = media
        app.router.add_get("/media/{token}", _media)
    if telegram_webhook is not None:
        app[WEBHOOK_KEY] = telegram_webhook
        app.router.add_post(WEBHOOK_PATH + "{secret}", _telegram_update)
    if admin_token:
        _add_admin_routes(app, health, app[METRICS_KEY], admin_token)
    return app


async def _telegram_update(request: web.Request) -> web.Response:
    """Telegram's webhook: 200 only once the update is committed (see WebhookInbox)."""
    status = await request.app[WEBHOOK_KEY].receive(
        request.match_info["secret"], request.headers.get(SECRET_HEADER), await request.read()
    )
    return web.Response(status=status)


def build_admin_app(
    *,
    health: Health,
    metrics: Metrics,
    limits: ServerLimits = DEFAULT_LIMITS,
    admin_token: str | None = None,
) -> web.Application:
    """`/healthz` and `/metrics` alone, for a listener of their own (token optional)."""
    app = _bounded_app(limits)
    _add_admin_routes(app, health, metrics, admin_token)
    return app


def _bounded_app(limits: ServerLimits) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_track_busy])
    app[LIMITS_KEY] = limits
    app[BUSY_KEY] = set()
    return app


def _add_admin_routes(
    app: web.Application, health: Health, metrics: Metrics, token: str | None
) -> None:
    app[HEALTH_KEY] = health
    app[METRICS_KEY] = metrics
    if token:
        app[ADMIN_TOKEN_KEY] = f"Bearer {token}".encode()
    app.router.add_get("/metrics", _admin_only(_metrics))
    app.router.add_get("/healthz", _admin_only(_healthz))


_Handler = Callable[[web.Request], Awaitable[web.Response]]


def _admin_only(handler: _Handler) -> _Handler:
    """`handler`, answering 401 unless the request carries the admin token (if one is set)."""

    async def guarded(request: web.Request) -> web.Response:
        expected = request.app.get(ADMIN_TOKEN_KEY)
        if expected is not None:
            given = request.headers.get("Authorization", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, expected):
                response = _error(401, "unauthorized")
                response.headers["WWW-Authenticate"] = 'Bearer realm="bridge admin"'
                return response
        return await handler(request)

    return guarded


def make_runner(
    app: web.Application,
    *,
    access_log: BackgroundLog | None,
    shutdown_timeout: float,
) -> web.AppRunner:
    """The runner for `app`, with the connection limits `build_app` was given.

    The access log is one compact line per request, handed to `access_log`'s thread: the
    event loop never formats a log record or waits for the sink.
    """
    limits = app[LIMITS_KEY]
    return web.AppRunner(
        app,
        shutdown_timeout=shutdown_timeout,
        access_log=access_log.logger if access_log is not None else None,
        access_log_class=type(
            "CompactAccessLogger", (CompactAccessLogger,), {"__slots__": (), "sink": access_log}
        ),
        keepalive_timeout=limits.head_timeout,
        # A client gone mid-request ends its handler (a callback already queued for the
        # group commit is committed all the same).
        handler_cancellation=True,
        max_line_size=limits.max_line_size,
        max_field_size=limits.max_field_size,
        max_headers=limits.max_headers,
        lingering_time=limits.lingering,
    )


async def run_site(runner: web.AppRunner, host: str, port: int) -> BoundedSite:
    """Listen on host:port with the connection cap; the runner must be set up."""
    site = BoundedSite(runner, host, port)
    await site.start()
    return site


def connection_budget(limits: ServerLimits) -> tuple[int, int]:
    """(connections, backlog) that fit the process's file descriptor limit.

    asyncio accepts up to `backlog` sockets in one go before any of them reaches the cap,
    and a connection closed to make room frees its descriptor only a moment later, so the
    cap leaves room for two such bursts: a flood never runs the process out of descriptors
    (which would stop every accept, callbacks too).
    """
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits.max_connections, limits.backlog
    budget = max(64, soft - _RESERVED_DESCRIPTORS)
    backlog = max(8, min(limits.backlog, budget // 4))
    return max(16, min(limits.max_connections, budget - 2 * backlog)), backlog


class BoundedSite(web.BaseSite):
    """A TCP site that never holds more than the app's `max_connections` connections.

    At the cap, the longest-open connection not handling a request is closed to make room;
    when every connection is busy, the new one is closed at once. Either is logged once,
    then counted, never per socket.
    """

    __slots__ = ("_bound_port", "_busy", "_cap", "_host", "_port", "_said", "evicted", "refused")

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        cap, backlog = connection_budget(runner.app[LIMITS_KEY])
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._bound_port: int | None = None
        self._cap = cap
        self._busy: set[object] = runner.app[BUSY_KEY]
        self._said = ErrorLog(log, every=60.0)
        self.refused = 0
        self.evicted = 0

    @property
    def name(self) -> str:
        """The address served."""
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (the requested one before start)."""
        return self._bound_port if self._bound_port is not None else self._port

    async def start(self) -> None:
        """Open the listening socket."""
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
        if self._server.sockets:
            self._bound_port = int(self._server.sockets[0].getsockname()[1])

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        connections = server.connections
        if len(connections) < self._cap:
            return server()
        idle = next((c for c in connections if c not in self._busy), None)
        if idle is not None:
            self.evicted += 1
            self._said.failed(
                "evict", "%d connections open: closing idle ones to make room", len(connections)
            )
            idle.force_close()
            return server()
        self.refused += 1
        self._said.failed(
            "refuse", "%d connections open, all busy: refusing new ones", len(connections)
        )
        return _Refused()


class CompactAccessLogger(AbstractAccessLogger):
    """`client "METHOD path HTTP/x.y" status bytes 1.2ms`, queued for the log's own thread.

    aiohttp's own access logger formats a timestamp and a dozen fields per request and
    writes through `logging` on the event loop; this builds one short string (the callback
    secret already cut out of the path) and queues it, which costs a fraction of that.
    The log's thread still runs every filter of the logger (the redactor among them).
    """

    __slots__ = ()
    # Set on the subclass `make_runner` makes (aiohttp builds the instance itself).
    sink: BackgroundLog | None = None

    @property
    def enabled(self) -> bool:
        """Whether a line would be written at all (INFO on the access logger)."""
        return self.sink is not None and self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_: float) -> None:
        """Queue the request's line."""
        sink = self.sink
        if sink is None:
            return
        path = request.raw_path
        if path.startswith("/callbacks/"):
            path = "/callbacks/***/" + path[11:].partition("/")[2]
        version = request.version
        sink.put(
            time.time(),
            f'{request.remote} "{request.method} {path} HTTP/{version.major}.{version.minor}" '
            f"{response.status} {response.body_length} {time_ * 1000:.1f}ms",
        )


class _Refused(asyncio.Protocol):
    """A connection over the cap: closed at once, nothing read, nothing logged."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


@web.middleware
async def _track_busy(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Mark the connection busy while it is handled: only idle ones make room for others."""
    busy = request.app[BUSY_KEY]
    protocol = request.protocol
    busy.add(protocol)
    try:
        return await handler(request)
    finally:
        busy.discard(protocol)


async def _media(request: web.Request) -> web.StreamResponse:
    """A file an operator sent, for NusaSMS to fetch while its link lives.

    Served from the bridge's own address, so never as a page: always a download, never
    sniffed into another type, and nothing in it may run or load anything.
    """
    media = await request.app[MEDIA_KEY].lookup(request.match_info["token"])
    if media is None:
        raise web.HTTPNotFound
    quoted = urllib.parse.quote(media.filename, safe="")
    return web.FileResponse(
        media.path,
        headers={
            "Content-Type": media.content_type,
            "Content-Disposition": f"attachment; filename*=UTF-8''{quoted}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, no-store",
        },
    )


async def _inbox(request: web.Request) -> web.Response:
    response = await _accept(request, InboxCallback, request.app[INTAKE_KEY].inbox)
    _count(request, "inbox", response.status)
    return response


async def _status(request: web.Request) -> web.Response:
    response = await _accept(request, StatusCallback, request.app[INTAKE_KEY].status)
    _count(request, "status", response.status)
    return response


_OUTCOMES = {
    200: "stored",
    400: "malformed",
    404: "wrong_secret",
    408: "too_slow",
    413: "too_large",
    422: "invalid",
    503: "unavailable",
}


def _count(request: web.Request, kind: str, status: int) -> None:
    request.app[METRICS_KEY].callback(kind, _OUTCOMES.get(status, str(status))).inc()


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    _, report = await request.app[HEALTH_KEY].report()
    for queue in ("inbound", "outbound"):
        state = report.get(f"{queue}_queue", {})
        metrics.queue_depth.labels(queue).set(state.get("waiting", 0))
        metrics.oldest_waiting.labels(queue).set(state.get("oldest_age_seconds") or 0)
    return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")


async def _accept(
    request: web.Request,
    model: type[_Callback],
    commit: Callable[[_Callback], Awaitable[None]],
) -> web.Response:
    given = request.match_info["secret"].encode()
    if not hmac.compare_digest(given, request.app[SECRET_KEY]):
        return _error(404, "not found")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _error(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        async with asyncio.timeout(request.app[LIMITS_KEY].body_timeout):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"body larger than {MAX_BODY_BYTES} bytes")
    except TimeoutError:
        response = _error(408, "the body did not arrive in time")
        response.force_close()  # what is left of the body is not waited for
        return response
    try:
        callback = model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        if any(e["type"] == "json_invalid" for e in errors):
            return _error(400, "body is not valid JSON")
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
        return _error(422, "body does not match the callback schema", detail=detail)
    try:
        await commit(callback)
    except StoreError as exc:
        log.error("callback not stored, answering 503: %s", exc)
        return _error(503, "cannot store the callback right now; retry later")
    return web.Response(body=_OK_BODY, content_type="application/json")


async def _healthz(request: web.Request) -> web.Response:
    ready, body = await request.app[HEALTH_KEY].report()
    return web.json_response(body, status=200 if ready else 503)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"ok": False, "error": message, **extra}),
        content_type="application/json",
    )
