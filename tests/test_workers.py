"""The shared worker primitives: errors said once with a count, holds that need no database."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.core.workers import ErrorLog, RoomWorker

log = logging.getLogger("tests.workers")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_repeating_error_is_logged_once_then_as_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    errors = ErrorLog(log, every=60.0, clock=clock)
    assert errors.failed("room-1", "posting room %s failed", "room-1")
    for _ in range(500):
        assert not errors.failed("room-1", "posting room %s failed", "room-1")
    lines = [r.getMessage() for r in caplog.records if r.name == "tests.workers"]
    assert lines == ["posting room room-1 failed"]
    clock.now += 61
    assert errors.failed("room-1", "posting room %s failed", "room-1")
    assert errors.failures("room-1") == 502
    errors.recovered("room-1", "room %s posts again", "room-1")
    lines = [r.getMessage() for r in caplog.records if r.name == "tests.workers"]
    assert lines[1:] == [
        "posting room room-1 failed (failed 501 more times since last said)",
        "room room-1 posts again (after 502 failures)",
    ]
    assert errors.failures("room-1") == 0


def test_recovery_of_something_that_never_failed_says_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ErrorLog(log).recovered("queue", "queue readable again")
    assert not [r for r in caplog.records if r.name == "tests.workers"]


def test_errors_of_different_keys_are_each_said(caplog: pytest.LogCaptureFixture) -> None:
    errors = ErrorLog(log)
    assert errors.failed("a", "a failed")
    assert errors.failed("b", "b failed")
    assert not errors.failed("a", "a failed")


async def test_a_held_room_gets_no_turn_until_its_hold_ends() -> None:
    clock = Clock()
    worker = RoomWorker(concurrency=2, clock=clock)
    ran: list[str] = []

    async def turn(room: str) -> None:
        ran.append(room)

    worker.hold("r1", clock.now + 5)
    assert worker.unavailable() == {"r1"}
    assert worker.next_release() == clock.now + 5
    assert worker._sleep_until([None], idle=30.0) == 5.0
    assert worker._sleep_until([clock.now + 2], idle=30.0) == 2.0
    assert not worker._serve("r1", turn("r1"))
    clock.now += 5
    assert worker.unavailable() == set()
    assert worker._serve("r1", turn("r1"))
    await asyncio.gather(*worker._busy.values())
    await asyncio.sleep(0)  # the turn's done-callback frees the room
    assert ran == ["r1"]
    worker.hold("r2", clock.now + 1)
    worker.release("r2")
    assert worker.unavailable() == set()
    assert worker._sleep_until([], idle=30.0) == 30.0
