"""The sandbox's page in a real headless browser: Debian's Chromium driven by Playwright.

No browser is ever downloaded: the test uses /usr/bin/chromium (``apt-get install chromium``;
`.ci/run` installs it when missing) and skips, saying why, when it or Playwright is absent.
``SANDBOX_SCREENSHOT=docs/sandbox.png pytest tests/test_sandbox_page.py`` also saves the
README's screenshot.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.app import Bridge
from bridge.cli import SANDBOX_API_KEY, free_port, sandbox_settings
from bridge.core.config import Settings
from bridge.sandbox.customers import SandboxNusaSMS
from tests.fakes.telegram import FakeTelegram

CHROMIUM = Path(os.environ.get("SANDBOX_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

async_api = pytest.importorskip(
    "playwright.async_api", reason="Playwright is not installed (pip install -e '.[test]')"
)
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"no browser at {CHROMIUM}: apt-get install -y chromium (as .ci/run does)",
)


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = await browser.new_context(viewport={"width": 480, "height": 760})
            yield await context.new_page()
        finally:
            await browser.close()


async def test_the_customer_and_an_operator_talk_on_the_page(
    page: Any, settings: Settings, make_bridge: Any, telegram: FakeTelegram
) -> None:
    # Short steps, so ticks change while the test watches; the page is what is under test.
    async with SandboxNusaSMS(api_key=SANDBOX_API_KEY, delays=(0.2, 0.3, 0.3)) as emulator:
        sandboxed = sandbox_settings(settings, nusasms_url=emulator.base_url, port=free_port())
        bridge: Bridge = await make_bridge(sandboxed)
        secret = sandboxed.server.callback_secret.get_secret_value()
        emulator.callback_base = f"http://127.0.0.1:{bridge.port}/callbacks/{secret}/wa"

        await page.goto(emulator.page_url)
        await page.locator("#link", has_text="live").wait_for()
        await page.fill("#number", "0812 3456 7890")
        await page.fill("#name", "Sari")
        await page.click("#open")
        await page.fill("#text", "Halo, pesanan saya belum sampai")
        await page.click("#send")

        # The message reaches the customer's topic in Telegram.
        await telegram.wait_for(
            lambda: any("pesanan saya belum sampai" in (m.text or "") for m in telegram.messages)
        )
        [topic] = {m.thread_id for m in telegram.messages if "pesanan saya" in (m.text or "")}
        mine = page.locator(".msg.in", has_text="pesanan saya belum sampai")
        assert await mine.get_attribute("data-status") == "received"

        # The operator's reply appears on the phone, its ticks ending read.
        operator = telegram.operator_message(thread_id=topic, text="Baik Kak Sari, kami cek dulu")
        reply = page.locator(".msg.out", has_text="Baik Kak Sari, kami cek dulu")
        await reply.wait_for(timeout=10_000)
        await page.locator(".msg.out[data-status='read'] .tick.read").wait_for(timeout=10_000)
        [out] = [m for m in emulator.messages if m.direction == "out"]
        assert out.history == ["queued", "sent", "delivered", "read"]
        await telegram.wait_for(lambda: telegram.reactions.get(operator, [])[-1:] == ["👀"])

        # The switch off, a reply stays delivered until "Mark read"; then the window expires.
        await page.uncheck("#auto-read")
        await emulator.wait_for(lambda: not emulator.auto_read)
        telegram.operator_message(thread_id=topic, text="Sudah kami kirim ulang")
        second = page.locator(".msg.out[data-status='delivered']", has_text="kirim ulang")
        await second.wait_for(timeout=10_000)
        await page.click("#mark-read")
        await page.locator(".msg.out[data-status='read']", has_text="kirim ulang").wait_for()
        await page.click("#expire")
        await page.locator("#window.closed").wait_for()
        assert emulator.phones["6281234567890"].expired

        shot = os.environ.get("SANDBOX_SCREENSHOT")
        if shot:
            await page.screenshot(path=shot)
