"""Operator commands in the Telegram group, end to end: an operator's `/command` comes in
through the fake Bot API's getUpdates, the running bridge answers in the same topic."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from bridge.app import Bridge
from bridge.core.config import Settings, load_settings
from bridge.group.commands import COMMANDS
from bridge.group.render import topic_name
from tests.conftest import NUMBER, ROOM, Callbacks, inbox_body, write_config
from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import FakeTelegram, SentMessage

JAKARTA = ZoneInfo("Asia/Jakarta")
OPERATOR = 777


class Clock:
    """Real time, moved by `offset` seconds when a test says so."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def command(
    telegram: FakeTelegram, text: str, *, thread_id: int | None = None, user_id: int = OPERATOR
) -> int:
    """An operator sends a command (as Telegram marks it up); returns its message id."""
    word = text.split()[0]
    return telegram.operator_message(
        thread_id=thread_id,
        text=text,
        user_id=user_id,
        entities=[{"type": "bot_command", "offset": 0, "length": len(word)}],
    )


def answers_to(telegram: FakeTelegram, message_id: int) -> list[SentMessage]:
    """The bridge's messages posted as replies to one message."""
    return [m for m in telegram.messages if m.reply_to_message_id == message_id]


async def answer_to(telegram: FakeTelegram, message_id: int) -> SentMessage:
    """Wait for the one answer to a command."""
    await telegram.wait_for(lambda: len(answers_to(telegram, message_id)) >= 1)
    [answer] = answers_to(telegram, message_id)
    return answer


async def open_room(callbacks: Callbacks, telegram: FakeTelegram, ref_no: str = "in-1") -> int:
    """A customer writes; returns their topic once the message is shown in it."""
    assert (await callbacks.inbox(inbox_body(ref_no))).status == 200
    name = topic_name(NUMBER)

    def shown() -> bool:
        return any(
            t.name == name and len(telegram.messages_in(t.thread_id)) >= 2
            for t in telegram.topics.values()
        )

    await telegram.wait_for(shown)
    return next(t.thread_id for t in telegram.topics.values() if t.name == name)


def local(moment: float) -> str:
    """A moment as the bridge shows it (Asia/Jakarta)."""
    return f"{dt.datetime.fromtimestamp(moment, JAKARTA):%d %b %H:%M}"


async def test_bot_registers_its_commands_at_start_up(
    bridge: Bridge, telegram: FakeTelegram
) -> None:
    [call] = telegram.calls_of("setMyCommands")
    assert call.params["scope"] == {"type": "chat", "chat_id": telegram.chat_id}
    names = [c["command"] for c in telegram.commands[("chat", "")]]
    assert names == [
        "info",
        "close",
        "templates",
        "template",
        "cancel",
        "new",
        "balance",
        "status",
        "help",
    ]
    assert names == [name for name, _ in COMMANDS]


