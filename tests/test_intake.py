"""Callbacks become committed rows first, and only then is anyone told about them."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bridge.channels.intake import Intake
from bridge.core.store import Store, StoreError
from bridge.nusasms import InboxCallback, StatusCallback

JAKARTA = timezone(timedelta(hours=7))
# 2026-11-27 12:00:00 in Jakarta
NOW = datetime(2026, 11, 27, 5, 0, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "intake.sqlite3"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(db_path)
    yield opened
    await opened.close()


def committed(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


class Told:
    """Counts wake-ups and records what was already committed at each one."""

    def __init__(self, path: Path, sql: str) -> None:
        self.path = path
        self.sql = sql
        self.seen: list[list[tuple[Any, ...]]] = []

    def __call__(self) -> None:
        self.seen.append(committed(self.path, self.sql))


def inbox(ref_no: str, inbox_date: str, *, room_id: str = "room-1") -> InboxCallback:
    return InboxCallback.model_validate(
        {
            "room_id": room_id,
            "ref_no": ref_no,
            "text": f"text of {ref_no}",
            "inbox_date": inbox_date,
            "sender_number": "+62 812-3456-7890",
        }
    )


def status_update(ref_no: str, value: str, status_date: str) -> StatusCallback:
    return StatusCallback.model_validate(
        {"ref_no": ref_no, "status": value, "status_date": status_date}
    )


async def test_an_inbox_callback_is_committed_before_the_relay_is_woken(
    store: Store, db_path: Path
) -> None:
    told = Told(db_path, "SELECT ref_no FROM inbound")
    intake = Intake(store, tz=JAKARTA, on_inbound=told, clock=lambda: NOW)

    await intake.inbox(inbox("ref-1", "2026-11-27 11:30:00"))

    assert told.seen == [[("ref-1",)]]
    assert intake.last_callback_at == NOW
    assert committed(
        db_path, "SELECT ref_no, room_id, text, inbox_at, received_at FROM inbound"
    ) == [("ref-1", "room-1", "text of ref-1", NOW - 1800, NOW)]
    assert committed(db_path, "SELECT sender_number, last_inbox_at FROM rooms") == [
        ("6281234567890", NOW - 1800)
    ]


async def test_a_naive_date_is_read_in_the_configured_zone_and_an_aware_one_as_given(
    store: Store, db_path: Path
) -> None:
    intake = Intake(store, tz=JAKARTA, on_inbound=lambda: None, clock=lambda: NOW)

    await intake.inbox(inbox("naive", "2026-11-27 10:00:00"))
    await intake.inbox(inbox("utc", "2026-11-27T03:00:00Z"))
    await intake.inbox(inbox("plus8", "2026-11-27T11:00:00+08:00"))

    # All three are 03:00 UTC, two hours before NOW.
    assert committed(db_path, "SELECT inbox_at FROM inbound ORDER BY id") == [(NOW - 7200,)] * 3


async def test_a_date_ahead_of_our_clock_counts_as_the_moment_it_arrived(
    store: Store, db_path: Path
) -> None:
    intake = Intake(store, tz=JAKARTA, on_inbound=lambda: None, clock=lambda: NOW)

    await intake.inbox(inbox("ahead", "2026-11-27 12:00:01"))
    await intake.inbox(inbox("same", "2026-11-27 12:00:00"))

    assert committed(db_path, "SELECT inbox_at, received_at FROM inbound ORDER BY id") == [
        (NOW, NOW),
        (NOW, NOW),
    ]


async def test_a_status_callback_is_committed_before_the_outbox_is_woken(
    store: Store, db_path: Path
) -> None:
    told = Told(db_path, "SELECT ref_no, status FROM status_events")
    relay_told = Told(db_path, "SELECT 1")
    intake = Intake(store, tz=JAKARTA, on_inbound=relay_told, on_status=told, clock=lambda: NOW + 5)

    await intake.status(status_update("out-1", "D", "2026-11-27 12:00:00"))

    assert told.seen == [[("out-1", "delivered")]]
    assert relay_told.seen == []
    assert intake.last_callback_at == NOW + 5
    assert committed(db_path, "SELECT status_at, received_at FROM status_events") == [
        (NOW, NOW + 5)
    ]


async def test_a_status_date_is_kept_even_when_ahead_of_our_clock(
    store: Store, db_path: Path
) -> None:
    intake = Intake(store, tz=JAKARTA, on_inbound=lambda: None, clock=lambda: NOW)

    await intake.status(status_update("out-1", "read", "2026-11-27 13:00:00"))

    assert committed(db_path, "SELECT status_at FROM status_events") == [(NOW + 3600,)]


async def test_a_callback_that_cannot_be_committed_wakes_nobody_and_is_not_counted(
    store: Store, db_path: Path
) -> None:
    woken: list[str] = []
    intake = Intake(
        store,
        tz=JAKARTA,
        on_inbound=lambda: woken.append("relay"),
        on_status=lambda: woken.append("outbox"),
        clock=lambda: NOW,
    )
    await store.close()

    with pytest.raises(StoreError):
        await intake.inbox(inbox("ref-1", "2026-11-27 11:30:00"))
    with pytest.raises(StoreError):
        await intake.status(status_update("out-1", "read", "2026-11-27 11:30:00"))

    assert woken == []
    assert intake.last_callback_at is None
    assert committed(db_path, "SELECT count(*) FROM inbound") == [(0,)]
