"""Alerts and window reminders: the watchers that tell a person what needs them.

Most tests drive `Alerts` and `WindowReminders` directly with an injected clock, built on a
real SQLite file, a real PTB `Bot` talking to the fake Telegram and a real NusaSMS client
talking to the fake NusaSMS, so no test sleeps to prove a time rule. A few run the whole
bridge to show the same behaviour where it is wired up.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from telegram import Bot

from bridge.app import Bridge
from bridge.core.config import AlertSettings, Settings, load_settings
from bridge.core.pacing import GroupBudget
from bridge.core.store import NewInbound, NewReply, Store
from bridge.group.alerts import ALERTS_TOPIC_NAME, Alerts
from bridge.group.reminders import WindowReminders
from bridge.group.topics import Topics
from bridge.nusasms import NusaSMSClient
from bridge.ops.health import Health
from tests.conftest import NUMBER, ROOM, Callbacks, inbox_body, write_config
from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import FakeTelegram

JAKARTA = ZoneInfo("Asia/Jakarta")
HOUR = 3600.0
MINUTE = 60.0
OTHER_ROOM = "7d1e9a40-1111-4a2b-9c3d-0123456789ab"


class Clock:
    """Real time, moved by `offset` seconds when a test says so."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.offset += seconds


@dataclass
class Watch:
    """The parts the watchers are made of, on one database."""

    store: Store
    topics: Topics
    health: Health
    alerts: Alerts