async def test_info_in_a_room_topic_tells_number_window_counts_and_last_status(
    callbacks: Callbacks, bridge: Bridge, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    topic = await open_room(callbacks, telegram)
    reply = telegram.operator_message(thread_id=topic, text="Siap kak", user_id=OPERATOR)
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    now = dt.datetime.now(JAKARTA).strftime("%Y-%m-%d %H:%M:%S")
    body = {"ref_no": nusasms.replies[0].ref_no, "status": "delivered", "status_date": now}
    assert (await callbacks.status(body)).status == 200
    await telegram.wait_for(lambda: telegram.reactions.get(reply, [])[-1:] == ["👌"])

    asked = command(telegram, "/info", thread_id=topic)
    answer = await answer_to(telegram, asked)

    room = await bridge.store.room(ROOM)
    assert room is not None
    text = answer.plain_text or ""
    assert answer.thread_id == topic
    assert "+62 812-3456-7890" in text
    assert f"Room: {ROOM}" in text
    assert f"Reply window: open until {local(room.last_inbox_at + 24 * 3600)}" in text
    assert "Messages: 1 from the customer, 1 replies" in text
    assert "Last reply status: delivered" in text


async def test_info_after_the_window_closed_says_when_it_closed(
    make_bridge: Any, settings: Settings, telegram: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    bridge = await make_bridge(settings, clock=clock)
    topic = await open_room(Callbacks.of(bridge, http), telegram)
    room = await bridge.store.room(ROOM)
    assert room is not None

    clock.offset = 25 * 3600
    asked = command(telegram, "/info", thread_id=topic)
    text = (await answer_to(telegram, asked)).plain_text or ""
    assert f"Reply window: closed at {local(room.last_inbox_at + 24 * 3600)}" in text
    assert "Messages: 1 from the customer, 0 replies" in text
    assert "Last reply status: —" in text


async def test_info_outside_a_room_topic_says_where_it_works(
    bridge: Bridge, telegram: FakeTelegram
) -> None:
    asked = command(telegram, "/info@bridge_test_bot")
    answer = await answer_to(telegram, asked)
    assert answer.thread_id is None
    assert answer.plain_text == "/info works inside a customer's topic."


async def test_close_closes_the_topic_and_the_next_customer_message_reopens_it(
    callbacks: Callbacks, telegram: FakeTelegram
) -> None:
    topic = await open_room(callbacks, telegram)
    command(telegram, "/close", thread_id=topic)
    await telegram.wait_for(lambda: telegram.topics[topic].closed)

    assert (await callbacks.inbox(inbox_body("in-2", "masih ada?"))).status == 200
    await telegram.wait_for(
        lambda: [m.plain_text for m in telegram.messages_in(topic)][-1:] == ["masih ada?"]
    )
    assert not telegram.topics[topic].closed
    assert len(telegram.topics) == 1


async def test_balance_lists_every_balance_and_expiry_date(
    bridge: Bridge, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    nusasms.balance.update(
        wa_balance="1500.5",
        wa_expired_date="2027-03-31",
        sim_balance="",  # no balance, but a date: still worth showing
        sim_expired_date="2027-01-15 00:00:00",
    )
    asked = command(telegram, "/balance")
    answer = await answer_to(telegram, asked)

    lines = (answer.plain_text or "").splitlines()
    assert lines[0] == "NusaSMS balance"
    assert "• wa_balance: 1,500.5 (until 31 Mar 2027)" in lines
    assert "• sms_balance: 1,000 (until " in "\n".join(lines)
    assert "• pulsa_balance: 50,000" in lines
    assert "• hlr_balance: 100 (until " in "\n".join(lines)
    assert "• sim_expired_date: until 15 Jan 2027" in lines
    assert lines[-1].startswith("read ")


async def test_balance_when_nusasms_rejects_the_key_says_so(
    bridge: Bridge, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    await nusasms.wait_for(lambda: len(nusasms.calls_to("/balance")) >= 1)  # the start-up read
    nusasms.fail_next("/balance", 401, {"error": True, "message": "Invalid API key"})
    asked = command(telegram, "/balance")
    answer = await answer_to(telegram, asked)
    assert "did not answer the balance request" in (answer.plain_text or "")


async def test_status_shows_queues_last_callback_and_last_error(
    callbacks: Callbacks, bridge: Bridge, telegram: FakeTelegram
) -> None:
    telegram.fail_next(
        "createForumTopic", 400, "Bad Request: not enough rights to create a topic", times=1000
    )
    assert (await callbacks.inbox(inbox_body("in-1"))).status == 200
    for _ in range(500):
        room = await bridge.store.room(ROOM)
        if room is not None and room.attempts >= 1:
            break
        await asyncio.sleep(0.01)
    assert bridge.health is not None
    last = bridge.health.last_callback_at()
    assert last is not None

    asked = command(telegram, "/status")
    answer = await answer_to(telegram, asked)

    lines = (answer.plain_text or "").splitlines()
    # A group that denies the bot a right it needs is a refusal, not a passing error.
    assert lines[1] == "Telegram: rejected, NusaSMS: ok"
    assert lines[2].startswith("To Telegram: 1 waiting (oldest ")
    assert lines[3] == "To WhatsApp: 0 waiting (oldest 0 s)"
    assert lines[4] == f"Last callback: {local(last)}"
    assert lines[5].startswith("Last error: BadRequest: ")
    assert "rights" in lines[5]


async def test_status_of_a_quiet_bridge(bridge: Bridge, telegram: FakeTelegram) -> None:
    asked = command(telegram, "/status")
    answer = await answer_to(telegram, asked)
    text = answer.plain_text or ""
    assert text.startswith("Bridge ready\n")
    assert "Last callback: none yet" in text
    assert "Last error: none" in text


async def test_help_explains_the_bridge_and_lists_the_commands(
    bridge: Bridge, telegram: FakeTelegram
) -> None:
    asked = command(telegram, "/help")
    text = (await answer_to(telegram, asked)).plain_text or ""
    assert "Every WhatsApp customer has a topic here" in text
    assert "Messages starting with // are notes" in text
    assert "24 h after the customer's last message" in text
    for name, description in COMMANDS:
        assert f"/{name} — {description}" in text


@pytest.fixture
def operators_only(tmp_path: Path, config_data: dict[str, Any]) -> Settings:
    """Settings that name the only operators."""
    data = {**config_data, "telegram": {**config_data["telegram"], "operator_ids": [OPERATOR]}}
    return load_settings(write_config(tmp_path, data, "operators.yaml"), environ={})


async def test_commands_from_non_operators_are_ignored(
    make_bridge: Any,
    operators_only: Settings,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    bridge = await make_bridge(operators_only)
    topic = await open_room(Callbacks.of(bridge, http), telegram)
    await nusasms.wait_for(lambda: len(nusasms.calls_to("/balance")) >= 1)  # the start-up read
    balance_reads = len(nusasms.calls_to("/balance"))
    stranger = [
        command(telegram, "/status", user_id=888),
        command(telegram, "/balance", user_id=888),
        command(telegram, "/close", thread_id=topic, user_id=888),
        command(telegram, "/info", thread_id=topic, user_id=888),
    ]
    # Updates are handled in order: once this is answered, the ones above were decided.
    await answer_to(telegram, command(telegram, "/help"))

    assert all(answers_to(telegram, m) == [] for m in stranger)
    assert not telegram.topics[topic].closed
    assert len(nusasms.calls_to("/balance")) == balance_reads
    assert nusasms.replies == []  # and none of them became a reply to the customer


async def test_balance_is_answered_even_when_the_alert_it_implies_cannot_be_posted(
    tmp_path: Path,
    config_data: dict[str, Any],
    make_bridge: Any,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
) -> None:
    config_data["alerts"] = {"thresholds": {"wa_balance": 100}}
    await make_bridge(load_settings(write_config(tmp_path, config_data), environ={}))
    await nusasms.wait_for(lambda: len(nusasms.calls_to("/balance")) >= 1)  # the start-up read
    # The balance is low now, but the Alerts topic for the alert cannot be made.
    nusasms.balance["wa_balance"] = 42
    telegram.fail_next(
        "createForumTopic", 400, "Bad Request: not enough rights to create a topic", times=100
    )
    asked = command(telegram, "/balance")
    answer = await answer_to(telegram, asked)
    assert "• wa_balance: 42" in (answer.plain_text or "")
