"""Every call into the group counts against its one budget, end to end: customers' messages
go first, reactions wait behind them and are never sent stale, and a burst gets no 429."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import Bridge
from bridge.core.config import Settings, load_settings
from tests.conftest import ROOM, Callbacks, inbox_body, write_config
from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import FakeTelegram
from tests.test_replies import open_room, reaction, sent_reply, status_body

BUDGET = 20


@pytest.fixture
def config_data(config_data: dict[str, Any]) -> dict[str, Any]:
    """Telegram's real budget (20 a minute): nothing in these tests comes near it."""
    data = copy.deepcopy(config_data)
    data["telegram"]["group_budget"] = {"messages": BUDGET, "seconds": 60}
    return data


def display(settings: Settings, ref_no: str) -> str:
    """What the database says the operator should see for a reply."""
    with sqlite3.connect(settings.storage.path) as db:
        [(shown,)] = db.execute("SELECT display FROM outbound WHERE ref_no = ?", (ref_no,))
    return str(shown)


async def test_a_reaction_superseded_while_it_waits_is_never_sent(
    bridge: Bridge,
    settings: Settings,
    callbacks: Callbacks,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
) -> None:
    topic = await open_room(callbacks, telegram)
    mid, ref_no = await sent_reply(telegram, nusasms, topic, "Pesanan dikirim besok")
    budget = bridge.budget
    budget.pause(2.0)  # Telegram asked the group to wait (a 429 elsewhere)

    assert (await callbacks.status(status_body(ref_no, "delivered"))).status == 200
    await telegram.wait_for(lambda: budget.waiting == 1)  # 👌 is due and waits for a slot
    assert (await callbacks.status(status_body(ref_no, "read"))).status == 200
    await telegram.wait_for(lambda: display(settings, ref_no) == "read")
    assert budget.paused_for > 0  # superseded while still waiting
    assert telegram.reactions[mid] == ["🕊"]

    await telegram.wait_for(lambda: reaction(telegram, mid) == "👀", timeout=10)
    await telegram.wait_for(lambda: budget.waiting == 0)
    assert telegram.reactions[mid] == ["🕊", "👀"]  # 👌 was never sent
    reactions = [c for c in telegram.calls if c.method == "setMessageReaction"]
    assert len(reactions) == 2


async def test_a_customers_message_goes_before_a_reaction_that_waited_longer(
    bridge: Bridge,
    callbacks: Callbacks,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
) -> None:
    topic = await open_room(callbacks, telegram)
    mid, ref_no = await sent_reply(telegram, nusasms, topic, "Sudah kami kirim")
    budget = bridge.budget
    budget.pause(2.0)

    assert (await callbacks.status(status_body(ref_no, "delivered"))).status == 200
    await telegram.wait_for(lambda: budget.waiting == 1)  # the reaction waits first
    body = inbox_body("in-later", room_id=ROOM, text="Kapan sampai?")
    assert (await callbacks.inbox(body)).status == 200
    await telegram.wait_for(lambda: budget.waiting == 2)  # then the customer's message

    await telegram.wait_for(lambda: reaction(telegram, mid) == "👌", timeout=10)
    await telegram.wait_for(
        lambda: any("Kapan sampai?" in (m.text or "") for m in telegram.messages_in(topic))
    )
    order = [
        c.method
        for c in telegram.calls
        if c.method == "setMessageReaction"
        or (c.method == "sendMessage" and "Kapan sampai?" in str(c.params.get("text")))
    ]
    assert order[-2:] == ["sendMessage", "setMessageReaction"]


@pytest.fixture
def burst_settings(tmp_path: Path, config_data: dict[str, Any]) -> Settings:
    """The budget of the fake Telegram, played fast: a "minute" lasts one second."""
    data = copy.deepcopy(config_data)
    data["telegram"]["group_budget"] = {"messages": BUDGET, "seconds": 1.0}
    return load_settings(write_config(tmp_path, data, "burst.yaml"), environ={})


async def test_a_burst_of_customers_and_reactions_gets_no_429(
    make_bridge: Any,
    burst_settings: Settings,
    http: aiohttp.ClientSession,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
) -> None:
    telegram.set_rate_limit(BUDGET, time_scale=60)
    callbacks = Callbacks(f"http://127.0.0.1:{(await make_bridge(burst_settings)).port}", http)
    first = await open_room(callbacks, telegram)
    mid, ref_no = await sent_reply(telegram, nusasms, first, "Baik, kami cek")
    rooms = [f"7d1e9a40-0000-4a2b-9c3d-{i:012d}" for i in range(12)]
    for i, room in enumerate(rooms):
        body = inbox_body(
            f"burst-{i}", f"burst message {i}", room_id=room, sender_number=f"62812000{i:05d}"
        )
        assert (await callbacks.inbox(body)).status == 200
    # A reply's state changes meanwhile: reactions into the same group.
    for status in ("delivered", "read"):
        assert (await callbacks.status(status_body(ref_no, status))).status == 200

    def shown() -> set[str]:
        return {m.text or "" for m in telegram.messages} & {f"burst message {i}" for i in range(12)}

    await telegram.wait_for(lambda: len(shown()) == 12, timeout=30)
    await telegram.wait_for(lambda: reaction(telegram, mid) == "👀", timeout=30)
    assert len(telegram.topics) == 13
    assert telegram.rate_limited == 0
