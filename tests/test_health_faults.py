"""`/healthz` and the alerts when things break: a database that takes no writes, a group
that refuses the bot, a rejected key, services never reached; secrets never shown.

The database fault is SQLite's own: an authorizer on the bridge's writer connection denies
every write, as a full disk or a read-only file would, while reads go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from telegram.error import BadRequest, Forbidden, NetworkError, TimedOut

from bridge.app import Bridge
from bridge.core.config import Settings, load_settings
from bridge.core.store import NewInbound, Store
from bridge.group.alerts import ALERTS_TOPIC_NAME
from bridge.nusasms import NusaSMSAuthError, NusaSMSConnectionError
from bridge.ops.health import Health
from bridge.ops.upkeep import Checkpoints
from tests.conftest import CALLBACK_SECRET, NUMBER, ROOM, Callbacks, inbox_body, write_config
from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import FakeTelegram

MINUTE = 60.0


class Clock:
    """Real time, moved by `offset` seconds when a test says so."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _deny_writes(action: int, *_: Any) -> int:
    writes = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)
    return sqlite3.SQLITE_DENY if action in writes else sqlite3.SQLITE_OK


@contextlib.asynccontextmanager
async def writes_refused(store: Store) -> AsyncIterator[None]:
    """Every write of the store fails (reads still work) until the block ends."""
    writer = store._writer  # the fault goes where a full disk would hit: the writer
    await writer.set_authorizer(_deny_writes)
    try:
        yield
    finally:
        await writer.set_authorizer(None)


def alert_texts(telegram: FakeTelegram) -> list[str]:
    """What the bot posted into its Alerts topic(s)."""
    topics = [t.thread_id for t in telegram.topics.values() if t.name == ALERTS_TOPIC_NAME]
    return [m.plain_text or "" for t in topics for m in telegram.messages_in(t)]


