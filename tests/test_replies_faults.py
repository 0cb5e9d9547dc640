"""The outbound side when things go wrong: a database that refuses writes, NusaSMS asking
for a day's pause, Retry buttons pressed oddly, text that looks like a command, and the
rules of retries and statuses pinned down exactly on a clock the test moves."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import Bridge
from bridge.channels.outbox import MAX_WAIT_SECONDS, STATUS_RETENTION_SECONDS, Outbox
from bridge.core.config import Settings
from bridge.core.store import NewInbound, NewReply, NewStatus, Reply, Store, StoreError
from bridge.nusasms import NusaSMSClient
from tests.conftest import NUMBER, ROOM, Callbacks
from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import FakeTelegram, SentMessage
from tests.test_replies import (
    OTHER_NUMBER,
    OTHER_ROOM,
    REPLY,
    Clock,
    clocked_room,
    db_rows,
    notices_on,
    open_room,
    press,
    reaction,
    retry_data,
    status_body,
)

JAKARTA = timezone(timedelta(hours=7))


@pytest.fixture
async def topic(callbacks: Callbacks, telegram: FakeTelegram) -> int:
    """The topic of a customer (ROOM) who just wrote, so the reply window is open."""
    return await open_room(callbacks, telegram)


def bridge_lines(caplog: pytest.LogCaptureFixture, since: int = 0) -> list[logging.LogRecord]:
    """Warnings and errors the bridge logged after record number `since`."""
    return [
        r
        for r in caplog.records[since:]
        if r.name.startswith("bridge.") and r.levelno >= logging.WARNING
    ]


# --- a database that refuses writes ---------------------------------------------------------


async def test_failing_writes_neither_spin_the_outbox_nor_flood_the_log_nor_send_twice(
    bridge: Bridge,
    callbacks: Callbacks,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = await open_room(callbacks, telegram)
    second = await open_room(callbacks, telegram, room_id=OTHER_ROOM, number=OTHER_NUMBER)
    store = bridge.store
    failing = False
    refused = 0
    transaction = store._transaction

    @contextlib.asynccontextmanager
    async def full_disk() -> AsyncIterator[Any]:
        nonlocal refused
        if failing:
            refused += 1
            raise StoreError("database write failed: database or disk is full")
        async with transaction() as db:
            yield db

    looks = 0
    look = store.due_replies

    async def counted(*args: Any) -> Any:
        nonlocal looks
        looks += 1
        return await look(*args)

    store._transaction = full_disk  # type: ignore[method-assign]
    store.due_replies = counted  # type: ignore[method-assign]
    # NusaSMS takes the first reply of each room, but answers only once the disk is full.
    nusasms.delay_next(REPLY, 0.5, times=2)
    for i in range(3):
        telegram.operator_message(thread_id=first, text=f"A{i}")
    telegram.operator_message(thread_id=second, text="B0")
    await nusasms.wait_for(lambda: len(nusasms.calls_to(REPLY)) == 2)
    failing, since, looks_before = True, len(caplog.records), looks

    # Both acceptances were refused by the database, and each retry of them too (twice).
    await telegram.wait_for(lambda: refused >= 4, timeout=10)
    assert looks - looks_before < 15
    assert refused < 12
    # One line says outcomes are kept in memory; the second acceptance and every retry of
    # the record are counted, not logged.
    assert len([r for r in bridge_lines(caplog, since) if r.name == "bridge.channels.outbox"]) == 1
    assert len(bridge_lines(caplog, since)) <= 2
    assert not [r for r in bridge_lines(caplog, since) if r.exc_info]
    assert len(nusasms.calls_to(REPLY)) == 2  # nothing more while nothing can be recorded

    failing = False
    sent = "SELECT text, ref_no FROM outbound WHERE state = 'sent' ORDER BY id"
    await telegram.wait_for(lambda: len(db_rows(settings, sent)) == 4, timeout=15)
    assert len(nusasms.calls_to(REPLY)) == 4
    assert sorted(db_rows(settings, sent)) == sorted((r.text, r.ref_no) for r in nusasms.replies)
    assert [r.text for r in nusasms.replies if r.room_id == ROOM] == ["A0", "A1", "A2"]


async def test_an_outbox_that_cannot_recover_at_start_keeps_trying(
    store: Store, nusasms: FakeNusaSMS
) -> None:
    clock = TestClock()
    reply_id = await queued_reply(store, clock)
    await store.update_reply(reply_id, state="sending")  # in flight when the bridge died
    update = store.update_reply
    refusals = 0

    async def refusing(*args: Any, **kwargs: Any) -> None:
        nonlocal refusals
        if refusals < 2:
            refusals += 1
            raise StoreError("database write failed: database is locked")
        await update(*args, **kwargs)

    store.update_reply = refusing  # type: ignore[method-assign]
    async with running_outbox(store, nusasms, clock) as outbox:
        await eventually(lambda: refusals == 1)
        clock.now += 60.0
        outbox.wake()
        await eventually(lambda: refusals == 2)
        clock.now += 60.0
        outbox.wake()
        await eventually_async(lambda: state_is(store, reply_id, "unknown"))
        assert outbox.running


async def test_an_outcome_only_in_memory_is_recorded_when_the_outbox_stops(
    store: Store, nusasms: FakeNusaSMS
) -> None:
    clock = TestClock()
    reply_id = await queued_reply(store, clock)
    update = store.update_reply
    refusing = True

    async def refuse_the_record(reply_id: int, **fields: Any) -> None:
        if refusing and fields.get("state") == "sent":
            raise StoreError("database write failed: database is locked")
        await update(reply_id, **fields)

    store.update_reply = refuse_the_record  # type: ignore[method-assign]
    async with running_outbox(store, nusasms, clock) as outbox:
        await eventually(lambda: outbox.unrecorded == 1)
        assert (await row(store, reply_id)).state == "sending"
        refusing = False
    reply = await row(store, reply_id)
    assert (reply.state, reply.ref_no) == ("sent", nusasms.replies[0].ref_no)
    assert len(nusasms.calls_to(REPLY)) == 1


# --- waits NusaSMS asks for -----------------------------------------------------------------


async def test_a_retry_after_of_a_day_is_capped_and_the_operator_told_it_waits(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    bridge, clock, callbacks, topic = await clocked_room(make_bridge, settings, telegram, http)
    nusasms.fail_next(REPLY, 429, headers={"Retry-After": "86400"})
    mid = telegram.operator_message(thread_id=topic, text="sabar sebentar")
    waiting = "SELECT state, attempts, next_attempt_at FROM outbound"
    await telegram.wait_for(lambda: [r[:2] for r in db_rows(settings, waiting)] == [("queued", 1)])
    [(_, _, next_at)] = db_rows(settings, waiting)
    assert next_at - clock() <= MAX_WAIT_SECONDS
    assert next_at - clock() > MAX_WAIT_SECONDS - 5

    clock.offset += 61
    await callbacks.status(status_body("wake-1", "sent"))  # any callback wakes the outbox
    await telegram.wait_for(lambda: len(notices_on(telegram, mid)) == 1)
    [notice] = notices_on(telegram, mid)
    room = await bridge.store.room(ROOM)
    assert room is not None
    closes = datetime.fromtimestamp(room.last_inbox_at + 24 * 3600, UTC).astimezone(JAKARTA)
    text = notice.plain_text or ""
    assert "Not sent yet" in text
    assert "busy or unreachable" in text
    assert f"closes at {closes:%d %b %H:%M}" in text
    assert retry_data(notice) == []
    await telegram.wait_for(lambda: reaction(telegram, mid) == "😴")

    clock.offset += MAX_WAIT_SECONDS
    await callbacks.status(status_body("wake-2", "sent"))
    await telegram.wait_for(lambda: reaction(telegram, mid) == "🕊")
    assert len(nusasms.calls_to(REPLY)) == 2
    assert len(notices_on(telegram, mid)) == 1  # said once


# --- the Retry button -----------------------------------------------------------------------


async def refused_reply(
    telegram: FakeTelegram, nusasms: FakeNusaSMS, topic: int
) -> tuple[int, SentMessage]:
    """A reply NusaSMS refused (422): the operator's message id and the notice with Retry."""
    nusasms.fail_next(REPLY, 422, {"detail": [{"loc": ["body"], "msg": "nope", "type": "x"}]})
    mid = telegram.operator_message(thread_id=topic, text="tolong kirim")
    await telegram.wait_for(lambda: len(notices_on(telegram, mid)) == 1)
    [notice] = notices_on(telegram, mid)
    return mid, notice


