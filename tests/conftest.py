"""Shared fixtures: fake Telegram and NusaSMS on 127.0.0.1, and the real bridge between them."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bridge.app import Bridge
from bridge.core.config import Settings, load_settings
from bridge.core.logs import redact_loggers
from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import DEFAULT_TOKEN, FakeTelegram

CALLBACK_SECRET = "test-callback-secret-0123456789"
ROOM = "0f8c3a52-fb79-4c3e-b19e-546f761dfebf"
NUMBER = "6281234567890"


SECRETS = (CALLBACK_SECRET, DEFAULT_TOKEN, "test-nusasms-key")


@pytest.fixture(autouse=True)
def no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test doubles as a check that no log line carries a secret."""
    caplog.set_level(logging.INFO)
    yield
    # caplog.records holds only the current phase (teardown): read every phase.
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    for record in records:
        text = record.getMessage() + (record.exc_text or "")
        leaked = [s for s in SECRETS if s in text]
        assert not leaked, f"secret in a log line of {record.name}: {text[:300]}"


@pytest.fixture
def redact_test_clients() -> Iterator[None]:
    """For tests that drive PTB themselves, outside the bridge: redact as the bridge does.

    Any Bot API client logs its request URLs, which hold the token; the bridge installs
    `redact_loggers` at start-up, and a test assembling parts by hand does the same.
    """
    undo = redact_loggers(SECRETS)
    yield
    undo()


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    """A fake Bot API with a forum supergroup in which the bot is a topic-managing admin."""
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def nusasms() -> AsyncIterator[FakeNusaSMS]:
    """A fake NusaSMS API."""
    async with FakeNusaSMS() as fake:
        yield fake


@pytest.fixture
def config_data(tmp_path: Path, telegram: FakeTelegram, nusasms: FakeNusaSMS) -> dict[str, Any]:
    """A complete configuration (as YAML data) pointing at the fakes."""
    return {
        "nusasms": {"api_key": nusasms.api_key, "base_url": nusasms.base_url},
        "telegram": {
            "bot_token": telegram.token,
            "chat_id": telegram.chat_id,
            "api_base_url": telegram.base_url,
            "api_file_url": telegram.base_file_url,
            # Tests are not about pacing unless they say so.
            "group_budget": {"messages": 100_000, "seconds": 60},
        },
        "server": {
            "host": "127.0.0.1",
            "port": 0,
            "public_url": "http://127.0.0.1:8080",
            "callback_secret": CALLBACK_SECRET,
            # A random port: the default 9090 would be shared by every test at once.
            "admin": "127.0.0.1:0",
        },
        "storage": {"path": str(tmp_path / "bridge.sqlite3")},
    }


