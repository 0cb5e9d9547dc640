"""The store's write paths: group commit, rollback of a failed write, and the queue updates.

Every test opens a real SQLite file in `tmp_path` and reads back what was committed through
a separate plain `sqlite3` connection, so an uncommitted write cannot pass for a durable one.
"""

from __future__ import annotations

import asyncio
import sqlite3
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.core.store import MAX_BATCH, NewInbound, NewReply, NewStatus, Store, StoreError

ROOM = "room-a"
OTHER = "room-b"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite3"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(db_path)
    yield opened
    await opened.close()


def committed(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """What another process would read from the file: committed rows only."""
    with sqlite3.connect(path) as db:
        return db.execute(sql, params).fetchall()


def inbound(ref_no: str, room_id: str = ROOM, *, text: Any = "halo", at: float = 100.0) -> Any:
    # One customer per room: rooms of one number would share a conversation.
    return NewInbound(ref_no, room_id, f"62812{zlib.crc32(room_id.encode()):010d}", text, at, at)


def status(ref_no: str, value: Any = "read", at: float = 100.0) -> Any:
    return NewStatus(ref_no, value, at, at)


async def bounded(awaitable: Any) -> Any:
    """Await with a bound, so a waiter that is never answered fails the test instead of hanging.

    Not `wait_for`: a task that swallows the cancellation would pass for one that finished.
    """
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=5)
    if not done:
        task.cancel()
        raise AssertionError("not answered within 5 s")
    return task.result()


# --- group commit ------------------------------------------------------------------------


async def test_concurrent_callbacks_are_committed_together_and_each_is_answered(
    store: Store, db_path: Path
) -> None:
    await bounded(asyncio.gather(*(store.add(inbound(f"ref-{i}")) for i in range(10))))

    assert store.batches == 1
    assert committed(db_path, "SELECT ref_no FROM inbound ORDER BY id") == [
        (f"ref-{i}",) for i in range(10)
    ]


async def test_each_commit_is_counted_once_and_an_idle_store_commits_nothing(
    store: Store, db_path: Path
) -> None:
    await bounded(store.add(inbound("ref-1")))
    await bounded(store.add(status("ref-x")))
    await bounded(store.add(inbound("ref-2")))

    assert store.batches == 3
    assert committed(db_path, "SELECT count(*) FROM inbound") == [(2,)]
    assert committed(db_path, "SELECT ref_no, status FROM status_events") == [("ref-x", "read")]


async def test_more_than_one_batch_of_callbacks_waiting_takes_two_commits(
    store: Store, db_path: Path
) -> None:
    await bounded(asyncio.gather(*(store.add(inbound(f"ref-{i}")) for i in range(MAX_BATCH + 1))))

    assert store.batches == 2
    assert committed(db_path, "SELECT count(*) FROM inbound") == [(MAX_BATCH + 1,)]


async def test_a_repeated_callback_is_a_no_op_that_is_still_answered(
    store: Store, db_path: Path
) -> None:
    await bounded(store.add(inbound("ref-1", text="first")))
    await bounded(store.add(inbound("ref-1", text="again")))
    await bounded(store.add(status("ref-s")))
    await bounded(store.add(status("ref-s", at=200.0)))

    assert committed(db_path, "SELECT text FROM inbound") == [("first",)]
    assert committed(db_path, "SELECT status_at FROM status_events") == [(100.0,)]


async def test_a_failing_batch_answers_every_waiter_and_stores_none_of_it(
    store: Store, db_path: Path
) -> None:
    # The inbound rows are written first; the bad status (NOT NULL) fails the batch after them.
    results = await bounded(
        asyncio.gather(
            store.add(inbound("ref-1")),
            store.add(inbound("ref-2", OTHER)),
            store.add(status("ref-s", None)),
            return_exceptions=True,
        )
    )

    assert [type(r) for r in results] == [StoreError, StoreError, StoreError]
    assert store.batches == 0
    # The next batch works, and commits only itself: nothing of the failed one comes along.
    await bounded(store.add(inbound("ref-3")))
    assert store.batches == 1
    assert committed(db_path, "SELECT ref_no FROM inbound") == [("ref-3",)]
    assert committed(db_path, "SELECT room_id FROM rooms") == [(ROOM,)]
    assert committed(db_path, "SELECT count(*) FROM status_events") == [(0,)]


async def test_a_bad_inbound_callback_fails_its_batch_and_spares_the_next(
    store: Store, db_path: Path
) -> None:
    results = await bounded(
        asyncio.gather(
            store.add(inbound("ref-bad", text=None)),
            store.add(status("ref-s")),
            return_exceptions=True,
        )
    )
    assert [type(r) for r in results] == [StoreError, StoreError]

    await bounded(store.add(status("ref-t")))
    assert committed(db_path, "SELECT ref_no FROM status_events") == [("ref-t",)]
    assert committed(db_path, "SELECT count(*) FROM inbound") == [(0,)]


