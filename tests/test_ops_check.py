"""`bridge check --config PATH` as a person runs it: a real process against the fakes."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge.core.store import MIGRATIONS
from tests.conftest import CALLBACK_SECRET, write_config
from tests.fakes.hanging import HangingServer
from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import FakeTelegram

WRONG_KEY = "wrong-nusasms-key-4f1d9c"
WRONG_TOKEN = "999999:wrong-token-AAbbCCddEEffGGhhIIjj"


@dataclass
class Checked:
    """What `bridge check` printed and how it exited."""

    code: int
    output: str

    @property
    def lines(self) -> list[str]:
        """The output, line by line."""
        return self.output.splitlines()


async def start_check(
    tmp_path: Path,
    data: dict[str, Any] | str,
    *args: str,
    environ: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """Start `python -m bridge check` on this configuration (YAML data or raw text)."""
    if isinstance(data, str):
        config = tmp_path / "check.yaml"
        config.write_text(data, encoding="utf-8")
    else:
        config = write_config(tmp_path, data, "check.yaml")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYTEST")
        and k not in ("NUSASMS_API_KEY", "TELEGRAM_BOT_TOKEN", "BRIDGE_CALLBACK_SECRET")
    }
    env.update(environ or {})
    # The fakes live in this event loop, so the process is awaited, never waited for.
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "check",
        "--config",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )


async def bridge_check(
    tmp_path: Path,
    data: dict[str, Any] | str,
    *args: str,
    environ: dict[str, str] | None = None,
) -> Checked:
    """Run `python -m bridge check` on this configuration (YAML data or raw text)."""
    process = await start_check(tmp_path, data, *args, environ=environ)
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    return Checked(await process.wait(), out.decode())


def assert_no_secrets(checked: Checked, *secrets: str) -> None:
    """None of the secrets appears anywhere in the output."""
    for secret in (*secrets, CALLBACK_SECRET):
        assert secret not in checked.output


def failed_line(checked: Checked, name: str) -> tuple[str, str]:
    """The failed check called `name` and the fix printed under it."""
    index = next(i for i, line in enumerate(checked.lines) if line.startswith(f"✘ {name}: "))
    fix = checked.lines[index + 1]
    assert fix.startswith("    fix: ")
    return checked.lines[index], fix


async def test_check_passes_with_a_checklist_and_exit_0(
    tmp_path: Path, config_data: dict[str, Any], telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    checked = await bridge_check(tmp_path, config_data)

    assert checked.code == 0, checked.output
    assert checked.lines == [
        "✔ configuration: valid",
        f"✔ storage: {tmp_path / 'bridge.sqlite3'} (a new database will be created)",
        "✔ NusaSMS API key: accepted (user bridge-test)",
        "✔ NusaSMS balance: hlr_balance 100, pulsa_balance 50000, sim_balance 100, "
        "sms_balance 1000, wa_balance 5000",
        "✔ Telegram bot token: accepted",
        "✔ Telegram group is a forum: @bridge_test_bot in forum 'Bridge Test Group'",
        "✔ bot may manage topics: administrator with 'Manage topics'",
        "7 passed, 0 failed",
    ]
    assert_no_secrets(checked, nusasms.api_key, telegram.token)


async def test_check_with_a_wrong_api_key_exits_1_with_a_fix(
    tmp_path: Path, config_data: dict[str, Any], telegram: FakeTelegram
) -> None:
    config_data["nusasms"]["api_key"] = WRONG_KEY
    checked = await bridge_check(tmp_path, config_data)

    assert checked.code == 1
    line, fix = failed_line(checked, "NusaSMS API key")
    assert line == "✘ NusaSMS API key: rejected (Invalid API key)"
    assert "NUSASMS_API_KEY" in fix
    assert "Whitelist" in fix
    assert "✔ Telegram bot token: accepted" in checked.lines  # the other side is still checked
    assert checked.lines[-1] == "5 passed, 1 failed"
    assert_no_secrets(checked, WRONG_KEY, telegram.token)


async def test_check_with_a_wrong_bot_token_exits_1_with_a_fix(
    tmp_path: Path, config_data: dict[str, Any], nusasms: FakeNusaSMS
) -> None:
    config_data["telegram"]["bot_token"] = WRONG_TOKEN
    checked = await bridge_check(tmp_path, config_data)

    assert checked.code == 1
    line, fix = failed_line(checked, "Telegram bot token")
    assert "rejected" in line
    assert "@BotFather" in fix
    assert_no_secrets(checked, WRONG_TOKEN, nusasms.api_key)


async def test_check_of_a_chat_that_is_not_a_forum_exits_1(
    tmp_path: Path, config_data: dict[str, Any], telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    telegram.is_forum = False
    checked = await bridge_check(tmp_path, config_data)

    assert checked.code == 1
    line, fix = failed_line(checked, "Telegram group is a forum")
    assert "is not a forum" in line
    assert "Topics" in fix
    assert_no_secrets(checked, nusasms.api_key, telegram.token)


async def test_check_of_a_bot_without_manage_topics_exits_1(
    tmp_path: Path, config_data: dict[str, Any], telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    telegram.can_manage_topics = False
    checked = await bridge_check(tmp_path, config_data)

    assert checked.code == 1
    line, fix = failed_line(checked, "bot may manage topics")
    assert "lacks the 'Manage topics' admin right" in line
    assert "enable 'Manage topics'" in fix
    assert_no_secrets(checked, nusasms.api_key, telegram.token)


async def test_check_of_a_bot_that_is_no_admin_exits_1(
    tmp_path: Path, config_data: dict[str, Any], telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    telegram.bot_is_admin = False
    checked = await bridge_check(tmp_path, config_data)

    assert checked.code == 1
    line, fix = failed_line(checked, "bot may manage topics")
    assert "is not an administrator" in line
    assert "Administrators" in fix


async def test_check_with_a_low_balance_exits_1(
    tmp_path: Path, config_data: dict[str, Any], nusasms: FakeNusaSMS
) -> None:
    nusasms.balance["wa_balance"] = 12
    checked = await bridge_check(tmp_path, config_data)

    assert checked.code == 1
    line, fix = failed_line(checked, "NusaSMS balance")
    assert line == "✘ NusaSMS balance: low: wa_balance 12 < 100"
    assert "top up" in fix


async def test_check_of_an_invalid_config_exits_1_naming_the_key(
    tmp_path: Path, config_data: dict[str, Any], telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    config_data["telegram"]["chat_idd"] = config_data["telegram"].pop("chat_id")
    checked = await bridge_check(tmp_path, config_data)

    assert checked.code == 1
    assert checked.lines[0] == "✘ configuration"
    assert any(line.endswith("telegram.chat_id: missing") for line in checked.lines)
    assert any(line.endswith("telegram.chat_idd: unknown key (a typo?)") for line in checked.lines)
    assert checked.lines[-1].startswith("    fix: ")
    assert telegram.calls == []  # nothing is tried with a configuration that is not valid
    assert nusasms.calls == []
    assert_no_secrets(checked, nusasms.api_key, telegram.token)


async def test_check_of_unparsable_yaml_never_shows_the_secret_on_that_line(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    text = f'nusasms:\n  api_key: "{WRONG_KEY}\ntelegram:\n  bot_token: {telegram.token}\n'
    checked = await bridge_check(tmp_path, text)

    assert checked.code == 1
    assert "not valid YAML" in checked.output
    assert_no_secrets(checked, WRONG_KEY, telegram.token)


@pytest.fixture
async def echoing_proxy() -> AsyncIterator[str]:
    """A misconfigured reverse proxy: 502 with an error page that quotes the requested path."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            status=502,
            text=f"<html><body>Bad Gateway for {request.path}</body></html>",
            content_type="text/html",
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_check_never_prints_the_token_an_error_page_quotes(
    tmp_path: Path, config_data: dict[str, Any], nusasms: FakeNusaSMS, echoing_proxy: str
) -> None:
    config_data["telegram"].update(
        bot_token=WRONG_TOKEN,
        api_base_url=f"{echoing_proxy}/bot",
        api_file_url=f"{echoing_proxy}/file/bot",
    )
    checked = await bridge_check(tmp_path, config_data)

    assert checked.code == 1
    line, _fix = failed_line(checked, "Telegram bot token")
    assert "Telegram unreachable" in line
    assert "Bad Gateway for /bot***/getMe" in line
    assert_no_secrets(checked, WRONG_TOKEN, WRONG_TOKEN.split(":")[1], nusasms.api_key)


