"""The outbound worker: operators' replies go to WhatsApp through NusaSMS, in order per room.

A reply is committed before it is sent and marked `sending` while its request is in
flight. What cannot have reached NusaSMS (no connection, 429, 502/503/504) is retried with
backoff for as long as the reply window is open; what may have reached it (a read timeout,
a 500, a crash mid-request) is never resent blindly: it becomes `unknown` and the operator
decides with a Retry button. No wait is longer than `MAX_WAIT_SECONDS` (NusaSMS may ask
for a day), and a reply that waits for more than a minute is shown as waiting.

Holds live in memory: a room that failed waits out its backoff even when the database
refuses to record it, and what NusaSMS did with a request (accepted, with its ref_no) is
kept in memory until the database takes it, so it is neither lost nor sent twice. A
repeating error is logged once, then counted.
The same worker applies delivery statuses, which only ever move forward, and forgets
statuses of messages it never sent after `STATUS_RETENTION_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from bridge.channels.media import MediaLibrary
from bridge.channels.templates import TemplateMessage
from bridge.core import texts
from bridge.core.metrics import Metrics
from bridge.core.pacing import backoff_delay
from bridge.core.store import Reply, Room, Store, StoreError
from bridge.core.texts import _
from bridge.core.workers import ErrorLog, RoomWorker
from bridge.nusasms import (
    BroadcastMessageParam,
    MessageStatus,
    NusaSMSClient,
    NusaSMSError,
    NusaSMSRateLimitError,
    NusaSMSResponseError,
    NusaSMSServerError,
    NusaSMSTimeoutError,
    ReplyFile,
    ReplyMessageType,
)

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 30.0
MEDIA_PURGE_SECONDS = 3600.0
# However long NusaSMS asks us to wait (a Retry-After of a day has been seen), a reply is
# tried again after at most this long.
MAX_WAIT_SECONDS = 300.0
# A reply still unsent this long after it was queued is shown to the operator as waiting.
WAITING_NOTICE_SECONDS = 60.0
# Statuses of ref_nos no reply of ours has (sent from elsewhere) are kept this long, and
# forgotten at most `STATUS_PURGE_BATCH` at a time, every `STATUS_PURGE_SECONDS` (sooner
# while a full batch was found).
STATUS_RETENTION_SECONDS = 7 * 86400.0
STATUS_PURGE_BATCH = 500
STATUS_PURGE_SECONDS = 3600.0
STATUS_PURGE_BUSY_SECONDS = 60.0
# Retrying the record of an outcome the database refused backs off up to this long.
RECORD_RETRY_MAX_SECONDS = 30.0

_DB_ERRORS = (StoreError, sqlite3.Error)

# What the operator is shown for each delivery status.
_STATUS_DISPLAY = {
    MessageStatus.UNSENT: "accepted",
    MessageStatus.QUEUED: "accepted",
    MessageStatus.SENT: "accepted",
    MessageStatus.DELIVERED: "delivered",
    MessageStatus.READ: "read",
    MessageStatus.ABORTED: "failed",
    MessageStatus.FAILED: "failed",
}


class AttachmentUnavailable(Exception):
    """The file could not be fetched from Telegram right now (worth retrying)."""


class AttachmentRefused(Exception):
    """The file can never be fetched (too large, gone); the message says why."""


FetchFile = Callable[[str], Awaitable[bytes]]
# A request ready to be made (returns the ref_no), and the media URL it publishes, if any.
_Prepared = tuple[Callable[[], Awaitable[str]], str | None]
TEMPLATE = "template"
# A file replied to as a template's header media, served as (type, name) by its kind: a
# Telegram photo is a JPEG, and WhatsApp takes documents in template headers as PDF.
_HEADER_MEDIA = {
    "image": ("image/jpeg", "header.jpg"),
    "video": ("video/mp4", "header.mp4"),
    "document": ("application/pdf", "header.pdf"),
}


@dataclass(slots=True)
class _Unrecorded:
    """What became of a reply, not yet in the database because it refused the write."""

    room_id: str
    fields: dict[str, Any] = field(default_factory=dict)


def status_rank(status: str | None) -> int:
    """Order of delivery statuses; unknown text ranks lowest."""
    if status is None:
        return -1
    try:
        return MessageStatus(status).rank
    except ValueError:
        return -1


def _retry_after(exc: NusaSMSError) -> float:
    """What a 429 asked us to wait, if it said, capped at `MAX_WAIT_SECONDS`."""
    if isinstance(exc, NusaSMSRateLimitError) and exc.retry_after is not None:
        return min(MAX_WAIT_SECONDS, max(0.0, exc.retry_after))
    return 0.0


class Outbox(RoomWorker):
    """Owns the outbound worker: sends queued replies through NusaSMS, applies statuses."""

    name = "outbox"

    def __init__(
        self,
        store: Store,
        client: NusaSMSClient,
        *,
        fetch_file: FetchFile,
        media: MediaLibrary | None,
        window_seconds: float,
        tz: tzinfo,
        on_changed: Callable[[], None],
        concurrency: int = 4,
        pending_max_age: float = 24 * 3600.0,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(concurrency, clock=clock)
        self._store = store
        self._client = client
        # Told of every reply request's outcome (None: accepted), e.g. for /healthz to see
        # an API key NusaSMS rejects.
        self.on_outcome: Callable[[BaseException | None], None] = lambda _: None
        self._metrics = metrics or Metrics()
        self._fetch_file = fetch_file
        self._media = media
        self._window_seconds = window_seconds
        self._pending_max_age = pending_max_age
        self._tz = tz
        self._on_changed = on_changed
        self._clock = clock
        self._rng = rng
        self._errors = ErrorLog(log)
        # Replies whose request may have reached NusaSMS in the current attempt.
        self._requested: set[int] = set()
        # Outcomes the database refused, by reply id, oldest first; retried with backoff.
        self._unrecorded: dict[int, _Unrecorded] = {}
        self._unrecorded_failures = 0
        self._unrecorded_due = 0.0
        # When a housekeeping step (by name) is due next; a failed step backs off here.
        self._due: dict[str, float] = {}
        self.last_error: str | None = None

    def unavailable(self) -> set[str]:
        """Rooms not to be served now; also those with an outcome not yet recorded."""
        return super().unavailable() | {u.room_id for u in self._unrecorded.values()}

    @property
    def unrecorded(self) -> int:
        """How many outcomes wait in memory for the database to take them."""
        return len(self._unrecorded)

    async def _run(self) -> None:
        while await self._step("recover", self._recover) is not True:
            await self._doze(self._sleep_until([self._due.get("recover")], IDLE_POLL_SECONDS))
        while True:
            wake_at: list[float | None] = [
                await self._step("record", self._record_unrecorded),
                await self._step("statuses", self._apply_statuses),
                await self._step("waiting", self._mark_waiting),
                await self._step("purge", self._purge),
                await self._step("pending", self._pending),
                await self._step("queue", self._schedule),
            ]
            await self._doze(self._sleep_until(wake_at, IDLE_POLL_SECONDS))

    async def _step(self, name: str, action: Callable[[], Awaitable[Any]]) -> Any:
        """Run one part of the loop unless it is backing off; a failure backs it off.

        Returns what the action returned, or (while failing) when it is due again: a
        database that refuses every write slows the loop down instead of spinning it.
        """
        now = self._clock()
        due = self._due.get(name)
        if due is not None and due > now:
            return due
        self._due.pop(name, None)  # an action may set its own next time
        try:
            result = await action()
        except (*_DB_ERRORS, OSError) as exc:
            failures = self._errors.failures(name)
            self._errors.failed(name, "outbox: %s failed: %s", name, exc)
            self._due[name] = now + backoff_delay(failures, self._rng)
            return self._due[name]
        self._errors.recovered(name, "outbox: %s works again", name)
        return result

    async def _recover(self) -> bool:
        """A reply left `sending` by a crash may or may not have reached NusaSMS."""
        for reply in await self._store.interrupted_replies():
            log.warning("reply %d was in flight when the bridge stopped: outcome unknown", reply.id)
            await self._store.update_reply(
                reply.id,
                state="unknown",
                display="unknown",
                error=_("the bridge stopped while sending it"),
            )
        self._on_changed()
        return True

    async def _schedule(self) -> float | None:
        """Start turns for due rooms; return when the next one is due (None: unknown)."""
        if self.free_turns:
            due = await self._store.due_replies(
                self._clock(), self._concurrency, self.unavailable()
            )
            for reply in due:
                if not self.free_turns:
                    break
                self._serve(reply.room_id, self._send_guarded(reply))
        if not self.free_turns:
            return None  # a finishing turn wakes the loop
        # A busy or held room's next reply waits for it; its end wakes the loop.
        return await self._store.next_reply_attempt_at(self.unavailable())

    async def _mark_waiting(self) -> float | None:
        """Show replies that waited longer than a minute as waiting, once each."""
        now = self._clock()
        earliest = await self._store.mark_waiting_replies(now - WAITING_NOTICE_SECONDS)
        # The earliest unmarked reply waits its minute from when it was queued; one queued
        # from now on, from now. Nothing else can come due before.
        queued = now if earliest is None else min(now, earliest)
        self._due["waiting"] = queued + WAITING_NOTICE_SECONDS
        self._on_changed()
        return self._due["waiting"]

    async def _pending(self) -> float | None:
        """Drop pending replies kept too long, then queue those whose window is open again.

        Dropping comes first: a reply older than `pending_max_age` is never sent late, even
        when the customer writes just now. Returns when the oldest one left expires.
        """
        if await self._store.oldest_pending_at() is None:
            return None  # the usual case: nothing to write (a read, on the reader)
        now = self._clock()
        expired = await self._store.expire_pending(
            now - self._pending_max_age,
            _("the customer did not write again within {hours:g} hours, so it was not sent").format(
                hours=self._pending_max_age / 3600
            ),
        )
        released = await self._store.release_pending(now, self._window_seconds)
        if expired:
            log.info("%d pending replies expired", expired)
        if released:
            log.info("%d pending replies queued: their customers wrote again", released)
        if expired or released:
            self._on_changed()
        oldest = await self._store.oldest_pending_at()
        return None if oldest is None else oldest + self._pending_max_age

    async def _purge(self) -> float:
        """Forget old statuses no reply of ours has, and expired media; a batch at a time."""
        now = self._clock()
        purged = await self._store.purge_orphan_statuses(
            now - STATUS_RETENTION_SECONDS, STATUS_PURGE_BATCH
        )
        if purged:
            log.info("forgot %d status reports of messages the bridge did not send", purged)
        if self._media is not None:
            await self._media.purge()
        busy = purged >= STATUS_PURGE_BATCH
        self._due["purge"] = now + (STATUS_PURGE_BUSY_SECONDS if busy else STATUS_PURGE_SECONDS)
        return self._due["purge"]

    async def stop(self, grace: float = 3.0) -> None:
        """Stop; outcomes still only in memory get one last chance to be recorded."""
        await super().stop(grace)
        if not self._unrecorded:
            return
        self._unrecorded_due = 0.0
        await self._record_unrecorded()
        for reply_id, entry in self._unrecorded.items():
            log.error(
                "reply %d: could not record that it ended %s%s; after a restart it shows as "
                "an unknown outcome",
                reply_id,
                entry.fields.get("state"),
                f" as {entry.fields['ref_no']}" if entry.fields.get("ref_no") else "",
            )

    async def _send_guarded(self, reply: Reply) -> None:
        key = f"room {reply.room_id}"
        try:
            await self._send(reply)
        except asyncio.CancelledError:
            raise
        except (*_DB_ERRORS, OSError) as exc:  # the database, or a full disk
            if reply.id in self._requested:  # outcomes are recorded by _record: a bug
                log.exception("unexpected database error after sending reply %d", reply.id)
                await self._record(
                    reply,
                    state="unknown",
                    display="unknown",
                    error=_("internal error after sending it"),
                )
                return
            # Nothing was sent: the room waits in memory, since the database refused.
            delay = backoff_delay(self._errors.failures(key), self._rng)
            self.hold(reply.room_id, self._clock() + delay)
            self._errors.failed(
                key, "reply %d to room %s not sent: database: %s", reply.id, reply.room_id, exc
            )
        except Exception as exc:
            log.exception("unexpected error sending reply %d", reply.id)
            if reply.id in self._requested:
                # NusaSMS may have it: never resend blindly, let the operator decide.
                await self._record(
                    reply,
                    state="unknown",
                    display="unknown",
                    error=_("internal error after sending it: {error}").format(
                        error=type(exc).__name__
                    ),
                )
            else:
                await self._retry_later(reply, _("internal error"))
        finally:
            self._requested.discard(reply.id)

    async def _send(self, reply: Reply) -> None:
        room = await self._store.room(reply.room_id)
        if room is None:
            await self._fail(reply, _("unknown room"))
            return
        if reply.kind == TEMPLATE:
            prepared = await self._prepare_template(reply, room)
        else:
            prepared = await self._prepare_reply(reply, room)
        if prepared is None:
            return
        request, file_url = prepared
        await self._store.update_reply(reply.id, state="sending", attempts=reply.attempts + 1)
        self._requested.add(reply.id)
        started = time.perf_counter()
        try:
            ref_no = await request()
        except NusaSMSError as exc:
            self.on_outcome(exc)
            self._metrics.api_errors.labels("nusasms", type(exc).__name__).inc()
            if file_url is not None and self._media is not None and _refused_outright(exc):
                # Every attempt publishes a fresh copy; one NusaSMS never took is not kept
                # (an outage retried for hours would otherwise fill the disk). Best effort:
                # what stays behind expires anyway.
                with contextlib.suppress(StoreError, OSError):
                    await self._media.withdraw(file_url)
            await self._refused(reply, exc)
            return
        finally:
            self._metrics.send_seconds.labels("nusasms").observe(time.perf_counter() - started)
        if reply.kind == TEMPLATE:
            log.info(
                "template %d to %s accepted by NusaSMS as %s (sent by operator %s)",
                reply.id,
                reply.room_id,
                ref_no,
                reply.operator_id,
            )
        else:
            log.info("reply %d accepted by NusaSMS as %s", reply.id, ref_no)
        self.on_outcome(None)
        self.release(reply.room_id)
        self._errors.recovered(
            f"room {reply.room_id}", "replies to room %s go out again", reply.room_id
        )
        await self._record(
            reply,
            state="sent",
            ref_no=ref_no,
            sent_at=self._clock(),
            display="accepted",
            error=None,
        )
        self._wake.set()  # statuses for this ref_no may already be waiting

    async def _prepare_reply(self, reply: Reply, room: Room) -> _Prepared | None:
        """The reply request, or None when it cannot be made now (recorded why)."""
        closes_at = room.last_inbox_at + self._window_seconds
        if self._clock() > closes_at:
            when = datetime.fromtimestamp(closes_at, UTC).astimezone(self._tz)
            await self._fail(
                reply,
                _("the reply window closed at {when} before it could be sent").format(
                    when=texts.strftime(when, "%d %b %H:%M")
                ),
            )
            return None
        attachment = await self._fetched(reply, self._attachment(reply))
        if attachment is None:
            return None
        file_url, file = attachment

        def request() -> Awaitable[str]:
            return self._client.send_reply(
                # One topic per customer: the reply goes to their latest NusaSMS room.
                room.reply_room or reply.room_id,
                type=ReplyMessageType(reply.kind),
                text=reply.text or None,
                file_url=file_url,
                file=file,
            )

        return request, file_url

    async def _prepare_template(self, reply: Reply, room: Room) -> _Prepared | None:
        """The broadcast request of a template message (no reply window applies)."""
        try:
            message = TemplateMessage.from_json(reply.template or "")
        except ValueError as exc:
            await self._fail(
                reply, _("the stored template is unreadable: {error}").format(error=exc)
            )
            return None
        media_url: str | None = None
        if message.header_file_id is not None:
            if self._media is None:
                await self._fail(
                    reply,
                    _(
                        "a file as header media needs nusasms.media_mode: url "
                        "(give the media's URL instead)"
                    ),
                )
                return None
            fetched = await self._fetched(
                reply, self._header_media(message.header_file_id, message.header_kind)
            )
            if fetched is None:
                return None
            media_url = fetched[0]
        param = BroadcastMessageParam(
            destination=(room.number or room.sender_number).removeprefix("+"),
            destination_name=room.name or room.number or room.sender_number,
            template_id=message.template_id,
            channel_id=message.channel_id,
            parameters=message.parameters(media_url) or None,
        )

        def request() -> Awaitable[str]:
            return self._client.send_broadcast(param)

        return request, media_url

    async def _fetched(
        self, reply: Reply, fetching: Awaitable[tuple[str | None, ReplyFile | None]]
    ) -> tuple[str | None, ReplyFile | None] | None:
        """A file from Telegram, or None when it cannot be had (recorded why)."""
        try:
            return await fetching
        except AttachmentRefused as exc:
            await self._fail(reply, str(exc))
        except AttachmentUnavailable as exc:
            await self._retry_later(
                reply, _("cannot fetch the file from Telegram: {error}").format(error=exc)
            )
        return None

    async def _header_media(
        self, file_id: str, kind: str | None
    ) -> tuple[str | None, ReplyFile | None]:
        assert self._media is not None
        content = await self._fetch_file(file_id)
        content_type, filename = _HEADER_MEDIA.get(kind or "", _HEADER_MEDIA["document"])
        url = await self._media.publish(content, content_type=content_type, filename=filename)
        return url, None

    async def _record(self, reply: Reply, **fields: Any) -> None:
        """Write what became of a reply; if the database refuses, keep it in memory.

        It is written later (`_record_unrecorded`), with backoff; meanwhile the room is
        not served, so nothing of it is sent again or out of order.
        """
        if reply.id not in self._unrecorded:
            try:
                await self._store.update_reply(reply.id, **fields)
            except _DB_ERRORS as exc:
                self._errors.failed(
                    "unrecorded",
                    "cannot record what became of reply %d (%s); kept in memory, retrying",
                    reply.id,
                    exc,
                )
            else:
                self._on_changed()
                return
        entry = self._unrecorded.setdefault(reply.id, _Unrecorded(reply.room_id))
        entry.fields.update(fields)
        if self._unrecorded_due <= self._clock():
            self._unrecorded_due = self._clock() + self._record_backoff()
        self._wake.set()

    def _record_backoff(self) -> float:
        return min(RECORD_RETRY_MAX_SECONDS, backoff_delay(self._unrecorded_failures, self._rng))

    async def _record_unrecorded(self) -> float | None:
        """Write outcomes the database refused before, oldest first, while it takes them."""
        if not self._unrecorded:
            return None
        now = self._clock()
        if self._unrecorded_due > now:
            return self._unrecorded_due
        for reply_id, entry in list(self._unrecorded.items()):
            try:
                await self._store.update_reply(reply_id, **entry.fields)
            except _DB_ERRORS as exc:
                self._unrecorded_failures += 1
                self._unrecorded_due = now + self._record_backoff()
                self._errors.failed(
                    "unrecorded",
                    "cannot record what became of %d replies yet (%s); retrying in %.1f s",
                    len(self._unrecorded),
                    exc,
                    self._unrecorded_due - now,
                )
                return self._unrecorded_due
            del self._unrecorded[reply_id]
            self._on_changed()
        self._unrecorded_failures = 0
        self._errors.recovered("unrecorded", "every reply's outcome is recorded again")
        return now  # the rooms held for them may go on

    async def _attachment(self, reply: Reply) -> tuple[str | None, ReplyFile | None]:
        if reply.kind == ReplyMessageType.TEXT or reply.file_id is None:
            return None, None
        content = await self._fetch_file(reply.file_id)
        filename = reply.file_name or "file"
        content_type = reply.file_mime or "application/octet-stream"
        if self._media is None:
            return None, ReplyFile(filename, content, content_type)
        url = await self._media.publish(content, content_type=content_type, filename=filename)
        return url, None

    async def _refused(self, reply: Reply, exc: NusaSMSError) -> None:
        reason = exc.reason()
        self.last_error = f"{type(exc).__name__}: {exc}"
        if exc.retry_safe:
            # However long NusaSMS is away, the reply waits (and the ones behind it): the
            # reply window, checked before every attempt, is what ends the waiting.
            await self._retry_later(
                reply, reason, attempts=reply.attempts + 1, at_least=_retry_after(exc)
            )
            return
        self.release(reply.room_id)
        if not _refused_outright(exc):
            log.warning("reply %d: outcome unknown (%s)", reply.id, exc)
            await self._record(reply, state="unknown", display="unknown", error=reason)
        else:
            log.warning("reply %d refused by NusaSMS: %s", reply.id, exc)
            await self._record(reply, state="failed", display="failed", error=reason)

    async def _retry_later(
        self, reply: Reply, reason: str, *, attempts: int | None = None, at_least: float = 0.0
    ) -> None:
        """Queue the reply again after a backoff (at least `at_least`, at most the cap)."""
        key = f"room {reply.room_id}"
        attempts = reply.attempts if attempts is None else attempts
        growth = max(attempts, self._errors.failures(key))
        delay = min(MAX_WAIT_SECONDS, max(backoff_delay(growth, self._rng), at_least))
        next_at = self._clock() + delay
        # If the write below fails, the outcome waits in memory and keeps the room out of
        # turn (`unavailable`) until it is written, backoff included: no spin either way.
        self._errors.failed(
            key,
            "reply %d to room %s not sent (%s); retrying in %.1f s",
            reply.id,
            reply.room_id,
            reason,
            delay,
        )
        await self._record(
            reply, state="queued", attempts=attempts, next_attempt_at=next_at, error=reason
        )

    async def _fail(self, reply: Reply, reason: str) -> None:
        await self._record(reply, state="failed", display="failed", error=reason)

    async def _apply_statuses(self) -> None:
        pending = await self._store.pending_statuses()
        if not pending:
            return
        best: dict[int, str | None] = {}
        for event in pending:
            current = best.get(event.reply_id, event.reply_status)
            if status_rank(event.status) > status_rank(current):
                best[event.reply_id] = event.status
            else:
                best.setdefault(event.reply_id, current)
        changes = []
        for reply_id, status in best.items():
            original = next(e.reply_status for e in pending if e.reply_id == reply_id)
            if status is not None and status != original:
                display = _STATUS_DISPLAY[MessageStatus(status)]
                error = (
                    _("WhatsApp reports the message {status}").format(status=status)
                    if display == "failed"
                    else None
                )
                changes.append((reply_id, status, display, error))
        await self._store.apply_statuses([e.event_id for e in pending], changes)
        if changes:
            self._on_changed()


def _refused_outright(exc: NusaSMSError) -> bool:
    """NusaSMS did not take the request (so it will never fetch the file it links to).

    Otherwise it may have: no answer, a 5xx, or a 2xx whose body we cannot read (without an
    explicit `"error": true`, a 2xx means the API took it).
    """
    if exc.retry_safe:
        return True
    if isinstance(exc, NusaSMSTimeoutError | NusaSMSServerError):
        return False
    if isinstance(exc, NusaSMSResponseError) and exc.status is not None and exc.status < 300:
        return _says_error(exc.body)
    return True


def _says_error(body: str | None) -> bool:
    try:
        parsed = json.loads(body or "")
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("error") is True
