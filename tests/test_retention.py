"""Data retention: rows the bridge is done with go after `storage.retention_days`."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.core.config import Settings, load_settings
from bridge.core.store import NewInbound, NewReply, NewStatus, Store
from bridge.ops.retention import Retention
from tests.conftest import ROOM, Callbacks, inbox_body, write_config
from tests.fakes.telegram import FakeTelegram

DAY = 86400.0
T0 = 1_780_000_000.0  # an arbitrary "long ago"
KEEP_DAYS = 90


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "retention.sqlite3")
    yield opened
    await opened.close()


async def message(store: Store, ref_no: str, at: float, *, posted: bool) -> None:
    await store.add(NewInbound(ref_no, ROOM, "6281234567890", f"pesan {ref_no}", at, at))
    if posted:
        (row,) = [m for m in await store.waiting(ROOM, 1000) if m.ref_no == ref_no]
        await store.mark_posted([row.id], 100, at + 1)


async def reply(store: Store, message_id: int, at: float, **fields: Any) -> int:
    reply_id = await store.add_reply(NewReply(ROOM, message_id, 777, "text", "jawab"), at)
    assert reply_id is not None
    if fields:
        await store.update_reply(reply_id, **fields)
    return reply_id


def rows(store_path: Path, sql: str) -> list[Any]:
    with sqlite3.connect(store_path) as db:
        return [r[0] for r in db.execute(sql)]


async def test_old_done_rows_are_deleted_and_undone_or_recent_rows_kept(
    store: Store, tmp_path: Path
) -> None:
    now = T0 + 200 * DAY
    old, recent = now - (KEEP_DAYS + 1) * DAY, now - (KEEP_DAYS - 1) * DAY
    await message(store, "old-posted", old, posted=True)
    await message(store, "old-waiting", old + 1, posted=False)  # never posted: stays
    await message(store, "recent-posted", recent, posted=True)
    await reply(store, 1, old, state="sent", ref_no="R-old-sent", display="read", shown="read")
    await reply(store, 2, old, state="failed", display="failed", shown="failed")
    await reply(store, 3, old, state="queued")  # still to send: stays
    await reply(store, 4, old, state="sent", ref_no="R-unshown", display="read", shown="accepted")
    await reply(store, 5, recent, state="sent", ref_no="R-recent", display="read", shown="read")
    # Status events: one applied, one for a reply nobody knows, one waiting for its reply.
    await store.add(NewStatus("R-old-sent", "read", old, old))
    await store.add(NewStatus("R-nobody", "read", old, old))
    await store.add(NewStatus("R-unshown", "delivered", old, old))
    await store.add(NewStatus("R-recent", "read", recent, recent))
    applied = [p.event_id for p in await store.pending_statuses() if p.status == "read"]
    await store.apply_statuses(applied, [])
    await store.add(NewStatus("R-unshown", "read", old, old))  # known reply, not applied yet

    pruned = await Retention(store, retention_days=KEEP_DAYS, clock=lambda: now).sweep()

    path = tmp_path / "retention.sqlite3"
    assert sorted(rows(path, "SELECT ref_no FROM inbound")) == ["old-waiting", "recent-posted"]
    assert sorted(rows(path, "SELECT operator_message_id FROM outbound")) == [3, 4, 5]
    kept_events = rows(path, "SELECT ref_no || ':' || status FROM status_events")
    assert sorted(kept_events) == ["R-recent:read", "R-unshown:delivered", "R-unshown:read"]
    assert (pruned.inbound, pruned.replies, pruned.status_events) == (1, 2, 2)
    assert rows(path, "SELECT count(*) FROM rooms") == [1]  # the customer keeps their topic


async def test_a_sweep_with_nothing_old_deletes_nothing(store: Store, tmp_path: Path) -> None:
    now = T0 + 200 * DAY
    await message(store, "a", now - DAY, posted=True)
    await reply(store, 1, now - DAY, state="sent", ref_no="R1", display="read", shown="read")

    pruned = await Retention(store, retention_days=KEEP_DAYS, clock=lambda: now).sweep()

    assert pruned.total == 0
    assert rows(tmp_path / "retention.sqlite3", "SELECT count(*) FROM inbound") == [1]


async def test_a_backlog_bigger_than_one_batch_is_deleted_in_one_sweep(
    store: Store, tmp_path: Path
) -> None:
    now = T0 + 200 * DAY
    for i in range(25):
        await message(store, f"m{i}", T0 + i, posted=True)
    await message(store, "young", now, posted=True)

    pruned = await Retention(store, retention_days=KEEP_DAYS, clock=lambda: now, batch=4).sweep()

    assert pruned.inbound == 25
    assert rows(tmp_path / "retention.sqlite3", "SELECT ref_no FROM inbound") == ["young"]


async def test_rows_become_due_exactly_when_the_period_has_passed(
    store: Store, tmp_path: Path
) -> None:
    now = [T0]
    await message(store, "m", T0, posted=True)
    retention = Retention(store, retention_days=KEEP_DAYS, clock=lambda: now[0])

    now[0] = T0 + KEEP_DAYS * DAY
    assert (await retention.sweep()).total == 0
    now[0] = T0 + KEEP_DAYS * DAY + 1
    assert (await retention.sweep()).inbound == 1


def test_zero_means_forever_and_runs_no_worker() -> None:
    with pytest.raises(ValueError, match="positive"):
        Retention(None, retention_days=0)  # type: ignore[arg-type]


async def test_the_running_bridge_deletes_posted_messages_after_the_period(
    make_bridge: Callable[..., Any],
    config_data: dict[str, Any],
    tmp_path: Path,
    http: Any,
    telegram: FakeTelegram,
) -> None:
    settings: Settings = load_settings(write_config(tmp_path, config_data), environ={})
    assert settings.storage.retention_days == 90  # the default
    db = settings.storage.path
    first = await make_bridge(settings)
    await Callbacks.of(first, http).inbox(inbox_body("ref-1"))
    posted = "SELECT count(*) FROM inbound WHERE posted_at > 0"
    await telegram.wait_for(lambda: rows(db, posted) == [1], timeout=10)
    await first.stop()

    # The same database, 91 days later: the retention worker sweeps at start.
    later = time.time() + 91 * DAY
    await make_bridge(settings, clock=lambda: later)
    await telegram.wait_for(lambda: rows(db, "SELECT count(*) FROM inbound") == [0], timeout=10)
    assert rows(db, "SELECT count(*) FROM rooms") == [1]


async def test_retention_days_zero_keeps_everything(
    make_bridge: Callable[..., Any],
    config_data: dict[str, Any],
    tmp_path: Path,
) -> None:
    data = {**config_data, "storage": {**config_data["storage"], "retention_days": 0}}
    settings = load_settings(write_config(tmp_path, data), environ={})
    bridge = await make_bridge(settings)
    assert "retention" not in [w.name for w in bridge._workers]


async def test_a_clock_that_jumped_back_never_gets_a_young_row_deleted(
    store: Store, tmp_path: Path
) -> None:
    now = T0 + 200 * DAY
    await message(store, "old", T0, posted=True)
    await message(store, "young", now, posted=True)
    await message(store, "old-after-a-clock-jump", T0 + 1, posted=True)

    await Retention(store, retention_days=KEEP_DAYS, clock=lambda: now).sweep()

    # Ids no longer follow time: the young row and everything after it wait for later.
    kept = rows(tmp_path / "retention.sqlite3", "SELECT ref_no FROM inbound ORDER BY id")
    assert kept == ["young", "old-after-a-clock-jump"]