@pytest.fixture
def clock() -> Clock:
    """The watchers' clock."""
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Where the watchers keep their state."""
    return tmp_path / "ops.sqlite3"


@pytest.fixture
def watching(
    db: Path, telegram: FakeTelegram, nusasms: FakeNusaSMS, clock: Clock, redact_test_clients: None
) -> Callable[..., contextlib.AbstractAsyncContextManager[Watch]]:
    """Open the watchers on `db` (again after closing them: a restart), settings as given."""

    @contextlib.asynccontextmanager
    async def watch(**alert_settings: Any) -> AsyncIterator[Watch]:
        store = await Store.open(db)
        bot = Bot(telegram.token, base_url=telegram.base_url, base_file_url=telegram.base_file_url)
        try:
            async with bot, NusaSMSClient(nusasms.api_key, base_url=nusasms.base_url) as client:
                topics = Topics(
                    bot,
                    store,
                    GroupBudget(100_000, 60),
                    chat_id=telegram.chat_id,
                    tz=JAKARTA,
                    window_hours=24,
                    clock=clock,
                )
                health = Health(store, workers_running=lambda: True, clock=clock)
                alerts = Alerts(
                    store,
                    topics,
                    client,
                    health,
                    settings=AlertSettings(**alert_settings),
                    tz=JAKARTA,
                    clock=clock,
                )
                yield Watch(store, topics, health, alerts)
        finally:
            await store.close()

    return watch


def alerts_topics(telegram: FakeTelegram) -> list[int]:
    """Every "Alerts" topic the bridge made."""
    return [t.thread_id for t in telegram.topics.values() if t.name == ALERTS_TOPIC_NAME]


def texts_in(telegram: FakeTelegram, thread_id: int | None) -> list[str]:
    """What the bot posted into one topic, oldest first."""
    return [m.plain_text or "" for m in telegram.messages_in(thread_id)]


def alert_texts(telegram: FakeTelegram) -> list[str]:
    """What the bot posted into its (one) Alerts topic."""
    [topic] = alerts_topics(telegram)
    return texts_in(telegram, topic)


# --- balance alerts --------------------------------------------------------------------------


async def test_balance_below_threshold_posts_one_alert_in_an_alerts_topic_made_once(
    watching: Any, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    async with watching(thresholds={"wa_balance": 100}) as watch:
        await watch.alerts.check_balance()
        assert telegram.messages == []

        nusasms.balance["wa_balance"] = 42
        await watch.alerts.check_balance()
        await watch.alerts.check_balance()  # still low: no second message

    [alert] = alert_texts(telegram)
    assert "Low balance" in alert
    assert "wa_balance is 42, below 100" in alert
    assert len(telegram.calls_of("createForumTopic")) == 1


async def test_standing_low_balance_is_repeated_only_after_repeat_hours(
    watching: Any, telegram: FakeTelegram, nusasms: FakeNusaSMS, clock: Clock
) -> None:
    nusasms.balance["wa_balance"] = 42
    async with watching(thresholds={"wa_balance": 100}, repeat_hours=6) as watch:
        await watch.alerts.check_balance()
        clock.advance(5.9 * HOUR)
        await watch.alerts.check_balance()
        assert len(alert_texts(telegram)) == 1

        clock.advance(0.2 * HOUR)
        await watch.alerts.check_balance()
        clock.advance(1 * HOUR)
        await watch.alerts.check_balance()

    _first, reminder = alert_texts(telegram)
    assert reminder.startswith("Reminder: ")
    assert "wa_balance is 42" in reminder


async def test_recovered_balance_gets_one_short_back_to_normal_message(
    watching: Any, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    nusasms.balance["wa_balance"] = 42
    async with watching(thresholds={"wa_balance": 100}) as watch:
        await watch.alerts.check_balance()
        nusasms.balance["wa_balance"] = 2500
        await watch.alerts.check_balance()
        await watch.alerts.check_balance()

    _low, recovered = alert_texts(telegram)
    assert "wa_balance is back at 2500" in recovered
    assert len(recovered) < 80


async def test_threshold_on_another_numeric_field_alerts_on_that_field(
    watching: Any, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    nusasms.balance["sms_balance"] = "12.5"  # the API sends numbers as strings, too
    async with watching(thresholds={"sms_balance": 20}) as watch:
        await watch.alerts.check_balance()

    [alert] = alert_texts(telegram)
    assert "sms_balance is 12.5, below 20" in alert
    assert "wa_balance" not in alert


async def test_alert_state_and_topic_survive_a_restart(
    watching: Any, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    nusasms.balance["wa_balance"] = 42
    async with watching(thresholds={"wa_balance": 100, "sms_balance": 500}) as watch:
        await watch.alerts.check_balance()

    nusasms.balance["sms_balance"] = 10
    async with watching(thresholds={"wa_balance": 100, "sms_balance": 500}) as watch:
        await watch.alerts.check_balance()  # wa_balance: still the same episode, no repeat

    assert len(telegram.calls_of("createForumTopic")) == 1
    wa, sms = alert_texts(telegram)
    assert "wa_balance" in wa
    assert "sms_balance" in sms


async def test_checks_at_the_same_time_post_one_alert_in_one_topic(
    watching: Any, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    # The watch loop and an operator's /balance may read the balance at the same moment.
    nusasms.balance["wa_balance"] = 42
    async with watching(thresholds={"wa_balance": 100}) as watch:
        await asyncio.gather(watch.alerts.check_balance(), watch.alerts.check_balance())

    assert len(telegram.calls_of("createForumTopic")) == 1
    assert len(alert_texts(telegram)) == 1


async def test_deleted_alerts_topic_is_made_again_and_remembered(
    watching: Any, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    nusasms.balance["wa_balance"] = 42
    async with watching(thresholds={"wa_balance": 100, "sms_balance": 500}) as watch:
        await watch.alerts.check_balance()
        [old] = alerts_topics(telegram)
        telegram.delete_topic(old)
        nusasms.balance["sms_balance"] = 10
        await watch.alerts.check_balance()
        nusasms.balance["sms_balance"] = 1000
        await watch.alerts.check_balance()

    new = max(telegram.topics)
    assert new != old
    assert len(telegram.calls_of("createForumTopic")) == 2
    assert ["sms_balance" in t for t in texts_in(telegram, new)] == [True, True]


async def test_closed_alerts_topic_still_gets_the_next_alert(
    watching: Any, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    nusasms.balance["wa_balance"] = 42
    async with watching(thresholds={"wa_balance": 100}) as watch:
        await watch.alerts.check_balance()
        [topic] = alerts_topics(telegram)
        telegram.close_topic(topic)
        nusasms.balance["wa_balance"] = 1000
        await watch.alerts.check_balance()

    # A bot with Manage topics posts into a closed topic without error, as on real Telegram.
    _low, recovered = texts_in(telegram, topic)
    assert "back at 1000" in recovered


async def test_expiry_date_within_warning_days_warns_once(
    watching: Any, telegram: FakeTelegram, nusasms: FakeNusaSMS, clock: Clock
) -> None:
    today = dt.datetime.now(JAKARTA).date()
    nusasms.balance["wa_expired_date"] = (today + dt.timedelta(days=10)).isoformat()
    async with watching(expiry_warning_days=7) as watch:
        await watch.alerts.check_balance()
        assert telegram.messages == []

        clock.advance(4 * 24 * HOUR)  # now 6 days before the date
        await watch.alerts.check_balance()
        await watch.alerts.check_balance()

    [warning] = alert_texts(telegram)
    expires = today + dt.timedelta(days=10)
    assert f"wa_expired_date expires on {expires:%d %b %Y}" in warning


async def test_expired_date_says_it_has_expired(
    watching: Any, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    expired = dt.datetime.now(JAKARTA).date() - dt.timedelta(days=2)
    nusasms.balance["sms_expired_date"] = expired.isoformat()
    async with watching() as watch:
        await watch.alerts.check_balance()

    [warning] = alert_texts(telegram)
    assert f"sms_expired_date expired on {expired:%d %b %Y}" in warning


@pytest.mark.usefixtures("redact_test_clients")
async def test_configured_alerts_topic_is_used_instead_of_making_one(
    watching: Any, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    async with Bot(telegram.token, base_url=telegram.base_url) as bot:
        ops = (await bot.create_forum_topic(telegram.chat_id, "Ops")).message_thread_id
    nusasms.balance["wa_balance"] = 42
    async with watching(thresholds={"wa_balance": 100}, topic_id=ops) as watch:
        await watch.alerts.check_balance()

    assert alerts_topics(telegram) == []
    assert len(telegram.calls_of("createForumTopic")) == 1  # ours, above
    [alert] = texts_in(telegram, ops)
    assert "wa_balance is 42" in alert


# --- operational alerts ----------------------------------------------------------------------


async def test_rejected_api_key_on_balance_is_an_alert_until_accepted_again(
    watching: Any, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    async with watching() as watch:
        nusasms.fail_next("/balance", 401, {"error": True, "message": "Invalid API key"}, times=2)
        assert await watch.alerts.check_balance() is None
        assert watch.health.nusasms.state == "rejected"
        await watch.alerts.check_balance()
        assert await watch.alerts.check_balance() is not None
        assert watch.health.nusasms.state == "ok"

    rejected, accepted = alert_texts(telegram)
    assert "NusaSMS rejected the API key (Invalid API key)" in rejected
    assert "nusasms.api_key" in rejected
    assert "accepts the API key again" in accepted
    assert nusasms.api_key not in rejected


async def test_unreachable_nusasms_is_no_alert(
    watching: Any, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    async with watching() as watch:
        nusasms.fail_next("/balance", 503)
        assert await watch.alerts.check_balance() is None
        assert watch.health.nusasms.state == "unreachable"
    assert telegram.messages == []


async def test_message_stuck_in_a_queue_is_alerted_once_then_cleared(
    watching: Any, telegram: FakeTelegram, clock: Clock
) -> None:
    async with watching(stuck_after_minutes=5) as watch:
        now = clock()
        await watch.store.add(NewInbound("ref-1", ROOM, NUMBER, "halo", now, now))
        clock.advance(4 * MINUTE)
        await watch.alerts.check_queues()
        assert telegram.messages == []

        clock.advance(2 * MINUTE)
        await watch.alerts.check_queues()
        await watch.alerts.check_queues()
        [waiting] = await watch.store.waiting(ROOM, 10)
        await watch.store.mark_posted([waiting.id], 1, clock())
        await watch.alerts.check_queues()

    stuck, flowing = alert_texts(telegram)
    assert "1 message(s) waiting to go to Telegram, the oldest for 6 min" in stuck
    assert "flow to Telegram again" in flowing


async def test_reply_stuck_on_its_way_to_whatsapp_is_alerted(
    watching: Any, telegram: FakeTelegram, clock: Clock
) -> None:
    async with watching(stuck_after_minutes=5) as watch:
        now = clock()
        await watch.store.add(NewInbound("ref-1", ROOM, NUMBER, "halo", now, now))
        await watch.store.add_reply(NewReply(ROOM, 4242, 777, "text", "jawab"), now)
        clock.advance(10 * MINUTE)
        [waiting] = await watch.store.waiting(ROOM, 10)
        await watch.store.mark_posted([waiting.id], 1, clock())
        await watch.alerts.check_queues()

    [stuck] = alert_texts(telegram)
    assert "waiting to go to WhatsApp" in stuck


# --- the same, in a running bridge -----------------------------------------------------------


def bridge_settings(tmp_path: Path, config_data: dict[str, Any], **alerts: Any) -> Settings:
    """The shared configuration with these alert settings (no periodic balance re-reads)."""
    data = {**config_data, "alerts": {"balance_interval_seconds": 3600, **alerts}}
    return load_settings(write_config(tmp_path, data, "alerts.yaml"), environ={})


async def saved(bridge: Bridge, key: str) -> None:
    """Wait until the bridge has recorded an alert episode as active."""
    for _ in range(500):
        state = await bridge.store.alert(key)
        if state is not None and state.active:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"alert {key} never recorded")


async def test_running_bridge_alerts_into_the_same_topic_after_a_restart(
    make_bridge: Any,
    tmp_path: Path,
    config_data: dict[str, Any],
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
) -> None:
    # hlr_balance sorts before wa_balance, so the second start decides hlr first.
    settings = bridge_settings(
        tmp_path, config_data, thresholds={"hlr_balance": 50, "wa_balance": 100}
    )
    nusasms.balance["hlr_balance"] = 10
    first = await make_bridge(settings)
    await telegram.wait_for(lambda: len(telegram.messages) == 1)
    await saved(first, "balance:hlr_balance")
    await first.alerts.stop()  # Bridge.stop does not stop it (see the report)
    await first.stop()

    nusasms.balance["wa_balance"] = 20
    second = await make_bridge(settings)
    await telegram.wait_for(lambda: len(telegram.messages) == 2)
    await saved(second, "balance:wa_balance")

    assert len(telegram.calls_of("createForumTopic")) == 1
    hlr, wa = alert_texts(telegram)
    assert "hlr_balance is 10" in hlr
    assert "wa_balance is 20" in wa


async def test_stopping_the_bridge_stops_its_watchers(bridge: Bridge) -> None:
    await bridge.stop()
    assert not bridge.alerts.running


# --- window reminders ------------------------------------------------------------------------


@pytest.fixture
async def reminding(watching: Any, clock: Clock) -> AsyncIterator[tuple[Watch, WindowReminders]]:
    """Window reminders (24 h window, warned 60 min before) next to the alert watchers."""
    async with watching() as watch:
        reminders = WindowReminders(
            watch.store,
            watch.topics,
            window_seconds=24 * HOUR,
            warn_seconds=60 * MINUTE,
            tz=JAKARTA,
            clock=clock,
        )
        yield watch, reminders


async def customer_writes(
    watch: Watch, clock: Clock, ref_no: str, *, room_id: str = ROOM, topic: int | None = None
) -> int:
    """A customer message at the clock's now, in a room with a topic; returns the topic."""
    now = clock()
    # One topic per customer: another room of the same number would be the same customer.
    number = NUMBER if room_id == ROOM else f"62899{zlib.crc32(room_id.encode()):010d}"
    await watch.store.add(NewInbound(ref_no, room_id, number, "halo", now, now))
    if topic is None:
        topic = await watch.topics.create_topic(f"customer {room_id[:4]}")
        await watch.store.set_topic(room_id, topic)
    return topic


