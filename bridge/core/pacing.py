"""Timing rules: Telegram's message budget for one group, and retry backoff.

Telegram lets a bot post about 20 messages a minute into a group; beyond that it answers
429 with `retry_after`. Edits, topic changes (create, rename, close, reopen), pins and
reactions share that budget (creating a topic is itself a message, and edits count like
sends). Every such call passes through one `GroupBudget`, which keeps a sliding window of
recent calls and, after a 429, holds everything back for exactly the time Telegram asked for.

When calls wait, the most important goes first: a customer's message (with the topic and
header it needs), then the bridge's own notices, then background calls (reactions,
renames) that only reflect a state and may be superseded while they wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import random
import time
from collections.abc import Awaitable, Callable

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
# No pause Telegram asks for holds the group longer than this; then it is tried again (and a
# still-valid limit answers another 429). A `retry_after` of a day must not stop posting.
MAX_PAUSE_SECONDS = 300.0

# Priorities of calls into the group, most urgent first.
CUSTOMER = 0  # a customer's message, and the topic, header and reopening it needs
NOTICE = 1  # the bridge's own notices, command answers, alerts, reminders
BACKGROUND = 2  # reactions, renames, pins: states that a later call may supersede


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
        # Waiters as (priority, arrival): the smallest takes the next slot.
        self._waiting: list[tuple[int, int]] = []
        self._arrivals = itertools.count()
        self._changed = asyncio.Event()
        # A free slot `ready` found, held for the caller's send: (priority, until).
        self._reserved: tuple[int, float] | None = None

    async def acquire(self, *, priority: int = CUSTOMER) -> Slot:
        """Wait until one more call may be made, and count it (the slot to finish).

        Waiting calls go out by priority (CUSTOMER first), in order of arrival within one.
        """
        await self._turn(priority)
        if self._reserved is not None and priority <= self._reserved[0]:
            self._reserved = None
        slot = Slot(self._clock())
        self._sent.append(slot)
        return slot

    async def ready(self, *, priority: int = CUSTOMER) -> None:
        """Wait until a call would go out at once, and hold that slot briefly for it.

        For a caller that reads what to send only once it may send: calls of a lower
        priority do not take the slot meanwhile (for one slot's share of the window).
        """
        await self._turn(priority)
        self._reserved = (priority, self._clock() + self._window / self._slots)

    def finish(self, slot: Slot | None) -> None:
        """Telegram answered the call: its window starts now."""
        if slot is not None:
            slot.at = self._clock()

    def release(self, slot: Slot | None) -> None:
        """Telegram refused the call (429): it did not spend the budget."""
        if slot is not None:
            with contextlib.suppress(ValueError):
                self._sent.remove(slot)

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot."""
        return len(self._waiting)

    async def _turn(self, priority: int) -> None:
        ticket = (priority, next(self._arrivals))
        heapq.heappush(self._waiting, ticket)
        self._notify()
        try:
            while True:
                if self._waiting[0] != ticket:
                    changed = self._changed
                    await changed.wait()
                    continue
                wait = self._wait_time(priority)
                if wait <= 0:
                    return
                await self._sleep(wait)
        finally:
            self._waiting.remove(ticket)
            heapq.heapify(self._waiting)
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _wait_time(self, priority: int) -> float:
        now = self._clock()
        while self._sent and self._sent[0].at <= now - self._window:
            self._sent.popleft()
        wait = self._paused_until - now
        if len(self._sent) >= self._slots:
            wait = max(wait, min(s.at for s in self._sent) + self._window - now)
        if self._reserved is not None:
            held_by, until = self._reserved
            if until <= now:
                self._reserved = None
            elif priority > held_by:
                wait = max(wait, until - now)
        return wait

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
