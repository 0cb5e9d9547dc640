"""The composition root: builds every part of the bridge and runs them as one service.

Only this module sees every part. Start-up order: database, first checks of both services
(rejected credentials stop here), HTTP server, workers. Shutdown runs the other way round
and finishes within 10 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import Application

from bridge import preflight
from bridge.config import Settings
from bridge.health import Health, ServiceState
from bridge.intake import Intake
from bridge.nusasms import NusaSMSClient, NusaSMSError
from bridge.pacing import GroupBudget
from bridge.relay import Relay
from bridge.server import build_app
from bridge.store import Store
from bridge.topics import Topics

log = logging.getLogger(__name__)

# A first check that takes longer than this lets the bridge start and retry in the background.
FIRST_CHECK_TIMEOUT_SECONDS = 15.0
RECHECK_MAX_SECONDS = 60.0
SHUTDOWN_GRACE_SECONDS = 4.0


class Bridge:
    """One running bridge: database, HTTP server, Telegram bot and workers."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._store: Store | None = None
        self._runner: web.AppRunner | None = None
        self._nusasms: NusaSMSClient | None = None
        self._telegram: Application | None = None  # type: ignore[type-arg]
        self._telegram_ready = False
        self._relay: Relay | None = None
        self._checks: list[asyncio.Task[None]] = []
        self.health: Health | None = None
        self.port: int | None = None

    @property
    def store(self) -> Store:
        """The open database."""
        if self._store is None:
            raise RuntimeError("bridge not started")
        return self._store

    async def start(self) -> None:
        """Bring everything up; raise `preflight.Rejected` if a service refuses us."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        tz = s.nusasms.tz
        self._store = store = await Store.open(s.storage.path, synchronous=s.storage.synchronous)
        self._nusasms = NusaSMSClient(
            s.nusasms.api_key.get_secret_value(),
            base_url=s.nusasms.base_url,
            request_timeout=s.nusasms.request_timeout_seconds,
        )
        self._telegram = (
            Application.builder()
            .token(s.telegram.bot_token.get_secret_value())
            .base_url(s.telegram.api_base_url)
            .base_file_url(s.telegram.api_file_url)
            .build()
        )
        bot = self._telegram.bot
        budget = GroupBudget(s.telegram.messages_per_minute)
        topics = Topics(
            bot,
            store,
            budget,
            chat_id=s.telegram.chat_id,
            tz=tz,
            window_hours=s.window.hours,
            clock=self._clock,
        )
        self._relay = relay = Relay(store, topics, tz=tz, clock=self._clock)
        intake = Intake(store, tz=tz, on_inbound=relay.wake, clock=self._clock)
        self.health = health = Health(store, workers_running=lambda: relay.running)
        health.last_callback_at = lambda: intake.last_callback_at

        await self._first_check("NusaSMS", health.nusasms, self._check_nusasms)
        await self._first_check("Telegram", health.telegram, self._check_telegram)

        self._runner = web.AppRunner(
            build_app(
                intake=intake,
                health=health,
                callback_secret=s.server.callback_secret.get_secret_value(),
            ),
            shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.server.host, s.server.port)
        await site.start()
        self.port = self._bound_port()
        relay.start()
        log.info("bridge listening on %s:%s", s.server.host, self.port)

    def _bound_port(self) -> int | None:
        assert self._runner is not None
        for address in self._runner.addresses:
            if isinstance(address, tuple):
                return int(address[1])
        return None

    async def _first_check(
        self, name: str, state: ServiceState, check: Callable[[], Awaitable[str]]
    ) -> None:
        """Check once now; if only unreachable, keep checking in the background."""
        try:
            async with asyncio.timeout(FIRST_CHECK_TIMEOUT_SECONDS):
                state.set("ok", await check())
        except preflight.Rejected as exc:
            state.set("rejected", str(exc))
            raise
        except (TimeoutError, TelegramError, NusaSMSError) as exc:
            state.set("unreachable", _describe(exc))
            log.warning("%s is unreachable for now; starting anyway and retrying", name)
        else:
            return
        task = asyncio.create_task(self._keep_checking(name, state, check), name=f"check-{name}")
        task.add_done_callback(_log_death)
        self._checks.append(task)

    async def _keep_checking(
        self, name: str, state: ServiceState, check: Callable[[], Awaitable[str]]
    ) -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            try:
                state.set("ok", await check())
            except preflight.Rejected as exc:
                state.set("rejected", str(exc))
                log.error("%s: %s", name, exc)
                return
            except (TimeoutError, TelegramError, NusaSMSError) as exc:
                state.set("unreachable", _describe(exc))
                delay = min(delay * 2, RECHECK_MAX_SECONDS)
            else:
                return

    async def _check_nusasms(self) -> str:
        assert self._nusasms is not None
        person = await preflight.check_nusasms(self._nusasms)
        return f"user {person.userid}"

    async def _check_telegram(self) -> str:
        assert self._telegram is not None
        assert self._relay is not None
        if not self._telegram_ready:
            try:
                await self._telegram.initialize()
            except InvalidToken as exc:
                raise preflight.token_rejected() from exc
        self._telegram_ready = True
        described = await preflight.check_telegram(
            self._telegram.bot, self.settings.telegram.chat_id
        )
        self._relay.enable()
        return described

    async def stop(self) -> None:
        """Stop accepting, let in-flight work finish, close everything."""
        for task in self._checks:
            task.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
        self._checks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._relay is not None:
            await self._relay.stop(grace=SHUTDOWN_GRACE_SECONDS)
            self._relay = None
        if self._telegram is not None:
            if self._telegram_ready:
                with contextlib.suppress(TelegramError, RuntimeError):
                    await self._telegram.shutdown()
            self._telegram = None
        if self._nusasms is not None:
            await self._nusasms.close()
            self._nusasms = None
        if self._store is not None:
            await self._store.close()
            self._store = None


async def run(settings: Settings) -> int:
    """Run the bridge until SIGTERM or SIGINT; the process exit code."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    bridge = Bridge(settings)
    try:
        await bridge.start()
    except preflight.Rejected as exc:
        log.error("cannot start: %s", exc)
        return 2
    log.info("bridge ready")
    await stopping.wait()
    log.info("shutting down")
    async with asyncio.timeout(9):
        await bridge.stop()
    log.info("stopped")
    return 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, NetworkError):
        return f"network: {exc.message}"
    return str(exc)


def _log_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s died", task.get_name(), exc_info=task.exception())
