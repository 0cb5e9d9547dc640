"""The inbound path when things go wrong after Telegram said yes, or when Telegram says no.

A database that refuses writes right after a Telegram call must not make the bridge repeat
the call; a message Telegram refuses for good must not block its room; a huge `retry_after`
must not stop the group; rooms with long messages must not make the others wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from telegram import Bot

from bridge.app import Bridge
from bridge.core.config import Settings
from bridge.core.logs import redact_loggers
from bridge.core.pacing import MAX_PAUSE_SECONDS, GroupBudget
from bridge.core.store import NewInbound, Store, StoreError
from bridge.group.topics import Topics
from tests.conftest import NUMBER, ROOM, SECRETS, Callbacks, inbox_body
from tests.fakes.telegram import FakeTelegram
from tests.test_pacing import FakeTime

ROOMS = [f"7d1e9a40-{i:04d}-4a2b-9c3d-0123456789ab" for i in range(3)]


def db_rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(settings.storage.path) as db:
        return db.execute(sql).fetchall()


def texts(telegram: FakeTelegram) -> list[str]:
    return [m.plain_text or "" for m in telegram.messages]


class BrokenWrites:
    """Every write of the store fails (as on a full disk) while `broken` is set."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.broken = False
        self.refused = 0
        original = store._transaction

        @contextlib.asynccontextmanager
        async def transaction() -> AsyncIterator[Any]:
            if self.broken:
                self.refused += 1
                raise StoreError("database write failed: database or disk is full")
            async with original() as db:
                yield db

        monkeypatch.setattr(store, "_transaction", transaction)


def posting_calls(telegram: FakeTelegram) -> int:
    return sum(c.method in ("createForumTopic", "sendMessage") for c in telegram.calls)


def relay_lines(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.name == "bridge.group.relay")


async def queue_three_rooms(make_bridge: Any, settings: Settings, http: Any) -> Bridge:
    """Three customers with two messages each, acknowledged while Telegram is down."""
    bridge: Bridge = await make_bridge(settings)
    callbacks = Callbacks.of(bridge, http)
    for r, room in enumerate(ROOMS):
        for i in range(2):
            body = inbox_body(f"ref-{r}-{i}", f"pesan {r}-{i}", room_id=room)
            body["sender_number"] = f"62812000000{r}"
            assert (await callbacks.inbox(body)).status == 200
    return bridge


async def everything_recorded(settings: Settings) -> bool:
    waiting = db_rows(settings, "SELECT count(*) FROM inbound WHERE posted_at IS NULL")
    pending = db_rows(settings, "SELECT count(*) FROM rooms WHERE header_pending = 1")
    return waiting == [(0,)] and pending == [(0,)]


