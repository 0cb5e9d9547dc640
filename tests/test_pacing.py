"""Timing rules: retry backoff, Telegram's per-group budget (a sliding window, and pauses)."""

from __future__ import annotations

import asyncio
import random

import pytest

from bridge.core.pacing import (
    BACKGROUND,
    BACKOFF_MAX_SECONDS,
    CUSTOMER,
    NOTICE,
    GroupBudget,
    backoff_delay,
)


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_budget_allows_a_full_window_then_one_send_per_slot() -> None:
    t = FakeTime()
    budget = GroupBudget(20, clock=t.clock, sleep=t.sleep)
    for _ in range(20):
        await budget.acquire()
    assert t.now == 1000.0  # the first 20 go out at once
    await budget.acquire()
    assert t.now == 1060.0  # the 21st waits until the first leaves the window


async def test_after_the_first_window_sends_go_out_one_per_freed_slot() -> None:
    t = FakeTime()
    budget = GroupBudget(2, 10, clock=t.clock, sleep=t.sleep)
    sent = []
    for _ in range(7):
        await budget.acquire()
        sent.append(t.now)
    # A slot frees exactly when its send leaves the window, and not a moment earlier.
    assert sent == [1000.0, 1000.0, 1010.0, 1010.0, 1020.0, 1020.0, 1030.0]


async def test_the_next_send_waits_for_the_oldest_send_in_the_window_not_the_newest() -> None:
    t = FakeTime()
    budget = GroupBudget(2, 10, clock=t.clock, sleep=t.sleep)
    await budget.acquire()
    t.now += 4
    await budget.acquire()
    await budget.acquire()
    assert t.now == 1010.0  # the send at 1000 left the window; the one at 1004 has not
    await budget.acquire()
    assert t.now == 1014.0


@pytest.mark.parametrize(("messages", "seconds"), [(0, 60.0), (-1, 60.0), (1, 0.0), (1, -1.0)])
def test_a_budget_without_a_message_or_a_window_is_refused(messages: int, seconds: float) -> None:
    with pytest.raises(ValueError, match="at least one message"):
        GroupBudget(messages, seconds)


def test_the_smallest_budget_is_one_message_in_any_positive_window() -> None:
    assert GroupBudget(1, 0.001).paused_for == 0.0


async def test_a_fresh_budget_imposes_no_pause_whatever_the_clock_reads() -> None:
    t = FakeTime()
    t.now = 0.0
    budget = GroupBudget(5, clock=t.clock, sleep=t.sleep)
    assert budget.paused_for == 0.0
    await budget.acquire()
    assert t.slept == []


async def test_a_pause_counts_down_to_zero_and_never_below() -> None:
    t = FakeTime()
    budget = GroupBudget(20, clock=t.clock, sleep=t.sleep)
    budget.pause(5)
    budget.pause(2)  # a shorter pause does not cut the longer one short
    t.now += 3
    assert budget.paused_for == 2.0
    t.now += 10
    assert budget.paused_for == 0.0


async def test_sends_in_any_window_never_exceed_the_budget() -> None:
    t = FakeTime()
    budget = GroupBudget(20, clock=t.clock, sleep=t.sleep)
    sent = []
    for _ in range(100):
        await budget.acquire()
        sent.append(t.now)
        t.now += 0.5
    for i, start in enumerate(sent):
        assert sum(1 for s in sent[i:] if s < start + 60) <= 20


async def test_retry_after_pauses_every_sender_exactly() -> None:
    t = FakeTime()
    budget = GroupBudget(20, clock=t.clock, sleep=t.sleep)
    await budget.acquire()
    budget.pause(7)
    assert budget.paused_for == 7
    await budget.acquire()
    assert t.now == 1007.0


async def test_scaled_window_keeps_the_same_shape() -> None:
    t = FakeTime()
    budget = GroupBudget(20, 1.0, clock=t.clock, sleep=t.sleep)  # a minute played in a second
    for _ in range(21):
        await budget.acquire()
    assert t.now == 1001.0


async def test_background_calls_spend_the_budget_like_any_other() -> None:
    t = FakeTime()
    budget = GroupBudget(1, clock=t.clock, sleep=t.sleep)
    await budget.acquire()
    await budget.acquire(priority=BACKGROUND)  # a reaction is a call into the group too
    assert t.now == 1060.0
    budget.pause(3)
    await budget.acquire(priority=BACKGROUND)
    assert t.now == 1120.0


async def test_window_counts_from_telegrams_answer_not_the_request() -> None:
    t = FakeTime()
    budget = GroupBudget(1, 10, clock=t.clock, sleep=t.sleep)
    slot = await budget.acquire()
    t.now += 2  # Telegram took two seconds to answer (and counted the send late)
    budget.finish(slot)
    await budget.acquire()
    assert t.now == 1012.0


async def test_a_refused_send_does_not_spend_the_budget() -> None:
    t = FakeTime()
    budget = GroupBudget(1, 10, clock=t.clock, sleep=t.sleep)
    slot = await budget.acquire()
    budget.release(slot)
    await budget.acquire()
    assert t.now == 1000.0


