"""Never a dead end: a reply written into a closed window is kept as pending, a reopen
template (a button, or sent by the bridge itself) invites the customer back, and the
pending replies go out in order once the customer writes again; kept too long, dropped.

Until the customers branch lands, the customer answers in the SAME room_id (a valid
NusaSMS flow); with it, a new room of the same number lands in the same topic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from bridge.app import Bridge
from bridge.core.config import Settings
from bridge.core.store import NewInbound, NewReply, Store
from tests.conftest import ROOM, BridgeProcess, Callbacks, inbox_body
from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import FakeTelegram, SentMessage
from tests.test_replies import (
    HOUR,
    Clock,
    db_rows,
    jakarta,
    notices_on,
    open_room,
    press,
    reaction,
)

BROADCAST = "/wa_official/message/broadcast"
REOPEN = {"name": "bridge_greeting", "values": ["{name}"]}


@pytest.fixture
def config_data(config_data: dict[str, Any]) -> dict[str, Any]:
    """The bridge_greeting template of the emulator reopens windows."""
    return {**config_data, "window": {"reopen_templates": [REOPEN]}}


async def start(
    make_bridge: Any, settings: Settings, http: aiohttp.ClientSession
) -> tuple[Bridge, Clock, Callbacks]:
    clock = Clock()
    bridge = await make_bridge(settings, clock=clock)
    return bridge, clock, Callbacks(f"http://127.0.0.1:{bridge.port}", http)


async def customer_writes(callbacks: Callbacks, clock: Clock, ref_no: str) -> None:
    """The customer answers (same room_id, see the module docstring), at the clock's now."""
    body = inbox_body(ref_no, "ok, saya di sini", room_id=ROOM, inbox_date=jakarta(-clock.offset))
    assert (await callbacks.inbox(body)).status == 200


def with_auto_reopen(settings: Settings) -> Settings:
    """The same settings with `window.auto_reopen: true`."""
    return settings.model_copy(
        update={"window": settings.window.model_copy(update={"auto_reopen": True})}
    )


def buttons(notice: SentMessage) -> list[str]:
    markup = notice.reply_markup or {}
    return [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row]


async def test_window_reopened_by_the_customer_sends_two_pending_replies_in_order(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    _bridge, clock, callbacks = await start(make_bridge, settings, http)
    topic = await open_room(callbacks, telegram)
    clock.offset = 25 * HOUR
    first = telegram.operator_message(thread_id=topic, text="jawaban satu")
    second = telegram.operator_message(thread_id=topic, text="jawaban dua")
    await telegram.wait_for(lambda: all(len(notices_on(telegram, m)) == 1 for m in (first, second)))
    await telegram.wait_for(lambda: reaction(telegram, first) == "✍" == reaction(telegram, second))
    [notice] = notices_on(telegram, first)
    assert "Kept, not sent yet" in (notice.plain_text or "")
    assert buttons(notice)
    assert all(b.startswith("reopen:") for b in buttons(notice))
    assert nusasms.replies == []
    assert nusasms.broadcasts == []

    await customer_writes(callbacks, clock, "in-again")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 2)
    assert [r.text for r in nusasms.replies] == ["jawaban satu", "jawaban dua"]
    await telegram.wait_for(lambda: reaction(telegram, first) == "🕊" == reaction(telegram, second))
    assert telegram.reactions[first][0] == "✍"
    later = telegram.operator_message(thread_id=topic, text="jawaban tiga")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 3)
    assert nusasms.replies[-1].text == "jawaban tiga"
    assert notices_on(telegram, later) == []
    assert nusasms.broadcasts == []


