"""Start-up and shutdown of the real process when the network, the disk or a person misbehaves.

Whatever goes wrong that a person must fix ends in one clear line and exit code 2 (the
systemd unit does not restart on 2); the callback port opens before any service is asked
anything; SIGTERM is honoured within 10 s in every phase.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.core.store import MIGRATIONS
from tests.conftest import BridgeProcess, Callbacks, inbox_body
from tests.fakes.hanging import HangingServer
from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import FakeTelegram


@pytest.fixture
async def hanging() -> AsyncIterator[HangingServer]:
    """A server that takes every connection and never answers."""
    async with HangingServer() as server:
        yield server


def hang_both(config_data: dict[str, Any], hanging: HangingServer) -> None:
    """Point the configuration's NusaSMS and Telegram at the hanging server."""
    config_data["nusasms"]["base_url"] = hanging.url
    config_data["telegram"]["api_base_url"] = f"{hanging.url}/bot"
    config_data["telegram"]["api_file_url"] = f"{hanging.url}/file/bot"


async def exited(proc: BridgeProcess, within: float) -> int:
    """The exit code, awaited (the fakes live in this loop); fails after `within` seconds."""
    assert proc.process is not None
    deadline = time.monotonic() + within
    while (code := proc.process.poll()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"still running after {within}s:\n{proc.log.read_text()}")
        await asyncio.sleep(0.02)
    return code


async def run_to_exit(proc: BridgeProcess) -> tuple[int, str]:
    """Start the process and wait for it to end by itself."""
    proc.start()
    return await exited(proc, 30), proc.log.read_text()


def error_lines(log: str) -> list[str]:
    """The log lines at ERROR or worse."""
    return [line for line in log.splitlines() if " ERROR " in line or " CRITICAL " in line]


def first_log_time(log: Path) -> float:
    """When the process wrote its first log line (after Python and the imports)."""
    stamp = log.read_text().split(" ", 2)[:2]
    return datetime.strptime(" ".join(stamp), "%Y-%m-%d %H:%M:%S,%f").timestamp()


async def wait_for_log(proc: BridgeProcess, text: str, within: float = 10) -> None:
    """Wait until the process has logged `text`."""
    deadline = time.monotonic() + within
    while not (proc.log.exists() and text in proc.log.read_text()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never logged:\n{proc.log.read_text()}")
        await asyncio.sleep(0.02)


async def test_port_opens_at_once_while_both_services_hang_and_sigterm_stops_the_checks(
    bridge_process: Callable[[], BridgeProcess],
    config_data: dict[str, Any],
    hanging: HangingServer,
    http: aiohttp.ClientSession,
) -> None:
    hang_both(config_data, hanging)
    proc = bridge_process()
    proc.start()
    callbacks = proc.callbacks(http)
    await wait_for_log(proc, "database ")
    while True:
        try:
            response = await callbacks.inbox(inbox_body("ref-early", "masih di sana?"))
            break
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.02)
    answered = time.time()
    assert response.status == 200
    # Measured from the process's first log line, so the interpreter's start is not counted.
    assert answered - first_log_time(proc.log) < 1.0, proc.log.read_text()
    await wait_for_log(proc, "bridge listening")
    assert hanging.connections >= 2  # both services are being asked, neither answers
    assert "bridge ready" not in proc.log.read_text()

    assert proc.process is not None
    proc.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = await exited(proc, 10)
    assert code == 0
    assert time.monotonic() - started < 10
    log = proc.log.read_text()
    assert "shutting down during start-up" in log
    assert "Traceback" not in log
    with sqlite3.connect(proc.config.parent / "bridge.sqlite3") as db:
        assert db.execute("SELECT ref_no FROM inbound").fetchall() == [("ref-early",)]


