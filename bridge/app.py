"""The composition root: builds every part of the bridge and runs them as one service.

Only this module sees every part. Start-up order: the instance lock, the database, the HTTP
server (callbacks are stored whatever the services do), then the first checks of both
services side by side (rejected credentials stop here, exit code 2), then the workers.
Shutdown stops accepting, lets work in flight finish and closes everything within 10 s;
SIGTERM is honoured in every phase, start-up included.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from telegram import BotCommandScopeChat, Update
from telegram.error import InvalidToken, RetryAfter, TelegramError
from telegram.ext import Application, CallbackQueryHandler, ContextTypes, MessageHandler, filters

from bridge import preflight, texts
from bridge.alerts import Alerts
from bridge.commands import Commands, bot_commands
from bridge.config import Settings
from bridge.feedback import RETRY_PREFIX, Feedback
from bridge.health import Health, Service, ServiceState, describe
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
from bridge.retention import Retention
from bridge.server import build_app, make_runner, run_site
from bridge.store import InstanceLock, Store, StoreError
from bridge.topics import Topics, retry_after_seconds
from bridge.upkeep import Checkpoints
from bridge.workers import Worker

log = logging.getLogger(__name__)


# A first check that takes longer than this lets the bridge start and retry in the background.
FIRST_CHECK_TIMEOUT_SECONDS = 15.0
RECHECK_MAX_SECONDS = 60.0
# Callbacks in flight when shutdown begins get this long to be committed and answered.
SHUTDOWN_GRACE_SECONDS = 4.0
# The whole shutdown, whatever hangs: the README promises an exit within 10 s of SIGTERM.
SHUTDOWN_LIMIT_SECONDS = 8.0
# One getUpdates long poll (PTB adds it to the read timeout); a shutdown cancels it rather
# than waiting for its answer.
POLL_SECONDS = 10
# The last getUpdates that confirms fetched updates may take this long at shutdown.
CONFIRM_UPDATES_SECONDS = 1.0
ALLOWED_UPDATES = ("message", "edited_message", "callback_query")


class StartupError(Exception):
    """Something a person must fix stops start-up (database, storage path, port); says what."""


class Bridge:
    """One running bridge: database, HTTP server, Telegram bot and workers."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._store: Store | None = None
        self._lock: InstanceLock | None = None
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
        self._poller: _UpdatePoller | None = None
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
        """Bring everything up; raise `preflight.Rejected` if a service refuses us and
        `StartupError` for what else a person must fix. Cancelling it stops what was started."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        texts.use(s.telegram.language)
        tz = s.nusasms.tz
        self._unredact = redact_loggers(s.secrets())
        log.info("database %s", s.storage.path)
        try:
            if str(s.storage.path) != ":memory:":
                self._lock = InstanceLock.acquire(s.storage.path)
            self._store = store = await Store.open(
                s.storage.path, synchronous=s.storage.synchronous
            )
        except StoreError as exc:
            raise StartupError(str(exc)) from exc
        if s.nusasms.media_mode == "url":
            _prepare_media_folder(s.storage.media_path)
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
            # Our own poller: it stops at once, where PTB's Updater waits for a last getUpdates.
            .updater(None)
            .build()
        )
        bot = self._telegram.bot
        # Every call into the group counts against it (public for tests and /status).
        self.budget = budget = GroupBudget(
            s.telegram.group_budget.messages, s.telegram.group_budget.seconds
        )
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
        self._feedback = feedback = Feedback(
            store, topics, chat_id=s.telegram.chat_id, window_seconds=window_seconds, tz=tz
        )
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
        # Every call into the group and every reply request tells /healthz what it learnt:
        # a bot removed from the group, or a key NusaSMS no longer accepts, is a problem.
        topics.on_outcome = _observer(health, "telegram")
        outbox.on_outcome = _observer(health, "nusasms")
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
        if s.storage.retention_days > 0:
            self._workers.append(
                Retention(store, retention_days=s.storage.retention_days, clock=self._clock)
            )
        self._add_handlers(self._telegram, topics)
        self._poller = _UpdatePoller(self._telegram, on_error=self._polling_error)

        # The port opens before any service is asked anything: a service that accepts
        # connections but never answers must not keep NusaSMS's callbacks out.
        await self._listen(intake, health, media, metrics)
        try:
            async with asyncio.TaskGroup() as checks:
                checks.create_task(
                    self._first_check("NusaSMS", health.nusasms, self._check_nusasms)
                )
                checks.create_task(
                    self._first_check("Telegram", health.telegram, self._check_telegram)
                )
        except* preflight.Rejected as rejected:
            raise rejected.exceptions[0] from None
        for worker in self._workers:
            worker.start()

    async def _listen(
        self, intake: Intake, health: Health, media: MediaLibrary | None, metrics: Metrics
    ) -> None:
        s = self.settings
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
        try:
            await run_site(self._runner, s.server.host, s.server.port)
        except OSError as exc:
            where = f"{s.server.host}:{s.server.port}"
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"cannot listen on {where}: the port is in use by another program: stop it "
                    "or change server.port"
                ) from exc
            raise StartupError(
                f"cannot listen on {where} ({exc.strerror}): check server.host and server.port"
            ) from exc
        self.port = self._bound_port()
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
            state.set("unreachable", describe(exc))
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
                state.set("unreachable", describe(exc))
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
            self._polling = True
            assert self._poller is not None
            self._poller.start()
        self._relay.enable()
        return described

    def _polling_error(self, exc: TelegramError) -> None:
        if self.health is not None:
            self.health.telegram.set("unreachable", describe(exc))

    def _add_handlers(self, application: Application, topics: Topics) -> None:  # type: ignore[type-arg]
        replies = self._replies
        commands = self._commands
        assert replies is not None

        async def on_message(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
            if update.message is not None:
                await replies.on_message(update.message)

        async def on_command(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
            if update.message is not None and commands is not None:
                await commands.handle(update.message)
                # Replies tells the operator when a "/..." in a topic is no command at all.
                await replies.on_message(update.message)

        async def on_topic_state(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
            message = update.message
            if message is not None and message.message_thread_id is not None:
                await topics.closed_in_telegram(
                    message.message_thread_id, closed=message.forum_topic_closed is not None
                )

        async def on_edited(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
            if update.edited_message is not None:
                await replies.on_edited(update.edited_message)

        async def on_retry(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
            if update.callback_query is not None:
                await replies.on_retry(update.callback_query)

        async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
            log.error("handling a Telegram update failed", exc_info=context.error)

        chat = filters.Chat(self.settings.telegram.chat_id)
        application.add_handler(
            MessageHandler(chat & filters.UpdateType.MESSAGE & filters.COMMAND, on_command)
        )
        # Real Telegram lets the bot post into a closed topic without an error, so a topic
        # closed or reopened in the app is learnt from its service message, not from a refusal.
        topic_state = (
            filters.StatusUpdate.FORUM_TOPIC_CLOSED | filters.StatusUpdate.FORUM_TOPIC_REOPENED
        )
        application.add_handler(
            MessageHandler(chat & filters.UpdateType.MESSAGE & topic_state, on_topic_state)
        )
        application.add_handler(MessageHandler(chat & filters.UpdateType.MESSAGE, on_message))
        application.add_handler(MessageHandler(chat & filters.UpdateType.EDITED_MESSAGE, on_edited))
        application.add_handler(CallbackQueryHandler(on_retry, pattern=f"^{RETRY_PREFIX}"))
        application.add_error_handler(on_error)

    async def stop(self) -> None:
        """Stop accepting, let in-flight work finish, close everything.

        Whatever hangs, the clients, the database and the instance lock are closed at the
        end, also when the caller's time limit cancels this half-way.
        """
        try:
            await self._wind_down()
        finally:
            await self._close()

    async def _wind_down(self) -> None:
        for task in self._checks:
            task.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
        self._checks.clear()
        # Each part gets its own grace period, side by side: callbacks in flight are
        # committed, operators' updates being handled finish, posts in flight finish.
        parts = ("HTTP server", "Telegram updates", "workers")
        results = await asyncio.gather(
            self._stop_http(), self._stop_telegram(), self._stop_workers(), return_exceptions=True
        )
        for part, result in zip(parts, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                log.error("stopping the %s failed", part, exc_info=result)

    async def _stop_http(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _stop_telegram(self) -> None:
        if self._poller is not None:
            await self._poller.stop()
        if self._telegram is not None and self._polling:
            with contextlib.suppress(TelegramError, RuntimeError, TimeoutError):
                async with asyncio.timeout(SHUTDOWN_GRACE_SECONDS):
                    await self._telegram.stop()
            self._polling = False

    async def _stop_workers(self) -> None:
        # Relay and outbox give posts in flight a grace period; the others just stop.
        await asyncio.gather(*(w.stop() for w in self._workers))
        self._workers = []

    async def _close(self) -> None:
        self._relay = self._outbox = self._feedback = None
        if self._telegram is not None:
            if self._telegram_ready:
                with contextlib.suppress(TelegramError, RuntimeError, TimeoutError):
                    async with asyncio.timeout(1):
                        await self._telegram.shutdown()
            self._telegram = None
        if self._nusasms is not None:
            await self._nusasms.close()
            self._nusasms = None
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._unredact()
        self._unredact = _nothing


class _UpdatePoller(Worker):
    """Long-polls getUpdates into the application's update queue.

    PTB's Updater ends with one more getUpdates to confirm what it fetched, started before
    the cancelled long poll has let go of its connection; against a slow or hanging Telegram
    every shutdown then waited for a read timeout and logged an error. This one awaits the
    cancelled poll, and gives the confirming call a short limit of its own.
    """

    name = "telegram-updates"

    def __init__(
        self,
        application: Application,  # type: ignore[type-arg]
        *,
        on_error: Callable[[TelegramError], None],
    ) -> None:
        super().__init__()
        self._application = application
        self._on_error = on_error
        self._offset = 0
        self._confirmed = 0

    async def _run(self) -> None:
        bot = self._application.bot
        webhook_cleared = False
        delay = 0.0
        while True:
            if delay:
                await asyncio.sleep(delay)
            try:
                if not webhook_cleared:
                    # Polling and a webhook exclude each other at Telegram.
                    await bot.delete_webhook()
                    webhook_cleared = True
                updates = await bot.get_updates(
                    offset=self._offset,
                    timeout=POLL_SECONDS,
                    allowed_updates=ALLOWED_UPDATES,
                )
            except RetryAfter as exc:
                delay = min(retry_after_seconds(exc) + 0.5, RECHECK_MAX_SECONDS)
                continue
            except TelegramError as exc:
                self._on_error(exc)
                delay = min(max(delay * 2, 1.0), 30.0)
                continue
            delay = 0.0
            # The call that fetched these confirmed everything below its offset.
            self._confirmed = self._offset
            for update in updates:
                await self._application.update_queue.put(update)
            if updates:
                self._offset = updates[-1].update_id + 1

    async def stop(self) -> None:
        """Cancel the long poll, then confirm the fetched updates to Telegram, briefly."""
        await super().stop()
        if self._offset == self._confirmed:
            return
        try:
            async with asyncio.timeout(CONFIRM_UPDATES_SECONDS):
                await self._application.bot.get_updates(offset=self._offset, timeout=0)
            self._confirmed = self._offset
        except (TimeoutError, TelegramError) as exc:
            # Replies are keyed by their Telegram message id: an update fetched again after
            # a restart is recognised, not sent twice.
            log.warning("could not confirm the last Telegram updates: %s", describe(exc))


async def run(settings: Settings) -> int:
    """Run the bridge until SIGTERM or SIGINT; the process exit code.

    2: a person must fix something first (rejected credentials, the database, the port).
    A signal during start-up stops the start-up.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    bridge = Bridge(settings)
    starting = asyncio.create_task(bridge.start(), name="start")
    signalled = asyncio.create_task(stopping.wait(), name="wait-for-signal")
    try:
        await asyncio.wait((starting, signalled), return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            log.info("shutting down during start-up")
            starting.cancel()  # start() stops whatever it had brought up
            await _within_limit(asyncio.gather(starting, return_exceptions=True))
            log.info("stopped")
            return 0
        try:
            starting.result()
        except (preflight.Rejected, StartupError) as exc:
            log.error("cannot start: %s", exc)
            return 2
        log.info("bridge ready")
        await signalled
        log.info("shutting down")
        await _within_limit(bridge.stop())
        log.info("stopped")
        return 0
    finally:
        signalled.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _within_limit(stopping: Awaitable[object]) -> None:
    try:
        async with asyncio.timeout(SHUTDOWN_LIMIT_SECONDS):
            await stopping
    except TimeoutError:
        # Bridge.stop closes the clients, the database and the lock on its way out regardless.
        log.warning("shutdown took over %.0f s; stopped what was left", SHUTDOWN_LIMIT_SECONDS)


def _prepare_media_folder(folder: Path) -> None:
    """Create the folder for media links' files now, not at the first file an operator sends."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StartupError(
            f"cannot create the media folder {folder}: a file is in the way: set "
            "storage.media_dir to a folder this user may write to"
        ) from None
    except OSError as exc:
        raise StartupError(
            f"cannot create the media folder {folder} ({exc.strerror}): set storage.media_dir "
            "to a folder this user may write to"
        ) from None


def _observer(health: Health, service: Service) -> Callable[[BaseException | None], None]:
    def observe(exc: BaseException | None) -> None:
        if exc is None:
            health.saw_success(service)
        else:
            health.saw_error(service, exc)

    return observe


def _nothing() -> None:
    pass


def _log_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s died", task.get_name(), exc_info=task.exception())
