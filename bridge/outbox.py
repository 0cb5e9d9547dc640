"""The outbound worker: operators' replies go to WhatsApp through NusaSMS, in order per room.

A reply is committed before it is sent and marked `sending` while its request is in
flight. What cannot have reached NusaSMS (no connection, 429, 502/503/504) is retried with
backoff for as long as the reply window is open; what may have reached it (a read timeout,
a 500, a crash mid-request) is never resent blindly: it becomes `unknown` and the operator
decides with a Retry button.
The same worker applies delivery statuses, which only ever move forward.
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
from datetime import UTC, datetime, tzinfo

from bridge import texts
from bridge.media import MediaLibrary
from bridge.metrics import Metrics
from bridge.nusasms import (
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
from bridge.pacing import backoff_delay
from bridge.store import Reply, Store, StoreError
from bridge.texts import _
from bridge.workers import RoomWorker

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 30.0
MEDIA_PURGE_SECONDS = 3600.0

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


def status_rank(status: str | None) -> int:
    """Order of delivery statuses; unknown text ranks lowest."""
    if status is None:
        return -1
    try:
        return MessageStatus(status).rank
    except ValueError:
        return -1


def _retry_after(exc: NusaSMSError) -> float:
    """What a 429 asked us to wait, if it said."""
    if isinstance(exc, NusaSMSRateLimitError) and exc.retry_after is not None:
        return exc.retry_after
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
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(concurrency)
        self._store = store
        self._client = client
        self._metrics = metrics or Metrics()
        self._fetch_file = fetch_file
        self._media = media
        self._window_seconds = window_seconds
        self._tz = tz
        self._on_changed = on_changed
        self._clock = clock
        self._rng = rng
        # Replies whose request may have reached NusaSMS in the current attempt.
        self._requested: set[int] = set()
        self._last_purge = 0.0
        self.last_error: str | None = None

    async def _run(self) -> None:
        await self._recover()
        while True:
            try:
                await self._apply_statuses()
                timeout = await self._schedule()
                if (
                    self._media is not None
                    and self._clock() - self._last_purge > MEDIA_PURGE_SECONDS
                ):
                    self._last_purge = self._clock()
                    await self._media.purge()
            except (StoreError, sqlite3.Error, OSError) as exc:
                log.error("outbox cannot read its queue: %s", exc)
                timeout = 1.0
            await self._doze(timeout)

    async def _recover(self) -> None:
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

    async def _schedule(self) -> float | None:
        if self.free_turns:
            due = await self._store.due_replies(self._clock(), self._concurrency + len(self._busy))
            for reply in due:
                if not self.free_turns:
                    break
                self._serve(reply.room_id, self._send_guarded(reply))
        if not self.free_turns:
            return None
        # A busy room's next reply waits for the one in flight, whose end wakes the loop.
        next_at = await self._store.next_reply_attempt_at(self._busy.keys())
        if next_at is None:
            return IDLE_POLL_SECONDS
        return min(IDLE_POLL_SECONDS, max(0.0, next_at - self._clock()))

    async def _send_guarded(self, reply: Reply) -> None:
        try:
            await self._send(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("unexpected error sending reply %d", reply.id)
            with contextlib.suppress(StoreError):
                if reply.id in self._requested:
                    # NusaSMS may have it (e.g. accepted, but the database refused to record
                    # that): never resend blindly, let the operator decide.
                    await self._store.update_reply(
                        reply.id,
                        state="unknown",
                        display="unknown",
                        error=_("internal error after sending it: {error}").format(
                            error=type(exc).__name__
                        ),
                    )
                    self._on_changed()
                else:
                    await self._retry_later(reply, "internal error")
        finally:
            self._requested.discard(reply.id)

    async def _send(self, reply: Reply) -> None:
        room = await self._store.room(reply.room_id)
        if room is None:
            await self._fail(reply, _("unknown room"))
            return
        closes_at = room.last_inbox_at + self._window_seconds
        if self._clock() > closes_at:
            when = datetime.fromtimestamp(closes_at, UTC).astimezone(self._tz)
            await self._fail(
                reply,
                _("the reply window closed at {when} before it could be sent").format(
                    when=texts.strftime(when, "%d %b %H:%M")
                ),
            )
            return
        try:
            file_url, file = await self._attachment(reply)
        except AttachmentRefused as exc:
            await self._fail(reply, str(exc))
            return
        except AttachmentUnavailable as exc:
            await self._retry_later(reply, f"cannot fetch the file from Telegram: {exc}")
            return
        await self._store.update_reply(reply.id, state="sending", attempts=reply.attempts + 1)
        self._requested.add(reply.id)
        started = time.perf_counter()
        try:
            ref_no = await self._client.send_reply(
                reply.room_id,
                type=ReplyMessageType(reply.kind),
                text=reply.text or None,
                file_url=file_url,
                file=file,
            )
        except NusaSMSError as exc:
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
        log.info("reply %d accepted by NusaSMS as %s", reply.id, ref_no)
        await self._store.update_reply(
            reply.id,
            state="sent",
            ref_no=ref_no,
            sent_at=self._clock(),
            display="accepted",
            error=None,
        )
        self._on_changed()
        self._wake.set()  # statuses for this ref_no may already be waiting

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
        if not _refused_outright(exc):
            log.warning("reply %d: outcome unknown (%s)", reply.id, exc)
            await self._store.update_reply(
                reply.id, state="unknown", display="unknown", error=reason
            )
        else:
            log.warning("reply %d refused by NusaSMS: %s", reply.id, exc)
            await self._store.update_reply(reply.id, state="failed", display="failed", error=reason)
        self._on_changed()

    async def _retry_later(
        self, reply: Reply, reason: str, *, attempts: int | None = None, at_least: float = 0.0
    ) -> None:
        attempts = reply.attempts if attempts is None else attempts
        delay = max(backoff_delay(attempts, self._rng), at_least)
        log.warning("reply %d not sent (%s); retrying in %.1f s", reply.id, reason, delay)
        await self._store.update_reply(
            reply.id,
            state="queued",
            attempts=attempts,
            next_attempt_at=self._clock() + delay,
            error=reason,
        )

    async def _fail(self, reply: Reply, reason: str) -> None:
        await self._store.update_reply(reply.id, state="failed", display="failed", error=reason)
        self._on_changed()

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