def answers(telegram: FakeTelegram) -> list[str]:
    return [c.params.get("text") for c in telegram.calls_of("answerCallbackQuery")]


async def test_retry_pressed_twice_sends_once(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    mid, notice = await refused_reply(telegram, nusasms, topic)
    [data] = retry_data(notice)
    press(telegram, notice, data)
    press(telegram, notice, data, user_id=778)

    await telegram.wait_for(lambda: len(answers(telegram)) == 2)
    await telegram.wait_for(lambda: reaction(telegram, mid) == "🕊")
    assert answers(telegram) == ["Sending again.", "Nothing to retry: it was already sent again."]
    assert len(nusasms.calls_to(REPLY)) == 2  # the refused one and one retry
    assert [r.text for r in nusasms.replies] == ["tolong kirim"]


@pytest.mark.parametrize("data", ["retry:99999999999999999999", "retry:9223372036854775807"])
async def test_retry_of_a_message_that_is_not_ours_is_answered(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS, data: str
) -> None:
    _, notice = await refused_reply(telegram, nusasms, topic)
    press(telegram, notice, data)
    press(telegram, notice, "retry:²")  # a digit to str.isdigit, not to int()

    await telegram.wait_for(lambda: len(answers(telegram)) == 2)
    assert answers(telegram) == ["Unknown message.", "Unknown button."]
    assert len(nusasms.calls_to(REPLY)) == 1


async def test_an_answer_telegram_refuses_is_logged_once_and_the_retry_still_happens(
    topic: int,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mid, notice = await refused_reply(telegram, nusasms, topic)
    [data] = retry_data(notice)
    too_old = "Bad Request: query is too old and response timeout expired or query ID is invalid"
    telegram.fail_next("answerCallbackQuery", 400, too_old, times=2)
    since = len(caplog.records)
    press(telegram, notice, data)

    await telegram.wait_for(lambda: reaction(telegram, mid) == "🕊")
    await telegram.wait_for(lambda: notice.reply_markup is None)  # the button is gone
    press(telegram, notice, data, user_id=778)
    await telegram.wait_for(lambda: len(telegram.calls_of("answerCallbackQuery")) == 2)
    mark = telegram.operator_message(thread_id=topic, text="penanda")  # handled after both
    await telegram.wait_for(lambda: reaction(telegram, mark) == "🕊")

    said = [r.getMessage() for r in bridge_lines(caplog, since)]
    assert len([line for line in said if "cannot answer a Retry press" in line]) == 1
    assert not [r for r in caplog.records[since:] if r.exc_info]
    assert len(nusasms.calls_to(REPLY)) == 3


# --- text that starts with "/" --------------------------------------------------------------


async def test_slash_text_that_is_no_command_is_not_sent_and_the_operator_told_how(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    path = telegram.operator_message(thread_id=topic, text="/home/user is the folder")
    typo = telegram.operator_message(
        thread_id=topic, text="/inof", entities=[{"type": "bot_command", "offset": 0, "length": 5}]
    )
    known = telegram.operator_message(
        thread_id=topic, text="/help", entities=[{"type": "bot_command", "offset": 0, "length": 5}]
    )
    telegram.operator_message(thread_id=topic, text="\\/home/user is the folder")

    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    await telegram.wait_for(lambda: len(notices_on(telegram, typo)) == 1)
    assert [r.text for r in nusasms.replies] == ["/home/user is the folder"]
    for mid, token in ((path, "/home/user"), (typo, "/inof")):
        [notice] = notices_on(telegram, mid)
        text = notice.plain_text or ""
        assert "Not sent" in text
        assert f"{token} is no command" in text
        assert "backslash" in text
    [help_answer] = notices_on(telegram, known)
    assert "Not sent" not in (help_answer.plain_text or "")


async def test_an_escaped_slash_keeps_the_formatting_in_place(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    telegram.operator_message(
        thread_id=topic,
        text="\\/start lalu tekan tombol",
        entities=[
            {"type": "code", "offset": 0, "length": 7},
            {"type": "bold", "offset": 13, "length": 5},
        ],
    )
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    assert nusasms.replies[0].text == "```/start``` lalu *tekan* tombol"


# --- statuses of messages the bridge never sent ---------------------------------------------


async def test_statuses_of_unknown_ref_nos_are_forgotten_after_a_week(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    clock = Clock()
    bridge = await make_bridge(settings, clock=clock)
    callbacks = Callbacks.of(bridge, http)
    topic = await open_room(callbacks, telegram)
    mid = telegram.operator_message(thread_id=topic, text="punya kita")
    await telegram.wait_for(lambda: reaction(telegram, mid) == "🕊")
    [ours] = [r.ref_no for r in nusasms.replies]
    assert (
        await callbacks.status(status_body("NSWA-FROM-THE-DASHBOARD", "delivered"))
    ).status == 200
    assert (await callbacks.status(status_body(ours, "delivered"))).status == 200
    await telegram.wait_for(lambda: reaction(telegram, mid) == "👌")
    events = "SELECT ref_no FROM status_events ORDER BY id"
    assert db_rows(settings, events) == [("NSWA-FROM-THE-DASHBOARD",), (ours,)]

    clock.offset = STATUS_RETENTION_SECONDS + 3600
    assert (await callbacks.status(status_body("NSWA-FRESH", "sent"))).status == 200
    await telegram.wait_for(lambda: db_rows(settings, events) == [(ours,), ("NSWA-FRESH",)])


async def test_forgetting_statuses_goes_a_bounded_batch_at_a_time(store: Store) -> None:
    clock = TestClock()
    reply_id = await queued_reply(store, clock)
    await store.update_reply(reply_id, state="sent", ref_no="NSWA-OURS")
    await store.add(NewStatus("NSWA-OURS", "delivered", 50.0, 50.0))  # never applied: still ours
    for i in range(12):
        await store.add(NewStatus(f"NSWA-ELSEWHERE-{i}", "sent", 100.0 + i, 100.0 + i))
    await store.add(NewStatus("NSWA-LATER", "sent", 500.0, 500.0))
    assert await store.purge_orphan_statuses(400.0, 5) == 5
    assert await store.purge_orphan_statuses(400.0, 5) == 5
    assert await store.purge_orphan_statuses(400.0, 5) == 2
    assert await store.purge_orphan_statuses(400.0, 5) == 0
    assert await store.purge_orphan_statuses(500.0, 5) == 0  # received at 500: kept
    assert await store.purge_orphan_statuses(500.5, 5) == 1
    assert [e.status for e in await store.pending_statuses()] == ["delivered"]


# --- the rules, exactly, on a clock the test moves ------------------------------------------


class TestClock:
    """A clock that stands still until the test moves it."""

    __test__ = False

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


_message_ids = itertools.count(1)


async def queued_reply(store: Store, clock: TestClock, text: str = "halo") -> int:
    """A customer who just wrote and an operator's reply queued for them; the reply's id."""
    await store.add(NewInbound(f"in-{clock.now}", ROOM, NUMBER, "hai", clock.now, clock.now))
    reply_id = await store.add_reply(
        NewReply(ROOM, next(_message_ids), 777, "text", text), clock.now
    )
    assert reply_id is not None
    return reply_id


WAIT_SECONDS = 5.0


async def eventually_async(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until `check` holds, polling every 10 ms; TimeoutError after `WAIT_SECONDS`."""
    async with asyncio.timeout(WAIT_SECONDS):
        while not await check():  # noqa: ASYNC110 - the database has no event to wait on
            await asyncio.sleep(0.01)


async def eventually(check: Callable[[], bool]) -> None:
    """Wait until `check` holds, polling every 10 ms; TimeoutError after `WAIT_SECONDS`."""

    async def checked() -> bool:
        return check()

    await eventually_async(checked)


async def state_is(store: Store, reply_id: int, state: str) -> bool:
    reply = await store.reply(reply_id)
    return reply is not None and reply.state == state


async def row(store: Store, reply_id: int) -> Reply:
    reply = await store.reply(reply_id)
    assert reply is not None
    return reply


async def next_attempt_at(store: Store, reply_id: int) -> float:
    rows = await store._fetch("SELECT next_attempt_at FROM outbound WHERE id = ?", (reply_id,))
    return float(rows[0][0])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh database, closed at the end."""
    opened = await Store.open(tmp_path / "outbox.sqlite3")
    yield opened
    await opened.close()


@contextlib.asynccontextmanager
async def running_outbox(
    store: Store,
    nusasms: FakeNusaSMS,
    clock: TestClock,
    *,
    request_timeout: float = 5.0,
    start: bool = True,
) -> AsyncIterator[Outbox]:
    """An outbox worker on a frozen clock, with no jitter (backoff is half its ceiling)."""
    client = NusaSMSClient(
        nusasms.api_key, base_url=nusasms.base_url, request_timeout=request_timeout
    )

    async def no_files(file_id: str) -> bytes:
        raise AssertionError(file_id)

    outbox = Outbox(
        store,
        client,
        fetch_file=no_files,
        media=None,
        window_seconds=24 * 3600,
        tz=JAKARTA,
        on_changed=lambda: None,
        clock=clock,
        rng=lambda: 0.0,
    )
    if start:
        outbox.start()
    try:
        yield outbox
    finally:
        await outbox.stop()
        await client.close()


async def attempts_are(store: Store, reply_id: int, state: str, attempts: int) -> bool:
    reply = await store.reply(reply_id)
    return reply is not None and (reply.state, reply.attempts) == (state, attempts)


async def test_each_refusal_counts_an_attempt_and_waits_at_least_what_nusasms_asked(
    store: Store, nusasms: FakeNusaSMS
) -> None:
    clock = TestClock()
    reply_id = await queued_reply(store, clock)
    # (NusaSMS's answer, the wait that follows it): the backoff doubles from 1 s (no jitter
    # here); a Retry-After is a lower bound, itself capped at MAX_WAIT_SECONDS.
    steps: list[tuple[int, dict[str, str] | None, float]] = [
        (503, None, 1.0),
        (429, {"Retry-After": "7"}, 7.0),
        (429, {"Retry-After": "1"}, 4.0),
        (429, {"Retry-After": "86400"}, MAX_WAIT_SECONDS),
        (502, None, 16.0),
    ]
    for status, headers, _ in steps:
        nusasms.fail_next(REPLY, status, headers=headers)
    async with running_outbox(store, nusasms, clock) as outbox:
        for attempt, (_, _, wait) in enumerate(steps, start=1):
            await eventually_async(
                functools.partial(attempts_are, store, reply_id, "queued", attempt)
            )
            assert len(nusasms.calls_to(REPLY)) == attempt
            assert await next_attempt_at(store, reply_id) == clock.now + wait
            clock.now += wait  # exactly due
            outbox.wake()
        await eventually_async(functools.partial(state_is, store, reply_id, "sent"))
    reply = await row(store, reply_id)
    assert reply.attempts == len(steps) + 1
    assert [reply.ref_no] == [r.ref_no for r in nusasms.replies]
    assert len(nusasms.calls_to(REPLY)) == len(steps) + 1


@pytest.mark.parametrize(
    ("status", "body", "state"),
    [
        # NusaSMS cannot have acted on it: sent again later.
        (429, None, "queued"),
        (502, None, "queued"),
        (503, None, "queued"),
        (504, None, "queued"),
        # It may have: never sent again without the operator.
        (500, None, "unknown"),
        (200, "<html>ok</html>", "unknown"),
        (201, {"error": False, "data": {}}, "unknown"),
        # It said no: the operator may retry.
        (400, None, "failed"),
        (401, None, "failed"),
        (422, {"detail": [{"loc": ["body"], "msg": "nope", "type": "x"}]}, "failed"),
        (200, {"error": True, "message": "Room is closed"}, "failed"),
    ],
)
async def test_what_may_have_reached_nusasms_is_told_apart_from_what_cannot_have(
    store: Store, nusasms: FakeNusaSMS, status: int, body: Any, state: str
) -> None:
    clock = TestClock()
    reply_id = await queued_reply(store, clock)
    nusasms.fail_next(REPLY, status, body)
    async with running_outbox(store, nusasms, clock):
        await eventually_async(functools.partial(attempts_are, store, reply_id, state, 1))
    reply = await row(store, reply_id)
    assert reply.display == ("queued" if state == "queued" else state)
    assert reply.ref_no is None
    assert reply.error
    assert len(nusasms.calls_to(REPLY)) == 1


async def test_no_answer_in_time_is_unknown_and_no_connection_is_retried(
    store: Store, nusasms: FakeNusaSMS
) -> None:
    clock = TestClock()
    slow = await queued_reply(store, clock, "lambat")
    nusasms.delay_next(REPLY, 1.0)
    async with running_outbox(store, nusasms, clock, request_timeout=0.3):
        await eventually_async(functools.partial(attempts_are, store, slow, "unknown", 1))
    await nusasms.go_down()
    unreachable = await queued_reply(store, clock, "terputus")
    async with running_outbox(store, nusasms, clock):
        await eventually_async(functools.partial(attempts_are, store, unreachable, "queued", 1))
    assert (await row(store, unreachable)).display == "queued"


async def test_statuses_only_move_forward_even_within_one_batch(
    store: Store, nusasms: FakeNusaSMS
) -> None:
    clock = TestClock()
    first = await queued_reply(store, clock, "satu")
    second = await queued_reply(store, clock, "dua")
    await store.update_reply(first, state="sent", ref_no="R1", display="accepted")
    await store.update_reply(second, state="sent", ref_no="R2", display="accepted")

    async def batch(*events: tuple[str, str]) -> None:
        for ref_no, status in events:
            await store.add(NewStatus(ref_no, status, clock.now, clock.now))
        await outbox._apply_statuses()
        assert await store.pending_statuses() == []

    async def shown(reply_id: int) -> tuple[str | None, str, str | None]:
        reply = await row(store, reply_id)
        return reply.status, reply.display, reply.error

    async with running_outbox(store, nusasms, clock, start=False) as outbox:
        await batch(("R1", "delivered"), ("R2", "sent"), ("R1", "read"), ("R1", "sent"))
        assert await shown(first) == ("read", "read", None)
        assert await shown(second) == ("sent", "accepted", None)
        await batch(("R1", "delivered"), ("R2", "delivered"))
        assert await shown(first) == ("read", "read", None)
        assert await shown(second) == ("delivered", "delivered", None)
        await batch(("R2", "failed"), ("R1", "aborted"))
        assert await shown(second) == ("failed", "failed", "WhatsApp reports the message failed")
        assert await shown(first) == ("aborted", "failed", "WhatsApp reports the message aborted")
        await batch(("R2", "read"), ("R1", "delivered"), ("R2", "unsent"))
        assert await shown(second) == ("failed", "failed", "WhatsApp reports the message failed")
        assert await shown(first) == ("aborted", "failed", "WhatsApp reports the message aborted")


async def test_a_reply_waits_its_minute_from_when_it_was_queued_again(store: Store) -> None:
    clock = TestClock()
    old = await queued_reply(store, clock, "lama")
    await store.update_reply(old, state="failed", display="failed", error="nope")
    clock.now += 3600
    assert await store.requeue_reply(old, clock.now)
    assert not await store.requeue_reply(old, clock.now)  # a second press changes nothing
    fresh = await queued_reply(store, clock, "baru")

    assert await store.mark_waiting_replies(clock.now - 60) == clock.now
    assert [(await row(store, i)).display for i in (old, fresh)] == ["queued", "queued"]
    clock.now += 60
    assert await store.mark_waiting_replies(clock.now - 60) is None
    assert [(await row(store, i)).display for i in (old, fresh)] == ["waiting", "waiting"]