@pytest.mark.parametrize("stage", ["topic", "header", "post"])
async def test_a_write_failing_after_telegram_took_the_call_never_repeats_the_call(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stage: str,
) -> None:
    method = "createForumTopic" if stage == "topic" else "sendMessage"
    # Telegram answers slowly, so the database breaks while the call is in flight.
    telegram.delay_next(method, 0.3, times=1000)
    await telegram.go_down()
    bridge = await queue_three_rooms(make_bridge, settings, http)
    writes = BrokenWrites(bridge.store, monkeypatch)
    await telegram.come_up()

    def in_flight() -> bool:
        calls = telegram.calls_of(method)
        if stage == "post":
            return any("pesan" in str(c.params.get("text")) for c in calls)
        return bool(calls)

    await telegram.wait_for(in_flight, timeout=15)
    writes.broken = True
    lines_before = relay_lines(caplog)
    calls_before = posting_calls(telegram)
    await asyncio.sleep(3.0)  # N seconds of a database that refuses every write

    # Backoff held in memory: a few tries per room, not a spin; each error said once.
    assert writes.refused < 40
    assert posting_calls(telegram) - calls_before <= 2 * len(ROOMS)
    assert relay_lines(caplog) - lines_before <= 2  # one line for all rooms, not one a try
    assert len(telegram.calls_of("createForumTopic")) <= len(ROOMS)
    assert bridge._relay is not None
    assert bridge._relay.unrecorded >= 1  # what Telegram took waits in memory for the write
    assert all(texts(telegram).count(f"pesan {r}-0") <= 1 for r in range(len(ROOMS)))

    writes.broken = False
    for _ in range(3000):
        if await everything_recorded(settings):
            break
        await asyncio.sleep(0.01)
    assert await everything_recorded(settings)

    assert len(telegram.calls_of("createForumTopic")) == len(ROOMS)
    assert len(telegram.topics) == len(ROOMS)
    rows = db_rows(settings, "SELECT room_id, topic_id FROM rooms ORDER BY room_id")
    assert {topic for _room, topic in rows} == set(telegram.topics)
    for topic_id in telegram.topics:
        shown = [m.plain_text or "" for m in telegram.messages_in(topic_id)]
        headers = [t for t in shown if any(room in t for room in ROOMS)]
        assert len(headers) == 1, shown
        assert len(shown) == 2, shown  # the header, then both messages in one post
    for r in range(len(ROOMS)):
        combined = f"pesan {r}-0\n\npesan {r}-1"
        assert texts(telegram).count(combined) == 1
        [message] = [m for m in telegram.messages if m.plain_text == combined]
        recorded = db_rows(
            settings,
            f"SELECT DISTINCT telegram_message_id FROM inbound WHERE ref_no LIKE 'ref-{r}-%'",  # noqa: S608
        )
        assert recorded == [(message.message_id,)]