async def test_adding_to_a_closed_store_is_refused(db_path: Path) -> None:
    store = await Store.open(db_path)
    await store.close()

    with pytest.raises(StoreError, match="closed"):
        await bounded(store.add(inbound("ref-1")))


async def test_closing_answers_callbacks_still_waiting_for_their_commit(db_path: Path) -> None:
    store = await Store.open(db_path)
    waiting = [asyncio.ensure_future(store.add(inbound(f"ref-{i}"))) for i in range(3)]
    await asyncio.sleep(0)  # they are queued; the commit may or may not have begun

    await store.close()

    results = await bounded(asyncio.gather(*waiting, return_exceptions=True))
    # Each is answered: committed (None) or refused (StoreError), and never left hanging.
    assert all(r is None or isinstance(r, StoreError) for r in results)
    stored = {ref for (ref,) in committed(db_path, "SELECT ref_no FROM inbound")}
    assert stored == {f"ref-{i}" for i, r in enumerate(results) if r is None}


async def test_closing_during_a_commit_refuses_its_callbacks_and_keeps_none_of_them(
    db_path: Path,
) -> None:
    store = await Store.open(db_path)
    blocker = sqlite3.connect(db_path, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        waiting = [asyncio.ensure_future(store.add(inbound(f"ref-{i}"))) for i in range(3)]
        await asyncio.sleep(0)  # the callbacks are queued for the committer
        assert not any(w.done() for w in waiting)
        # Private: the only sign that the committer has taken the batch into its transaction.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while store._pending:
            assert loop.time() < deadline
            await asyncio.sleep(0.001)
        closing = asyncio.ensure_future(store.close())
        await asyncio.sleep(0)
    finally:
        blocker.rollback()
        blocker.close()
    await bounded(closing)

    results = await bounded(asyncio.gather(*waiting, return_exceptions=True))
    assert [str(r) for r in results] == ["database closed"] * 3
    assert committed(db_path, "SELECT count(*) FROM inbound") == [(0,)]


# --- rollback of a failed write -----------------------------------------------------------


async def reply_with_status(store: Store, db_path: Path) -> tuple[int, int]:
    """A room, a sent reply known to NusaSMS as "ref-out", and one status event for it."""
    await store.add(inbound("ref-in"))
    reply_id = await store.add_reply(NewReply(ROOM, 501, 7, "text", "jawab"), 110.0)
    assert reply_id is not None
    await store.update_reply(reply_id, state="sent", ref_no="ref-out", display="accepted")
    await store.add(status("ref-out", "delivered"))
    [event] = await store.pending_statuses()
    return reply_id, event.event_id


async def test_a_write_failing_on_its_second_statement_rolls_back_the_first(
    store: Store, db_path: Path
) -> None:
    reply_id, event_id = await reply_with_status(store, db_path)

    # The first statement marks the event applied; the second breaks NOT NULL (display).
    with pytest.raises(StoreError, match="NOT NULL"):
        await store.apply_statuses([event_id], [(reply_id, "delivered", None, None)])  # type: ignore[list-item]

    # The connection is usable, and its next transaction does not carry the failed one's
    # first statement along.
    await store.add(status("ref-other"))
    await store.set_fact("probe", "1")
    assert committed(db_path, "SELECT applied FROM status_events WHERE id = ?", event_id) == [(0,)]
    assert [e.event_id for e in await store.pending_statuses()] == [event_id]
    assert await store.fact("probe") == "1"

    await store.apply_statuses([event_id], [(reply_id, "delivered", "delivered", None)])
    assert await store.pending_statuses() == []
    reply = await store.reply(reply_id)
    assert reply is not None
    assert (reply.status, reply.display) == ("delivered", "delivered")


async def test_a_failed_single_write_leaves_nothing_behind(store: Store, db_path: Path) -> None:
    # A reply for a room that does not exist breaks the foreign key.
    with pytest.raises(StoreError, match="FOREIGN KEY"):
        await store.add_reply(NewReply("no-such-room", 1, 7, "text", "x"), 1.0)
    await store.set_fact("probe", "1")
    assert committed(db_path, "SELECT count(*) FROM outbound") == [(0,)]


# --- the queues ----------------------------------------------------------------------------


async def test_add_reply_returns_a_new_id_and_none_for_a_message_queued_before(
    store: Store, db_path: Path
) -> None:
    await store.add(inbound("ref-in"))
    first = await store.add_reply(NewReply(ROOM, 501, 7, "text", "satu"), 110.0)
    second = await store.add_reply(NewReply(ROOM, 502, 7, "text", "dua"), 111.0)
    again = await store.add_reply(NewReply(ROOM, 501, 7, "text", "satu lagi"), 112.0)

    assert first is not None
    assert second is not None
    assert second != first
    assert again is None
    assert committed(db_path, "SELECT id, text, created_at FROM outbound ORDER BY id") == [
        (first, "satu", 110.0),
        (second, "dua", 111.0),
    ]


@pytest.mark.parametrize("display", ["failed", "unknown"])
async def test_a_failed_or_unknown_reply_is_requeued_from_scratch(
    store: Store, db_path: Path, display: str
) -> None:
    await store.add(inbound("ref-in"))
    reply_id = await store.add_reply(NewReply(ROOM, 501, 7, "text", "x"), 110.0)
    assert reply_id is not None
    await store.update_reply(
        reply_id,
        state=display,
        display=display,
        attempts=3,
        next_attempt_at=999.0,
        ref_no="ref-old",
        status="failed",
        error="boom",
    )

    assert await store.requeue_reply(reply_id) is True

    reply = await store.reply(reply_id)
    assert reply is not None
    assert (reply.state, reply.attempts, reply.ref_no, reply.status, reply.error) == (
        "queued",
        0,
        None,
        None,
        None,
    )
    assert (reply.display, reply.shown) == ("queued", "queued")
    assert [r.id for r in await store.due_replies(0.0, 10)] == [reply_id]


@pytest.mark.parametrize("display", ["queued", "accepted", "delivered", "read"])
async def test_a_reply_that_is_not_failed_is_not_requeued(store: Store, display: str) -> None:
    await store.add(inbound("ref-in"))
    reply_id = await store.add_reply(NewReply(ROOM, 501, 7, "text", "x"), 110.0)
    assert reply_id is not None
    await store.update_reply(reply_id, state="sent", display=display, ref_no="ref-1", attempts=1)

    assert await store.requeue_reply(reply_id) is False
    assert await store.requeue_reply(reply_id + 1000) is False

    reply = await store.reply(reply_id)
    assert reply is not None
    assert (reply.state, reply.display, reply.ref_no, reply.attempts) == (
        "sent",
        display,
        "ref-1",
        1,
    )


async def test_applying_statuses_marks_events_and_sets_each_reply(
    store: Store, db_path: Path
) -> None:
    await store.add(inbound("ref-in"))
    ids = []
    for n in range(2):
        reply_id = await store.add_reply(NewReply(ROOM, 600 + n, 7, "text", "x"), 110.0)
        assert reply_id is not None
        await store.update_reply(reply_id, state="sent", ref_no=f"out-{n}", error="old")
        ids.append(reply_id)
    await store.add(status("out-0", "failed"))
    await store.add(status("out-1", "read"))
    events = [e.event_id for e in await store.pending_statuses()]
    assert len(events) == 2

    await store.apply_statuses(
        events, [(ids[0], "failed", "failed", "WhatsApp says no"), (ids[1], "read", "read", None)]
    )

    assert await store.pending_statuses() == []
    assert committed(db_path, "SELECT applied FROM status_events") == [(1,), (1,)]
    first, second = [await store.reply(i) for i in ids]
    assert first is not None
    assert second is not None
    assert (first.status, first.display, first.error) == ("failed", "failed", "WhatsApp says no")
    # No new error keeps the one there was.
    assert (second.status, second.display, second.error) == ("read", "read", "old")


async def test_marking_posted_takes_messages_off_the_queue_and_clears_the_rooms_failures(
    store: Store, db_path: Path
) -> None:
    for ref in ("a-1", "a-2", "a-3"):
        await store.add(inbound(ref))
    await store.add(inbound("b-1", OTHER))
    await store.room_failed(ROOM, 500.0, "Telegram was down")
    await store.room_failed(OTHER, 600.0, "also down")
    first, second, third = await store.waiting(ROOM, 10)

    await store.mark_posted([first.id, second.id], 77, 400.0)

    assert [m.ref_no for m in await store.waiting(ROOM, 10)] == ["a-3"]
    assert committed(
        db_path, "SELECT ref_no, posted_at, telegram_message_id FROM inbound ORDER BY id"
    ) == [("a-1", 400.0, 77), ("a-2", 400.0, 77), ("a-3", None, None), ("b-1", None, None)]
    room, other = await store.room(ROOM), await store.room(OTHER)
    assert room is not None
    assert other is not None
    assert (room.attempts, room.last_error) == (0, None)
    assert [r.room_id for r in await store.due_rooms(0.0, 10)] == [ROOM]
    # The other room keeps its failure and its backoff.
    assert (other.attempts, other.last_error) == (1, "also down")
    assert committed(db_path, "SELECT next_attempt_at FROM rooms WHERE room_id = ?", OTHER) == [
        (600.0,)
    ]
    await store.mark_posted([third.id], 78, 401.0)
    assert await store.waiting(ROOM, 10) == []