async def until(condition: Any, within: float = 10.0) -> None:
    """Wait for a condition, a bounded time."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# --- a database that takes no writes ---------------------------------------------------------


async def test_healthz_is_503_and_one_alert_is_posted_while_callbacks_cannot_be_stored(
    bridge: Bridge, callbacks: Callbacks, telegram: FakeTelegram
) -> None:
    assert (await callbacks.inbox(inbox_body("ref-ok"))).status == 200
    status, _ = await callbacks.healthz()
    assert status == 200

    async with writes_refused(bridge.store):
        for n in range(5):
            assert (await callbacks.inbox(inbox_body(f"ref-{n}"))).status == 503
        status, body = await callbacks.healthz()
        assert status == 503
        assert "database writes failing" in body["problems"]
        assert body["database"]["state"] == "writes failing"
        assert "not authorized" in body["database"]["detail"]
        # The failed callbacks woke the watch: one alert, however many callbacks failed.
        await until(lambda: any("cannot be stored" in t for t in alert_texts(telegram)))
        await bridge.alerts.check_intake()
        assert (await callbacks.inbox(inbox_body("ref-late"))).status == 503
        await bridge.alerts.check_intake()
        assert len([t for t in alert_texts(telegram) if "cannot be stored" in t]) == 1

    # The watch's own small write proves the database back, callbacks or not.
    await bridge.alerts.check_intake()
    status, body = await callbacks.healthz()
    assert status == 200
    assert body["problems"] == []
    assert alert_texts(telegram)[-1] == "✅ Callbacks are stored again."
    assert (await callbacks.inbox(inbox_body("ref-5"))).status == 200


async def test_a_failed_write_is_a_problem_only_until_a_write_succeeds_or_it_grows_old(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "h.sqlite3")
    clock = Clock()
    try:
        health = Health(store, workers_running=lambda: True, write_failure_for=300, clock=clock)
        health.telegram.set("ok")
        health.nusasms.set("ok")
        async with writes_refused(store):
            with pytest.raises(Exception, match="not authorized"):
                await store.set_fact("k", "v")
        healthy, body = await health.report()
        assert not healthy
        assert body["problems"] == ["database writes failing"]

        clock.offset = 301  # long ago, and nothing was tried since
        assert (await health.report())[0]
        clock.offset = 0
        assert not (await health.report())[0]
        await store.set_fact("k", "v")
        assert (await health.report())[0]
    finally:
        await store.close()


async def test_the_intake_alert_is_posted_once_though_the_database_keeps_refusing_to_save_it(
    bridge: Bridge, telegram: FakeTelegram
) -> None:
    async with writes_refused(bridge.store):
        with pytest.raises(Exception, match="not authorized"):
            await bridge.store.set_fact("k", "v")
        for _ in range(3):
            await bridge.alerts.check_intake()
    # Neither the episode nor the Alerts topic could be saved: both were kept in memory.
    assert len([t for t in alert_texts(telegram) if "cannot be stored" in t]) == 1
    assert len([t for t in telegram.topics.values() if t.name == ALERTS_TOPIC_NAME]) == 1


# --- services that refuse us ------------------------------------------------------------------


async def test_a_group_that_refuses_the_bot_makes_telegram_rejected(
    config_data: dict[str, Any],
    tmp_path: Path,
    make_bridge: Any,
    http: aiohttp.ClientSession,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
) -> None:
    config_data["alerts"] = {"thresholds": {"wa_balance": 100}}
    bridge = await make_bridge(load_settings(write_config(tmp_path, config_data), environ={}))
    callbacks = Callbacks.of(bridge, http)
    await nusasms.wait_for(lambda: len(nusasms.calls_to("/balance")) >= 1)  # the start-up read
    telegram.fail_next("*", 403, "Forbidden: bot was kicked from the supergroup chat", times=1000)
    nusasms.balance["wa_balance"] = 1  # an alert is due, and the group refuses it
    with pytest.raises(Forbidden):
        await bridge.alerts.check_balance()

    status, body = await callbacks.healthz()
    assert status == 503
    assert "telegram rejected" in body["problems"]
    assert body["telegram"]["state"] == "rejected"
    assert "kicked" in body["telegram"]["detail"]


def test_service_state_follows_what_calls_show(tmp_path: Path) -> None:
    health = Health(Store.__new__(Store), workers_running=lambda: True)
    health.telegram.set("ok", "started")

    health.saw_error("telegram", BadRequest("Message is too long"))  # one request, not the group
    assert health.telegram.state == "ok"
    health.saw_error("telegram", Forbidden("Forbidden: bot is not a member of the supergroup"))
    assert health.telegram.state == "rejected"
    health.saw_error("telegram", TimedOut())  # a network error does not disprove a refusal
    assert health.telegram.state == "rejected"
    health.saw_success("telegram")
    assert health.telegram.state == "ok"
    health.saw_error("telegram", NetworkError("connection reset"))
    assert health.telegram.state == "unreachable"
    health.saw_error("telegram", BadRequest("Bad Request: not enough rights to create a topic"))
    assert health.telegram.state == "rejected"

    health.saw_error(
        "nusasms", NusaSMSAuthError(401, '{"message": "Invalid API key"}', "POST", "/")
    )
    assert (health.nusasms.state, health.nusasms.detail) == ("rejected", "Invalid API key")
    health.saw_error("nusasms", NusaSMSConnectionError(None, None, "POST", "/wa/reply"))
    assert health.nusasms.state == "rejected"
    health.saw_success("nusasms", "reply accepted")
    assert health.nusasms.state == "ok"


async def test_healthz_shows_no_secret_in_any_error_text(
    settings: Settings, make_bridge: Any, http: aiohttp.ClientSession, telegram: FakeTelegram
) -> None:
    bridge = await make_bridge(settings)
    token = settings.telegram.bot_token.get_secret_value()
    leaky = f"GET {telegram.base_url}{token}/getMe failed; see /callbacks/{CALLBACK_SECRET}/wa"
    assert bridge.health is not None
    bridge.health.saw_error("telegram", NetworkError(leaky))
    async with http.get(f"http://127.0.0.1:{bridge.admin_port}/healthz") as response:
        text = await response.text()
    assert "getMe failed" in text
    for secret in settings.secrets():
        assert secret not in text


async def test_health_redacts_details_set_by_anyone(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "h.sqlite3")
    try:
        secret, token = (
            "s3cret-value-for-this-test",
            "5551234567:AAAbbbCCCdddEEEfffGGGhhhIIIjjjKKKl",
        )
        health = Health(store, workers_running=lambda: True, secrets=[secret])
        health.telegram.set("unreachable", f"https://api.telegram.org/bot{token}/getMe")
        health.nusasms.set("rejected", f"key {secret} refused")
        _, body = await health.report()
        shown = repr(body)
        assert secret not in shown
        assert token not in shown
        assert body["nusasms"]["detail"] == "key *** refused"
    finally:
        await store.close()


# --- never reached ------------------------------------------------------------------------------


async def test_services_never_reached_after_the_start_up_grace_are_a_problem(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "h.sqlite3")
    clock = Clock()
    try:
        health = Health(store, workers_running=lambda: True, start_grace=60, clock=clock)
        health.telegram.set("unreachable", "no answer in time")
        clock.offset = 59
        assert (await health.report())[0]

        clock.offset = 61
        healthy, body = await health.report()
        assert not healthy
        assert body["problems"] == ["telegram never reached", "nusasms never reached"]

        health.nusasms.set("ok", "user 1")
        health.nusasms.set("unreachable", "network")  # reached once: unreachable is no problem
        health.telegram.set("ok", "forum")
        assert (await health.report())[0]
    finally:
        await store.close()


async def test_running_bridge_that_never_reached_telegram_is_unhealthy_after_the_grace(
    settings: Settings, make_bridge: Any, telegram: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    telegram.fail_next("getMe", 502, "Bad Gateway", times=100_000)
    clock = Clock()
    bridge = await make_bridge(settings, clock=clock)
    callbacks = Callbacks.of(bridge, http)
    status, body = await callbacks.healthz()
    assert status == 200
    assert body["telegram"]["state"] == "unreachable"

    clock.offset = 2 * MINUTE
    status, body = await callbacks.healthz()
    assert status == 503
    assert body["problems"] == ["telegram never reached"]


# --- the WAL ------------------------------------------------------------------------------------


def size(path: Path) -> int:
    """A file's size in bytes."""
    return path.stat().st_size


