"""Operators' updates survive kill -9: stored before Telegram is told, handled from the table."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.core.store import Store
from bridge.group.updates import SECRET_HEADER, WebhookInbox, webhook_secrets
from tests.conftest import BridgeProcess, Callbacks, free_port, inbox_body, write_config
from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import FakeTelegram

ROUNDS = 6
PER_ROUND = 3


def _process(tmp_path: Path, config_data: dict[str, Any], mode: str) -> BridgeProcess:
    port, admin_port = free_port(), free_port()
    public_url = f"http://127.0.0.1:{port}"
    telegram = dict(config_data["telegram"])
    if mode != "polling":  # polling is the default: this test runs on code without the key
        telegram["updates"] = mode
    data = {
        **config_data,
        "telegram": telegram,
        "server": {
            **config_data["server"],
            "port": port,
            "public_url": public_url,
            "admin": f"127.0.0.1:{admin_port}",
        },
    }
    config = write_config(tmp_path, data, "process.yaml")
    return BridgeProcess(config, port, tmp_path / "bridge.log", admin_port=admin_port)


def _unsettled(database: Path) -> int:
    """Replies not yet handed to NusaSMS for good, plus stored updates not yet handled."""
    with sqlite3.connect(database) as db:
        replies = db.execute(
            "SELECT count(*) FROM outbound WHERE state IN ('queued', 'sending')"
        ).fetchone()[0]
        try:
            updates = db.execute(
                "SELECT count(*) FROM telegram_updates WHERE done_at IS NULL"
            ).fetchone()[0]
        except sqlite3.OperationalError:  # no such table: a bridge that does not store them
            updates = 0
    return int(replies) + int(updates)


async def _wait(condition: Any, within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_kill_9_while_operators_post_sends_every_message_once_in_order(
    mode: str,
    tmp_path: Path,
    config_data: dict[str, Any],
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    proc = _process(tmp_path, config_data, mode)
    database = Path(config_data["storage"]["path"])
    try:
        proc.start()
        await proc.wait_ready(http)
        callbacks = Callbacks(f"http://127.0.0.1:{proc.port}", http)
        assert (await callbacks.inbox(inbox_body("in-1"))).status == 200
        await telegram.wait_for(
            lambda: any(len(telegram.messages_in(t)) >= 2 for t in telegram.topics), timeout=20
        )
        topic = next(iter(telegram.topics))
        if mode == "webhook":
            await telegram.wait_for(lambda: bool(telegram.webhook_url), timeout=20)

        # The kill lands at the riskiest moment of each mode, before anything is answered:
        # polling, when getUpdates confirms fetched updates (today's PTB-style loop confirms
        # them before its handlers stored anything); webhook, when an update is POSTed
        # (before it is stored, or, for the second of a round, after the first was).
        armed: dict[str, Any] = {}

        def kill() -> None:
            assert proc.process is not None
            if armed.pop("round", None) is not None:
                os.kill(proc.process.pid, signal.SIGKILL)

        def on_confirm(update_ids: list[int]) -> None:
            if armed.get("round") is not None and set(update_ids) & armed["ids"]:
                kill()

        def on_post(update: dict[str, Any]) -> None:
            if armed.get("round") is not None and update["update_id"] == armed["target"]:
                kill()

        telegram.on_confirm = on_confirm
        telegram.on_webhook_post = on_post
        sent: list[str] = []
        for n in range(ROUNDS):
            # Earlier rounds are settled: no kill can land in the middle of a NusaSMS send,
            # whose outcome the outbox rightly treats as unknown rather than sending twice.
            await _wait(lambda: _unsettled(database) == 0, 20, "earlier replies to settle")
            texts = [f"balasan {n}-{i}" for i in range(PER_ROUND)]
            ids: set[int] = set()
            armed.update(round=n, ids=ids, target=None)
            for text in texts:
                telegram.operator_message(thread_id=topic, text=text)
                ids.add(telegram.last_update_id)
            armed["target"] = sorted(ids)[n % 2]
            sent += texts
            assert proc.process is not None
            await asyncio.to_thread(proc.process.wait, 20)
            proc.start()
            await proc.wait_ready(http)
            count = len(sent)
            await nusasms.wait_for(lambda c=count: len(nusasms.replies) >= c, timeout=20)

        await _wait(lambda: _unsettled(database) == 0, 20, "the last replies to settle")
        assert [r.text for r in nusasms.replies] == sent
        assert telegram.pending_updates() == 0
    finally:
        proc.stop()


async def test_webhook_with_a_wrong_secret_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "b.sqlite3")
    try:
        path, header = webhook_secrets("123:token")
        stored: list[int] = []
        inbox = WebhookInbox(
            store, path_secret=path, header_secret=header, on_stored=lambda: stored.append(1)
        )
        body = b'{"update_id": 7, "message": {"message_id": 1}}'
        assert await inbox.receive(path, "wrong", body) == 403
        assert await inbox.receive(path, None, body) == 403
        assert await inbox.receive("wrong", header, body) == 403
        assert await store.pending_updates() == []
        assert stored == []
        assert await inbox.receive(path, header, body) == 200
        assert [u for u, _ in await store.pending_updates()] == [7]
        # Telegram delivering it again is dropped by update_id.
        assert await inbox.receive(path, header, body) == 200
        assert len(await store.pending_updates()) == 1
    finally:
        await store.close()


async def test_webhook_answers_503_when_the_database_cannot_take_the_update(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "b.sqlite3")
    blocker = sqlite3.connect(tmp_path / "b.sqlite3", isolation_level=None, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        path, header = webhook_secrets("123:token")
        inbox = WebhookInbox(store, path_secret=path, header_secret=header, on_stored=lambda: None)
        assert await inbox.receive(path, header, b'{"update_id": 8}') == 503
        blocker.rollback()
        assert await inbox.receive(path, header, b'{"update_id": 8}') == 200
    finally:
        blocker.close()
        await store.close()


async def test_webhook_route_checks_the_secret_header_on_the_public_server(
    make_bridge: Any, config_data: dict[str, Any], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    from bridge.core.config import load_settings

    config_data["telegram"]["updates"] = "webhook"
    settings = load_settings(write_config(tmp_path, config_data), environ={})
    bridge = await make_bridge(settings)
    path, header = webhook_secrets(settings.telegram.bot_token.get_secret_value())
    url = f"http://127.0.0.1:{bridge.port}/telegram/{path}"
    body = b'{"update_id": 9}'
    async with http.post(url, data=body, headers={SECRET_HEADER: "nope"}) as response:
        assert response.status == 403
    async with http.post(f"{url}x", data=body, headers={SECRET_HEADER: header}) as response:
        assert response.status == 403
    async with http.post(url, data=body, headers={SECRET_HEADER: header}) as response:
        assert response.status == 200
    assert await bridge.store.last_update_id() == 9
