"""The sandbox's NusaSMS: the emulator plus the customers' phones it serves.

`SandboxNusaSMS` is `FakeNusaSMS` with customers behind it, so it behaves like NusaSMS seen
from the bridge:

* A customer writing (`customer_writes`) opens or refreshes their room (one per number,
  the same id for a number across restarts) and is POSTed to the bridge's inbox callback
  (`callback_base` + ``/inbox``), with ``room_id``, ``ref_no``, ``text``, ``inbox_date``
  (Jakarta time) and ``sender_number``, as the API reference shows it.
* A reply must name a room that exists (else ``422``, ``room_id`` "room not found") whose
  24-hour window is open (else ``422``, ``room_id`` "room is expired"); the window runs from
  the customer's last message and can be closed at once (`expire_window`).
* Every accepted reply or template broadcast goes through ``queued`` → ``sent`` → ``delivered`` →
  ``read`` with a delay between steps (`delays`), each a status callback (``ref_no``,
  ``status``, ``status_date``); ``read`` comes by itself when `auto_read` is on, else when
  the customer reads (`mark_read`, or by writing again). With `failure_rate`, that share of
  messages ends ``failed`` instead. A reply's ``file_url`` is fetched before ``sent``, as
  NusaSMS does; a file it cannot fetch fails the message.
* Whatever happens is published to `subscribe`rs (the page's server-sent events).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from bridge.sandbox.nusasms import DEFAULT_API_KEY, JSON, FakeNusaSMS, _Invalid

__all__ = ["Message", "Phone", "SandboxNusaSMS", "normalize_number"]

JAKARTA = ZoneInfo("Asia/Jakarta")
# Rooms are derived from the number, so a restarted sandbox finds the bridge's rooms again.
_ROOMS = uuid.UUID("6f1d9a3e-2b7c-4e58-9a41-5c3b2d7e8f10")
_CALLBACK_TRIES = 4
_CALLBACK_TIMEOUT = aiohttp.ClientTimeout(total=10)
_PLACEHOLDER = re.compile(r"\{\{\s*([^}\s]+)\s*\}\}")
# What a file's Content-Type becomes on the page when the fetch did not say.
_DEFAULT_TYPES = {
    "image": "image/jpeg",
    "video": "video/mp4",
    "audio": "audio/mpeg",
    "voice": "audio/ogg",
    "document": "application/octet-stream",
}


def normalize_number(raw: str) -> str:
    """A customer's number as NusaSMS writes ``sender_number``: digits, Indonesian 62 prefix.

    ``0812…`` and ``+62 812-…`` both become ``62812…``; anything that is not a number of 8 to
    15 digits raises ValueError.
    """
    digits = re.sub(r"[\s().-]", "", raw.strip()).removeprefix("+")
    if digits.startswith("0"):
        digits = "62" + digits[1:]
    if not digits.isdigit() or not 8 <= len(digits) <= 15:
        raise ValueError(f"not a phone number: {raw!r}")
    return digits


def room_of(number: str) -> str:
    """The room id NusaSMS gives this customer in the sandbox."""
    return str(uuid.uuid5(_ROOMS, number))


@dataclass
class Phone:
    """One simulated customer."""

    number: str
    name: str
    room_id: str
    last_inbox_at: float | None = None
    # The "expire now" button: closed until the customer writes again.
    expired: bool = False

    def window_closes_at(self, window_seconds: float) -> float | None:
        """When replies stop being accepted (epoch seconds); None when it is closed."""
        if self.last_inbox_at is None or self.expired:
            return None
        return self.last_inbox_at + window_seconds


@dataclass
class Message:
    """One message on a customer's phone, either way."""

    id: int
    number: str
    direction: str  # "in": the customer wrote it; "out": an operator's reply or a template
    kind: str  # text, image, document, video, audio, voice
    text: str | None
    at: float
    ref_no: str
    # in: sending, received, refused, unreachable; out: queued, sent, delivered, read, failed
    status: str
    template: str | None = None
    file: bytes | None = None
    content_type: str | None = None
    filename: str | None = None
    error: str | None = None
    history: list[str] = field(default_factory=list)

    def public(self) -> JSON:
        """What the page sees of it."""
        return {
            "id": self.id,
            "number": self.number,
            "direction": self.direction,
            "kind": self.kind,
            "text": self.text,
            "at": self.at,
            "ref_no": self.ref_no,
            "status": self.status,
            "template": self.template,
            "media_url": f"/sandbox/media/{self.id}" if self.file is not None else None,
            "content_type": self.content_type,
            "filename": self.filename,
            "error": self.error,
        }


