"""What an operator of the bridge sees from outside: `/metrics`, `/healthz` and the logs."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from bridge.app import Bridge
from bridge.core.config import Settings
from bridge.core.logs import setup_logging
from bridge.core.store import NewInbound, NewReply, Store
from bridge.ops.health import Health
from tests.conftest import (
    CALLBACK_SECRET,
    NUMBER,
    ROOM,
    BridgeProcess,
    Callbacks,
    inbox_body,
)
from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import FakeTelegram

MINUTE = 60.0
REAL_LOOKING_TOKEN = "7212345678:AAHx1Zq2WvE3rT4yU5iO6pA7sD8fG9hJ0kL"


class Clock:
    """Real time, moved by `offset` seconds when a test says so."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: aiohttp.ClientSession, bridge: Bridge) -> Samples:
    """GET /metrics, parsed as Prometheus does: (sample name, labels) -> value."""
    async with http.get(f"http://127.0.0.1:{bridge.admin_port}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, None if the bridge does not export it."""
    return samples.get((name, frozenset(labels.items())))


async def until_room_failed(bridge: Bridge, room_id: str = ROOM) -> None:
    """Wait until posting the room has failed at least once (and was recorded)."""
    for _ in range(500):
        room = await bridge.store.room(room_id)
        if room is not None and room.attempts >= 1:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"room {room_id} never failed")


# --- /metrics ------------------------------------------------------------------------------


async def test_metrics_count_callbacks_by_kind_and_outcome(
    callbacks: Callbacks, bridge: Bridge, http: aiohttp.ClientSession
) -> None:
    assert (await callbacks.inbox(inbox_body("ref-1"))).status == 200
    assert (await callbacks.inbox(inbox_body("ref-1"))).status == 200  # a repeat is stored too
    assert (await callbacks.inbox({"room_id": ROOM})).status == 422
    assert (await callbacks.inbox(b"{not json")).status == 400
    assert (await callbacks.inbox(inbox_body("ref-2"), secret="not-the-secret")).status == 404
    status = {"ref_no": "out-1", "status": "read", "status_date": "2026-11-27 10:22:50"}
    assert (await callbacks.status(status)).status == 200

    samples = await scrape(http, bridge)
    total = "bridge_callbacks_total"
    assert sample(samples, total, kind="inbox", outcome="stored") == 2
    assert sample(samples, total, kind="inbox", outcome="invalid") == 1
    assert sample(samples, total, kind="inbox", outcome="malformed") == 1
    assert sample(samples, total, kind="inbox", outcome="wrong_secret") == 1
    assert sample(samples, total, kind="status", outcome="stored") == 1
    assert sample(samples, total, kind="status", outcome="invalid") is None


