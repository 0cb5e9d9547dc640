"""The inbound worker: waiting customer messages go into their topics, in order, per room.

Rooms take turns in a line: a room joins it when its oldest waiting message arrived, and
after each post it got it goes to the back, so a customer with fifteen parts waiting does
not hold the group's budget while another's one-line message waits. A turn posts the room's
next post (as many of its waiting messages as fit in one Telegram message, or the next part
of a long one). A room whose post fails backs off on its own (exponential, with jitter),
held in memory, so it waits even when the database cannot record its failure; its messages
stay queued, in order, until Telegram takes them.

Telegram's answer is remembered until the database has recorded it: when that write fails
the room backs off and its next turn retries only the write, never the post. A message
Telegram refuses for good ("message is too long", "can't parse entities") is moved aside
with a visible notice in its topic, so the room's later messages flow.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from telegram import Message
from telegram.error import BadRequest, TelegramError

from bridge.core.metrics import Metrics
from bridge.core.pacing import BACKOFF_BASE_SECONDS, backoff_delay
from bridge.core.store import Inbound, Room, Store, StoreError
from bridge.core.texts import _
from bridge.core.workers import ErrorLog, RoomWorker
from bridge.group import render
from bridge.group.topics import Topics, is_topic_closed, is_topic_gone

log = logging.getLogger(__name__)

# Without any wake-up the loop still looks at the queue this often.
IDLE_POLL_SECONDS = 30.0
# At shutdown, what Telegram took but the database has not recorded gets this long to be.
RECORD_AT_STOP_SECONDS = 2.0
# A refused message is shown as plain text in its notice, cut to fit one Telegram message.
_NOTICE_TEXT_LIMIT = 3500


@dataclass(frozen=True, slots=True)
class _Outcome:
    """A post Telegram took whose record in the database may still be missing."""

    ids: tuple[int, ...]  # the messages it completes (or refuses)
    message_id: int
    at: float
    part_of: int | None = None  # a part of this split message: its parts_done becomes `parts`
    parts: int = 0
    refused: str | None = None


class Relay(RoomWorker):
    """Owns the inbound worker: posts waiting customer messages into their topics."""

    name = "relay"

    def __init__(
        self,
        store: Store,
        topics: Topics,
        *,
        tz: tzinfo,
        concurrency: int = 4,
        batch: int = 50,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(concurrency, clock=clock)
        self._store = store
        self._topics = topics
        self._metrics = metrics or Metrics()
        self._tz = tz
        self._batch = batch
        self._clock = clock
        self._rng = rng
        self._enabled = asyncio.Event()
        self._errors = ErrorLog(log)
        self._bugs = ErrorLog(log, level=logging.DEBUG)
        # room -> posts Telegram took, oldest first, not yet recorded in the database
        self._unrecorded: dict[str, list[_Outcome]] = {}
        # room -> failures in a row, counted here too: recording them may fail
        self._attempts: dict[str, int] = {}
        # room -> how many turns post one message alone (a combined post was refused)
        self._alone: dict[str, int] = {}
        self.last_error: str | None = None

    def enable(self) -> None:
        """Telegram is reachable and set up: start posting."""
        self._enabled.set()
        self.wake()

    @property
    def unrecorded(self) -> int:
        """How many Telegram outcomes wait for the database to record them."""
        return sum(len(o) for o in self._unrecorded.values()) + self._topics.unrecorded

    async def stop(self, grace: float = 3.0) -> None:
        """Stop; what Telegram took but the database has not recorded gets one last try.

        Otherwise a restart would post it again (or make a second topic for the room).
        """
        await super().stop(grace)
        try:
            async with asyncio.timeout(RECORD_AT_STOP_SECONDS):
                await self._topics.record()
                for room_id in list(self._unrecorded):
                    await self._record(room_id)
        except (StoreError, TimeoutError) as exc:
            log.error(
                "stopping with %d posts or topics Telegram has but the database does not "
                "(%s); a restart may make them again",
                self.unrecorded,
                exc,
            )

    async def _run(self) -> None:
        await self._enabled.wait()
        while True:
            try:
                timeout = await self._schedule()
            except (StoreError, sqlite3.Error) as exc:
                self._errors.failed("queue", "cannot read the queue: %s", exc)
                timeout = BACKOFF_BASE_SECONDS
            else:
                self._errors.recovered("queue", "the queue can be read again")
            await self._doze(timeout)

    async def _schedule(self) -> float | None:
        """Start turns for due rooms; return how long to sleep unless woken."""
        if self.free_turns:
            rooms = await self._store.due_rooms(
                self._clock(), self.free_turns, exclude=self.unavailable()
            )
            for room in rooms:
                self._serve(room.room_id, self._turn(room))
        if not self.free_turns:
            return None  # a finishing room wakes us
        next_at = await self._store.next_attempt_at(self.unavailable())
        return self._sleep_until([next_at], IDLE_POLL_SECONDS)

    async def _turn(self, room: Room) -> None:
        """Post the room's next post; on failure, back the room off."""
        try:
            await self._post_next(room)
        except asyncio.CancelledError:
            raise
        except (TelegramError, StoreError, LookupError) as exc:
            await self._failed(room, exc)
        except Exception as exc:  # a bug must not kill the worker; the room backs off
            # The traceback once per room and kind of bug, not once per retry.
            if self._bugs.failed(f"{room.room_id} {type(exc).__name__}", "bug in room turn"):
                log.exception("unexpected error posting room %s", room.room_id)
            await self._failed(room, exc)
        else:
            self._attempts.pop(room.room_id, None)
            self.release(room.room_id)
            self._errors.recovered(room.room_id, "room %s posts again", room.room_id)
            self._errors.recovered("database", "the database records posts again")

    async def _post_next(self, room: Room) -> None:
        room_id = room.room_id
        await self._record(room_id)
        await self._topics.prepare(room_id)
        waiting = await self._store.waiting(room_id, self._batch)
        if not waiting:
            return
        alone = self._alone.pop(room_id, 0)
        if alone:
            waiting = waiting[:1]
            if alone > 1:
                self._alone[room_id] = alone - 1
        post = render.render_posts(
            [
                render.Inbound(m.id, m.text, datetime.fromtimestamp(m.inbox_at, UTC))
                for m in waiting
            ],
            now=datetime.fromtimestamp(self._clock(), UTC),
            tz=self._tz,
            first_part=waiting[0].parts_done,
        )[0]
        started = time.perf_counter()
        try:
            message = await self._topics.post(room_id, post.html)
        except BadRequest as exc:
            if is_topic_closed(exc) or is_topic_gone(exc):
                raise
            await self._refused(room_id, waiting[0], post, exc)
        else:
            self._metrics.send_seconds.labels("telegram").observe(time.perf_counter() - started)
            if post.ids:
                outcome = _Outcome(post.ids, message.message_id, self._clock())
            else:  # one part of the first message, too long for one post
                outcome = _Outcome(
                    (), message.message_id, self._clock(), waiting[0].id, post.part + 1
                )
            self._unrecorded.setdefault(room_id, []).append(outcome)
        await self._record(room_id)

    async def _refused(
        self, room_id: str, first: Inbound, post: render.Post, exc: BadRequest
    ) -> None:
        """Telegram refused a post for something in it: find the message, move it aside."""
        if len(post.ids) > 1:
            # Which of them Telegram minds is unknown: the next turns post them one by one.
            log.info(
                "Telegram refused a post of %d messages of room %s (%s); posting them one by one",
                len(post.ids),
                room_id,
                exc.message,
            )
            self._alone[room_id] = len(post.ids)
            return
        self._alone.pop(room_id, None)  # found it: the others may share posts again
        reason = exc.message
        head = _(
            "⚠️ A message from the customer could not be shown here (Telegram said: {reason})."
        ).format(reason=reason)
        text = first.text
        if len(text) > _NOTICE_TEXT_LIMIT:
            text = text[:_NOTICE_TEXT_LIMIT] + " […]"
        notice: Message
        try:
            notice = await self._topics.post(
                room_id,
                _("{notice} Its text:\n\n{text}").format(notice=head, text=text),
                plain=True,
            )
        except BadRequest as again:
            if is_topic_closed(again) or is_topic_gone(again):
                raise
            # Not even as plain text; if the bare notice fails too, the message is not the cause.
            notice = await self._topics.post(room_id, head, plain=True)
        log.warning(
            "Telegram refused message %d of room %s for good (%s); moved aside with a notice",
            first.id,
            room_id,
            reason,
        )
        self._unrecorded.setdefault(room_id, []).append(
            _Outcome((first.id,), notice.message_id, self._clock(), refused=reason)
        )

    async def _record(self, room_id: str) -> None:
        """Write what Telegram already took; raises StoreError (and keeps it) if it cannot."""
        pending = self._unrecorded.get(room_id)
        while pending:
            outcome = pending[0]
            if outcome.refused is not None:
                await self._store.mark_refused(
                    outcome.ids, outcome.refused, outcome.message_id, outcome.at
                )
            elif outcome.part_of is not None:
                await self._store.mark_part_posted(outcome.part_of, outcome.parts, outcome.at)
            else:
                await self._store.mark_posted(outcome.ids, outcome.message_id, outcome.at)
            pending.pop(0)
        self._unrecorded.pop(room_id, None)

    async def _failed(self, room: Room, exc: Exception) -> None:
        attempts = max(room.attempts, self._attempts.get(room.room_id, 0))
        self._attempts[room.room_id] = attempts + 1
        delay = backoff_delay(attempts, self._rng)
        # Held here first: the room waits whether or not the database records it.
        self.hold(room.room_id, self._clock() + delay)
        reason = f"{type(exc).__name__}: {exc}"
        self.last_error = reason
        if isinstance(exc, TelegramError):
            self._metrics.api_errors.labels("telegram", type(exc).__name__).inc()
        if isinstance(exc, StoreError):
            # One database failing fails every room alike: said once for all of them.
            self._errors.failed(
                "database",
                "the database cannot record posts; rooms wait and retry only the write: %s",
                exc,
            )
        else:
            self._errors.failed(
                room.room_id,
                "posting room %s failed (attempt %d), retrying in %.1f s: %s",
                room.room_id,
                attempts + 1,
                delay,
                reason,
            )
        try:
            await self._store.room_failed(room.room_id, self._clock() + delay, reason)
        except StoreError as write:
            self._errors.failed("database", "could not record a room's failure: %s", write)