async def last_inbox_at(watch: Watch, room_id: str = ROOM) -> float:
    """When the room's customer last wrote, as the bridge recorded it."""
    room = await watch.store.room(room_id)
    assert room is not None
    return room.last_inbox_at


def local(moment: float) -> str:
    """A moment as the reminders show it (Asia/Jakarta)."""
    return f"{dt.datetime.fromtimestamp(moment, JAKARTA):%d %b %H:%M}"


async def test_unanswered_window_gets_one_reminder_before_it_closes(
    reminding: tuple[Watch, WindowReminders], telegram: FakeTelegram, clock: Clock
) -> None:
    watch, reminders = reminding
    topic = await customer_writes(watch, clock, "ref-1")
    wrote = await last_inbox_at(watch)

    clock.advance(22 * HOUR)
    assert await reminders.check() == 0
    clock.advance(1.5 * HOUR)  # 30 min before the window closes
    assert await reminders.check() == 1
    clock.advance(10 * MINUTE)
    assert await reminders.check() == 0

    [reminder] = texts_in(telegram, topic)
    assert "unanswered" in reminder
    assert f"closes at {local(wrote + 24 * HOUR)} (in 30 min)" in reminder


async def test_closed_window_gets_one_notice(
    reminding: tuple[Watch, WindowReminders], telegram: FakeTelegram, clock: Clock
) -> None:
    watch, reminders = reminding
    topic = await customer_writes(watch, clock, "ref-1")
    wrote = await last_inbox_at(watch)

    clock.advance(23.5 * HOUR)
    assert await reminders.check() == 1
    clock.advance(0.5 * HOUR + 1)
    assert await reminders.check() == 1
    clock.advance(10 * MINUTE)
    assert await reminders.check() == 0

    _reminder, closed = texts_in(telegram, topic)
    assert f"reply window closed at {local(wrote + 24 * HOUR)}" in closed
    assert "until the customer writes again" in closed


