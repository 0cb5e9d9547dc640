"""The one shape of every background loop: an owner starts it, stops it, and hears of its death.

`Worker` keeps the task, cancels it on `stop`, logs the exception if the loop ever ends by
one (a loop that dies silently is a bridge that stops working without anyone knowing), and
lets others `wake` it early from a sleep. `RoomWorker` adds turns per room: a few rooms at
a time, never two turns of the same room at once, so each room's order holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


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

    def __init__(self, concurrency: int) -> None:
        super().__init__()
        self._concurrency = concurrency
        self._busy: dict[str, asyncio.Task[None]] = {}

    @property
    def free_turns(self) -> int:
        """How many more rooms may be served right now."""
        return max(0, self._concurrency - len(self._busy))

    def _serve(self, room_id: str, turn: Coroutine[Any, Any, None]) -> bool:
        """Start a turn for a room unless it has one running or no turn is free."""
        if room_id in self._busy or not self.free_turns:
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
