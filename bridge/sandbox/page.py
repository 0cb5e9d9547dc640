"""The customer's page: routes the sandbox emulator serves beside the NusaSMS API.

| route | what |
| --- | --- |
| ``GET /`` | the page (``static/index.html``; its script and style under ``/static/``) |
| ``GET /sandbox/state`` | phones, messages and the auto-read switch, for the first paint |
| ``GET /sandbox/events`` | server-sent events: ``phone``, ``message`` and ``auto_read`` changes |
| ``POST /sandbox/send`` | ``{number, name?, text}``: the customer writes (inbox callback) |
| ``POST /sandbox/read`` | ``{number}``: the customer reads their chat |
| ``POST /sandbox/expire`` | ``{number}``: the 24-hour window closes now |
| ``POST /sandbox/auto_read`` | ``{on}``: delivered messages turn read by themselves, or not |
| ``GET /sandbox/media/{id}`` | the file of a reply (fetched from its ``file_url`` or uploaded) |

Everything is served from the package: no CDN, no build step.
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from bridge.sandbox.customers import SandboxNusaSMS

__all__ = ["add_routes"]

# A comment line now and then keeps proxies and the browser from dropping an idle stream.
_KEEPALIVE_SECONDS = 15.0
_STATIC = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}


def add_routes(app: web.Application, sandbox: SandboxNusaSMS) -> None:
    """Serve the page and its small API from the emulator's application."""
    page = _Page(sandbox)
    app.router.add_get("/", page.index)
    app.router.add_get("/static/{name}", page.static)
    app.router.add_get("/sandbox/state", page.state)
    app.router.add_get("/sandbox/events", page.events)
    app.router.add_post("/sandbox/send", page.send)
    app.router.add_post("/sandbox/read", page.read)
    app.router.add_post("/sandbox/expire", page.expire)
    app.router.add_post("/sandbox/auto_read", page.auto_read)
    app.router.add_get("/sandbox/media/{id}", page.media)


def _asset(name: str) -> bytes:
    return resources.files("bridge.sandbox").joinpath("static", name).read_bytes()


async def _fields(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise web.HTTPBadRequest(text=f"{name} is required")
    return value


class _Page:
    def __init__(self, sandbox: SandboxNusaSMS) -> None:
        self._sandbox = sandbox

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(body=_asset("index.html"), content_type="text/html", charset="utf-8")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=_asset(name), content_type=_STATIC[name], charset="utf-8")

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response(self._sandbox.state())

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        with self._sandbox.subscribe() as queue:
            # Subscribed before the browser sees the stream open and asks for the state.
            await response.prepare(request)
            await response.write(b"retry: 1000\n\n")
            while True:
                try:
                    async with asyncio.timeout(_KEEPALIVE_SECONDS):
                        event = await queue.get()
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                await response.write(f"data: {event}\n\n".encode())

    async def send(self, request: web.Request) -> web.Response:
        body = await _fields(request)
        name = body.get("name")
        try:
            message = await self._sandbox.customer_writes(
                _text(body, "number"),
                _text(body, "text"),
                name=name.strip() if isinstance(name, str) and name.strip() else None,
            )
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response(message.public())

    async def read(self, request: web.Request) -> web.Response:
        body = await _fields(request)
        try:
            count = await self._sandbox.mark_read(_text(body, "number"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"read": count})

    async def expire(self, request: web.Request) -> web.Response:
        body = await _fields(request)
        try:
            self._sandbox.expire_window(_text(body, "number"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"expired": True})

    async def auto_read(self, request: web.Request) -> web.Response:
        on = (await _fields(request)).get("on")
        if not isinstance(on, bool):
            raise web.HTTPBadRequest(text="on must be true or false")
        self._sandbox.set_auto_read(on)
        return web.json_response({"auto_read": on})

    async def media(self, request: web.Request) -> web.Response:
        try:
            message = self._sandbox.message(int(request.match_info["id"]))
        except ValueError:
            message = None
        if message is None or message.file is None:
            raise web.HTTPNotFound()
        headers = {}
        if message.filename:
            headers["Content-Disposition"] = f"inline; filename={json.dumps(message.filename)}"
        return web.Response(
            body=message.file,
            content_type=message.content_type or "application/octet-stream",
            headers=headers,
        )