async def test_sigterm_during_a_slow_shutdown_still_ends_within_ten_seconds(
    bridge_process: Callable[[], BridgeProcess],
    telegram: FakeTelegram,
    http: aiohttp.ClientSession,
) -> None:
    proc = bridge_process()
    proc.start()
    await proc.wait_ready(http)
    callbacks = proc.callbacks(http)
    # Telegram takes every call and sits on it: a post is in flight, the long poll hangs,
    # and whatever shutdown asks Telegram is never answered either.
    telegram.delay_next("*", 60, times=1000)
    assert (await callbacks.inbox(inbox_body("ref-1"))).status == 200
    await telegram.wait_for(lambda: bool(telegram.calls_of("createForumTopic")))
    assert proc.process is not None
    proc.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    await wait_for_log(proc, "shutting down")
    proc.process.send_signal(signal.SIGTERM)  # an impatient operator, or docker stop again
    code = await exited(proc, 10)
    assert code == 0
    assert time.monotonic() - started < 10
    log = proc.log.read_text()
    assert "stopped" in log
    assert error_lines(log) == []
    assert "Traceback" not in log


@pytest.mark.parametrize("telegram_answers", [True, False], ids=["answering", "stopped-answering"])
async def test_shutdown_against_telegram_is_quick_and_quiet(
    bridge_process: Callable[[], BridgeProcess],
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
    telegram_answers: bool,
) -> None:
    proc = bridge_process()
    proc.start()
    await proc.wait_ready(http)
    callbacks = proc.callbacks(http)
    assert (await callbacks.inbox(inbox_body("ref-1"))).status == 200
    topic = await _topic_of_customer(telegram)
    # An operator's update fetched: shutdown has to tell Telegram it was handled.
    telegram.operator_message(thread_id=topic, text="Sudah kami kirim")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    await telegram.wait_for(
        lambda: any(c.params.get("offset", 0) > 0 for c in telegram.calls_of("getUpdates"))
    )
    if not telegram_answers:
        # PTB's Updater waited 5 s here for its last getUpdates and logged an ERROR.
        telegram.delay_next("getUpdates", 30)

    assert proc.process is not None
    proc.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = await exited(proc, 10)
    took = time.monotonic() - started
    log = proc.log.read_text()
    assert code == 0
    assert error_lines(log) == []
    assert "Traceback" not in log
    if telegram_answers:
        assert took < 2, log
    else:
        # The confirming getUpdates gets one second, then a warning; no read timeout.
        assert took < 4, log
        assert "could not confirm the last Telegram updates" in log