async def test_what_telegram_took_is_recorded_at_shutdown_so_a_restart_makes_no_second_topic(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    telegram.delay_next("createForumTopic", 0.3, times=1000)
    await telegram.go_down()
    first = await queue_three_rooms(make_bridge, settings, http)
    writes = BrokenWrites(first.store, monkeypatch)
    await telegram.come_up()
    await telegram.wait_for(lambda: bool(telegram.calls_of("createForumTopic")), timeout=15)
    writes.broken = True
    relay = first._relay
    assert relay is not None
    await telegram.wait_for(lambda: relay.unrecorded >= 1)
    writes.broken = False
    await first.stop()  # while the room still waits out its backoff
    recorded = db_rows(settings, "SELECT count(*) FROM rooms WHERE topic_id IS NOT NULL")
    assert recorded == [(len(telegram.calls_of("createForumTopic")),)]

    await make_bridge(settings)
    for _ in range(3000):
        if await everything_recorded(settings):
            break
        await asyncio.sleep(0.01)
    assert await everything_recorded(settings)
    assert len(telegram.calls_of("createForumTopic")) == len(ROOMS)
    assert len(telegram.topics) == len(ROOMS)


async def test_a_database_locked_by_another_process_after_a_post_does_not_repeat_it(
    callbacks: Callbacks, settings: Settings, telegram: FakeTelegram
) -> None:
    await callbacks.inbox(inbox_body("ref-1", "pertama"))
    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    await telegram.wait_for(
        lambda: db_rows(settings, "SELECT count(*) FROM inbound WHERE posted_at IS NULL") == [(0,)]
    )
    telegram.delay_next("sendMessage", 0.5)
    assert (await callbacks.inbox(inbox_body("ref-2", "kedua"))).status == 200
    await telegram.wait_for(
        lambda: any(c.params.get("text") == "kedua" for c in telegram.calls_of("sendMessage"))
    )
    blocker = sqlite3.connect(settings.storage.path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        await asyncio.sleep(4.5)  # two of the writer's 2-second busy waits
        assert texts(telegram).count("kedua") == 1
    finally:
        blocker.rollback()
        blocker.close()
    for _ in range(3000):
        rows = db_rows(settings, "SELECT telegram_message_id FROM inbound WHERE ref_no = 'ref-2'")
        if rows != [(None,)]:
            break
        await asyncio.sleep(0.01)
    [message] = [m for m in telegram.messages if m.plain_text == "kedua"]
    assert rows == [(message.message_id,)]
    assert len(telegram.topics) == 1


async def test_a_message_telegram_refuses_for_good_is_moved_aside_with_a_notice(
    callbacks: Callbacks, settings: Settings, telegram: FakeTelegram
) -> None:
    await callbacks.inbox(inbox_body("ref-1", "pertama"))
    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    [topic] = telegram.topics
    telegram.fail_next("sendMessage", 400, "Bad Request: message is too long")
    await callbacks.inbox(inbox_body("ref-2", "ditolak <b>&</b>"))
    await telegram.wait_for(lambda: any("could not be shown" in t for t in texts(telegram)))
    await callbacks.inbox(inbox_body("ref-3", "berikutnya"))

    await telegram.wait_for(lambda: texts(telegram)[-1:] == ["berikutnya"])
    shown = [m.plain_text or "" for m in telegram.messages_in(topic)]
    assert shown[1] == "pertama"
    notice = shown[2]
    assert "Message is too long" in notice  # Telegram's reason, as PTB words it
    assert notice.endswith("ditolak <b>&</b>")  # the text, shown as plain text
    assert shown[3] == "berikutnya"
    for _ in range(300):
        rows = db_rows(
            settings, "SELECT ref_no, refused, text FROM inbound WHERE refused IS NOT NULL"
        )
        if rows:
            break
        await asyncio.sleep(0.01)
    assert rows == [("ref-2", "Message is too long", "ditolak <b>&</b>")]  # kept
    await telegram.wait_for(
        lambda: db_rows(settings, "SELECT count(*) FROM inbound WHERE posted_at IS NULL") == [(0,)]
    )


async def test_a_refused_combined_post_is_retried_one_message_at_a_time(
    make_bridge: Any, settings: Settings, telegram: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    bridge = await make_bridge(settings)
    callbacks = Callbacks.of(bridge, http)
    # The topic and its header exist first, so the next sendMessage is the combined post.
    await callbacks.inbox(inbox_body("ref-0", "nol"))
    await telegram.wait_for(lambda: texts(telegram)[-1:] == ["nol"], timeout=15)
    await telegram.go_down()
    await callbacks.inbox(inbox_body("ref-1", "satu"))
    await callbacks.inbox(inbox_body("ref-2", "dua"))
    await callbacks.inbox(inbox_body("ref-3", "tiga"))
    # The post of all three is refused, then "satu" alone.
    telegram.fail_next("sendMessage", 400, "Bad Request: can't parse entities", times=2)
    await telegram.come_up()

    await telegram.wait_for(lambda: any("tiga" in t for t in texts(telegram)), timeout=15)
    _header, first, notice, rest = texts(telegram)
    assert first == "nol"
    assert "could not be shown" in notice
    assert notice.endswith("satu")
    assert rest == "dua\n\ntiga"  # the others combine again
    assert db_rows(settings, "SELECT ref_no FROM inbound WHERE refused IS NOT NULL") == [("ref-1",)]


async def test_a_one_line_message_is_not_held_up_by_other_rooms_long_messages(
    make_bridge: Any, settings: Settings, telegram: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    await telegram.go_down()
    bridge = await make_bridge(settings)
    callbacks = Callbacks.of(bridge, http)
    long_text = " ".join(f"kata{i}" for i in range(6500))  # about 58 000 characters
    for r in range(4):  # as many rooms as the relay serves at once
        body = inbox_body(f"long-{r}", long_text, room_id=ROOMS[0][:-1] + str(r))
        body["sender_number"] = f"62812000000{r}"
        assert (await callbacks.inbox(body)).status == 200
    short = inbox_body("short", "halo, satu baris saja", room_id=ROOM, sender_number=NUMBER)
    assert (await callbacks.inbox(short)).status == 200
    await telegram.come_up()

    await telegram.wait_for(lambda: "halo, satu baris saja" in texts(telegram), timeout=15)
    before = texts(telegram)[: texts(telegram).index("halo, satu baris saja")]
    # Four headers and first parts, then the short one's header and text, in the first round
    # or two; not after the 4 x 15 parts of the others.
    assert len(before) < 24
    assert sum("kata" in t for t in before) < 20
    # and the long ones still finish, each in order with its "(cont. k/n)" parts
    await telegram.wait_for(lambda: sum("kata6499" in t for t in texts(telegram)) == 4, timeout=30)
    for topic_id, topic in telegram.topics.items():
        shown = [m.plain_text or "" for m in telegram.messages_in(topic_id)][1:]
        if topic.name == "+62 812-3456-7890":
            assert shown == ["halo, satu baris saja"]
            continue
        for number, part in enumerate(shown[1:], start=2):
            assert part.startswith(f"(cont. {number}/{len(shown)})\n")


@contextlib.asynccontextmanager
async def topics_on(
    telegram: FakeTelegram, tmp_path: Path, budget: GroupBudget | None = None
) -> AsyncIterator[tuple[Store, Topics]]:
    """A store with one customer's message and Topics posting into the fake group."""
    store = await Store.open(tmp_path / "bridge.sqlite3")
    bot = Bot(telegram.token, base_url=telegram.base_url, base_file_url=telegram.base_file_url)
    unredact = redact_loggers(SECRETS)  # as the bridge does at start-up
    try:
        await store.add(NewInbound("ref-1", ROOM, NUMBER, "halo", time.time(), time.time()))
        topics = Topics(
            bot,
            store,
            budget or GroupBudget(100),
            chat_id=telegram.chat_id,
            tz=ZoneInfo("Asia/Jakarta"),
            window_hours=24,
        )
        yield store, topics
    finally:
        await bot.shutdown()
        await store.close()
        unredact()


async def test_a_huge_retry_after_pauses_the_group_at_most_the_cap_then_tries_again(
    telegram: FakeTelegram, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t = FakeTime()
    budget = GroupBudget(20, clock=t.clock, sleep=t.sleep)
    async with topics_on(telegram, tmp_path, budget) as (_store, topics):
        day = 86_400
        telegram.fail_next(
            "createForumTopic", 429, f"Too Many Requests: retry after {day}", retry_after=day
        )

        message = await topics.post(ROOM, "halo")

    assert message.text == "halo"
    assert t.slept == [MAX_PAUSE_SECONDS]  # not a day
    assert MAX_PAUSE_SECONDS <= 300
    assert any("the cap" in r.getMessage() and "86400" in r.getMessage() for r in caplog.records)


async def test_a_close_that_could_not_be_recorded_still_reopens_before_the_next_post(
    telegram: FakeTelegram, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with topics_on(telegram, tmp_path) as (store, topics):
        await topics.post(ROOM, "halo")
        [topic_id] = telegram.topics
        await topics.bot.close_forum_topic(telegram.chat_id, topic_id)
        writes = BrokenWrites(store, monkeypatch)
        writes.broken = True
        with pytest.raises(StoreError):
            await topics.closed(ROOM)
        writes.broken = False

        await topics.post(ROOM, "lagi")

        assert not telegram.topics[topic_id].closed
        assert len(telegram.calls_of("reopenForumTopic")) == 1


async def test_a_reopen_that_could_not_be_recorded_is_not_repeated(
    telegram: FakeTelegram, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with topics_on(telegram, tmp_path) as (store, topics):
        await topics.post(ROOM, "halo")
        [topic_id] = telegram.topics
        await topics.bot.close_forum_topic(telegram.chat_id, topic_id)
        await topics.closed(ROOM)
        original = store.set_closed

        async def refuse(room_id: str, closed: bool) -> None:
            raise StoreError("database write failed: database is locked")

        monkeypatch.setattr(store, "set_closed", refuse)
        with pytest.raises(StoreError):
            await topics.post(ROOM, "satu")  # reopened at Telegram, not recorded
        assert topics.unrecorded == 1
        monkeypatch.setattr(store, "set_closed", original)

        await topics.post(ROOM, "satu")
        await topics.post(ROOM, "dua")

        assert len(telegram.calls_of("reopenForumTopic")) == 1
        assert [m.plain_text for m in telegram.messages_in(topic_id)][-2:] == ["satu", "dua"]
        room = await store.room(ROOM)
        assert room is not None
        assert not room.closed
        assert topics.unrecorded == 0


async def test_a_closed_topic_someone_reopened_by_hand_takes_the_post(
    telegram: FakeTelegram, tmp_path: Path
) -> None:
    async with topics_on(telegram, tmp_path) as (store, topics):
        await topics.post(ROOM, "halo")
        [topic_id] = telegram.topics
        await topics.bot.close_forum_topic(telegram.chat_id, topic_id)
        await topics.closed(ROOM)
        await topics.bot.reopen_forum_topic(telegram.chat_id, topic_id)  # in the Telegram app

        await topics.post(ROOM, "lagi")  # Telegram answers TOPIC_NOT_MODIFIED to the reopen

        assert [m.plain_text for m in telegram.messages_in(topic_id)][-1] == "lagi"
        room = await store.room(ROOM)
        assert room is not None
        assert not room.closed


async def test_a_full_window_waits_for_its_oldest_send_not_its_newest() -> None:
    t = FakeTime()
    budget = GroupBudget(2, 60, clock=t.clock, sleep=t.sleep)
    await budget.acquire()  # at 1000
    t.now += 10
    await budget.acquire()  # at 1010
    t.now += 10
    await budget.acquire()  # full: the one from 1000 leaves the window at 1060
    assert t.slept == [40.0]
    assert t.now == 1060.0


async def test_a_room_whose_failure_cannot_be_recorded_still_backs_off(
    callbacks: Callbacks,
    telegram: FakeTelegram,
    bridge: Bridge,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Telegram fails every post and the database cannot record the failures either.
    async def refuse(*args: Any) -> None:
        raise StoreError("database write failed: disk I/O error")

    monkeypatch.setattr(bridge.store, "room_failed", refuse)
    telegram.fail_next("createForumTopic", 502, "Bad Gateway", times=10_000)
    await callbacks.inbox(inbox_body("ref-1", "halo"))
    await telegram.wait_for(lambda: bool(telegram.calls_of("createForumTopic")))
    await asyncio.sleep(2.5)

    # backoff 0.5-1 s, 1-2 s, ...: a handful of tries, not hundreds
    assert len(telegram.calls_of("createForumTopic")) <= 5
    lines = [r.getMessage() for r in caplog.records if r.name == "bridge.group.relay"]
    assert sum("could not record" in line for line in lines) == 1
    assert sum("posting room" in line for line in lines) == 1


async def test_a_room_closed_with_close_gets_no_window_reminder_or_notice(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "bridge.sqlite3")
    try:
        wrote = 1_000_000.0
        await store.add(NewInbound("ref-1", ROOM, NUMBER, "halo", wrote, wrote))
        await store.set_topic(ROOM, 42)
        window = (wrote - 1, wrote + 1)
        assert [r.room_id for r in await store.rooms_to_remind(*window)] == [ROOM]
        assert [r.room_id for r in await store.rooms_just_closed(*window)] == [ROOM]

        await store.set_closed(ROOM, True)

        assert await store.rooms_to_remind(*window) == []
        assert await store.rooms_just_closed(*window) == []
        await store.set_topic(ROOM, 43)  # a new topic is an open one
        room = await store.room(ROOM)
        assert room is not None
        assert not room.closed
    finally:
        await store.close()