async def test_check_of_a_storage_path_under_a_file_exits_1_with_a_fix(
    tmp_path: Path, config_data: dict[str, Any], telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    (tmp_path / "state").write_text("a file where a folder should be")
    config_data["storage"]["path"] = str(tmp_path / "state" / "bridge.sqlite3")
    checked = await bridge_check(tmp_path, config_data)

    assert checked.code == 1
    line, fix = failed_line(checked, "storage")
    assert str(tmp_path / "state") in line
    assert "storage.path" in fix
    assert "✔ NusaSMS API key: accepted (user bridge-test)" in checked.lines
    assert checked.lines[-1] == "6 passed, 1 failed"


async def test_check_of_a_database_from_a_newer_bridge_exits_1(
    tmp_path: Path, config_data: dict[str, Any], telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    path = tmp_path / "bridge.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    checked = await bridge_check(tmp_path, config_data)

    assert checked.code == 1
    line, fix = failed_line(checked, "storage")
    assert "newer than this bridge knows" in line
    assert "upgrade the bridge" in fix
    assert path.stat().st_size > 0  # looked at, not changed
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS) + 1,)
    db.close()


async def test_check_of_an_existing_database_names_its_schema(
    tmp_path: Path, config_data: dict[str, Any], telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    path = tmp_path / "bridge.sqlite3"
    with sqlite3.connect(path) as db:
        for step in MIGRATIONS:
            db.executescript(step)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    db.close()
    checked = await bridge_check(tmp_path, config_data)

    assert checked.code == 0, checked.output
    expected = f"✔ storage: {path} (schema version {len(MIGRATIONS)} of {len(MIGRATIONS)})"
    assert expected in checked.lines


async def test_check_blames_a_malformed_secret_from_the_environment_on_its_variable(
    tmp_path: Path, config_data: dict[str, Any], telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    checked = await bridge_check(
        tmp_path, config_data, environ={"TELEGRAM_BOT_TOKEN": "pasted-without-its-colon"}
    )

    assert checked.code == 1
    assert checked.lines[0] == "✘ configuration"
    assert checked.lines[1].startswith("    environment variable TELEGRAM_BOT_TOKEN ")
    assert "check.yaml" not in checked.output
    assert checked.lines[-1] == "    fix: correct the environment variable TELEGRAM_BOT_TOKEN"
    assert_no_secrets(checked, "pasted-without-its-colon")


async def test_check_against_hanging_services_prints_each_line_as_decided_and_gives_up_in_time(
    tmp_path: Path, config_data: dict[str, Any]
) -> None:
    async with HangingServer() as hanging:
        config_data["nusasms"]["base_url"] = hanging.url
        config_data["telegram"]["api_base_url"] = f"{hanging.url}/bot"
        process = await start_check(tmp_path, config_data, "--timeout", "2")
        assert process.stdout is not None
        arrived: list[tuple[float, str]] = []
        async with asyncio.timeout(20):
            while line := await process.stdout.readline():
                arrived.append((time.monotonic(), line.decode().rstrip("\n")))
        code = await process.wait()

    assert code == 1
    lines = [text for _, text in arrived]
    assert lines[:2] == [
        "✔ configuration: valid",
        f"✔ storage: {tmp_path / 'bridge.sqlite3'} (a new database will be created)",
    ]
    assert "✘ NusaSMS API key: NusaSMS unreachable: no answer in 2 s" in lines
    assert "✘ Telegram bot token: Telegram unreachable: no answer in 2 s" in lines
    assert lines[-1] == "2 passed, 2 failed"
    # The first lines came out at once, not with the rest after the services gave up ...
    storage_at = arrived[1][0]
    nusasms_at = next(at for at, text in arrived if "NusaSMS API key" in text)
    assert nusasms_at - storage_at > 1.5
    # ... and both services were asked at once: the whole wait is one time limit, not two.
    assert arrived[-1][0] - storage_at < 3.5