async def test_metrics_show_send_latency_after_a_post(
    callbacks: Callbacks, bridge: Bridge, telegram: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    assert (await callbacks.inbox(inbox_body("ref-1", "halo"))).status == 200
    await telegram.wait_for(lambda: any(m.plain_text == "halo" for m in telegram.messages))
    samples: Samples = {}
    for _ in range(100):  # the observation and marking it posted follow Telegram's answer
        samples = await scrape(http, bridge)
        if sample(samples, "bridge_queue_depth", queue="inbound") == 0:
            break
        await asyncio.sleep(0.01)

    assert sample(samples, "bridge_send_seconds_count", target="telegram") == 1
    seconds = sample(samples, "bridge_send_seconds_sum", target="telegram")
    assert seconds is not None
    assert 0 < seconds < 5
    assert sample(samples, "bridge_send_seconds_bucket", target="telegram", le="+Inf") == 1
    assert sample(samples, "bridge_queue_depth", queue="inbound") == 0


async def test_metrics_show_queue_depth_and_telegram_errors_while_posting_fails(
    callbacks: Callbacks, bridge: Bridge, telegram: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    telegram.fail_next("createForumTopic", 502, "Bad Gateway", times=1000)
    assert (await callbacks.inbox(inbox_body("ref-1"))).status == 200
    assert (await callbacks.inbox(inbox_body("ref-2"))).status == 200
    await until_room_failed(bridge)

    samples = await scrape(http, bridge)
    assert sample(samples, "bridge_queue_depth", queue="inbound") == 2
    assert sample(samples, "bridge_queue_depth", queue="outbound") == 0
    oldest = sample(samples, "bridge_oldest_waiting_seconds", queue="inbound")
    assert oldest is not None
    assert oldest > 0
    errors = sample(samples, "bridge_api_errors_total", service="telegram", kind="NetworkError")
    assert errors is not None
    assert errors >= 1


async def test_metrics_show_balances_after_a_balance_check(
    bridge: Bridge, nusasms: FakeNusaSMS, http: aiohttp.ClientSession
) -> None:
    nusasms.balance.update(wa_balance=4321, sms_balance="17.5")
    await bridge.alerts.check_balance()

    samples = await scrape(http, bridge)
    assert sample(samples, "bridge_nusasms_balance", field="wa_balance") == 4321
    assert sample(samples, "bridge_nusasms_balance", field="sms_balance") == 17.5
    assert sample(samples, "bridge_nusasms_balance", field="idClient") is None


async def test_metrics_count_a_rejected_balance_read_as_an_api_error(
    bridge: Bridge, nusasms: FakeNusaSMS, http: aiohttp.ClientSession
) -> None:
    await nusasms.wait_for(lambda: len(nusasms.calls_to("/balance")) >= 1)  # the start-up read
    nusasms.fail_next("/balance", 401, {"error": True, "message": "Invalid API key"})
    await bridge.alerts.check_balance()

    samples = await scrape(http, bridge)
    kind = "NusaSMSAuthError"
    assert sample(samples, "bridge_api_errors_total", service="nusasms", kind=kind) == 1


# --- /healthz ------------------------------------------------------------------------------


async def test_healthz_answers_503_while_nusasms_rejects_the_key(
    callbacks: Callbacks, bridge: Bridge, nusasms: FakeNusaSMS
) -> None:
    await nusasms.wait_for(lambda: len(nusasms.calls_to("/balance")) >= 1)  # the start-up read
    nusasms.fail_next("/balance", 401, {"error": True, "message": "Invalid API key"})
    await bridge.alerts.check_balance()

    status, body = await callbacks.healthz()
    assert status == 503
    assert body["problems"] == ["nusasms rejected"]
    assert body["status"] == "needs attention"
    assert body["nusasms"]["state"] == "rejected"
    assert body["nusasms"]["detail"] == "Invalid API key"

    await bridge.alerts.check_balance()
    status, body = await callbacks.healthz()
    assert status == 200
    assert body["problems"] == []


async def test_healthz_answers_503_when_the_inbound_queue_is_stuck(
    make_bridge: Any, settings: Settings, telegram: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    bridge = await make_bridge(settings, clock=clock)
    callbacks = Callbacks.of(bridge, http)
    telegram.fail_next("createForumTopic", 502, "Bad Gateway", times=1000)
    assert (await callbacks.inbox(inbox_body("ref-1"))).status == 200
    await until_room_failed(bridge)
    status, body = await callbacks.healthz()
    assert status == 200

    clock.offset = 6 * MINUTE  # alerts.stuck_after_minutes is 5 by default
    status, body = await callbacks.healthz()
    assert status == 503
    assert body["problems"] == ["inbound queue stuck"]
    assert body["inbound_queue"]["stuck"] is True


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A real database."""
    opened = await Store.open(tmp_path / "health.sqlite3")
    yield opened
    await opened.close()


async def test_health_reports_stuck_queues_by_its_clock(store: Store) -> None:
    clock = Clock()
    health = Health(store, workers_running=lambda: True, stuck_after=5 * MINUTE, clock=clock)
    # Both services answered: minutes later, only the queues are news.
    health.telegram.set("ok")
    health.nusasms.set("ok")
    now = clock()
    await store.add(NewInbound("ref-1", ROOM, NUMBER, "halo", now, now))
    await store.add_reply(NewReply(ROOM, 4242, 777, "text", "jawab"), now)

    clock.offset = 4 * MINUTE
    healthy, body = await health.report()
    assert healthy
    assert body["inbound_queue"]["oldest_age_seconds"] == pytest.approx(4 * MINUTE, abs=1)

    clock.offset = 6 * MINUTE
    healthy, body = await health.report()
    assert not healthy
    assert body["problems"] == ["inbound queue stuck", "outbound queue stuck"]


async def test_health_reports_stopped_workers_and_rejected_telegram(store: Store) -> None:
    health = Health(store, workers_running=lambda: False)
    health.telegram.set("rejected", "token")
    healthy, body = await health.report()
    assert not healthy
    assert body["problems"] == ["workers stopped", "telegram rejected"]
    assert body["workers"]["state"] == "stopped"


# --- logs ----------------------------------------------------------------------------------


@pytest.fixture
def bridge_logging() -> Iterator[Callable[..., None]]:
    """`setup_logging` as `bridge run` calls it, undone after the test.

    pytest's own capture handlers are put back behind the bridge's handler, so the shared
    check of every log line (tests/conftest.py) sees the records as the bridge left them.
    """
    root = logging.getLogger()
    level, added = root.level, []
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}

    def setup(**kwargs: Any) -> None:
        before = list(root.handlers)
        setup_logging(**kwargs)
        added.extend(root.handlers)
        for handler in before:
            root.addHandler(handler)

    yield setup
    for handler in added:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, was in quiet.items():
        logging.getLogger(name).setLevel(was)


async def test_in_process_logs_redact_the_callback_secret_in_aiohttp_access_lines(
    bridge_logging: Callable[..., None],
    settings: Settings,
    make_bridge: Any,
    http: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bridge_logging(level="INFO", secrets=settings.secrets())
    bridge = await make_bridge(settings)
    base = f"http://127.0.0.1:{bridge.port}"
    assert (await Callbacks(base, http).inbox(inbox_body("ref-1"))).status == 200
    # The same secret, percent-encoded: the route decodes it, the access log would not.
    encoded = CALLBACK_SECRET.replace("-", "%2D")
    url = URL(f"{base}/callbacks/{encoded}/wa/inbox", encoded=True)
    async with http.post(url, json=inbox_body("ref-2")) as response:
        assert response.status == 200
    failure = RuntimeError(f"boom near {settings.server.public_url}/callbacks/{CALLBACK_SECRET}")
    logging.getLogger("bridge.test").error("a failure carrying the secret", exc_info=failure)
    await bridge.stop()  # the access log's thread writes what waits before it ends

    err = capsys.readouterr().err
    assert err.count("POST /callbacks/***/wa/inbox HTTP/1.1") == 2
    assert "RuntimeError: boom near http://127.0.0.1:8080/callbacks/***" in err
    assert encoded not in err
    for secret in settings.secrets():
        assert secret not in err


@pytest.fixture
def json_logging(config_data: dict[str, Any]) -> dict[str, Any]:
    """The shared configuration with JSON logs and a balance read every second."""
    config_data["logging"] = {"json": True, "level": "INFO"}
    config_data["alerts"] = {"balance_interval_seconds": 1}
    return config_data


def json_lines(log: Path) -> list[dict[str, Any]]:
    """Every line of the process log, each of which must be one JSON object."""
    entries = []
    for line in log.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        entries.append(entry)
    return entries


async def stop(proc: BridgeProcess) -> None:
    """SIGTERM, and wait for the process to exit."""
    assert proc.process is not None
    proc.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.process.wait, 15) == 0


async def test_process_logs_are_json_lines_without_secrets_across_failures(
    json_logging: dict[str, Any],
    bridge_process: Callable[[], BridgeProcess],
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    telegram.fail_next("sendMessage", 502, "Bad Gateway", times=2)  # Telegram 5xx
    proc = bridge_process()
    proc.start()
    await proc.wait_ready(http)
    callbacks = proc.callbacks(http)
    assert (await callbacks.inbox(inbox_body("ref-1", "halo"))).status == 200
    wrong = await callbacks.inbox(inbox_body("ref-2"), secret="not-the-secret-at-all")
    assert wrong.status == 404
    await telegram.wait_for(lambda: any(m.plain_text == "halo" for m in telegram.messages), 15)
    nusasms.fail_next("/balance", 401, {"error": True, "message": "Invalid API key"})
    await telegram.wait_for(
        lambda: any("rejected the API key" in (m.plain_text or "") for m in telegram.messages), 10
    )
    await stop(proc)

    entries = json_lines(proc.log)
    messages = "\n".join(e["message"] for e in entries)
    raw = proc.log.read_text(encoding="utf-8")
    for secret in (CALLBACK_SECRET, nusasms.api_key, telegram.token):
        assert secret not in raw
    access = [e["message"] for e in entries if e["logger"] == "aiohttp.access"]
    assert any("POST /callbacks/***/wa/inbox" in m and '" 200 ' in m for m in access)
    # A wrong secret may be a near miss of the right one: it is not written down either.
    assert any("POST /callbacks/***/wa/inbox" in m and '" 404 ' in m for m in access)
    assert "not-the-secret-at-all" not in raw
    assert "Bad Gateway" in messages
    assert "service state: rejected (Invalid API key)" in messages
    assert entries[-1]["message"] == "stopped"


async def test_rejected_token_at_start_up_is_logged_without_it(
    json_logging: dict[str, Any],
    bridge_process: Callable[[], BridgeProcess],
) -> None:
    json_logging["telegram"]["bot_token"] = REAL_LOOKING_TOKEN
    proc = bridge_process()
    proc.start()
    assert proc.process is not None
    code = await asyncio.to_thread(proc.process.wait, 30)

    assert code == 2
    assert REAL_LOOKING_TOKEN not in proc.log.read_text(encoding="utf-8")
    assert REAL_LOOKING_TOKEN.split(":")[1] not in proc.log.read_text(encoding="utf-8")
    entries = json_lines(proc.log)
    [error] = [e for e in entries if e["level"] == "ERROR"]
    assert "Telegram rejected the bot token" in error["message"]
