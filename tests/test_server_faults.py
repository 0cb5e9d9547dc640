"""The HTTP server under clients that misbehave: half-sent requests, stalled bodies, idle
keep-alive, malformed requests by the thousand, and callbacks that try to forge log lines.

Most tests run the real server (routes, intake, a real database) in this process with short
limits, and talk to it through raw sockets on 127.0.0.1; one runs `bridge run` as a process
with few file descriptors, as the attack that found these faults did.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.app import Bridge
from bridge.channels.intake import Intake
from bridge.channels.media import MediaLibrary
from bridge.core.config import Settings
from bridge.core.logs import JSONFormatter, LineFormatter, redact_loggers, setup_logging
from bridge.core.store import Store
from bridge.ops.health import Health
from bridge.web.server import BoundedSite, ServerLimits, build_app, make_runner, run_site
from tests.conftest import CALLBACK_SECRET, Callbacks, free_port, inbox_body, write_config
from tests.fakes.telegram import FakeTelegram


@dataclass
class Served:
    """The bridge's HTTP server running in this process."""

    base: str
    port: int
    store: Store
    site: BoundedSite
    runner: web.AppRunner
    media: MediaLibrary


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start the bridge's HTTP server with the given limits (stopped after the test)."""
    started: list[tuple[web.AppRunner, Store]] = []

    async def start(**limits: Any) -> Served:
        store = await Store.open(tmp_path / f"s{len(started)}.sqlite3")
        intake = Intake(store, tz=UTC, on_inbound=lambda: None)
        health = Health(store, workers_running=lambda: True)
        media = MediaLibrary(
            store, tmp_path / "media", public_url="http://127.0.0.1", ttl_seconds=600
        )
        app = build_app(
            intake=intake,
            health=health,
            callback_secret=CALLBACK_SECRET,
            media=media,
            limits=ServerLimits(**limits),
        )
        runner = make_runner(app, access_log=None, shutdown_timeout=1.0)
        started.append((runner, store))
        await runner.setup()
        site = await run_site(runner, "127.0.0.1", 0)
        return Served(f"http://127.0.0.1:{site.port}", site.port, store, site, runner, media)

    yield start
    for runner, store in started:
        await runner.cleanup()
        await store.close()


HALF_A_REQUEST_LINE = b"POST /callbacks/"


async def open_raw(port: int, data: bytes = b"") -> tuple[asyncio.StreamReader, Any]:
    """A raw connection that has sent `data`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if data:
        writer.write(data)
        await writer.drain()
    return reader, writer


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection, which it must in time."""
    received = b""
    async with asyncio.timeout(seconds):
        while chunk := await reader.read(65536):
            received += chunk
    return received


