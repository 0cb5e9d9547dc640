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
from telegram import BotCommandScopeChat, Update
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import Application, CallbackQueryHandler, ContextTypes, MessageHandler, filters

from bridge import preflight
from bridge.alerts import Alerts
from bridge.commands import Commands, bot_commands
from bridge.config import Settings
from bridge.feedback import RETRY_PREFIX, Feedback
from bridge.health import Health, ServiceState
from bridge.intake import Intake
from bridge.logs import redact_loggers
from bridge.media import MediaLibrary
from bridge.metrics import Metrics
from bridge.nusasms import Credit, NusaSMSClient, NusaSMSError
from bridge.outbox import Outbox
from bridge.pacing import GroupBudget
from bridge.relay import Relay
from bridge.reminders import WindowReminders
from bridge.replies import Replies, fetch_file
from bridge.server import build_app, make_runner, run_site
from bridge.store import Store
from bridge.topics import Topics
from bridge.upkeep import Checkpoints
from bridge.workers import Worker

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
        self._outbox: Outbox | None = None
        self._feedback: Feedback | None = None
        self._replies: Replies | None = None
        self._commands: Commands | None = None
        self._workers: list[Worker] = []
        self._unredact: Callable[[], None] = _nothing
        self._polling = False
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
        self._unredact = redact_loggers(s.secrets())
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
        budget = GroupBudget(s.telegram.group_budget.messages, s.telegram.group_budget.seconds)
        topics = Topics(
            bot,
            store,
            budget,
            chat_id=s.telegram.chat_id,
            tz=tz,
            window_hours=s.window.hours,
            clock=self._clock,
        )
        window_seconds = s.window.hours * 3600
        self.metrics = metrics = Metrics()
        self._relay = relay = Relay(store, topics, tz=tz, clock=self._clock, metrics=metrics)
        self._feedback = feedback = Feedback(store, topics, chat_id=s.telegram.chat_id)
        media = None
        if s.nusasms.media_mode == "url":
            media = MediaLibrary(
                store,
                s.storage.media_path,
                public_url=s.server.public_url,
                ttl_seconds=s.nusasms.media_ttl_hours * 3600,
                clock=self._clock,
            )
        self._outbox = outbox = Outbox(
            store,
            self._nusasms,
            fetch_file=lambda file_id: fetch_file(bot, file_id),
            media=media,
            window_seconds=window_seconds,
            tz=tz,
            on_changed=feedback.wake,
            clock=self._clock,
            metrics=metrics,
        )
        self._replies = Replies(
            store,
            topics,
            chat_id=s.telegram.chat_id,
            operator_ids=s.telegram.operator_ids,
            note_prefix=s.telegram.note_prefix,
            window_seconds=window_seconds,
            tz=tz,
            on_queued=outbox.wake,
            clock=self._clock,
        )
        intake = Intake(
            store, tz=tz, on_inbound=relay.wake, on_status=outbox.wake, clock=self._clock
        )
        self.health = health = Health(
            store,
            workers_running=lambda: all(w.running for w in self._workers),
            stuck_after=s.alerts.stuck_after_minutes * 60,
            secrets=s.secrets(),
            clock=self._clock,
        )
        health.last_callback_at = lambda: intake.last_callback_at
        self.alerts = alerts = Alerts(
            store,
            topics,
            self._nusasms,
            health,
            settings=s.alerts,
            tz=tz,
            clock=self._clock,
            metrics=metrics,
        )

        def record_balance(credit: Credit) -> None:
            for field, value in credit.numeric_fields().items():
                metrics.balance.labels(field).set(value)

        alerts.on_balance = record_balance
        intake.on_failure = alerts.wake
        topics.on_migrated = alerts.group_moved
        self._commands = Commands(
            store,
            topics,
            alerts,
            health,
            chat_id=s.telegram.chat_id,
            operator_ids=s.telegram.operator_ids,
            note_prefix=s.telegram.note_prefix,
            window_seconds=window_seconds,
            tz=tz,
            last_errors=lambda: [e for e in (relay.last_error, outbox.last_error) if e],
            clock=self._clock,
        )
        reminders = WindowReminders(
            store,
            topics,
            window_seconds=window_seconds,
            warn_seconds=s.window.warn_minutes * 60,
            tz=tz,
            clock=self._clock,
        )
        self._workers = [relay, outbox, feedback, alerts, reminders, Checkpoints(store)]
        self._add_handlers(self._telegram)

        await self._first_check("NusaSMS", health.nusasms, self._check_nusasms)
        await self._first_check("Telegram", health.telegram, self._check_telegram)

        self._runner = make_runner(
            build_app(
                intake=intake,
                health=health,
                callback_secret=s.server.callback_secret.get_secret_value(),
                media=media,
                metrics=metrics,
            ),
            shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
            access_log=logging.getLogger("aiohttp.access") if s.logging.access_log else None,
        )
        await self._runner.setup()
        await run_site(self._runner, s.server.host, s.server.port)
        self.port = self._bound_port()
        for worker in self._workers:
            worker.start()
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
        if not self._polling:
            await self._telegram.bot.set_my_commands(
                bot_commands(), scope=BotCommandScopeChat(self.settings.telegram.chat_id)
            )
            await self._telegram.start()
            assert self._telegram.updater is not None
            await self._telegram.updater.start_polling(
                allowed_updates=["message", "edited_message", "callback_query"],
                error_callback=self._polling_error,
            )
            self._polling = True
        self._relay.enable()
        return described

    def _polling_error(self, exc: TelegramError) -> None:
        if self.health is not None:
            self.health.telegram.set("unreachable", _describe(exc))

    def _add_handlers(self, application: Application) -> None:  # type: ignore[type-arg]
        replies = self._replies
        commands = self._commands
        assert replies is not None

        async def on_message(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
            if update.message is not None:
                await replies.on_message(update.message)

        async def on_command(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
            if update.message is not None and commands is not None:
                await commands.handle(update.message)

        async def on_edited(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
            if update.edited_message is not None:
                await replies.on_edited(update.edited_message)

        async def on_retry(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
            query = update.callback_query
            if query is None:
                return
            answer = await replies.on_retry(query)
            await query.answer(answer)
            if answer == "Sending again.":
                with contextlib.suppress(TelegramError):
                    await query.edit_message_reply_markup(None)

        async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
            log.error("handling a Telegram update failed", exc_info=context.error)

        chat = filters.Chat(self.settings.telegram.chat_id)
        application.add_handler(
            MessageHandler(chat & filters.UpdateType.MESSAGE & filters.COMMAND, on_command)
        )
        application.add_handler(MessageHandler(chat & filters.UpdateType.MESSAGE, on_message))
        application.add_handler(MessageHandler(chat & filters.UpdateType.EDITED_MESSAGE, on_edited))
        application.add_handler(CallbackQueryHandler(on_retry, pattern=f"^{RETRY_PREFIX}"))
        application.add_error_handler(on_error)

    async def stop(self) -> None:
        """Stop accepting, let in-flight work finish, close everything."""
        for task in self._checks:
            task.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
        self._checks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._telegram is not None and self._polling:
            with contextlib.suppress(TelegramError, RuntimeError):
                if self._telegram.updater is not None:
                    await self._telegram.updater.stop()
                await self._telegram.stop()
            self._polling = False
        # Relay and outbox give posts in flight a grace period; the others just stop.
        await asyncio.gather(*(w.stop() for w in self._workers))
        self._workers = []
        self._relay = self._outbox = self._feedback = None
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
        self._unredact()
        self._unredact = _nothing


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


def _nothing() -> None:
    pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, NetworkError):
        return f"network: {exc.message}"
    return str(exc)


def _log_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s died", task.get_name(), exc_info=task.exception())