@pytest.fixture
def wal(tmp_path: Path) -> Path:
    """Where the test database's WAL lives."""
    return tmp_path / "w.sqlite3-wal"


async def test_the_checkpoint_worker_truncates_the_wal(tmp_path: Path, wal: Path) -> None:
    store = await Store.open(tmp_path / "w.sqlite3")
    try:
        now = time.time()
        for n in range(200):
            await store.add(NewInbound(f"ref-{n}", ROOM, NUMBER, "x" * 500, now, now))
        assert size(wal) > 0
        worker = Checkpoints(store, every=0.05)
        worker.start()
        try:
            await until(lambda: worker.done >= 1)
        finally:
            await worker.stop()
        assert size(wal) == 0
        assert len(await store.waiting(ROOM, 500)) == 200
    finally:
        await store.close()


async def test_a_bot_kicked_from_the_group_shows_on_healthz_from_the_customer_posts(
    callbacks: Callbacks, telegram: FakeTelegram
) -> None:
    assert (await callbacks.inbox(inbox_body("ref-1", "halo"))).status == 200
    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    status, body = await callbacks.healthz()
    assert (status, body["telegram"]["state"]) == (200, "ok")

    telegram.fail_next("*", 403, "Forbidden: bot was kicked from the supergroup chat", times=1000)
    assert (await callbacks.inbox(inbox_body("ref-2", "masih ada?"))).status == 200

    async def rejected() -> bool:
        status, body = await callbacks.healthz()
        return status == 503 and "telegram rejected" in body["problems"]

    deadline = time.monotonic() + 10
    while not await rejected():
        assert time.monotonic() < deadline, "healthz never saw the group refusing the bot"
        await asyncio.sleep(0.05)
    _, body = await callbacks.healthz()
    assert "kicked" in body["telegram"]["detail"]


async def test_an_api_key_nusasms_rejects_on_a_reply_shows_on_healthz(
    callbacks: Callbacks, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    assert (await callbacks.inbox(inbox_body("ref-1", "halo"))).status == 200
    await telegram.wait_for(lambda: len(telegram.messages) >= 2)
    [topic] = [t.thread_id for t in telegram.topics.values()]
    nusasms.fail_next(
        "/wa_official/message/reply", 401, {"error": True, "message": "Invalid API key"}
    )
    telegram.operator_message(thread_id=topic, text="Baik kak")

    await nusasms.wait_for(lambda: len(nusasms.calls_to("/wa_official/message/reply")) >= 1)
    deadline = time.monotonic() + 10
    while True:
        status, body = await callbacks.healthz()
        if status == 503 and "nusasms rejected" in body["problems"]:
            break
        assert time.monotonic() < deadline, f"healthz never saw the rejected key: {body}"
        await asyncio.sleep(0.05)
    assert body["nusasms"]["state"] == "rejected"