class SandboxNusaSMS(FakeNusaSMS):
    """The NusaSMS emulator with customers' phones, calling the bridge back."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        port: int | None = None,
        callback_base: str | None = None,
        window_seconds: float = 24 * 3600,
        delays: tuple[float, float, float] = (1.0, 2.0, 2.5),
        failure_rate: float = 0.0,
        auto_read: bool = True,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(api_key=api_key)
        self._port = port
        # e.g. http://127.0.0.1:8080/callbacks/<secret>/wa; None: nobody is called back
        self.callback_base = callback_base
        self.window_seconds = window_seconds
        self.delays = delays
        self.failure_rate = failure_rate
        self.auto_read = auto_read
        self.clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - a simulated failure, not a secret
        self.phones: dict[str, Phone] = {}
        self.messages: list[Message] = []
        self._ids = itertools.count(1)
        self._by_ref: dict[str, Message] = {}
        self._subscribers: set[asyncio.Queue[str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    # ----------------------------------------------------------------- lifecycle

    def _build_app(self) -> web.Application:
        from bridge.sandbox.page import add_routes

        app = super()._build_app()
        add_routes(app, self)
        return app

    async def start(self) -> None:
        """Listen (the API and the page) on 127.0.0.1."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=_CALLBACK_TIMEOUT)
        await super().start()

    async def stop(self) -> None:
        """Stop listening, cancel the messages still on their way, close the client."""
        await super().stop()
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def page_url(self) -> str:
        """The customer's page."""
        return f"http://127.0.0.1:{self.port}/"

    # ---------------------------------------------------------------- customers

    def phone(self, number: str, name: str | None = None) -> Phone:
        """The phone of this number (normalized), created on first use; a name renames it."""
        number = normalize_number(number)
        phone = self.phones.get(number)
        if phone is None:
            phone = self.phones[number] = Phone(number, name or number, room_of(number))
            self._publish({"type": "phone", "phone": self.phone_json(phone)})
        elif name and name != phone.name:
            phone.name = name
            self._publish({"type": "phone", "phone": self.phone_json(phone)})
        return phone

    def phone_json(self, phone: Phone) -> JSON:
        """What the page sees of a phone."""
        return {
            "number": phone.number,
            "name": phone.name,
            "room_id": phone.room_id,
            "window_closes_at": phone.window_closes_at(self.window_seconds),
        }

    def state(self) -> JSON:
        """Everything the page shows, for its first paint."""
        return {
            "phones": [self.phone_json(p) for p in self.phones.values()],
            "messages": [m.public() for m in self.messages],
            "auto_read": self.auto_read,
            "now": self.clock(),
        }

    async def customer_writes(self, number: str, text: str, *, name: str | None = None) -> Message:
        """The customer sends a WhatsApp message: the bridge's inbox callback is called."""
        phone = self.phone(number, name)
        now = self.clock()
        phone.last_inbox_at = now
        phone.expired = False
        self._publish({"type": "phone", "phone": self.phone_json(phone)})
        # Answering shows the customer saw what came before.
        for earlier in self._out_of(phone.number):
            if earlier.status == "delivered":
                await self._advance(earlier, "read")
        message = self._new_message(phone.number, "in", "text", text, status="sending")
        body = {
            "room_id": phone.room_id,
            "ref_no": message.ref_no,
            "text": text,
            "inbox_date": _jakarta(now),
            "sender_number": phone.number,
        }
        outcome = await self._call_back("inbox", body)
        message.status = "received" if outcome == 200 else "refused" if outcome else "unreachable"
        if outcome not in (200, None):
            message.error = f"the bridge answered {outcome}"
        self._publish({"type": "message", "message": message.public()})
        return message

    def expire_window(self, number: str) -> None:
        """Close the customer's 24-hour window now: replies get the API's 422 until they write."""
        phone = self.phone(number)
        phone.expired = True
        self._publish({"type": "phone", "phone": self.phone_json(phone)})

    async def mark_read(self, number: str) -> int:
        """The customer reads their chat: every delivered message turns read; how many did."""
        read = 0
        for message in self._out_of(normalize_number(number)):
            if message.status == "delivered":
                await self._advance(message, "read")
                read += 1
        return read

    def set_auto_read(self, on: bool) -> None:
        """Whether delivered messages turn read by themselves."""
        self.auto_read = on
        self._publish({"type": "auto_read", "auto_read": on})

    def message(self, message_id: int) -> Message | None:
        """A message by its id on the page."""
        return next((m for m in self.messages if m.id == message_id), None)

    def _out_of(self, number: str) -> Iterator[Message]:
        return (m for m in self.messages if m.number == number and m.direction == "out")

    # ------------------------------------------------------------- the API side

    async def _reply(self, request: web.Request, body: JSON) -> web.Response:
        room_id = body.get("room_id")
        if isinstance(room_id, str) and room_id:
            phone = next((p for p in self.phones.values() if p.room_id == room_id), None)
            if phone is None:
                raise _Invalid([_room_problem("room not found", "value_error.room_not_found")])
            closes_at = phone.window_closes_at(self.window_seconds)
            if closes_at is None or self.clock() >= closes_at:
                raise _Invalid(
                    [
                        _room_problem(
                            "room is expired: the customer has not written in the last "
                            f"{self.window_seconds / 3600:g} hours",
                            "value_error.room_expired",
                        )
                    ]
                )
        response = await super()._reply(request, body)
        reply = self.replies[-1]
        number = next(p.number for p in self.phones.values() if p.room_id == reply.room_id)
        message = self._new_message(
            number, "out", reply.type, reply.text, status="queued", ref_no=reply.ref_no
        )
        if reply.file is not None:
            message.file = reply.file
            message.filename = reply.filename
            message.content_type = reply.content_type or _DEFAULT_TYPES.get(reply.type)
        self._spawn(self._deliver(message, reply.file_url))
        return response

    async def _broadcast(self, request: web.Request, body: JSON) -> web.Response:
        response = await super()._broadcast(request, body)
        broadcast = self.broadcasts[-1]
        try:
            phone = self.phone(broadcast.destination, broadcast.destination_name or None)
        except ValueError:
            # NusaSMS takes any destination; nobody's phone shows it, and it never arrives.
            return response
        template = next((t for t in self.templates if t.get("id") == broadcast.template_id), None)
        name = str(template.get("name")) if template else broadcast.template_id
        text = _render(template, broadcast.parameters) if template else None
        message = self._new_message(
            phone.number, "out", "text", text, status="queued", ref_no=broadcast.ref_no
        )
        message.template = name
        self._spawn(self._deliver(message, None))
        return response

    # ------------------------------------------------------------ the lifecycle

    def _new_message(
        self,
        number: str,
        direction: str,
        kind: str,
        text: str | None,
        *,
        status: str,
        ref_no: str | None = None,
    ) -> Message:
        message = Message(
            id=next(self._ids),
            number=number,
            direction=direction,
            kind=kind,
            text=text,
            at=self.clock(),
            ref_no=ref_no or self._ref_no(),
            status=status,
            history=[status],
        )
        self.messages.append(message)
        self._by_ref[message.ref_no] = message
        self._publish({"type": "message", "message": message.public()})
        return message

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, message: Message, file_url: str | None) -> None:
        to_sent, to_delivered, to_read = self.delays
        queued = {"ref_no": message.ref_no, "status": "queued", "status_date": _jakarta(message.at)}
        await self._call_back("status", queued)
        await asyncio.sleep(to_sent)
        if file_url is not None:
            try:
                await self._fetch_file(message, file_url)
            except (aiohttp.ClientError, TimeoutError) as exc:
                message.error = f"could not fetch file_url: {exc or type(exc).__name__}"
                await self._advance(message, "failed")
                return
        if self._rng.random() < self.failure_rate:
            message.error = "simulated failure (failure rate)"
            await self._advance(message, "failed")
            return
        await self._advance(message, "sent")
        await asyncio.sleep(to_delivered)
        await self._advance(message, "delivered")
        if self.auto_read:
            await asyncio.sleep(to_read)
            if self.auto_read and message.status == "delivered":
                await self._advance(message, "read")

    async def _fetch_file(self, message: Message, url: str) -> None:
        assert self._session is not None
        async with self._session.get(url) as response:
            response.raise_for_status()
            message.file = await response.read()
            message.content_type = response.content_type
            if response.content_type in ("application/octet-stream", ""):
                message.content_type = _DEFAULT_TYPES.get(message.kind)
        message.filename = url.rsplit("/", 1)[-1] or None
        if response.content_disposition and response.content_disposition.filename:
            message.filename = response.content_disposition.filename

    async def _advance(self, message: Message, status: str) -> None:
        message.status = status
        message.history.append(status)
        self._publish({"type": "message", "message": message.public()})
        body = {"ref_no": message.ref_no, "status": status, "status_date": _jakarta(self.clock())}
        await self._call_back("status", body)

    async def _call_back(self, kind: str, body: JSON) -> int | None:
        """POST a callback to the bridge as NusaSMS does, retrying a refusal a few times.

        The last HTTP status, or None when the bridge could not be reached (or is not set).
        """
        if self.callback_base is None or self._session is None:
            return None
        status: int | None = None
        for attempt in range(_CALLBACK_TRIES):
            try:
                async with self._session.request(
                    "POST", f"{self.callback_base}/{kind}", json=body
                ) as response:
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = None
            # 4xx is the bridge's final word on this body; a 5xx or no answer is worth a retry.
            if status is not None and status < 500:
                return status
            await asyncio.sleep(0.5 * 2**attempt)
        return status

    # ------------------------------------------------------------ live updates

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[str]]:
        """A queue of events (JSON texts) for as long as the block runs."""
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    def _publish(self, event: JSON) -> None:
        text = json.dumps(event)
        for queue in self._subscribers:
            queue.put_nowait(text)


def _room_problem(msg: str, kind: str) -> JSON:
    return {"loc": ["body", "room_id"], "msg": msg, "type": kind}


def _jakarta(epoch: float) -> str:
    """NusaSMS's date format, in its zone."""
    return dt.datetime.fromtimestamp(epoch, JAKARTA).strftime("%Y-%m-%d %H:%M:%S")


def _render(template: JSON, parameters: JSON | None) -> str:
    """A template's body with its ``{{key}}`` placeholders filled from ``parameters.body``."""
    values: dict[str, str] = {}
    for item in (parameters or {}).get("body") or []:
        if isinstance(item, dict) and "key" in item:
            values[str(item["key"])] = str(item.get("value_text", item.get("value", "")))
    parts = [template.get("header"), template.get("body"), template.get("footer")]
    text = "\n\n".join(str(p) for p in parts if p)
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)
