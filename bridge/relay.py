"""The inbound worker: waiting customer messages go into their topics, in order, per room.

Rooms are served oldest-waiting-message first, a few at a time. Each turn takes what one
room has waiting and posts it as few Telegram messages as the size limit allows. A room
whose post fails backs off on its own (exponential, with jitter) while the others go on;
its messages stay queued, in order, until Telegram takes them.
"""

from __future__ import annotations

import asyncio
import contextlib
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

log = logging.getLogger(__name__)

# Without any wake-up the loop still looks at the queue this often.
IDLE_POLL_SECONDS = 30.0


class Relay:
    """Owns the inbound worker task."""

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
        self._store = store
        self._topics = topics
        self._metrics = metrics or Metrics()
        self._tz = tz
        self._concurrency = concurrency
        self._batch = batch
        self._clock = clock
        self._rng = rng
        self._wake = asyncio.Event()
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._enabled = asyncio.Event()
        self.last_error: str | None = None

    def wake(self) -> None:
        """Something was queued (or became possible): look at the queue now."""
        self._wake.set()

    def enable(self) -> None:
        """Telegram is reachable and set up: start posting."""
        self._enabled.set()
        self._wake.set()

    @property
    def running(self) -> bool:
        """The worker loop is alive."""
        return self._loop_task is not None and not self._loop_task.done()

    def start(self) -> None:
        """Start the worker loop."""
        self._loop_task = asyncio.create_task(self._run(), name="relay")
        self._loop_task.add_done_callback(_log_death)

    async def stop(self, grace: float = 3.0) -> None:
        """Stop taking new work; let posts in flight finish for up to `grace` seconds."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        in_flight = list(self._busy.values())
        if in_flight:
            _, late = await asyncio.wait(in_flight, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _run(self) -> None:
        await self._enabled.wait()
        while True:
            self._wake.clear()
            try:
                timeout = await self._schedule()
            except (StoreError, sqlite3.Error) as exc:
                log.error("cannot read the queue: %s", exc)
                timeout = BACKOFF_BASE_SECONDS
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _schedule(self) -> float | None:
        """Start turns for due rooms; return how long to sleep unless woken."""
        if len(self._busy) < self._concurrency:
            rooms = await self._store.due_rooms(self._clock(), self._concurrency + len(self._busy))
            for room in rooms:
                if len(self._busy) >= self._concurrency:
                    break
                if room.room_id not in self._busy:
                    self._spawn(room)
        return await self._idle_timeout()

    def _spawn(self, room: Room) -> None:
        task = asyncio.create_task(self._turn(room), name=f"relay-room-{room.room_id}")
        self._busy[room.room_id] = task

        def finished(_: asyncio.Task[None]) -> None:
            self._busy.pop(room.room_id, None)
            self._wake.set()

        task.add_done_callback(finished)

    async def _idle_timeout(self) -> float | None:
        if len(self._busy) >= self._concurrency:
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


def _log_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the relay worker died", exc_info=task.exception())
