"""The inbound path, end to end over real HTTP: NusaSMS callback in, Telegram topic post out."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import Bridge
from bridge.core.config import Settings
from tests.conftest import NUMBER, ROOM, Callbacks, inbox_body
from tests.fakes.telegram import FakeTelegram
from tests.settle import settled

OTHER_ROOM = "7d1e9a40-1111-4a2b-9c3d-0123456789ab"


def db_rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(settings.storage.path) as db:
        return db.execute(sql).fetchall()


def texts_in(telegram: FakeTelegram, thread_id: int) -> list[str]:
    return [m.plain_text or "" for m in telegram.messages_in(thread_id)]


async def test_first_message_creates_topic_with_header_then_the_text(
    callbacks: Callbacks, telegram: FakeTelegram
) -> None:
    response = await callbacks.inbox(inbox_body("ref-1", "Halo <b>&</b> kak"))
    assert response.status == 200

    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    [topic] = telegram.topics.values()
    assert topic.name == "+62 812-3456-7890"
    header, text = texts_in(telegram, topic.thread_id)
    assert "+62 812-3456-7890" in header
    assert ROOM in header
    assert "closes" in header.lower()
    # Verbatim: what the customer typed, escaped for Telegram's HTML, shown as typed.
    assert text == "Halo <b>&</b> kak"
    sent = [c for c in telegram.calls if c.method == "sendMessage"][-1]
    assert sent.params["parse_mode"] == "HTML"
    assert "Halo &lt;b&gt;&amp;&lt;/b&gt; kak" in sent.params["text"]


async def test_later_messages_of_a_room_go_to_the_same_topic(
    callbacks: Callbacks, telegram: FakeTelegram
) -> None:
    await callbacks.inbox(inbox_body("ref-1", "satu"))
    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    await callbacks.inbox(inbox_body("ref-2", "dua"))
    await callbacks.inbox(
        inbox_body("ref-3", "tiga", room_id=OTHER_ROOM, sender_number="6285711112222")
    )
    await telegram.wait_for(lambda: len(telegram.messages) >= 5)

    assert len(telegram.topics) == 2
    first, second = sorted(telegram.topics)
    assert texts_in(telegram, first)[1:] == ["satu", "dua"]
    assert texts_in(telegram, second)[1:] == ["tiga"]


async def test_duplicate_ref_no_is_acknowledged_and_posted_once(
    callbacks: Callbacks, telegram: FakeTelegram, settings: Settings, bridge: Bridge
) -> None:
    body = inbox_body("ref-dup", "sekali saja")
    assert (await callbacks.inbox(body)).status == 200
    assert (await callbacks.inbox(body)).status == 200
    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    assert (await callbacks.inbox(body)).status == 200
    await settled(bridge)

    assert [m.plain_text for m in telegram.messages].count("sekali saja") == 1
    assert len(telegram.calls_of("sendMessage")) == 2  # the topic's header, then the text
    assert db_rows(settings, "SELECT count(*) FROM inbound") == [(1,)]


async def test_concurrent_callbacks_share_commits(
    callbacks: Callbacks, bridge: Bridge, settings: Settings
) -> None:
    responses = await asyncio.gather(
        *(callbacks.inbox(inbox_body(f"ref-{i}", f"pesan {i}")) for i in range(200))
    )
    assert {r.status for r in responses} == {200}
    assert db_rows(settings, "SELECT count(*) FROM inbound") == [(200,)]
    # Group commit: far fewer transactions than requests.
    assert bridge.store.batches < 100


async def test_waiting_messages_of_a_room_are_posted_as_one_message_in_order(
    make_bridge: Any, settings: Settings, telegram: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    await telegram.go_down()
    bridge = await make_bridge(settings)
    callbacks = Callbacks.of(bridge, http)
    for i in range(5):
        assert (await callbacks.inbox(inbox_body(f"ref-{i}", f"pesan {i}"))).status == 200
    await telegram.come_up()

    await telegram.wait_for(lambda: len(telegram.messages) >= 2, timeout=15)
    await settled(bridge)
    [topic] = telegram.topics.values()
    _header, combined = texts_in(telegram, topic.thread_id)
    assert combined == "\n\n".join(f"pesan {i}" for i in range(5))


async def test_text_over_telegram_limit_is_split_in_order(
    callbacks: Callbacks, telegram: FakeTelegram
) -> None:
    long_text = " ".join(f"kata{i}" for i in range(2000))  # about 16 000 characters
    await callbacks.inbox(inbox_body("ref-long", long_text))
    await telegram.wait_for(
        lambda: "kata1999" in "".join(m.plain_text or "" for m in telegram.messages)
    )
    [topic] = telegram.topics.values()
    parts = texts_in(telegram, topic.thread_id)[1:]
    assert len(parts) >= 4
    assert all(len(p) <= 4096 for p in parts)
    for number, part in enumerate(parts[1:], start=2):
        assert part.startswith(f"(cont. {number}/{len(parts)})\n")
    words = " ".join(p.split("\n", 1)[1] if p.startswith("(cont.") else p for p in parts).split()
    assert words == long_text.split()


async def test_old_message_shows_its_time(callbacks: Callbacks, telegram: FakeTelegram) -> None:
    await callbacks.inbox(inbox_body("ref-old", "kemarin", inbox_date="2026-11-26 09:15:00"))
    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    text = telegram.messages[-1].plain_text or ""
    assert "26 Nov 09:15" in text
    assert text.endswith("kemarin")


async def test_window_is_tracked_from_the_customers_last_message(
    callbacks: Callbacks, bridge: Bridge, telegram: FakeTelegram
) -> None:
    await callbacks.inbox(inbox_body("ref-a", "a", inbox_date="2026-11-27 08:00:00"))
    await callbacks.inbox(inbox_body("ref-b", "b", inbox_date="2026-11-27 07:00:00"))
    room = await bridge.store.room(ROOM)
    assert room is not None
    # 08:00 in Jakarta (UTC+7) is 01:00 UTC; an older message never moves it back.
    assert room.last_inbox_at == pytest.approx(
        time.mktime(time.strptime("2026-11-27 01:00:00", "%Y-%m-%d %H:%M:%S")) - time.timezone
    )


async def test_inbox_date_in_the_future_counts_as_now(callbacks: Callbacks, bridge: Bridge) -> None:
    before = time.time()
    await callbacks.inbox(inbox_body("ref-f", "x", inbox_date="2099-01-01 00:00:00"))
    room = await bridge.store.room(ROOM)
    assert room is not None
    assert before <= room.last_inbox_at <= time.time()


async def test_deleted_topic_is_recreated_and_posting_goes_on(
    callbacks: Callbacks, telegram: FakeTelegram
) -> None:
    await callbacks.inbox(inbox_body("ref-1", "pertama"))
    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    [old] = list(telegram.topics)
    telegram.delete_topic(old)

    await callbacks.inbox(inbox_body("ref-2", "kedua"))
    await telegram.wait_for(lambda: len(telegram.topics) == 2 and len(telegram.messages) >= 4)
    new = max(telegram.topics)
    header, text = texts_in(telegram, new)
    assert ROOM in header
    assert text == "kedua"


async def test_topic_closed_with_close_is_reopened_before_the_customers_next_message(
    callbacks: Callbacks, telegram: FakeTelegram, settings: Settings
) -> None:
    await callbacks.inbox(inbox_body("ref-1", "pertama"))
    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    [topic_id] = list(telegram.topics)
    telegram.operator_message(
        thread_id=topic_id,
        text="/close",
        entities=[{"type": "bot_command", "offset": 0, "length": 6}],
    )
    await telegram.wait_for(lambda: telegram.topics[topic_id].closed)
    await telegram.wait_for(lambda: db_rows(settings, "SELECT closed FROM rooms") == [(1,)])

    await callbacks.inbox(inbox_body("ref-2", "kedua"))
    await telegram.wait_for(lambda: texts_in(telegram, topic_id)[-1:] == ["kedua"])
    # The bot could post into the closed topic without error; it reopened it first.
    assert not telegram.topics[topic_id].closed
    methods = [c.method for c in telegram.calls if c.method in ("reopenForumTopic", "sendMessage")]
    assert methods[-2:] == ["reopenForumTopic", "sendMessage"]
    assert len(telegram.topics) == 1
    await telegram.wait_for(lambda: db_rows(settings, "SELECT closed FROM rooms") == [(0,)])


async def test_topic_closed_in_the_telegram_app_is_tracked_and_reopened_before_the_next_post(
    callbacks: Callbacks, telegram: FakeTelegram, settings: Settings
) -> None:
    await callbacks.inbox(inbox_body("ref-1", "pertama"))
    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    [topic_id] = list(telegram.topics)
    posted = len(telegram.messages)
    telegram.close_topic(topic_id, announce=True)  # by hand, in the app
    await telegram.wait_for(lambda: db_rows(settings, "SELECT closed FROM rooms") == [(1,)])

    await callbacks.inbox(inbox_body("ref-2", "kedua"))
    await telegram.wait_for(lambda: texts_in(telegram, topic_id)[-1:] == ["kedua"])
    # No refusal was needed to learn it: the bridge reopened it before posting.
    methods = [c.method for c in telegram.calls if c.method in ("reopenForumTopic", "sendMessage")]
    assert methods[-2:] == ["reopenForumTopic", "sendMessage"]
    assert not telegram.topics[topic_id].closed
    # The service message itself is no operator reply: no notice about it.
    assert len(telegram.messages) == posted + 1


async def test_topic_reopened_in_the_telegram_app_is_not_reopened_again(
    callbacks: Callbacks, telegram: FakeTelegram, settings: Settings
) -> None:
    await callbacks.inbox(inbox_body("ref-1", "pertama"))
    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    [topic_id] = list(telegram.topics)
    telegram.close_topic(topic_id, announce=True)
    await telegram.wait_for(lambda: db_rows(settings, "SELECT closed FROM rooms") == [(1,)])
    telegram.reopen_topic(topic_id)
    await telegram.wait_for(lambda: db_rows(settings, "SELECT closed FROM rooms") == [(0,)])

    await callbacks.inbox(inbox_body("ref-2", "kedua"))
    await telegram.wait_for(lambda: texts_in(telegram, topic_id)[-1:] == ["kedua"])
    assert not telegram.calls_of("reopenForumTopic")


async def test_topic_closed_where_the_bridge_cannot_see_it_is_reopened_on_refusal(
    callbacks: Callbacks, telegram: FakeTelegram
) -> None:
    await callbacks.inbox(inbox_body("ref-1", "pertama"))
    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    [topic_id] = list(telegram.topics)
    telegram.close_topic(topic_id)
    # As Telegram answers a bot that may not post into closed topics.
    telegram.fail_next("sendMessage", 400, "Bad Request: TOPIC_CLOSED")

    await callbacks.inbox(inbox_body("ref-2", "kedua"))
    await telegram.wait_for(lambda: texts_in(telegram, topic_id)[-1:] == ["kedua"])
    assert not telegram.topics[topic_id].closed
    assert len(telegram.topics) == 1


async def test_telegram_outage_5xx_then_429_loses_nothing_and_keeps_order(
    callbacks: Callbacks, telegram: FakeTelegram
) -> None:
    await callbacks.inbox(inbox_body("ref-0", "pesan 0"))
    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    telegram.fail_next("sendMessage", 502, "Bad Gateway", times=2)
    telegram.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    for i in range(1, 4):
        assert (await callbacks.inbox(inbox_body(f"ref-{i}", f"pesan {i}"))).status == 200
        await asyncio.sleep(0.05)

    await telegram.wait_for(
        lambda: "pesan 3" in "".join(m.plain_text or "" for m in telegram.messages), timeout=15
    )
    [topic] = telegram.topics.values()
    shown = "\n\n".join(texts_in(telegram, topic.thread_id)[1:])
    assert shown.split("\n\n") == [f"pesan {i}" for i in range(4)]
    sends = telegram.calls_of("sendMessage")
    # header, "pesan 0", two 502s, the 429, then its retry: exactly retry_after later
    assert sends[5].at - sends[4].at >= 1.0


async def test_a_failing_room_does_not_hold_up_other_rooms(
    callbacks: Callbacks, telegram: FakeTelegram, bridge: Bridge
) -> None:
    telegram.fail_next("createForumTopic", 500, "Internal Server Error", times=1)
    await callbacks.inbox(inbox_body("ref-stuck", "macet"))
    await telegram.wait_for(lambda: bool(telegram.calls_of("createForumTopic")))
    await callbacks.inbox(
        inbox_body("ref-ok", "lancar", room_id=OTHER_ROOM, sender_number="6285711112222")
    )
    await telegram.wait_for(lambda: any(m.plain_text == "lancar" for m in telegram.messages))
    # The failed room is retried after its backoff and gets its message too.
    await telegram.wait_for(
        lambda: any(m.plain_text == "macet" for m in telegram.messages), timeout=10
    )


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"\xff\xfe", 400),
        ({"room_id": ROOM, "ref_no": "r"}, 422),
        ({**inbox_body("r"), "inbox_date": "yesterday"}, 422),
        ({**inbox_body("r"), "sender_number": "call me"}, 422),
        ([1, 2, 3], 422),
        (b"{" + b" " * (70 * 1024) + b"}", 413),
    ],
)
async def test_bad_input_gets_a_clear_error_and_leaves_no_trace(
    callbacks: Callbacks, settings: Settings, body: Any, status: int
) -> None:
    response = await callbacks.inbox(body)
    assert response.status == status
    assert db_rows(settings, "SELECT count(*) FROM inbound") == [(0,)]
    assert db_rows(settings, "SELECT count(*) FROM rooms") == [(0,)]


async def test_schema_mismatch_answers_422_with_the_detail(
    callbacks: Callbacks, http: aiohttp.ClientSession
) -> None:
    url = f"{callbacks.base}/callbacks/{callbacks.secret}/wa/inbox"
    async with http.post(url, json={"room_id": ROOM, "ref_no": "r"}) as response:
        assert response.status == 422
        body = await response.json()
    missing = {tuple(d["loc"]) for d in body["detail"]}
    assert {("text",), ("inbox_date",), ("sender_number",)} <= missing


async def test_wrong_secret_is_404_and_never_logged(
    callbacks: Callbacks, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    response = await callbacks.inbox(inbox_body("ref-x"), secret="wrong-secret-value-xyz")
    assert response.status == 404
    assert db_rows(settings, "SELECT count(*) FROM inbound") == [(0,)]
    assert callbacks.secret not in caplog.text


async def test_status_callback_is_stored(callbacks: Callbacks, settings: Settings) -> None:
    body = {"ref_no": "out-1", "status": "read", "status_date": "2026-11-27 10:22:50"}
    assert (await callbacks.status(body)).status == 200
    assert (await callbacks.status({**body, "status": "D"})).status == 200
    assert (await callbacks.status(body)).status == 200
    rows = db_rows(settings, "SELECT ref_no, status FROM status_events ORDER BY id")
    assert rows == [("out-1", "read"), ("out-1", "delivered")]


async def test_healthz_reports_ready_services_and_queue(callbacks: Callbacks) -> None:
    status, body = await callbacks.healthz()
    assert status == 200
    assert body["database"]["state"] == "ok"
    assert body["workers"]["state"] == "running"
    assert body["telegram"]["state"] == "ok"
    assert body["nusasms"]["state"] == "ok"
    assert body["inbound_queue"]["waiting"] == 0


async def test_unwritable_database_answers_503_then_recovers(
    callbacks: Callbacks, settings: Settings, telegram: FakeTelegram
) -> None:
    # Another process holding the write lock is what a stuck or read-only disk looks like.
    blocker = sqlite3.connect(settings.storage.path, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        response = await callbacks.inbox(inbox_body("ref-locked", "terkunci"))
        assert response.status == 503
    finally:
        blocker.rollback()
        blocker.close()
    assert db_rows(settings, "SELECT count(*) FROM inbound") == [(0,)]
    assert (await callbacks.inbox(inbox_body("ref-locked", "terkunci"))).status == 200
    await telegram.wait_for(lambda: any(m.plain_text == "terkunci" for m in telegram.messages))


async def test_messages_acknowledged_while_telegram_down_show_on_healthz(
    make_bridge: Any, settings: Settings, telegram: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    await telegram.go_down()
    bridge = await make_bridge(settings)
    callbacks = Callbacks.of(bridge, http)
    assert (await callbacks.inbox(inbox_body("ref-1", "menunggu"))).status == 200
    status, body = await callbacks.healthz()
    assert status == 200
    assert body["telegram"]["state"] == "unreachable"
    assert body["inbound_queue"]["waiting"] == 1

    await telegram.come_up()
    await telegram.wait_for(lambda: any(m.plain_text == "menunggu" for m in telegram.messages), 15)
    for _ in range(100):  # marking it posted follows Telegram's answer
        status, body = await callbacks.healthz()
        if body["inbound_queue"]["waiting"] == 0:
            break
        await asyncio.sleep(0.02)
    assert body["telegram"]["state"] == "ok"
    assert body["inbound_queue"]["waiting"] == 0


async def test_restart_keeps_the_room_topic(
    make_bridge: Any, settings: Settings, telegram: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    first = await make_bridge(settings)
    await Callbacks.of(first, http).inbox(inbox_body("ref-1", "satu"))
    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    await first.stop()

    second = await make_bridge(settings)
    await Callbacks.of(second, http).inbox(inbox_body("ref-2", "dua"))
    await telegram.wait_for(lambda: len(telegram.messages) >= 3)
    assert len(telegram.topics) == 1
    [topic_id] = telegram.topics
    assert texts_in(telegram, topic_id)[1:] == ["satu", "dua"]


def test_number_shown_in_topic_is_readable() -> None:
    from bridge.group.render import topic_name

    assert topic_name(NUMBER) == "+62 812-3456-7890"


async def test_database_newer_than_the_code_is_refused(settings: Settings, tmp_path: Path) -> None:
    from bridge.core.store import SchemaTooNewError, Store

    with sqlite3.connect(settings.storage.path) as db:
        db.execute("PRAGMA user_version = 999")
    with pytest.raises(SchemaTooNewError):
        await Store.open(settings.storage.path)


async def test_relay_sleeps_while_a_slow_post_is_in_flight(
    callbacks: Callbacks, telegram: FakeTelegram, bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    await callbacks.inbox(inbox_body("ref-1", "pertama"))
    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    checks = 0
    original = bridge.store.next_attempt_at

    async def counted(*args: Any) -> float | None:
        nonlocal checks
        checks += 1
        return await original(*args)

    monkeypatch.setattr(bridge.store, "next_attempt_at", counted)
    telegram.delay_next("sendMessage", 1.0)
    await callbacks.inbox(inbox_body("ref-2", "lambat"))
    await telegram.wait_for(lambda: any(m.plain_text == "lambat" for m in telegram.messages))
    assert checks < 20  # a handful of wake-ups, not a spin


@pytest.mark.parametrize("access_log", [True, False])
async def test_access_log_can_be_switched_off(
    make_bridge: Any,
    config_data: dict[str, Any],
    tmp_path: Path,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    access_log: bool,
) -> None:
    from bridge.core.config import load_settings
    from tests.conftest import write_config

    config_data["logging"] = {"access_log": access_log}
    bridge = await make_bridge(load_settings(write_config(tmp_path, config_data), environ={}))
    await Callbacks.of(bridge, http).inbox(inbox_body("ref-log"))
    await bridge.stop()  # the access log's thread writes what waits before it ends
    lines = [r for r in caplog.records if r.name == "aiohttp.access"]
    assert bool(lines) == access_log
    assert all("/callbacks/***/" in r.getMessage() for r in lines)


async def test_group_changing_id_is_reported_and_the_new_group_told(
    callbacks: Callbacks, telegram: FakeTelegram
) -> None:
    new_id = telegram.chat_id - 1
    telegram.fail_next(
        "createForumTopic",
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
        migrate_to_chat_id=new_id,
    )
    await callbacks.inbox(inbox_body("ref-1", "halo"))

    def told() -> list[str]:  # the fake knows one group only, so it refuses; the try counts
        return [
            str(c.params.get("text"))
            for c in telegram.calls_of("sendMessage")
            if c.params.get("chat_id") == new_id
        ]

    await telegram.wait_for(lambda: bool(told()))
    assert f"set telegram.chat_id to {new_id}" in told()[0]
    status, body = await callbacks.healthz()
    assert status == 503
    assert body["telegram"]["state"] == "rejected"
    assert "telegram rejected" in body["problems"]
