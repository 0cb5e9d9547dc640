"""`bridge backup` and `bridge health`: what an operator (or Docker) runs beside a bridge."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.cli import main
from bridge.core.config import load_settings
from bridge.core.store import MIGRATIONS
from bridge.ops.maintenance import backup, probe_health
from tests.conftest import Callbacks, free_port, inbox_body, write_config


async def bridge_command(*argv: str) -> int:
    """Run the `bridge` command line in a thread, as a separate process would, beside the loop."""
    return await asyncio.to_thread(main, list(argv))


def with_port(config_data: dict[str, Any], port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    """The admin listener (where `bridge health` asks) on host:port."""
    return {**config_data, "server": {**config_data["server"], "admin": f"{host}:{port}"}}


# --- backup ---------------------------------------------------------------------------------


async def test_a_backup_taken_while_the_bridge_writes_is_a_valid_database_with_the_rows(
    make_bridge: Callable[..., Any],
    config_data: dict[str, Any],
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    config = write_config(tmp_path, config_data)
    bridge = await make_bridge(load_settings(config, environ={}))
    callbacks = Callbacks.of(bridge, http)
    for i in range(200):
        assert (await callbacks.inbox(inbox_body(f"before-{i}", "x" * 500))).status == 200
    before = set(callbacks.acknowledged)
    refused: list[int] = []
    writing = True

    async def keep_writing(worker: int) -> None:
        i = 0
        while writing:
            response = await callbacks.inbox(inbox_body(f"during-{worker}-{i}"))
            if response.status != 200:
                refused.append(response.status)
            i += 1

    writers = [asyncio.create_task(keep_writing(w)) for w in range(4)]
    try:
        await asyncio.sleep(0)  # the writers are sending before the first backup starts
        copies = [tmp_path / f"copy-{n}.sqlite3" for n in range(3)]
        for copy in copies:
            assert await bridge_command("backup", "--config", str(config), str(copy)) == 0
    finally:
        writing = False
        await asyncio.gather(*writers)

    assert not refused, "callbacks were refused while the backup ran"
    for copy in copies:
        with sqlite3.connect(copy) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
            # One self-contained file: no -wal needed beside it.
            assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
            stored = {r for (r,) in db.execute("SELECT ref_no FROM inbound")}
        assert before <= stored
        assert all(r.startswith(("before-", "during-")) for r in stored)
        assert not copy.with_name(copy.name + ".part").exists()
        assert copy.stat().st_mode & 0o777 == 0o600  # customers' messages: owner only
    # The bridge wrote on while and after the copies were taken.
    assert len(callbacks.acknowledged) > len(before)


async def test_backup_into_a_folder_writes_a_time_stamped_file(
    make_bridge: Callable[..., Any],
    config_data: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, config_data)
    await make_bridge(load_settings(config, environ={}))
    folder = tmp_path / "backups"  # not there yet: the trailing slash says it is a folder

    assert await bridge_command("backup", "--config", str(config), f"{folder}/") == 0

    (written,) = folder.iterdir()
    assert written.name.startswith("bridge-")
    assert written.suffix == ".sqlite3"
    assert str(written) in capsys.readouterr().out


async def test_backup_of_a_stopped_bridge_works_too(
    make_bridge: Callable[..., Any], settings: Any, tmp_path: Path
) -> None:
    bridge = await make_bridge(settings)
    await bridge.stop()

    result = await asyncio.to_thread(backup, settings.storage.path, tmp_path / "cold.sqlite3")

    assert result.schema_version == len(MIGRATIONS)


async def test_backup_without_a_database_fails_and_writes_nothing(
    config_data: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, config_data)
    target = tmp_path / "copy.sqlite3"

    assert await bridge_command("backup", "--config", str(config), str(target)) == 1

    assert "no database at" in capsys.readouterr().err
    assert not target.exists()
    assert not await asyncio.to_thread(Path(config_data["storage"]["path"]).exists)


# --- health ---------------------------------------------------------------------------------


async def test_health_is_0_against_a_healthy_bridge_on_the_configured_port(
    make_bridge: Callable[..., Any],
    config_data: dict[str, Any],
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    port = free_port()  # not the image's 8080: the probe must follow the configuration
    config = write_config(tmp_path, with_port(config_data, port))
    bridge = await make_bridge(load_settings(config, environ={}))
    assert bridge.admin_port == port
    assert (await Callbacks(f"http://127.0.0.1:{port}", http).healthz())[0] == 200

    assert await bridge_command("health", "--config", str(config)) == 0


@pytest.fixture
async def unhealthy_server() -> AsyncIterator[int]:
    """Something on a port that answers /healthz like an unhealthy bridge: 503 with problems."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "degraded", "problems": ["queue stuck"]}, status=503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def test_health_is_1_against_a_503(
    unhealthy_server: int,
    config_data: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, with_port(config_data, unhealthy_server))

    assert await bridge_command("health", "--config", str(config)) == 1

    err = capsys.readouterr().err
    assert "503" in err
    assert "queue stuck" in err


async def test_health_probes_a_wildcard_listener_through_the_loopback(
    unhealthy_server: int,
) -> None:
    problem = await asyncio.to_thread(probe_health, "0.0.0.0", unhealthy_server)  # noqa: S104

    assert problem is not None
    assert f"127.0.0.1:{unhealthy_server}/healthz answered 503" in problem


async def test_health_is_1_when_nothing_listens(
    config_data: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, with_port(config_data, free_port()))

    assert await bridge_command("health", "--config", str(config), "--timeout", "1") == 1

    assert "not reachable" in capsys.readouterr().err


async def test_health_is_1_for_a_random_port_or_a_broken_config(
    config_data: dict[str, Any], tmp_path: Path
) -> None:
    # Docker reserves exit code 2 for health checks: every failure is 1.
    random_port = write_config(tmp_path, with_port(config_data, 0), "random.yaml")
    assert await bridge_command("health", "--config", str(random_port)) == 1
    broken = tmp_path / "broken.yaml"
    broken.write_text("server: [", encoding="utf-8")
    assert await bridge_command("health", "--config", str(broken)) == 1