async def test_answered_window_gets_no_reminder(
    reminding: tuple[Watch, WindowReminders], telegram: FakeTelegram, clock: Clock
) -> None:
    watch, reminders = reminding
    topic = await customer_writes(watch, clock, "ref-1")
    clock.advance(1 * HOUR)
    await watch.store.add_reply(NewReply(ROOM, 4242, 777, "text", "siap kak"), clock())

    clock.advance(22.5 * HOUR)
    assert await reminders.check() == 0
    assert texts_in(telegram, topic) == []


async def test_customer_writing_again_starts_a_new_window_with_its_own_reminder(
    reminding: tuple[Watch, WindowReminders], telegram: FakeTelegram, clock: Clock
) -> None:
    watch, reminders = reminding
    topic = await customer_writes(watch, clock, "ref-1")
    clock.advance(23.5 * HOUR)
    assert await reminders.check() == 1

    await customer_writes(watch, clock, "ref-2", topic=topic)
    assert await reminders.check() == 0
    clock.advance(23.5 * HOUR)
    assert await reminders.check() == 1
    assert len(texts_in(telegram, topic)) == 2


async def test_a_closed_topic_does_not_hold_up_other_rooms_reminders(
    reminding: tuple[Watch, WindowReminders], telegram: FakeTelegram, clock: Clock
) -> None:
    watch, reminders = reminding
    closed = await customer_writes(watch, clock, "ref-1")
    telegram.close_topic(closed)
    await watch.store.set_closed(ROOM, True)  # what /close records
    clock.advance(1)
    other = await customer_writes(watch, clock, "ref-2", room_id=OTHER_ROOM)

    clock.advance(23.5 * HOUR)
    await reminders.check()
    await reminders.check()

    assert len(texts_in(telegram, other)) == 1
    # An operator closed that topic on purpose: it stays closed and gets nothing.
    assert telegram.topics[closed].closed
    assert texts_in(telegram, closed) == []