async def test_a_pending_reply_kept_too_long_is_dropped_with_a_notice_and_never_sent(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    bridge, clock, callbacks = await start(make_bridge, settings, http)
    topic = await open_room(callbacks, telegram)
    clock.offset = 25 * HOUR
    late = telegram.operator_message(thread_id=topic, text="terlambat sekali")
    await telegram.wait_for(lambda: reaction(telegram, late) == "✍")

    clock.offset = 25 * HOUR + 24 * HOUR + 60
    bridge.wake_outbound()
    await telegram.wait_for(lambda: reaction(telegram, late) == "💔")
    await telegram.wait_for(lambda: len(notices_on(telegram, late)) == 2)
    dropped = notices_on(telegram, late)[-1]
    assert "Dropped, not sent" in (dropped.plain_text or "")
    assert "within 24 hours" in (dropped.plain_text or "")
    assert buttons(dropped) == []  # no Retry: the window is still closed

    await customer_writes(callbacks, clock, "in-much-later")
    await telegram.wait_for(lambda: len(telegram.messages_in(topic)) >= 5)
    bridge.wake_outbound()
    assert db_rows(settings, "SELECT state FROM outbound") == [("expired",)]
    assert nusasms.replies == []


async def test_auto_reopen_sends_the_template_once_per_window(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    settings = with_auto_reopen(settings)
    _bridge, clock, callbacks = await start(make_bridge, settings, http)
    topic = await open_room(callbacks, telegram)
    clock.offset = 25 * HOUR
    first = telegram.operator_message(thread_id=topic, text="satu")
    second = telegram.operator_message(thread_id=topic, text="dua")
    await telegram.wait_for(lambda: all(len(notices_on(telegram, m)) == 1 for m in (first, second)))
    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1)
    [invite] = nusasms.broadcasts
    assert invite.parameters == {
        "body": [{"key": "1", "value": "text", "value_text": "+" + invite.destination}]
    }
    assert "sent the template bridge_greeting" in (notices_on(telegram, first)[0].plain_text or "")
    assert buttons(notices_on(telegram, second)[0])  # the second one only offers it

    await customer_writes(callbacks, clock, "in-window-2")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 2)
    assert [r.text for r in nusasms.replies] == ["satu", "dua"]

    # That window closes too: the next reply into it sends the template again, once.
    clock.offset = 25 * HOUR + 25 * HOUR
    third = telegram.operator_message(thread_id=topic, text="tiga")
    await telegram.wait_for(lambda: len(notices_on(telegram, third)) == 1)
    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 2)
    assert len(nusasms.calls_to(BROADCAST)) == 2


async def test_the_reopen_button_sends_the_template_and_the_reply_follows_the_answer(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    _bridge, clock, callbacks = await start(make_bridge, settings, http)
    topic = await open_room(callbacks, telegram)
    clock.offset = 25 * HOUR
    late = telegram.operator_message(thread_id=topic, text="pesanan sudah dikirim")
    await telegram.wait_for(lambda: len(notices_on(telegram, late)) == 1)
    [notice] = notices_on(telegram, late)
    press(telegram, notice, buttons(notice)[0])
    press(telegram, notice, buttons(notice)[0])  # twice: sent once
    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1)
    await telegram.wait_for(
        lambda: any("Halo" in (m.text or "") for m in telegram.messages_in(topic))
    )
    assert nusasms.replies == []

    await customer_writes(callbacks, clock, "in-answer")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    assert nusasms.replies[0].text == "pesanan sudah dikirim"
    await telegram.wait_for(lambda: reaction(telegram, late) == "🕊")
    assert len(nusasms.calls_to(BROADCAST)) == 1


async def test_without_reopen_templates_a_late_reply_is_refused_as_before(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    settings = settings.model_copy(
        update={"window": settings.window.model_copy(update={"reopen_templates": []})}
    )
    _bridge, clock, callbacks = await start(make_bridge, settings, http)
    topic = await open_room(callbacks, telegram)
    clock.offset = 25 * HOUR
    late = telegram.operator_message(thread_id=topic, text="terlambat")
    await telegram.wait_for(lambda: len(notices_on(telegram, late)) == 1)
    [notice] = notices_on(telegram, late)
    assert "Not sent" in (notice.plain_text or "")
    assert buttons(notice) == []
    assert db_rows(settings, "SELECT count(*) FROM outbound") == [(0,)]


async def test_a_restart_keeps_pending_replies_and_never_sends_the_auto_template_twice(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    settings = with_auto_reopen(settings)
    first, clock, callbacks = await start(make_bridge, settings, http)
    topic = await open_room(callbacks, telegram)
    clock.offset = 25 * HOUR
    kept = telegram.operator_message(thread_id=topic, text="sebelum restart")
    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1)
    await first.stop()

    second = await make_bridge(settings, clock=clock)
    callbacks = Callbacks(f"http://127.0.0.1:{second.port}", http)
    again = telegram.operator_message(thread_id=topic, text="sesudah restart")
    await telegram.wait_for(lambda: len(notices_on(telegram, again)) == 1)
    await customer_writes(callbacks, clock, "in-after-restart")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 2)
    assert [r.text for r in nusasms.replies] == ["sebelum restart", "sesudah restart"]
    assert len(nusasms.calls_to(BROADCAST)) == 1
    await telegram.wait_for(lambda: reaction(telegram, kept) == "🕊")


