"""Telegram's per-group budget: a sliding window, and pauses after a 429."""

from __future__ import annotations

from bridge.pacing import GroupBudget


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


async def test_reactions_do_not_spend_the_budget_but_respect_pauses() -> None:
    t = FakeTime()
    budget = GroupBudget(1, clock=t.clock, sleep=t.sleep)
    await budget.acquire()
    await budget.acquire(counts=False)
    assert t.now == 1000.0
    budget.pause(3)
    await budget.acquire(counts=False)
    assert t.now == 1003.0


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
