"""A fake NusaSMS API v1.0 (WhatsApp Official part), served over HTTP on loopback.

Routes, all under ``/nusasms_api/1.0`` and all requiring the ``APIKey`` header (else
``401 {"error": true, "message": "Invalid API key"}``):

* ``GET /auth/api_key`` -> 200 PersonResponse (``person``)
* ``GET /balance`` -> 200 CreditResponse (``balance``, mutable)
* ``POST /wa_official/message/reply`` -> 201 ReplyMessageResponse; multipart/form-data,
  urlencoded or JSON. Validation answers 422 with FastAPI's ``{"detail": [...]}``, one entry
  per problem: ``room_id`` missing; ``type`` not one of text/image/document/video/audio/voice
  (default text); ``file_url`` not an http(s) URL; a non-text type without ``file_url`` or
  ``file``; a text type without ``text``. ``room_id`` is not checked to be a UUID.
* ``POST /wa_official/message/broadcast`` -> 201 BroadcastMessageResponse (JSON body);
  422 with a reason for an unknown channel or template, a template not approved, or a
  ``parameters`` section (header, body, buttons) without one entry per placeholder
* ``GET /wa_official/templates`` and ``GET /wa_official/channels`` -> 200 (``templates``,
  ``channels``, mutable)

Unknown paths answer ``404 {"detail": "Not Found"}`` and known paths with the wrong verb
``405 {"detail": "Method Not Allowed"}``, before the key is checked, as FastAPI routes do.
The fake never downloads a reply's ``file_url``; ``fetch`` is there for tests that want to.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from bridge.sandbox.loopback import MAX_BODY, LoopbackServer

__all__ = [
    "DEFAULT_API_KEY",
    "Broadcast",
    "Call",
    "FakeNusaSMS",
    "Reply",
    "fetch",
]

JSON = dict[str, Any]

DEFAULT_API_KEY = "test-nusasms-key"
PREFIX = "/nusasms_api/1.0"
REPLY_TYPES = ("text", "image", "document", "video", "audio", "voice")

# Handlers still running when the server goes down are cancelled after this long, which the
# client sees as a dropped connection: the same as a real server dying mid-request.


@dataclass(frozen=True)
class Call:
    """One request the client made, in arrival order, whatever its outcome."""

    method: str
    path: str  # relative to the API prefix, e.g. "/wa_official/message/reply"
    headers: CIMultiDict[str]  # case-insensitive: headers["apikey"] finds "APIKey"
    at: float
    query: dict[str, str]
    # parsed form or JSON body; an uploaded file appears as {"filename", "content_type", "size"}
    body: Any


@dataclass(frozen=True)
class Reply:
    """A reply message the fake accepted."""

    room_id: str
    type: str
    text: str | None
    file_url: str | None
    file: bytes | None
    filename: str | None
    content_type: str | None
    ref_no: str
    at: float


@dataclass(frozen=True)
class Broadcast:
    """A template broadcast the fake accepted."""

    destination: str
    destination_name: str
    template_id: str
    channel_id: str
    parameters: JSON | None
    ref_no: str
    at: float


@dataclass
class _Failure:
    path: str
    status: int
    body: Any
    headers: dict[str, str] | None
    remaining: int


@dataclass
class _Delay:
    path: str
    seconds: float
    remaining: int


_Queued = TypeVar("_Queued", _Failure, _Delay)


@dataclass(frozen=True)
class _Upload:
    filename: str | None
    content_type: str | None
    data: bytes


class _Invalid(Exception):
    """A FastAPI-style 422 validation failure."""

    def __init__(self, detail: list[JSON]) -> None:
        super().__init__(detail)
        self.detail = detail


def _missing(field: str) -> JSON:
    return {"loc": ["body", field], "msg": "field required", "type": "value_error.missing"}


def _problem(loc: list[str], msg: str) -> JSON:
    return {"loc": loc, "msg": msg, "type": "value_error"}


_PLACEHOLDER = re.compile(r"\{\{\s*(\d+)\s*\}\}")


def _count(text: Any) -> int:
    if isinstance(text, dict):
        text = text.get("text")
    return (
        max((int(n) for n in _PLACEHOLDER.findall(text or "")), default=0)
        if isinstance(text, str)
        else 0
    )


def _placeholders(template: JSON) -> dict[str, int]:
    """How many parameters each section of a template takes (strings, dicts, components)."""
    parts = {k: template.get(k) for k in ("header", "body", "buttons")}
    components = template.get("components")
    if components is None and isinstance(parts["body"], list):
        components, parts["body"] = parts["body"], None
    for component in components if isinstance(components, list) else []:
        kind = str(component.get("type", "")).lower() if isinstance(component, dict) else ""
        if kind in ("header", "body"):
            parts[kind] = component
        elif kind == "buttons":
            parts["buttons"] = component.get("buttons")
    header = parts["header"]
    media = isinstance(header, dict) and str(header.get("format", "")).upper() in (
        "IMAGE",
        "DOCUMENT",
        "VIDEO",
    )
    buttons = parts["buttons"] if isinstance(parts["buttons"], list) else []
    return {
        "header": 1 if media else min(1, _count(header)),
        "body": _count(parts["body"]),
        "buttons": sum(
            1 for b in buttons if isinstance(b, dict) and _count(str(b.get("url") or "")) > 0
        ),
    }


def _relative(path: str) -> str:
    return path.removeprefix(PREFIX) or "/"


async def fetch(url: str) -> bytes:
    """GET a URL (e.g. a reply's ``file_url``) and return the body; raises on HTTP errors."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(url) as response,
    ):
        response.raise_for_status()
        return await response.read()