async def test_shutdown_confirms_the_updates_it_fetched(
    make_bridge: Any, settings: Any, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    bridge = await make_bridge(settings)
    callbacks_topic = await _open_topic(bridge, telegram)
    telegram.operator_message(thread_id=callbacks_topic, text="halo")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    started = time.monotonic()
    await bridge.stop()
    assert time.monotonic() - started < 2
    # Nothing fetched stays unconfirmed: the last call told Telegram where we stopped.
    assert telegram.calls_of("getUpdates")[-1].params.get("offset", 0) > 0


async def _open_topic(bridge: Any, telegram: FakeTelegram) -> int:
    async with aiohttp.ClientSession() as session:
        callbacks = Callbacks.of(bridge, session)
        assert (await callbacks.inbox(inbox_body("ref-topic"))).status == 200
    return await _topic_of_customer(telegram)


async def _topic_of_customer(telegram: FakeTelegram) -> int:
    """The topic in which the customer's message (the default inbox text) was posted."""

    def posted() -> list[int]:
        return [
            m.thread_id
            for m in telegram.messages
            if m.thread_id is not None and "pesanan saya" in (m.plain_text or "")
        ]

    await telegram.wait_for(lambda: bool(posted()))
    return posted()[0]


def _garbage(path: Path) -> str:
    path.write_bytes(b"this is not a database at all, just some words " * 200)
    return "damaged or not an SQLite database"


def _truncated(path: Path) -> str:
    with sqlite3.connect(path) as db:
        for step in MIGRATIONS:
            db.executescript(step)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        rows = [(f"room-{i}", "62812", 1.0, 1.0) for i in range(2000)]
        db.executemany(
            "INSERT INTO rooms (room_id, sender_number, last_inbox_at, created_at)"
            " VALUES (?, ?, ?, ?)",
            rows,
        )
    db.close()
    os.truncate(path, path.stat().st_size // 2)
    return "damaged or not an SQLite database"


def _newer(path: Path) -> str:
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    db.close()
    return "newer than this bridge knows"


def _directory(path: Path) -> str:
    path.mkdir()
    return "is a folder, not a file"


def _parent_is_a_file(path: Path) -> str:
    path.parent.parent.mkdir(exist_ok=True)
    path.parent.write_text("a file where the database's folder should be")
    return "is a file, not a folder"


@pytest.mark.parametrize(
    ("make", "nested"),
    [
        (_garbage, False),
        (_truncated, False),
        (_newer, False),
        (_directory, False),
        (_parent_is_a_file, True),
    ],
    ids=["garbage", "truncated", "newer-schema", "a-directory", "parent-is-a-file"],
)
async def test_a_database_that_cannot_be_opened_stops_with_one_line_and_exit_2(
    bridge_process: Callable[[], BridgeProcess],
    config_data: dict[str, Any],
    tmp_path: Path,
    make: Callable[[Path], str],
    nested: bool,
) -> None:
    path = tmp_path / "data" / "bridge.sqlite3" if nested else tmp_path / "broken.sqlite3"
    expected = make(path)
    config_data["storage"]["path"] = str(path)
    code, log = await run_to_exit(bridge_process())
    assert code == 2, log
    [line] = error_lines(log)
    assert "cannot start: " in line
    assert str(path) in line
    assert expected in line
    assert "Traceback" not in log


async def test_a_media_folder_that_cannot_be_created_stops_with_one_line_and_exit_2(
    bridge_process: Callable[[], BridgeProcess], config_data: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "blocker").write_text("a file where the media folder should be")
    config_data["storage"]["media_dir"] = str(tmp_path / "blocker" / "media")
    code, log = await run_to_exit(bridge_process())
    assert code == 2, log
    [line] = error_lines(log)
    assert f"cannot create the media folder {tmp_path / 'blocker' / 'media'}" in line
    assert "storage.media_dir" in line
    assert "Traceback" not in log


async def test_the_start_up_error_line_is_json_with_json_logging(
    bridge_process: Callable[[], BridgeProcess], config_data: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "broken.sqlite3"
    _garbage(path)
    config_data["storage"]["path"] = str(path)
    config_data["logging"] = {"json": True}
    code, log = await run_to_exit(bridge_process())
    assert code == 2
    entries = [json.loads(line) for line in log.splitlines()]  # every line is JSON
    [error] = [e for e in entries if e["level"] == "ERROR"]
    assert error["message"].startswith(f"cannot start: database {path} is damaged")
    assert "exception" not in error


async def test_a_second_instance_on_the_same_database_is_refused_with_exit_2(
    bridge_process: Callable[[], BridgeProcess], http: aiohttp.ClientSession
) -> None:
    first = bridge_process()
    first.start()
    await first.wait_ready(http)
    assert first.process is not None
    second = bridge_process()  # the same configuration, the same database
    code, log = await run_to_exit(second)
    assert code == 2
    [line] = error_lines(log.split("bridge ready", 1)[1])
    assert f"is in use by another bridge (process {first.process.pid})" in line
    assert "Traceback" not in log

    # kill -9 leaves the lock file behind, but not the lock: the next start works.
    first.kill()
    third = bridge_process()
    third.start()
    await third.wait_ready(http)


async def test_a_busy_port_stops_start_up_with_one_line_and_exit_2(
    bridge_process: Callable[[], BridgeProcess],
) -> None:
    proc = bridge_process()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", proc.port))
        taken.listen()
        code, log = await run_to_exit(proc)
    assert code == 2
    [line] = error_lines(log)
    assert f"cannot listen on 127.0.0.1:{proc.port}: the port is in use" in line
    assert "server.port" in line
    assert "Traceback" not in log


async def test_relative_storage_path_follows_the_config_file_not_the_current_directory(
    bridge_process: Callable[[], BridgeProcess],
    config_data: dict[str, Any],
    tmp_path: Path,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the process inherits it
    config_data["storage"]["path"] = "state/bridge.sqlite3"
    proc = bridge_process()
    proc.start()
    await proc.wait_ready(http)
    expected = tmp_path / "state" / "bridge.sqlite3"
    assert expected.exists()
    assert not (elsewhere / "state").exists()
    assert f"database {expected}" in proc.log.read_text()
