"""The admin endpoints (`/healthz`, `/metrics`) kept off the internet, and an access log
that costs the callbacks little."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import Bridge, StartupError
from bridge.core.config import ConfigError, Settings, load_settings
from tests.conftest import (
    CALLBACK_SECRET,
    BridgeProcess,
    Callbacks,
    free_port,
    inbox_body,
    write_config,
)
from tests.test_maintenance import bridge_command
from tests.test_startup import error_lines, run_to_exit

ADMIN_TOKEN = "admin-token-0123456789abcdef"


def with_server(config_data: dict[str, Any], **server: Any) -> dict[str, Any]:
    return {**config_data, "server": {**config_data["server"], **server}}


def settings_of(
    tmp_path: Path, data: dict[str, Any], environ: dict[str, str] | None = None
) -> Settings:
    return load_settings(write_config(tmp_path, data, "admin.yaml"), environ=environ or {})


async def get(http: aiohttp.ClientSession, url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with http.get(url, headers=headers) as response:
        await response.read()
        return response.status


# --- where they are served ------------------------------------------------------------------


async def test_healthz_and_metrics_are_404_on_the_public_port_and_served_on_the_admin_port(
    bridge: Bridge, http: aiohttp.ClientSession
) -> None:
    public = f"http://127.0.0.1:{bridge.port}"
    admin = f"http://127.0.0.1:{bridge.admin_port}"
    assert bridge.admin_port not in (None, bridge.port)
    for path in ("/healthz", "/metrics"):
        assert await get(http, public + path) == 404
        assert await get(http, admin + path) == 200
    # The admin listener serves nothing else: no callbacks there.
    async with http.post(
        f"{admin}/callbacks/{CALLBACK_SECRET}/wa/inbox", json=inbox_body("ref-1")
    ) as response:
        assert response.status == 404
    assert (await Callbacks(public, http).inbox(inbox_body("ref-1"))).status == 200


async def test_with_admin_public_the_public_port_serves_them_only_with_the_bearer_token(
    make_bridge: Callable[..., Any],
    config_data: dict[str, Any],
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    data = with_server(config_data, admin="public", admin_token=ADMIN_TOKEN)
    bridge = await make_bridge(settings_of(tmp_path, data))
    assert bridge.admin_port is None
    public = f"http://127.0.0.1:{bridge.port}"
    for path in ("/healthz", "/metrics"):
        assert await get(http, public + path) == 401
        assert await get(http, public + path, "wrong-token-0123456789abcdef") == 401
        assert await get(http, public + path, ADMIN_TOKEN[:-1]) == 401
        assert await get(http, public + path, ADMIN_TOKEN) == 200
    async with http.get(f"{public}/healthz", headers={"Authorization": ADMIN_TOKEN}) as response:
        assert response.status == 401  # the scheme belongs to it
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await Callbacks(public, http).inbox(inbox_body("ref-1"))).status == 200


async def test_an_admin_listener_with_a_token_wants_it_too(
    make_bridge: Callable[..., Any],
    config_data: dict[str, Any],
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    bridge = await make_bridge(
        settings_of(tmp_path, with_server(config_data, admin_token=ADMIN_TOKEN))
    )
    admin = f"http://127.0.0.1:{bridge.admin_port}"
    assert await get(http, f"{admin}/healthz") == 401
    assert await get(http, f"{admin}/metrics", ADMIN_TOKEN) == 200
    assert await get(http, f"http://127.0.0.1:{bridge.port}/healthz", ADMIN_TOKEN) == 404


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("admin", "complaint"),
    [
        ("9090", "must be host:port"),
        ("localhost:", "must be host:port"),
        ("::1:9090", "needs brackets"),
        ("127.0.0.1:70000", "at most 65535"),
        ("127.0.0.1:8080", "is server.port"),
    ],
)
def test_a_bad_admin_address_is_refused_naming_the_key(
    config_data: dict[str, Any], tmp_path: Path, admin: str, complaint: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        settings_of(tmp_path, with_server(config_data, port=8080, admin=admin))
    assert "server.admin:" in str(refused.value)
    assert complaint in str(refused.value)


def test_admin_public_needs_a_token_which_may_come_from_the_environment(
    config_data: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"server\.admin_token: must be set"):
        settings_of(tmp_path, with_server(config_data, admin="public"))
    with pytest.raises(ConfigError, match="at least 16"):
        settings_of(tmp_path, with_server(config_data, admin="public", admin_token="short"))
    settings = settings_of(
        tmp_path, with_server(config_data, admin="public"), {"BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN}
    )
    assert settings.server.admin_listen is None
    assert settings.server.admin_token.get_secret_value() == ADMIN_TOKEN
    assert ADMIN_TOKEN in settings.secrets()  # redacted from every log line
    assert ADMIN_TOKEN not in repr(settings)


def test_the_default_admin_listener_is_the_loopback_9090(
    config_data: dict[str, Any], tmp_path: Path
) -> None:
    server = {k: v for k, v in config_data["server"].items() if k != "admin"}
    settings = settings_of(tmp_path, {**config_data, "server": server})
    assert settings.server.admin_listen == ("127.0.0.1", 9090)
    v6 = settings_of(tmp_path, with_server(config_data, admin="[::1]:9191"))
    assert v6.server.admin_listen == ("::1", 9191)


async def test_a_taken_admin_port_stops_start_up_naming_server_admin(
    config_data: dict[str, Any], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        bridge = Bridge(settings_of(tmp_path, with_server(config_data, admin=f"127.0.0.1:{port}")))
        with pytest.raises(StartupError) as refused:
            await bridge.start()
    message = str(refused.value)
    assert "\n" not in message
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in message
    assert message.endswith("change server.admin")


async def test_a_taken_admin_port_stops_the_process_with_one_line_and_exit_2(
    bridge_process: Callable[[], BridgeProcess],
) -> None:
    proc = bridge_process()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", proc.admin_port))
        taken.listen()
        code, log = await run_to_exit(proc)
    assert code == 2
    [line] = error_lines(log)
    assert f"127.0.0.1:{proc.admin_port}: the port is in use" in line
    assert "server.admin" in line
    assert "Traceback" not in log


# --- bridge health ---------------------------------------------------------------------------


async def test_health_on_the_public_port_sends_the_token_from_the_config(
    make_bridge: Callable[..., Any],
    config_data: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    data = with_server(config_data, port=port, admin="public", admin_token=ADMIN_TOKEN)
    await make_bridge(settings_of(tmp_path, data))
    right = write_config(tmp_path, data, "right.yaml")
    assert await bridge_command("health", "--config", str(right)) == 0
    wrong = write_config(
        tmp_path, with_server(data, admin_token="another-token-0123456789"), "wrong.yaml"
    )
    assert await bridge_command("health", "--config", str(wrong)) == 1
    err = capsys.readouterr().err
    assert "401" in err
    assert "server.admin_token" in err
    assert ADMIN_TOKEN not in err


# --- the access log --------------------------------------------------------------------------


class _BlockedSink(logging.Handler):
    """A log sink that takes nothing until released (a full pipe, a stuck journal)."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.released.wait()
        self.lines.append(record.getMessage())