async def test_running_bridge_reminds_of_a_window_closing_within_warn_minutes(
    make_bridge: Any,
    tmp_path: Path,
    config_data: dict[str, Any],
    telegram: FakeTelegram,
    http: aiohttp.ClientSession,
) -> None:
    data = {**config_data, "window": {"warn_minutes": 120}}
    settings = load_settings(write_config(tmp_path, data, "window.yaml"), environ={})
    first = await make_bridge(settings)
    callbacks = Callbacks.of(first, http)
    assert (await callbacks.inbox(inbox_body("ref-1", "halo"))).status == 200
    await telegram.wait_for(lambda: any(m.plain_text == "halo" for m in telegram.messages))
    [topic] = telegram.topics
    await first.stop()

    clock = Clock()
    clock.advance(22.5 * HOUR)  # closes in 90 min: within the configured 120, not 60 (default)
    await make_bridge(settings, clock=clock)  # its reminder loop checks once at start
    await telegram.wait_for(lambda: "unanswered" in texts_in(telegram, topic)[-1])
    assert sum("unanswered" in t for t in texts_in(telegram, topic)) == 1


async def test_field_names_from_nusasms_are_text_in_alerts_not_markup(
    watching: Any, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    odd = "<promo>_balance"
    nusasms.balance[odd] = 3
    nusasms.balance["<promo>_expired_date"] = "2020-01-01"
    async with watching(thresholds={odd: 10}) as watch:
        await watch.alerts.check_balance()  # Telegram refuses HTML with an unknown tag
        nusasms.balance[odd] = 50
        await watch.alerts.check_balance()

    low, expired, recovered = sorted(alert_texts(telegram))
    assert "<promo>_balance" in low or "<promo>_balance" in expired
    assert any("<promo>_balance is 3, below 10" in t for t in (low, expired, recovered))
    assert any("<promo>_balance is back at 50" in t for t in (low, expired, recovered))
    assert any(
        "<promo>_expired_date expired on 01 Jan 2020" in t for t in (low, expired, recovered)
    )