async def test_a_reply_never_overtakes_an_earlier_pending_one_but_a_template_does(
    tmp_path: Any,
) -> None:
    store = await Store.open(tmp_path / "bridge.sqlite3")
    try:
        await store.add(NewInbound("in-1", ROOM, "6281234567890", "halo", 0.0, 0.0))
        pending, _ = await store.add_pending_reply(
            NewReply(ROOM, 1, 777, "text", "kept"), 100 * HOUR
        )
        assert pending is not None
        later = await store.add_reply(NewReply(ROOM, 2, 777, "text", "newer"), 100 * HOUR)
        assert await store.due_replies(100 * HOUR, 10) == []
        assert await store.next_reply_attempt_at() is None  # nothing due: no spinning
        invite = await store.add_reply(
            NewReply(ROOM, 3, 777, "template", "Halo", template="{}"), 100 * HOUR
        )
        await store.update_reply(later or 0, state="sent")
        assert [r.id for r in await store.due_replies(100 * HOUR, 10)] == [invite]
    finally:
        await store.close()


async def test_kill_9_with_a_template_in_flight_loses_no_pending_reply_and_sends_nothing_twice(
    bridge_process: Callable[[], BridgeProcess],
    config_data: dict[str, Any],
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    config_data["window"] = {**config_data["window"], "auto_reopen": True}
    proc = bridge_process()
    proc.start()
    await proc.wait_ready(http)
    callbacks = Callbacks(f"http://127.0.0.1:{proc.port}", http)
    # The customer last wrote 25 hours ago (real time: a process has no injected clock).
    topic = await open_room(callbacks, telegram, inbox_date=jakarta(25 * HOUR))
    nusasms.delay_next(BROADCAST, 60)  # NusaSMS takes the template, the answer never comes
    kept = [telegram.operator_message(thread_id=topic, text=f"balasan {i}") for i in (1, 2)]
    await telegram.wait_for(lambda: all(notices_on(telegram, m) for m in kept), timeout=20)
    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1, timeout=20)
    proc.kill()

    proc.start()
    await proc.wait_ready(http)
    await customer_writes(callbacks, Clock(), "in-after-kill")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 2, timeout=20)
    assert [r.text for r in nusasms.replies] == ["balasan 1", "balasan 2"]
    assert len(nusasms.broadcasts) == 1  # in flight at the kill: outcome unknown, not resent
    proc.stop()


async def test_a_reopen_template_nusasms_does_not_have_is_not_sent_and_the_press_says_why(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    missing = settings.window.reopen_templates[0].model_copy(update={"name": "no_such"})
    settings = settings.model_copy(
        update={"window": settings.window.model_copy(update={"reopen_templates": [missing]})}
    )
    _bridge, clock, callbacks = await start(make_bridge, settings, http)
    topic = await open_room(callbacks, telegram)
    clock.offset = 25 * HOUR
    late = telegram.operator_message(thread_id=topic, text="tetap disimpan")
    await telegram.wait_for(lambda: len(notices_on(telegram, late)) == 1)
    [notice] = notices_on(telegram, late)
    press(telegram, notice, buttons(notice)[0])

    def answers() -> list[str]:
        return [str(c.params.get("text")) for c in telegram.calls_of("answerCallbackQuery")]

    await telegram.wait_for(lambda: len(answers()) == 1)
    assert "no template named no_such" in answers()[0]
    assert nusasms.broadcasts == []
    assert db_rows(settings, "SELECT state FROM outbound") == [("pending",)]