def callback_head(length: int) -> bytes:
    """The head of an inbox callback whose body is `length` bytes long."""
    return (
        f"POST /callbacks/{CALLBACK_SECRET}/wa/inbox HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


# --- connections ----------------------------------------------------------------------------


async def test_many_half_sent_request_lines_do_not_keep_a_callback_out(
    serve: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    # The head timeout is far away: only the cap and its eviction of idle connections help.
    served = await serve(max_connections=40, head_timeout=60.0)
    attackers = [await open_raw(served.port, HALF_A_REQUEST_LINE) for _ in range(150)]
    try:
        started = time.monotonic()
        async with asyncio.timeout(5):
            response = await Callbacks(served.base, http).inbox(inbox_body("ref-1"))
        assert response.status == 200
        assert time.monotonic() - started < 5
        assert served.runner.server is not None
        assert len(served.runner.server.connections) <= 40 + 5  # a few closes in flight
        assert served.site.evicted >= 100
    finally:
        for _, writer in attackers:
            writer.close()


async def test_a_request_head_that_never_completes_is_closed_after_the_head_timeout(
    serve: Callable[..., Any],
) -> None:
    served = await serve(head_timeout=0.5)
    reader, writer = await open_raw(served.port, HALF_A_REQUEST_LINE)
    started = time.monotonic()
    assert await closed_within(reader, 5) == b""
    assert time.monotonic() - started >= 0.3
    writer.close()


async def test_idle_keep_alive_is_closed_after_the_head_timeout(
    serve: Callable[..., Any],
) -> None:
    served = await serve(head_timeout=0.5)
    reader, writer = await open_raw(served.port, b"GET /media/none HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 ")
    assert b"keep-alive" in head.lower() or b"connection: close" not in head.lower()
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    await reader.readexactly(length)
    idle_since = time.monotonic()
    assert await closed_within(reader, 5) == b""
    assert time.monotonic() - idle_since >= 0.3
    writer.close()


async def test_a_stalled_body_is_cut_after_the_body_timeout(serve: Callable[..., Any]) -> None:
    served = await serve(body_timeout=0.5, lingering=0.2)
    reader, writer = await open_raw(served.port, callback_head(500) + b'{"room_id": "r')
    started = time.monotonic()
    answer = await closed_within(reader, 5)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started >= 0.4
    writer.close()
    assert await served.store.queue_stats() is not None  # the server still serves its database


async def test_a_bridge_with_few_file_descriptors_still_takes_callbacks_under_a_socket_flood(
    tmp_path: Path, config_data: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    """The attack that found it: many half-open connections, a low descriptor limit."""
    port, admin_port = free_port(), free_port()
    server = {**config_data["server"], "port": port, "admin": f"127.0.0.1:{admin_port}"}
    config = write_config(tmp_path, {**config_data, "server": server}, "p.yaml")
    log = tmp_path / "flood.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for in a thread
            [sys.executable, "-m", "bridge", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=few_descriptors,
        )
    attackers: list[Any] = []
    try:
        base = f"http://127.0.0.1:{port}"
        admin = f"http://127.0.0.1:{admin_port}"
        deadline = time.monotonic() + 20
        while True:
            with suppress(aiohttp.ClientError):
                status, _ = await Callbacks(base, http, admin=admin).healthz()
                if status == 200:
                    break
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.05)
        for _ in range(400):
            # A server that stopped accepting leaves connects hanging in the kernel's queue.
            with suppress(OSError, TimeoutError):
                async with asyncio.timeout(1):
                    attackers.append(await open_raw(port, HALF_A_REQUEST_LINE))
        assert len(attackers) >= 300
        size_before = log.stat().st_size

        async with asyncio.timeout(10):
            response = await Callbacks(base, http).inbox(inbox_body("ref-flood"))
        assert response.status == 200
        status, _ = await Callbacks(base, http, admin=admin).healthz()
        assert status == 200
        # Evictions are said once, not per socket; no traceback at all.
        grown = log.read_text(encoding="utf-8", errors="replace")[size_before:]
        assert "Traceback" not in grown
        assert log.stat().st_size - size_before < 4000
    finally:
        for _, writer in attackers:
            writer.close()
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 15)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


# --- what the logs take from clients -----------------------------------------------------------


@pytest.fixture
def quiet_server() -> Iterator[None]:
    """The log filters the bridge installs at start, undone after the test."""
    undo = redact_loggers([CALLBACK_SECRET])
    yield
    undo()


async def test_malformed_requests_write_a_bounded_log(
    serve: Callable[..., Any], quiet_server: None, caplog: pytest.LogCaptureFixture
) -> None:
    served = await serve()
    long_headers = b"GET / HTTP/1.1\r\n" + b"".join(
        b"X-%d: %s\r\n" % (i, b"v" * 6000) for i in range(20)
    )
    bad_url = b"GET /" + b"A" * 3000 + b"\x01 HTTP/1.1\r\n\r\n"
    for n in range(60):
        reader, writer = await open_raw(served.port, long_headers if n % 2 else bad_url)
        answer = await closed_within(reader, 5)
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
        writer.close()

    server_lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(server_lines) == 1  # said once; the rest counted
    [line] = server_lines
    assert line.exc_info is None
    assert line.exc_text is None
    assert len(line.getMessage()) <= 500
    assert sum(len(r.getMessage()) + len(r.exc_text or "") for r in caplog.records) < 4000


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    """A log record as a logger would make it."""
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(
        "bridge.group.relay", logging.INFO, __file__, 1, message, args, exc_info
    )


def caught(exc: Exception) -> Exception:
    """`exc` as raised, with its traceback."""

    def throw() -> None:
        raise exc

    try:
        throw()
    except Exception as raised:
        return raised
    raise AssertionError("not raised")


FORGED = "2026-12-03 10:00:00,000 INFO bridge.group.relay: posted everything, all is fine"


def test_plain_log_lines_escape_control_characters_and_indent_tracebacks() -> None:
    formatter = LineFormatter()
    error = caught(ValueError(f"bad\n{FORGED}"))
    line = formatter.format(record("room %s has a new topic", f"r\n{FORGED}\r\x1b[2J\u2028"))
    assert len(line.splitlines()) == 1
    assert "r\\n2026-12-03 10:00:00,000 INFO" in line
    assert "\\r\\x1b[2J\\u2028" in line

    with_trace = formatter.format(record("posting failed", exc=error)).split("\n")
    assert with_trace[1] == "  | Traceback (most recent call last):"
    assert all(part.startswith("  | ") for part in with_trace[1:])
    assert not any(part.startswith(FORGED) for part in with_trace)


def test_json_log_lines_stay_one_line_whatever_the_message_holds() -> None:
    line = JSONFormatter().format(record("room %s", f"r\n{FORGED}\u2028\x85\x1b"))
    assert len(line.splitlines()) == 1
    assert json.loads(line)["message"] == f"room r\n{FORGED}\u2028\x85\x1b"


def test_a_huge_message_is_cut() -> None:
    line = LineFormatter().format(record("callback: %s", "x" * 200_000))
    assert len(line) < 3000
    assert "more characters" in line


@pytest.fixture
def stderr_logging() -> Iterator[Callable[[], None]]:
    """`setup_logging` as `bridge run` calls it, to be called in the test; undone after it."""
    root = logging.getLogger()
    level, before = root.level, list(root.handlers)

    def setup() -> None:
        setup_logging(level="INFO")
        for handler in before:
            root.addHandler(handler)

    yield setup
    for handler in list(root.handlers):
        if handler not in before:
            root.removeHandler(handler)
    root.setLevel(level)


async def test_a_room_id_with_a_newline_cannot_forge_a_log_line(
    stderr_logging: Callable[[], None],
    settings: Settings,
    make_bridge: Any,
    http: aiohttp.ClientSession,
    telegram: FakeTelegram,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stderr_logging()
    bridge: Bridge = await make_bridge(settings)
    callbacks = Callbacks.of(bridge, http)
    body = inbox_body("ref-forge", "halo", room_id=f"room-1\n{FORGED}")
    assert (await callbacks.inbox(body)).status == 200
    await telegram.wait_for(lambda: any(m.plain_text == "halo" for m in telegram.messages))

    err = capsys.readouterr().err
    assert "Logging error" not in err
    assert "room-1\\n2026-12-03 10:00:00,000 INFO bridge.group.relay" in err  # logged, escaped
    assert not [line for line in err.splitlines() if line.startswith(FORGED)]


# --- media ---------------------------------------------------------------------------------------


async def test_media_is_served_as_a_download_that_cannot_run(
    serve: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    served = await serve()
    page = b"<html><script>alert(document.cookie)</script></html>"
    url = await served.media.publish(page, content_type="text/html", filename="price list.html")
    token = url.rsplit("/", 1)[1]
    async with http.get(f"{served.base}/media/{token}") as response:
        assert response.status == 200
        assert await response.read() == page
        headers = response.headers
    assert headers["Content-Disposition"] == "attachment; filename*=UTF-8''price%20list.html"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "sandbox" in headers["Content-Security-Policy"]
