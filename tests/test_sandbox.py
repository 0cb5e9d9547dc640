"""`bridge sandbox`: the NusaSMS emulator with customers' phones, and the bridge run against it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.app import Bridge
from bridge.cli import SANDBOX_API_KEY, free_port, load_for, main, sandbox_settings
from bridge.core.config import ConfigError, Settings
from bridge.sandbox.customers import SandboxNusaSMS, normalize_number, room_of
from tests.fakes.telegram import FakeTelegram

QUICK = (0.01, 0.01, 0.01)


class Receiver:
    """A stand-in for the bridge's callback routes (and a file server), recording posts."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        self.files: dict[str, tuple[bytes, str]] = {}
        self.port = 0

    async def _post(self, request: web.Request) -> web.Response:
        self.posts.append((request.match_info["kind"], await request.json()))
        return web.json_response({"ok": True})

    async def _file(self, request: web.Request) -> web.Response:
        found = self.files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        return web.Response(body=found[0], content_type=found[1])

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/cb/{kind}", self._post)
        app.router.add_get("/files/{name}", self._file)
        return app

    def statuses(self) -> list[str]:
        return [body["status"] for kind, body in self.posts if kind == "status"]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    runner = web.AppRunner(recv.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    recv.port = runner.addresses[0][1]
    yield recv
    await runner.cleanup()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make_sandbox(receiver: Receiver, clock: Clock) -> AsyncIterator[Callable[..., Any]]:
    started: list[SandboxNusaSMS] = []

    async def make(**kwargs: Any) -> SandboxNusaSMS:
        kwargs.setdefault("delays", QUICK)
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("callback_base", f"http://127.0.0.1:{receiver.port}/cb")
        emulator = SandboxNusaSMS(api_key=SANDBOX_API_KEY, **kwargs)
        await emulator.start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        await emulator.stop()


async def reply(
    http: aiohttp.ClientSession, emulator: SandboxNusaSMS, key: str = SANDBOX_API_KEY, **body: Any
) -> tuple[int, Any]:
    async with http.post(
        f"{emulator.base_url}/wa_official/message/reply", data=body, headers={"APIKey": key}
    ) as response:
        return response.status, await response.json()


def test_numbers_take_nusasmss_form_and_a_number_keeps_its_room() -> None:
    assert normalize_number("0812-3456 7890") == "6281234567890"
    assert normalize_number("+62 812 3456 7890") == "6281234567890"
    assert room_of("6281234567890") == room_of("6281234567890") != room_of("6281234567891")
    with pytest.raises(ValueError, match="not a phone number"):
        normalize_number("Sari")


async def test_a_customer_message_is_an_inbox_callback_as_the_reference_shows_it(
    make_sandbox: Callable[..., Any], receiver: Receiver
) -> None:
    emulator: SandboxNusaSMS = await make_sandbox()
    message = await emulator.customer_writes("081234567890", "Halo", name="Sari")
    assert message.status == "received"
    [(kind, body)] = receiver.posts
    assert kind == "inbox"
    assert body == {
        "room_id": room_of("6281234567890"),
        "ref_no": message.ref_no,
        "text": "Halo",
        # 1_800_000_000 is 2027-01-15 08:00:00 UTC: 15:00 in Jakarta
        "inbox_date": "2027-01-15 15:00:00",
        "sender_number": "6281234567890",
    }
    assert emulator.phones["6281234567890"].name == "Sari"


async def test_a_reply_goes_queued_sent_delivered_read_each_a_status_callback(
    make_sandbox: Callable[..., Any], receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    emulator: SandboxNusaSMS = await make_sandbox()
    await emulator.customer_writes("081234567890", "Halo")
    status, answer = await reply(http, emulator, room_id=room_of("6281234567890"), text="Baik")
    assert status == 201
    ref_no = answer["data"]["ref_no"]
    await emulator.wait_for(lambda: receiver.statuses() == ["queued", "sent", "delivered", "read"])
    assert all(b["ref_no"] == ref_no for k, b in receiver.posts if k == "status")
    [out] = [m for m in emulator.messages if m.direction == "out"]
    assert (out.text, out.history) == ("Baik", ["queued", "sent", "delivered", "read"])


async def test_without_auto_read_a_reply_stays_delivered_until_the_customer_reads(
    make_sandbox: Callable[..., Any], receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    emulator: SandboxNusaSMS = await make_sandbox(auto_read=False)
    await emulator.customer_writes("081234567890", "Halo")
    await reply(http, emulator, room_id=room_of("6281234567890"), text="Baik")
    await emulator.wait_for(lambda: receiver.statuses()[-1:] == ["delivered"])
    assert await emulator.mark_read("081234567890") == 1
    assert receiver.statuses() == ["queued", "sent", "delivered", "read"]
    # Writing again reads what came before, as answering on WhatsApp does.
    await reply(http, emulator, room_id=room_of("6281234567890"), text="Ada lagi?")
    await emulator.wait_for(lambda: receiver.statuses()[-1:] == ["delivered"])
    await emulator.customer_writes("081234567890", "Tidak, terima kasih")
    assert receiver.statuses()[-1] == "read"


async def test_an_unknown_room_an_expired_window_and_a_bad_key_get_the_apis_errors(
    make_sandbox: Callable[..., Any], clock: Clock, http: aiohttp.ClientSession
) -> None:
    emulator: SandboxNusaSMS = await make_sandbox(window_seconds=3600)
    room = room_of("6281234567890")

    status, body = await reply(http, emulator, room_id=room, text="Baik")
    assert status == 422
    assert body["detail"][0]["loc"] == ["body", "room_id"]
    assert "room not found" in body["detail"][0]["msg"]

    await emulator.customer_writes("081234567890", "Halo")
    assert (await reply(http, emulator, room_id=room, text="Baik"))[0] == 201
    assert (await reply(http, emulator, key="wrong", room_id=room, text="Baik"))[0] == 401

    clock.now += 3600
    status, body = await reply(http, emulator, room_id=room, text="Baik")
    assert status == 422
    assert "room is expired" in body["detail"][0]["msg"]

    await emulator.customer_writes("081234567890", "Halo lagi")
    assert (await reply(http, emulator, room_id=room, text="Baik"))[0] == 201
    emulator.expire_window("081234567890")
    status, body = await reply(http, emulator, room_id=room, text="Baik")
    assert (status, body["detail"][0]["type"]) == (422, "value_error.room_expired")
    assert len(emulator.replies) == 2


async def test_with_a_failure_rate_of_one_every_reply_ends_failed(
    make_sandbox: Callable[..., Any], receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    emulator: SandboxNusaSMS = await make_sandbox(failure_rate=1.0)
    await emulator.customer_writes("081234567890", "Halo")
    assert (await reply(http, emulator, room_id=room_of("6281234567890"), text="Baik"))[0] == 201
    await emulator.wait_for(lambda: receiver.statuses() == ["queued", "failed"])


async def test_a_replys_file_is_fetched_and_shown_and_one_that_cannot_be_fetched_fails(
    make_sandbox: Callable[..., Any], receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    emulator: SandboxNusaSMS = await make_sandbox()
    receiver.files["cat.png"] = (b"\x89PNG fake", "image/png")
    await emulator.customer_writes("081234567890", "Halo")
    room = room_of("6281234567890")
    files = f"http://127.0.0.1:{receiver.port}/files"
    await reply(http, emulator, room_id=room, type="image", file_url=f"{files}/cat.png", text="ini")
    await reply(http, emulator, room_id=room, type="document", file_url=f"{files}/gone.pdf")
    image, gone = (m for m in emulator.messages if m.direction == "out")
    await emulator.wait_for(lambda: image.status == "read" and gone.status == "failed")
    assert "could not fetch file_url" in (gone.error or "")
    url = f"http://127.0.0.1:{emulator.port}{image.public()['media_url']}"
    async with http.get(url) as response:
        assert (response.status, response.content_type) == (200, "image/png")
        assert await response.read() == b"\x89PNG fake"


async def test_a_template_broadcast_shows_on_the_phone_as_a_template(
    make_sandbox: Callable[..., Any], receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    emulator: SandboxNusaSMS = await make_sandbox()
    body = {
        "destination": "6281234567890",
        "destination_name": "Sari",
        "template_id": emulator.templates[0]["id"],
        "channel_id": emulator.channels[0]["id"],
        "parameters": {"body": [{"key": "1", "value": "name", "value_text": "Sari"}]},
    }
    async with http.post(
        f"{emulator.base_url}/wa_official/message/broadcast",
        json=body,
        headers={"APIKey": SANDBOX_API_KEY},
    ) as response:
        assert response.status == 201
    [message] = emulator.messages
    assert (message.template, message.text) == (
        "bridge_greeting",
        "Halo Sari, ada yang bisa kami bantu?",
    )
    assert emulator.phones["6281234567890"].name == "Sari"
    await emulator.wait_for(lambda: receiver.statuses()[-1:] == ["read"])


async def test_the_page_and_its_assets_are_served_locally_and_events_stream_live(
    make_sandbox: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    emulator: SandboxNusaSMS = await make_sandbox()
    base = f"http://127.0.0.1:{emulator.port}"
    async with http.get(base + "/") as response:
        page = await response.text()
    assert response.status == 200
    assert 'src="/static/app.js"' in page
    assert "http" not in page  # no CDN: every asset comes from here
    for asset in ("app.js", "style.css"):
        async with http.get(f"{base}/static/{asset}") as response:
            assert response.status == 200
            assert "http" not in await response.text()
    async with http.get(f"{base}/static/../customers.py") as response:
        assert response.status == 404

    async with http.get(base + "/sandbox/events") as stream:
        assert stream.content_type == "text/event-stream"
        async with http.post(
            base + "/sandbox/send", json={"number": "081234567890", "text": "Halo"}
        ) as response:
            assert response.status == 200
        events = []
        while not any(e["type"] == "message" and e["message"]["text"] == "Halo" for e in events):
            line = (await stream.content.readline()).decode()
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    assert events[0]["type"] == "phone"
    assert events[0]["phone"]["number"] == "6281234567890"

    async with http.post(base + "/sandbox/send", json={"number": "Sari", "text": "x"}) as response:
        assert response.status == 400
    async with http.post(base + "/sandbox/auto_read", json={"on": False}) as response:
        assert response.status == 200
    assert emulator.auto_read is False


async def test_the_sandbox_runs_the_bridge_apart_from_its_real_data(settings: Settings) -> None:
    sandboxed = sandbox_settings(settings, nusasms_url="http://127.0.0.1:9/x", port=4321)
    assert sandboxed.storage.path == settings.storage.path.with_name("bridge.sandbox.db")
    assert sandboxed.storage.media_path != settings.storage.media_path
    assert sandboxed.nusasms.base_url == "http://127.0.0.1:9/x"
    assert sandboxed.nusasms.api_key.get_secret_value() == SANDBOX_API_KEY
    assert (sandboxed.server.host, sandboxed.server.port) == ("127.0.0.1", 4321)
    assert sandboxed.server.public_url == "http://127.0.0.1:4321"
    assert sandboxed.telegram == settings.telegram
    assert sandboxed.server.callback_secret == settings.server.callback_secret


def test_bridge_sandbox_needs_no_nusasms_key(
    tmp_path: Path,
    config_data: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del config_data["nusasms"]
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config_data), encoding="utf-8")
    # A real key in the environment is not used either.
    monkeypatch.setenv("NUSASMS_API_KEY", "the-real-key")
    assert load_for("sandbox", path).nusasms.api_key.get_secret_value() == SANDBOX_API_KEY
    monkeypatch.delenv("NUSASMS_API_KEY")
    with pytest.raises(ConfigError, match="nusasms: missing"):
        load_for("run", path)
    assert main(["sandbox", "--config", str(path), "--failure-rate", "2"]) == 2
    assert "--failure-rate must be between 0 and 1" in capsys.readouterr().err


async def test_a_customer_and_an_operator_talk_through_the_bridge(
    make_sandbox: Callable[..., Any],
    settings: Settings,
    make_bridge: Callable[[Settings], Any],
    telegram: FakeTelegram,
) -> None:
    emulator: SandboxNusaSMS = await make_sandbox(callback_base=None)
    sandboxed = sandbox_settings(settings, nusasms_url=emulator.base_url, port=free_port())
    bridge: Bridge = await make_bridge(sandboxed)
    secret = sandboxed.server.callback_secret.get_secret_value()
    emulator.callback_base = f"http://127.0.0.1:{bridge.port}/callbacks/{secret}/wa"

    message = await emulator.customer_writes("081234567890", "Pesanan saya belum sampai")
    assert message.status == "received"
    await telegram.wait_for(
        lambda: any(m.text and "Pesanan saya belum sampai" in m.text for m in telegram.messages)
    )
    [topic] = [m.thread_id for m in telegram.messages if "Pesanan saya" in (m.text or "")]
    operator = telegram.operator_message(thread_id=topic, text="Baik, kami cek dulu")
    await emulator.wait_for(
        lambda: any(
            m.text == "Baik, kami cek dulu" and m.status == "read" for m in emulator.messages
        )
    )
    await telegram.wait_for(lambda: telegram.reactions.get(operator, [])[-1:] == ["👀"])


async def test_bridge_sandbox_runs_the_bridge_and_prints_the_page(
    tmp_path: Path,
    config_data: dict[str, Any],
    telegram: FakeTelegram,
    http: aiohttp.ClientSession,
) -> None:
    del config_data["nusasms"]
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config_data), encoding="utf-8")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "sandbox",
        "--config",
        str(path),
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(20):
            lines = [(await process.stdout.readline()).decode() for _ in range(2)]
        assert lines[0].strip() == f"sandbox database: {tmp_path / 'bridge.sandbox.db'}"
        assert lines[1].strip() == f"the customer's phone: http://127.0.0.1:{port}/"
        body = {"number": "081234567890", "name": "Sari", "text": "Halo dari sandbox"}
        async with asyncio.timeout(20):
            while True:  # the callback port opens just after the page's
                async with http.post(f"http://127.0.0.1:{port}/sandbox/send", json=body) as answer:
                    if (await answer.json())["status"] == "received":
                        break
                await asyncio.sleep(0.1)
        await telegram.wait_for(
            lambda: any("Halo dari sandbox" in (m.text or "") for m in telegram.messages),
            timeout=20,
        )
        assert not (tmp_path / "bridge.sqlite3").exists()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await process.wait() == 0
