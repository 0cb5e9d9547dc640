"""The inbound worker: waiting customer messages go into their topics, in order, per room.

Rooms are served oldest-waiting-message first, a few at a time. Each turn takes what one
room has waiting and posts it as few Telegram messages as the size limit allows. A room
whose post fails backs off on its own (exponential, with jitter) while the others go on;
its messages stay queued, in order, until Telegram takes them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo

from telegram.error import TelegramError

from bridge import render
from bridge.metrics import Metrics
from bridge.pacing import BACKOFF_BASE_SECONDS, backoff_delay
from bridge.store import Room, Store, StoreError
from bridge.topics import Topics
from bridge.workers import RoomWorker

log = logging.getLogger(__name__)

# Without any wake-up the loop still looks at the queue this often.
IDLE_POLL_SECONDS = 30.0


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
        super().__init__(concurrency)
        self._store = store
        self._topics = topics
        self._metrics = metrics or Metrics()
        self._tz = tz
        self._batch = batch
        self._clock = clock
        self._rng = rng
        self._enabled = asyncio.Event()
        self.last_error: str | None = None

    def enable(self) -> None:
        """Telegram is reachable and set up: start posting."""
        self._enabled.set()
        self.wake()

    async def _run(self) -> None:
        await self._enabled.wait()
        while True:
            try:
                timeout = await self._schedule()
            except (StoreError, sqlite3.Error) as exc:
                log.error("cannot read the queue: %s", exc)
                timeout = BACKOFF_BASE_SECONDS
            await self._doze(timeout)

    async def _schedule(self) -> float | None:
        """Start turns for due rooms; return how long to sleep unless woken."""
        if self.free_turns:
            rooms = await self._store.due_rooms(self._clock(), self._concurrency + len(self._busy))
            for room in rooms:
                if not self.free_turns:
                    break
                self._serve(room.room_id, self._turn(room))
        if not self.free_turns:
            return None  # a finishing room wakes us
        next_at = await self._store.next_attempt_at(self._busy.keys())
        if next_at is None:
            return IDLE_POLL_SECONDS
        return min(IDLE_POLL_SECONDS, max(0.0, next_at - self._clock()))

    async def _turn(self, room: Room) -> None:
        """Post what the room has waiting; on failure, back the room off."""
        try:
            await self._post_waiting(room)
        except asyncio.CancelledError:
            raise
        except (TelegramError, StoreError, LookupError) as exc:
            await self._failed(room, exc)
        except Exception as exc:  # a bug must not kill the worker; the room backs off
            log.exception("unexpected error posting room %s", room.room_id)
            await self._failed(room, exc)

    async def _post_waiting(self, room: Room) -> None:
        await self._topics.prepare(room.room_id)
        waiting = await self._store.waiting(room.room_id, self._batch)
        if not waiting:
            return
        posts = render.render_posts(
            [
                render.Inbound(m.id, m.text, datetime.fromtimestamp(m.inbox_at, UTC))
                for m in waiting
            ],
            now=datetime.fromtimestamp(self._clock(), UTC),
            tz=self._tz,
            first_part=waiting[0].parts_done,
        )
        unfinished = [m.id for m in waiting]
        for post in posts:
            started = time.perf_counter()
            message = await self._topics.post(room.room_id, post.html)
            self._metrics.send_seconds.labels("telegram").observe(time.perf_counter() - started)
            if post.ids:
                await self._store.mark_posted(post.ids, message.message_id, self._clock())
                done = set(post.ids)
                unfinished = [i for i in unfinished if i not in done]
            else:
                await self._store.mark_part_posted(unfinished[0], post.part + 1)

    async def _failed(self, room: Room, exc: Exception) -> None:
        delay = backoff_delay(room.attempts, self._rng)
        reason = f"{type(exc).__name__}: {exc}"
        self.last_error = reason
        self._metrics.api_errors.labels("telegram", type(exc).__name__).inc()
        log.warning(
            "posting room %s failed (attempt %d), retrying in %.1f s: %s",
            room.room_id,
            room.attempts + 1,
            delay,
            reason,
        )
        try:
            await self._store.room_failed(room.room_id, self._clock() + delay, reason)
        except StoreError:
            log.exception("could not record the failure of room %s", room.room_id)