class FakeNusaSMS(LoopbackServer):
    """A NusaSMS API server with fault injection, recording what the client sent."""

    def __init__(self, *, api_key: str = DEFAULT_API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.calls: list[Call] = []
        self.replies: list[Reply] = []
        self.broadcasts: list[Broadcast] = []
        # The fake customer: where their answers are posted (the bridge's inbox callback),
        # each number's current room, and the numbers whose next answer opens a new room
        # (WhatsApp does after a template, like NusaSMS).
        self.callback_url: str | None = None
        self.customer_rooms: dict[str, str] = {}
        self._opens_room: set[str] = set()
        year_ahead = (dt.date.today() + dt.timedelta(days=365)).isoformat()
        self.person: JSON = {"userid": "bridge-test", "idPerson": 1, "idClient": 1}
        self.balance: JSON = {
            "idClient": 1,
            "wa_balance": 5000,
            "wa_expired_date": year_ahead,
            "hlr_balance": 100,
            "hlr_expired_date": year_ahead,
            "sim_balance": 100,
            "sim_expired_date": year_ahead,
            "sms_balance": 1000,
            "sms_expired_date": year_ahead,
            "pulsa_balance": 50000,
        }
        self.templates: list[JSON] = [
            {
                "id": "3f1c2a9e-5b7d-4c1e-9a2b-6d8e0f1a2b3c",
                "name": "bridge_greeting",
                "header": None,
                "body": "Halo {{1}}, ada yang bisa kami bantu?",
                "footer": None,
                "status": "APPROVED",
                "category": "UTILITY",
            }
        ]
        self.channels: list[JSON] = [
            {
                "id": "9b2e4f6a-1c3d-4e5f-8a7b-0c1d2e3f4a5b",
                "webhook": "https://bridge.example.invalid/nusasms/callback",
                "settings": None,
                "organization_id": "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d",
                "created_at": "2024-01-01T00:00:00Z",
            }
        ]
        self._failures: list[_Failure] = []
        self._delays: list[_Delay] = []
        self._ref_numbers = itertools.count(1)
        self._routes: dict[tuple[str, str], Callable[[web.Request, JSON], Awaitable[web.Response]]]
        self._routes = {
            ("GET", "/auth/api_key"): self._auth,
            ("GET", "/balance"): self._balance,
            ("POST", "/wa_official/message/reply"): self._reply,
            ("POST", "/wa_official/message/broadcast"): self._broadcast,
            ("GET", "/wa_official/templates"): self._templates,
            ("GET", "/wa_official/channels"): self._channels,
        }

    # ----------------------------------------------------------------- lifecycle

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", PREFIX + "/{tail:.*}", self._dispatch)
        return app

    @property
    def base_url(self) -> str:
        """The API base URL a client is configured with (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    # ------------------------------------------------------------ observation

    def calls_to(self, path: str) -> list[Call]:
        """Calls of one relative path, oldest first."""
        return [c for c in self.calls if c.path == _relative(path)]

    # The timeout is part of the assertion, not a cancellation scope, hence ASYNC109.
    def _state(self) -> str:
        recent = ", ".join(f"{c.method} {c.path}" for c in self.calls[-10:]) or "none"
        return f"last calls: {recent}; {len(self.replies)} replies accepted"

    async def fetch(self, url: str) -> bytes:
        """GET a URL (e.g. a reply's ``file_url``) and return the body; raises on HTTP errors."""
        return await fetch(url)

    # -------------------------------------------------------- fault injection

    def fail_next(
        self,
        path: str,
        status: int,
        body: Any | None = None,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``path`` ("*" = any) with this error, unprocessed.

        ``body`` None sends ``{"error": true, "message": <HTTP reason>}``; a ``str`` is sent
        as-is (text/html when it starts with "<", else text/plain); anything else as JSON.
        The key is not checked for an injected failure, as a gateway in front would not.
        """
        self._failures.append(_Failure(_relative(path), status, body, headers, times))

    def delay_next(self, path: str, seconds: float, *, times: int = 1) -> None:
        """Process the next ``times`` calls of ``path`` ("*" = any) but answer ``seconds`` late.

        The request is recorded and takes effect (a reply lands in ``replies``) before the
        stall, like a real server that got it while the client gave up waiting.
        """
        self._delays.append(_Delay(_relative(path), seconds, times))

    # ------------------------------------------------------------- HTTP layer

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body, summary = await self._read_body(request)
        self.calls.append(
            Call(
                method=request.method,
                path=path,
                headers=CIMultiDict(request.headers),
                at=time.monotonic(),
                query=dict(request.query),
                body=summary,
            )
        )
        delay = self._pop(self._delays, path)
        failure = self._pop(self._failures, path)
        if failure is not None:
            response = self._failure_response(failure)
        else:
            response = await self._route(request, path, body)
        if delay is not None:
            await asyncio.sleep(delay.seconds)
        return response

    async def _route(self, request: web.Request, path: str, body: JSON) -> web.Response:
        handler = self._routes.get((request.method, path))
        if handler is None:
            known = any(p == path for _, p in self._routes)
            if known:
                return web.json_response({"detail": "Method Not Allowed"}, status=405)
            return web.json_response({"detail": "Not Found"}, status=404)
        if request.headers.get("APIKey") != self.api_key:
            return web.json_response({"error": True, "message": "Invalid API key"}, status=401)
        try:
            return await handler(request, body)
        except _Invalid as exc:
            return web.json_response({"detail": exc.detail}, status=422)

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[JSON, Any]:
        """Return the body as fields (uploads as _Upload) and a printable summary of it."""
        if request.content_type == "application/json":
            try:
                parsed = await request.json()
            except ValueError:
                return {}, (await request.text())
            return (parsed if isinstance(parsed, dict) else {}), parsed
        if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            fields: JSON = {}
            summary: JSON = {}
            for name, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    data = value.file.read()
                    fields[name] = _Upload(value.filename, value.content_type, data)
                    summary[name] = {
                        "filename": value.filename,
                        "content_type": value.content_type,
                        "size": len(data),
                    }
                else:
                    fields[name] = summary[name] = str(value)
            return fields, summary
        raw = await request.read()
        return {}, (raw.decode("utf-8", "replace") if raw else None)

    @staticmethod
    def _pop(queue: list[_Queued], path: str) -> _Queued | None:
        for item in queue:
            if item.path in (path, "*"):
                item.remaining -= 1
                if item.remaining <= 0:
                    queue.remove(item)
                return item
        return None

    @staticmethod
    def _failure_response(failure: _Failure) -> web.Response:
        headers = failure.headers or {}
        if failure.body is None:
            try:
                phrase = HTTPStatus(failure.status).phrase
            except ValueError:
                phrase = "Error"
            body = {"error": True, "message": phrase}
            return web.json_response(body, status=failure.status, headers=headers)
        if isinstance(failure.body, str):
            kind = "text/html" if failure.body.lstrip().startswith("<") else "text/plain"
            return web.Response(
                text=failure.body, status=failure.status, content_type=kind, headers=headers
            )
        return web.json_response(failure.body, status=failure.status, headers=headers)

    def _ref_no(self) -> str:
        return f"NSWA{next(self._ref_numbers):08d}{uuid.uuid4().hex[:8].upper()}"

    # ------------------------------------------------------------- routes

    async def _auth(self, request: web.Request, body: JSON) -> web.Response:
        return web.json_response({"error": False, "message": "Data message", "data": self.person})

    async def _balance(self, request: web.Request, body: JSON) -> web.Response:
        return web.json_response({"error": False, "message": "Data message", "data": self.balance})

    async def _templates(self, request: web.Request, body: JSON) -> web.Response:
        return web.json_response({"error": False, "message": "Templates", "data": self.templates})

    async def _channels(self, request: web.Request, body: JSON) -> web.Response:
        return web.json_response({"error": False, "message": "Channels", "data": self.channels})

    async def _reply(self, request: web.Request, body: JSON) -> web.Response:
        def text_field(name: str) -> str | None:
            value = body.get(name)
            return value if isinstance(value, str) and value != "" else None

        errors: list[JSON] = []
        room_id = text_field("room_id")
        if room_id is None:
            errors.append(_missing("room_id"))
        kind = text_field("type") or "text"
        if kind not in REPLY_TYPES:
            errors.append(
                {
                    "loc": ["body", "type"],
                    "msg": "value is not a valid enumeration member; permitted: "
                    + ", ".join(f"'{t}'" for t in REPLY_TYPES),
                    "type": "type_error.enum",
                    "ctx": {"enum_values": list(REPLY_TYPES)},
                }
            )
        file_url = text_field("file_url")
        if file_url is not None and not file_url.startswith(("http://", "https://")):
            errors.append(
                {
                    "loc": ["body", "file_url"],
                    "msg": "invalid or missing URL scheme",
                    "type": "value_error.url.scheme",
                }
            )
        upload = body.get("file")
        upload = upload if isinstance(upload, _Upload) else None
        text = text_field("text")
        if kind in REPLY_TYPES and kind != "text" and file_url is None and upload is None:
            errors.append(
                {
                    "loc": ["body", "file_url"],
                    "msg": f"file_url or file is required for type '{kind}'",
                    "type": "value_error.missing",
                }
            )
        if kind == "text" and text is None:
            errors.append(_missing("text"))
        if errors or room_id is None:
            raise _Invalid(errors)
        ref_no = self._ref_no()
        self.replies.append(
            Reply(
                room_id=room_id,
                type=kind,
                text=text,
                file_url=file_url,
                file=upload.data if upload else None,
                filename=upload.filename if upload else None,
                content_type=upload.content_type if upload else None,
                ref_no=ref_no,
                at=time.monotonic(),
            )
        )
        return web.json_response(
            {"error": False, "message": "Send reply message", "data": {"ref_no": ref_no}},
            status=201,
        )

    def _template_problems(
        self, template_id: str, channel_id: str, parameters: JSON | None
    ) -> list[JSON]:
        """A known channel, an approved template, and one parameter per placeholder.

        The bridge's `parameters` shape: per section (header, body, buttons) a list of
        `{"key", "value", "value_text"}`; a media header and a URL button's `{{1}}` take one.
        """
        if channel_id not in {str(c.get("id")) for c in self.channels}:
            return [_problem(["body", "channel_id"], "channel not found")]
        template = next((t for t in self.templates if str(t.get("id")) == template_id), None)
        if template is None:
            return [_problem(["body", "template_id"], "template not found")]
        if str(template.get("status", "")).upper() != "APPROVED":
            return [_problem(["body", "template_id"], "template is not approved")]
        given = parameters or {}
        problems = []
        for section, expected in _placeholders(template).items():
            entries = given.get(section) or []
            if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("value_text"), str) for e in entries
            ):
                problems.append(_problem(["body", "parameters", section], "invalid parameters"))
            elif len(entries) != expected:
                problems.append(
                    _problem(
                        ["body", "parameters", section],
                        f"template {template.get('name')} expects {expected} {section} "
                        f"parameter(s), got {len(entries)}",
                    )
                )
        return problems

    async def customer_answers(self, number: str, text: str) -> JSON:
        """The customer of `number` writes: an inbox callback to `callback_url`; returns it.

        The first answer after a broadcast (or ever) comes from a new room, as on NusaSMS.
        """
        if self.callback_url is None:
            raise RuntimeError("set fake.callback_url to the bridge's inbox callback first")
        digits = number.lstrip("+")
        if digits in self._opens_room or digits not in self.customer_rooms:
            self.customer_rooms[digits] = f"room-{uuid.uuid4().hex[:12]}"
            self._opens_room.discard(digits)
        callback: JSON = {
            "room_id": self.customer_rooms[digits],
            "ref_no": self._ref_no(),
            "text": text,
            "inbox_date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "sender_number": digits,
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.callback_url, json=callback) as response,
        ):
            response.raise_for_status()
        return callback

    async def _broadcast(self, request: web.Request, body: JSON) -> web.Response:
        if request.content_type != "application/json":
            raise _Invalid(
                [{"loc": ["body"], "msg": "field required", "type": "value_error.missing"}]
            )
        required = ("destination", "destination_name", "template_id", "channel_id")
        errors = [_missing(name) for name in required if not isinstance(body.get(name), str)]
        parameters = body.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            errors.append(
                {
                    "loc": ["body", "parameters"],
                    "msg": "value is not a valid dict",
                    "type": "type_error.dict",
                }
            )
        if not errors:
            errors = self._template_problems(body["template_id"], body["channel_id"], parameters)
        if errors:
            raise _Invalid(errors)
        ref_no = self._ref_no()
        self._opens_room.add(body["destination"].lstrip("+"))
        self.broadcasts.append(
            Broadcast(
                destination=body["destination"],
                destination_name=body["destination_name"],
                template_id=body["template_id"],
                channel_id=body["channel_id"],
                parameters=parameters,
                ref_no=ref_no,
                at=time.monotonic(),
            )
        )
        return web.json_response(
            {"error": False, "message": "Send broadcast message", "data": {"ref_no": ref_no}},
            status=201,
        )
