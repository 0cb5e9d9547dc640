"""The HTTP side: NusaSMS's callbacks in, `/healthz` out.

Validation happens here, once, at the edge; a request is answered 200 only after the
intake reports the callback committed to the database.
"""

from __future__ import annotations

import hmac
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bridge.health import Health
from bridge.intake import Intake
from bridge.media import MediaLibrary
from bridge.metrics import Metrics
from bridge.nusasms import InboxCallback, StatusCallback
from bridge.store import StoreError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024

_Callback = TypeVar("_Callback", bound=BaseModel)
_OK_BODY = b'{"ok": true}'

INTAKE_KEY = web.AppKey("intake", Intake)
HEALTH_KEY = web.AppKey("health", Health)
SECRET_KEY = web.AppKey("callback_secret", bytes)
MEDIA_KEY = web.AppKey("media", MediaLibrary)
METRICS_KEY = web.AppKey("metrics", Metrics)


def build_app(
    *,
    intake: Intake,
    health: Health,
    callback_secret: str,
    media: MediaLibrary | None = None,
    metrics: Metrics | None = None,
) -> web.Application:
    """The aiohttp application with every route the bridge serves."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[INTAKE_KEY] = intake
    app[HEALTH_KEY] = health
    app[SECRET_KEY] = callback_secret.encode()
    app[METRICS_KEY] = metrics if metrics is not None else Metrics()
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/callbacks/{secret}/wa/inbox", _inbox)
    app.router.add_post("/callbacks/{secret}/wa/status", _status)
    app.router.add_get("/healthz", _healthz)
    if media is not None:
        app[MEDIA_KEY] = media
        app.router.add_get("/media/{token}", _media)
    return app


async def _media(request: web.Request) -> web.StreamResponse:
    """A file an operator sent, for NusaSMS to fetch while its link lives."""
    media = await request.app[MEDIA_KEY].lookup(request.match_info["token"])
    if media is None:
        raise web.HTTPNotFound
    quoted = urllib.parse.quote(media.filename, safe="")
    return web.FileResponse(
        media.path,
        headers={
            "Content-Type": media.content_type,
            "Content-Disposition": f"inline; filename*=UTF-8''{quoted}",
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
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"body larger than {MAX_BODY_BYTES} bytes")
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
