"""The bridge as a real process: kill -9 loses nothing, SIGTERM is quick, bad keys stop it."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.conftest import BridgeProcess, inbox_body
from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import FakeTelegram


async def test_kill_9_right_after_ack_then_restart_still_posts(
    bridge_process: Callable[[], BridgeProcess],
    telegram: FakeTelegram,
    http: aiohttp.ClientSession,
) -> None:
    proc = bridge_process()
    # Telegram is down, so nothing acknowledged can have been posted before the kill.
    await telegram.go_down()
    proc.start()
    await proc.wait_ready(http)
    callbacks = proc.callbacks(http)
    for i in range(20):
        assert (await callbacks.inbox(inbox_body(f"ref-{i}", f"pesan {i}"))).status == 200
    proc.kill()

    await telegram.come_up()
    proc.start()
    await proc.wait_ready(http)
    await telegram.wait_for(
        lambda: "pesan 19" in "".join(m.plain_text or "" for m in telegram.messages), timeout=20
    )
    posted = "\n\n".join(m.plain_text or "" for m in telegram.messages[1:])
    assert posted.split("\n\n") == [f"pesan {i}" for i in range(20)]
    proc.stop()
    with sqlite3.connect(proc.config.parent / "bridge.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_sigterm_shuts_down_within_ten_seconds(
    bridge_process: Callable[[], BridgeProcess], http: aiohttp.ClientSession
) -> None:
    proc = bridge_process()
    proc.start()
    await proc.wait_ready(http)
    assert proc.process is not None
    started = time.monotonic()
    proc.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.process.wait, 15)
    assert code == 0
    assert time.monotonic() - started < 10
    assert "stopped" in proc.log.read_text()


async def _exit_of(proc: BridgeProcess) -> tuple[int, str]:
    proc.start()
    assert proc.process is not None
    code = await asyncio.to_thread(proc.process.wait, 30)
    return code, proc.log.read_text()


async def test_rejected_nusasms_key_stops_start_up_with_a_clear_message(
    bridge_process: Callable[[], BridgeProcess], config_data: dict[str, Any], nusasms: FakeNusaSMS
) -> None:
    config_data["nusasms"]["api_key"] = "wrong-key"
    code, log = await _exit_of(bridge_process())
    assert code == 2
    assert "NusaSMS rejected the API key" in log
    assert "Traceback" not in log
    assert "wrong-key" not in log


async def test_rejected_bot_token_stops_start_up(
    bridge_process: Callable[[], BridgeProcess], config_data: dict[str, Any]
) -> None:
    config_data["telegram"]["bot_token"] = "999:wrong-token-wrong-token-wrong"
    code, log = await _exit_of(bridge_process())
    assert code == 2
    assert "Telegram rejected the bot token" in log
    assert "wrong-token-wrong-token-wrong" not in log


async def test_chat_that_is_not_a_forum_stops_start_up(
    bridge_process: Callable[[], BridgeProcess], telegram: FakeTelegram
) -> None:
    telegram.is_forum = False
    code, log = await _exit_of(bridge_process())
    assert code == 2
    assert "is not a forum" in log


async def test_bot_without_manage_topics_right_stops_start_up(
    bridge_process: Callable[[], BridgeProcess], telegram: FakeTelegram
) -> None:
    telegram.can_manage_topics = False
    code, log = await _exit_of(bridge_process())
    assert code == 2
    assert "Manage topics" in log


async def test_unreachable_nusasms_does_not_stop_start_up(
    bridge_process: Callable[[], BridgeProcess],
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    await nusasms.go_down()
    proc = bridge_process()
    proc.start()
    await proc.wait_ready(http)
    async with http.get(proc.healthz_url) as response:
        body = await response.json()
    assert body["nusasms"]["state"] == "unreachable"
    await nusasms.come_up()
    deadline = time.monotonic() + 10
    while body["nusasms"]["state"] != "ok" and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        async with http.get(proc.healthz_url) as response:
            body = await response.json()
    assert body["nusasms"]["state"] == "ok"