@pytest.fixture
def blocked_sink() -> Iterator[_BlockedSink]:
    sink = _BlockedSink()
    access = logging.getLogger("aiohttp.access")
    access.addHandler(sink)
    # Released after 10 s whatever happens: on an event loop blocked by the sink, nothing
    # else in this test could release it.
    safety = threading.Timer(10.0, sink.released.set)
    safety.start()
    yield sink
    safety.cancel()
    sink.released.set()
    access.removeHandler(sink)


async def test_a_blocked_log_sink_does_not_hold_up_callbacks_and_the_line_comes_redacted(
    bridge: Bridge, blocked_sink: _BlockedSink, http: aiohttp.ClientSession
) -> None:
    callbacks = Callbacks.of(bridge, http)
    for n in range(5):
        async with asyncio.timeout(5):
            assert (await callbacks.inbox(inbox_body(f"ref-{n}"))).status == 200
    wrong = await callbacks.inbox(inbox_body("ref-x"), secret=CALLBACK_SECRET[:-1] + "X")
    assert wrong.status == 404
    assert not blocked_sink.released.is_set(), "the callbacks waited for the log sink"

    blocked_sink.released.set()
    await bridge.stop()  # writes what waits

    inbox_lines = [line for line in blocked_sink.lines if "/wa/inbox" in line]
    assert len(inbox_lines) == 6
    assert all('"POST /callbacks/***/wa/inbox HTTP/1.1"' in line for line in inbox_lines)
    assert sum('" 200 ' in line for line in inbox_lines) == 5
    assert sum('" 404 ' in line for line in inbox_lines) == 1
    assert not any(CALLBACK_SECRET[:-1] in line for line in blocked_sink.lines)