async def test_ready_waits_for_a_free_slot_without_taking_it() -> None:
    t = FakeTime()
    budget = GroupBudget(1, 10, clock=t.clock, sleep=t.sleep)
    await budget.acquire()
    await budget.ready()
    assert t.now == 1010.0
    await budget.acquire()
    assert t.now == 1010.0


class SteppedTime(FakeTime):
    """A FakeTime whose sleep lets other tasks run first, so concurrent callers can queue.

    Like a real clock, concurrent sleeps overlap: each ends at its own deadline.
    """

    async def sleep(self, seconds: float) -> None:
        until = self.now + seconds
        self.slept.append(seconds)
        for _ in range(5):
            await asyncio.sleep(0)
        self.now = max(self.now, until)


async def test_waiting_calls_go_out_by_priority_then_in_order_of_arrival() -> None:
    t = SteppedTime()
    budget = GroupBudget(1, 10, clock=t.clock, sleep=t.sleep)
    await budget.acquire()
    order: list[str] = []

    async def call(name: str, priority: int) -> None:
        await budget.acquire(priority=priority)
        order.append(name)

    # Queued first, the reaction and the notice still go after the customer's messages.
    tasks = [
        asyncio.create_task(call("reaction", BACKGROUND)),
        asyncio.create_task(call("notice", NOTICE)),
        asyncio.create_task(call("customer 1", CUSTOMER)),
        asyncio.create_task(call("customer 2", CUSTOMER)),
    ]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    assert order == ["customer 1", "customer 2", "notice", "reaction"]
    assert t.now == 1040.0  # one per freed slot, none lost to the reordering


async def test_a_slot_ready_found_is_kept_for_its_caller_not_a_background_call() -> None:
    t = SteppedTime()
    budget = GroupBudget(2, 10, clock=t.clock, sleep=t.sleep)
    await budget.acquire()
    await budget.ready()  # the relay now reads what to post
    reaction = asyncio.create_task(budget.acquire(priority=BACKGROUND))
    await asyncio.sleep(0)
    await budget.acquire()  # the post takes the slot it was shown
    assert t.now == 1000.0
    await asyncio.wait_for(reaction, timeout=5)
    assert t.now == 1010.0


async def test_a_slot_held_for_a_caller_that_sends_nothing_is_freed_soon() -> None:
    t = SteppedTime()
    budget = GroupBudget(20, 60, clock=t.clock, sleep=t.sleep)
    await budget.ready()
    await budget.acquire(priority=BACKGROUND)
    assert t.now == 1003.0  # one slot's share of the window (60 s / 20)


async def test_a_cancelled_waiter_does_not_hold_up_the_ones_behind_it() -> None:
    t = SteppedTime()
    budget = GroupBudget(1, 10, clock=t.clock, sleep=t.sleep)
    await budget.acquire()
    gate = asyncio.Event()

    async def stuck_sleep(seconds: float) -> None:
        await gate.wait()

    budget._sleep = stuck_sleep
    first = asyncio.create_task(budget.acquire())
    second = asyncio.create_task(budget.acquire(priority=NOTICE))
    await asyncio.sleep(0)
    first.cancel()
    budget._sleep = t.sleep
    gate.set()
    await asyncio.wait_for(second, timeout=5)
    assert budget.waiting == 0


# --- backoff -------------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_until_the_one_minute_cap() -> None:
    longest = [backoff_delay(attempts, rng=lambda: 1.0) for attempts in range(9)]

    assert longest == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert BACKOFF_MAX_SECONDS == 60.0


def test_backoff_stays_at_the_cap_however_many_attempts_failed() -> None:
    for attempts in (7, 16, 17, 64, 10_000):
        assert backoff_delay(attempts, rng=lambda: 1.0) == 60.0
        assert backoff_delay(attempts, rng=lambda: 0.0) == 30.0


@pytest.mark.parametrize(
    ("draw", "fraction"), [(0.0, 0.5), (0.25, 0.625), (0.5, 0.75), (0.999, 0.9995), (1.0, 1.0)]
)
@pytest.mark.parametrize(("attempts", "ceiling"), [(0, 1.0), (3, 8.0), (5, 32.0), (9, 60.0)])
def test_backoff_jitter_maps_the_draw_onto_half_to_all_of_the_ceiling(
    attempts: int, ceiling: float, draw: float, fraction: float
) -> None:
    assert backoff_delay(attempts, rng=lambda: draw) == pytest.approx(ceiling * fraction)


def test_backoff_with_real_randomness_stays_within_half_to_all_of_the_ceiling() -> None:
    rng = random.Random(13)
    for attempts in range(12):
        ceiling = min(60.0, 2.0**attempts)
        delays = [backoff_delay(attempts, rng.random) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        # Jitter spreads retries out: not all at one end of the range.
        assert min(delays) < ceiling * 0.6
        assert max(delays) > ceiling * 0.9
    assert 0.5 <= backoff_delay(0) <= 1.0  # the default rng
