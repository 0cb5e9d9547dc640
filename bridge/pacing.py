"""Timing rules: Telegram's message budget for one group, and retry backoff.

Telegram lets a bot post about 20 messages a minute into a group; beyond that it answers
429 with `retry_after`. Every post passes through one `GroupBudget`, which keeps a sliding
window of recent sends and, after a 429, holds everything back for exactly the time
Telegram asked for.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
from collections.abc import Awaitable, Callable

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
# No pause Telegram asks for holds the group longer than this; then it is tried again (and a
# still-valid limit answers another 429). A `retry_after` of a day must not stop posting.
MAX_PAUSE_SECONDS = 300.0


def backoff_delay(attempts: int, rng: Callable[[], float] = random.random) -> float:
    """Delay before retry number `attempts + 1`: doubling, capped, jittered (50-100%)."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** min(attempts, 16))
    return ceiling * (0.5 + rng() / 2)


class Slot:
    """One send counted in the window, from its start until Telegram answered it."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at


class GroupBudget:
    """At most `messages` sends in any `seconds` window, plus pauses Telegram imposes.

    A send is counted from the moment Telegram answered it (`finish`), which is never
    earlier than Telegram counted it; counting from the request's start would free a slot
    a few milliseconds before Telegram does, and earn a 429.
    """

    def __init__(
        self,
        messages: int,
        seconds: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_pause: float = MAX_PAUSE_SECONDS,
    ) -> None:
        if messages < 1 or seconds <= 0:
            raise ValueError("a budget needs at least one message in a positive window")
        self._max_pause = max_pause
        self._slots = messages
        self._window = seconds
        self._clock = clock
        self._sleep = sleep
        self._sent: collections.deque[Slot] = collections.deque()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self, *, counts: bool = True) -> Slot | None:
        """Wait until one more message may be sent, and count it (the slot to finish).

        With `counts=False` (reactions, edits) only a pause Telegram imposed is waited out.
        """
        # One waiter at a time keeps the order of arrival (FIFO) and the count exact.
        async with self._lock:
            await self._wait(counts=counts)
            if not counts:
                return None
            slot = Slot(self._clock())
            self._sent.append(slot)
            return slot

    async def ready(self) -> None:
        """Wait until a send would go out at once, without counting one."""
        async with self._lock:
            await self._wait(counts=True)

    def finish(self, slot: Slot | None) -> None:
        """Telegram answered the send: its window starts now."""
        if slot is not None:
            slot.at = self._clock()

    def release(self, slot: Slot | None) -> None:
        """Telegram refused the send (429): it did not spend the budget."""
        if slot is not None:
            with contextlib.suppress(ValueError):
                self._sent.remove(slot)

    async def _wait(self, *, counts: bool) -> None:
        while True:
            now = self._clock()
            while self._sent and self._sent[0].at <= now - self._window:
                self._sent.popleft()
            wait = self._paused_until - now
            if counts and len(self._sent) >= self._slots:
                wait = max(wait, min(s.at for s in self._sent) + self._window - now)
            if wait <= 0:
                return
            await self._sleep(wait)

    def pause(self, seconds: float) -> float:
        """Telegram said to wait: nothing is sent to the group for `seconds`, at most the cap.

        Returns the pause actually taken.
        """
        seconds = min(seconds, self._max_pause)
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        return seconds

    @property
    def paused_for(self) -> float:
        """Seconds left of a pause Telegram imposed (0 when none)."""
        return max(0.0, self._paused_until - self._clock())
