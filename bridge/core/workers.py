"""The one shape of every background loop: an owner starts it, stops it, and hears of its death.

`Worker` keeps the task, cancels it on `stop`, logs the exception if the loop ever ends by
one (a loop that dies silently is a bridge that stops working without anyone knowing), and
lets others `wake` it early from a sleep. `RoomWorker` adds turns per room: a few rooms at
a time, never two turns of the same room at once, so each room's order holds, and holds in
memory: a room that failed waits out its backoff even when the database refuses to record
it (a loop must never depend on a successful write to slow down). `ErrorLog` says a repeating
error once, then how often it repeated, instead of a line per iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

log = logging.getLogger(__name__)

# A repeating error is said again, with its count, at most this often.
REPEAT_LOG_SECONDS = 300.0


class ErrorLog:
    """Logs an error the first time it happens, then only a count, then its recovery.

    `key` names what fails (a room, the queue); the same key failing again with any message
    is counted, not logged, until `every` seconds passed since it was last said.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        level: int = logging.WARNING,
        every: float = REPEAT_LOG_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._level = level
        self._every = every
        self._clock = clock
        # key -> [failures since last said, total failures, when last said]
        self._failing: dict[str, list[float]] = {}

    def failed(self, key: str, message: str, *args: object) -> bool:
        """Record one failure; True if it was logged (first time, or a periodic reminder)."""
        now = self._clock()
        entry = self._failing.get(key)
        if entry is None:
            self._failing[key] = [0, 1, now]
            self._log.log(self._level, message, *args)
            return True
        entry[0] += 1
        entry[1] += 1
        if now - entry[2] < self._every:
            return False
        self._log.log(
            self._level, message + " (failed %d more times since last said)", *args, int(entry[0])
        )
        entry[0], entry[2] = 0, now
        return True

    def recovered(self, key: str, message: str, *args: object) -> None:
        """`key` works again: say so once, with how many failures it took (if it failed)."""
        entry = self._failing.pop(key, None)
        if entry is not None:
            self._log.info(message + " (after %d failures)", *args, int(entry[1]))

    def failures(self, key: str) -> int:
        """How many times `key` failed since it last worked."""
        entry = self._failing.get(key)
        return 0 if entry is None else int(entry[1])


class Worker:
    """A long-running loop owned by the bridge."""

    name = "worker"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def running(self) -> bool:
        """The loop is alive."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._run(), name=self.name)
        self._task.add_done_callback(self._log_death)

    async def stop(self) -> None:
        """Stop the loop and wait until it has stopped."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        """There is work: end the loop's current sleep."""
        self._wake.set()

    async def _doze(self, seconds: float | None) -> None:
        """Sleep until woken or `seconds` passed (None: until woken)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()

    async def _run(self) -> None:
        raise NotImplementedError

    def _log_death(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the %s loop died", self.name, exc_info=task.exception())


class RoomWorker(Worker):
    """A worker that serves rooms concurrently, one turn per room at a time."""

    def __init__(self, concurrency: int, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._concurrency = concurrency
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, float] = {}
        self._hold_clock = clock

    def hold(self, room_id: str, until: float) -> None:
        """Serve no turn of `room_id` before `until`, whatever the database says."""
        self._held[room_id] = max(until, self._held.get(room_id, 0.0))

    def release(self, room_id: str) -> None:
        """Forget a hold (the room worked)."""
        self._held.pop(room_id, None)

    def unavailable(self) -> set[str]:
        """Rooms not to be served now: a turn running, or held; for the queue queries."""
        now = self._hold_clock()
        for room_id in [r for r, until in self._held.items() if until <= now]:
            del self._held[room_id]
        return set(self._busy) | set(self._held)

    def next_release(self) -> float | None:
        """When the earliest hold ends, or None."""
        return min(self._held.values(), default=None)

    def _sleep_until(self, candidates: Iterable[float | None], idle: float) -> float:
        """Seconds until the earliest of `candidates` (or the hold end), at most `idle`."""
        times = [t for t in (*candidates, self.next_release()) if t is not None]
        if not times:
            return idle
        return min(idle, max(0.0, min(times) - self._hold_clock()))

    @property
    def turns_running(self) -> int:
        """How many rooms have a turn running right now."""
        return len(self._busy)

    @property
    def free_turns(self) -> int:
        """How many more rooms may be served right now."""
        return max(0, self._concurrency - len(self._busy))

    def _serve(self, room_id: str, turn: Coroutine[Any, Any, None]) -> bool:
        """Start a turn for a room unless it has one running or no turn is free."""
        if room_id in self.unavailable() or not self.free_turns:
            turn.close()
            return False
        task = asyncio.create_task(turn, name=f"{self.name}-{room_id}")
        self._busy[room_id] = task

        def finished(_: asyncio.Task[None]) -> None:
            self._busy.pop(room_id, None)
            self._wake.set()

        task.add_done_callback(finished)
        return True

    async def stop(self, grace: float = 3.0) -> None:
        """Stop taking new work; turns in flight get `grace` seconds to finish."""
        await super().stop()
        in_flight = list(self._busy.values())
        if in_flight:
            _, late = await asyncio.wait(in_flight, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