def write_config(tmp_path: Path, data: dict[str, Any], name: str = "config.yaml") -> Path:
    """Write YAML config data to a file."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def settings(tmp_path: Path, config_data: dict[str, Any]) -> Settings:
    """Validated settings pointing at the fakes."""
    return load_settings(write_config(tmp_path, config_data), environ={})


@pytest.fixture
async def make_bridge() -> AsyncIterator[Callable[[Settings], Any]]:
    """Start bridges in this process; every one is stopped at the end of the test."""
    started: list[Bridge] = []

    async def make(settings: Settings, **kwargs: Any) -> Bridge:
        bridge = Bridge(settings, **kwargs)
        await bridge.start()
        started.append(bridge)
        return bridge

    yield make
    for bridge in started:
        await bridge.stop()


@pytest.fixture
async def bridge(make_bridge: Callable[[Settings], Any], settings: Settings) -> Bridge:
    """A running bridge wired to the fakes."""
    started: Bridge = await make_bridge(settings)
    return started


def inbox_body(
    ref_no: str,
    text: str = "Halo, pesanan saya belum sampai",
    *,
    room_id: str = ROOM,
    sender_number: str = NUMBER,
    inbox_date: str | None = None,
) -> dict[str, Any]:
    """An inbox callback body as NusaSMS sends it (inbox_date defaults to now in Jakarta)."""
    if inbox_date is None:
        jakarta = time.gmtime(time.time() + 7 * 3600)
        inbox_date = time.strftime("%Y-%m-%d %H:%M:%S", jakarta)
    return {
        "room_id": room_id,
        "ref_no": ref_no,
        "text": text,
        "inbox_date": inbox_date,
        "sender_number": sender_number,
    }


@dataclass
class Callbacks:
    """Posts callbacks to a bridge's HTTP server, as NusaSMS would."""

    base: str
    session: aiohttp.ClientSession
    secret: str = CALLBACK_SECRET
    acknowledged: list[str] = field(default_factory=list)
    # Where /healthz is served (the admin listener); the public base if empty.
    admin: str = ""

    @classmethod
    def of(cls, bridge: Bridge, session: aiohttp.ClientSession) -> Callbacks:
        """Callbacks to a bridge running in this process, /healthz on its admin port."""
        admin = f"http://127.0.0.1:{bridge.admin_port}" if bridge.admin_port else ""
        return cls(f"http://127.0.0.1:{bridge.port}", session, admin=admin)

    async def inbox(self, body: Any, *, secret: str | None = None) -> aiohttp.ClientResponse:
        """POST an inbox callback (a dict is sent as JSON, bytes as they are)."""
        return await self._post("inbox", body, secret)

    async def status(self, body: Any, *, secret: str | None = None) -> aiohttp.ClientResponse:
        """POST a status callback."""
        return await self._post("status", body, secret)

    async def _post(self, kind: str, body: Any, secret: str | None) -> aiohttp.ClientResponse:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        url = f"{self.base}/callbacks/{secret or self.secret}/wa/{kind}"
        async with self.session.post(
            url, data=data, headers={"Content-Type": "application/json"}
        ) as response:
            await response.read()
            if response.status == 200 and isinstance(body, dict) and "ref_no" in body:
                self.acknowledged.append(body["ref_no"])
            return response

    async def healthz(self) -> tuple[int, dict[str, Any]]:
        """GET /healthz."""
        async with self.session.get(f"{self.admin or self.base}/healthz") as response:
            return response.status, await response.json()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client session."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def callbacks(bridge: Bridge, http: aiohttp.ClientSession) -> Callbacks:
    """A NusaSMS stand-in that calls the running bridge back."""
    return Callbacks.of(bridge, http)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class BridgeProcess:
    """The bridge as a real process (`python -m bridge run`), for kill -9 and signals."""

    config: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    admin_port: int = 0

    def start(self) -> None:
        """Start the process (its output goes to the log file)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    async def wait_ready(self, session: aiohttp.ClientSession, within: float = 20.0) -> None:
        """Wait until /healthz answers 200."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"bridge exited early:\n{self.log.read_text()}")
            with suppress(aiohttp.ClientError):
                async with session.get(self.healthz_url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
        raise AssertionError(f"bridge not ready in {within}s:\n{self.log.read_text()}")

    @property
    def healthz_url(self) -> str:
        """/healthz on the admin listener."""
        return f"http://127.0.0.1:{self.admin_port}/healthz"

    def callbacks(self, session: aiohttp.ClientSession) -> Callbacks:
        """Callbacks to this process, /healthz on its admin port."""
        return Callbacks(
            f"http://127.0.0.1:{self.port}", session, admin=f"http://127.0.0.1:{self.admin_port}"
        )

    def kill(self) -> None:
        """kill -9."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """Make sure it is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def bridge_process(
    tmp_path: Path, config_data: dict[str, Any]
) -> Iterator[Callable[[], BridgeProcess]]:
    """Make bridge processes on a fixed free port; all are killed at the end."""
    made: list[BridgeProcess] = []
    port, admin_port = free_port(), free_port()

    def make() -> BridgeProcess:
        server = {**config_data["server"], "port": port, "admin": f"127.0.0.1:{admin_port}"}
        data = {**config_data, "server": server}
        proc = BridgeProcess(
            write_config(tmp_path, data, "process.yaml"),
            port,
            tmp_path / "bridge.log",
            admin_port=admin_port,
        )
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop()
