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
from telegram.error import InvalidToken, TelegramError
from telegram.ext import Application, CallbackQueryHandler, ContextTypes, MessageHandler, filters

from bridge.channels.intake import Intake
from bridge.channels.media import MediaLibrary
from bridge.channels.outbox import Outbox
from bridge.channels.templates import Catalog
from bridge.core import texts
from bridge.core.config import Settings
from bridge.core.logs import BackgroundLog, redact_loggers
from bridge.core.metrics import Metrics
from bridge.core.pacing import GroupBudget
from bridge.core.store import InstanceLock, Store, StoreError
from bridge.core.workers import Worker
from bridge.group.alerts import Alerts
from bridge.group.aliases import AliasNotes
from bridge.group.commands import Commands, bot_commands
from bridge.group.feedback import RETRY_PREFIX, Feedback
from bridge.group.picker import TemplatePicker
from bridge.group.relay import Relay
from bridge.group.reminders import WindowReminders
from bridge.group.reopen import ReopenEntry, ReopenTemplates
from bridge.group.replies import REOPEN_PREFIX, Replies, fetch_file
from bridge.group.topics import Topics
from bridge.group.updates import (
    UpdateFeed,
    UpdatePoller,
    WebhookInbox,
    start_webhook,
    webhook_secrets,
    webhook_url,
)
from bridge.nusasms import Credit, NusaSMSClient, NusaSMSError
from bridge.ops import preflight
from bridge.ops.health import Health, Service, ServiceState, describe
from bridge.ops.retention import Retention
from bridge.ops.upkeep import Checkpoints
from bridge.web.server import build_admin_app, build_app, make_runner, run_site

log = logging.getLogger(__name__)


# A first check that takes longer than this lets the bridge start and retry in the background.
FIRST_CHECK_TIMEOUT_SECONDS = 15.0
RECHECK_MAX_SECONDS = 60.0
# Callbacks in flight when shutdown begins get this long to be committed and answered.
SHUTDOWN_GRACE_SECONDS = 4.0
# The whole shutdown, whatever hangs: the README promises an exit within 10 s of SIGTERM.
SHUTDOWN_LIMIT_SECONDS = 8.0


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
        self._admin_runner: web.AppRunner | None = None
        self._access_log: BackgroundLog | None = None
        self._nusasms: NusaSMSClient | None = None
        self._telegram: Application | None = None  # type: ignore[type-arg]
        self._telegram_ready = False
        self._relay: Relay | None = None
        self._outbox: Outbox | None = None
        self._feedback: Feedback | None = None
        self._replies: Replies | None = None
        self._commands: Commands | None = None
        self._picker: TemplatePicker | None = None
        self._workers: list[Worker] = []
        self._unredact: Callable[[], None] = _nothing
        self._polling = False
        self._poller: UpdatePoller | None = None
        self._feed: UpdateFeed | None = None
        self._webhook: WebhookInbox | None = None
        self._checks: list[asyncio.Task[None]] = []
        self.health: Health | None = None
        self.port: int | None = None
        # The admin listener's port; None when /healthz and /metrics are on `port`.
        self.admin_port: int | None = None

    @property
    def store(self) -> Store:
        """The open database."""
        if self._store is None:
            raise RuntimeError("bridge not started")
        return self._store

    def wake_outbound(self) -> None:
        """Something was queued for WhatsApp (e.g. a template): send it, and show it."""
        if self._outbox is not None:
            self._outbox.wake()
        if self._feedback is not None:
            self._feedback.wake()

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
            pending_max_age=s.window.pending_max_age_hours * 3600,
            clock=self._clock,
            metrics=metrics,
        )
        self.catalog = catalog = Catalog(self._nusasms, channel_id=s.nusasms.channel_id)
        self._replies = Replies(
            store,
            topics,
            chat_id=s.telegram.chat_id,
            operator_ids=s.telegram.operator_ids,
            note_prefix=s.telegram.note_prefix,
            window_seconds=window_seconds,
            tz=tz,
            on_queued=self.wake_outbound,
            clock=self._clock,
            reopen=ReopenTemplates(
                catalog,
                [ReopenEntry(t.name, tuple(t.values)) for t in s.window.reopen_templates],
            ),
            auto_reopen=s.window.auto_reopen,
            pending_max_age=s.window.pending_max_age_hours * 3600,
        )

        def on_inbound() -> None:
            relay.wake()
            outbox.wake()  # a customer who wrote again reopens their pending replies

        intake = Intake(
            store, tz=tz, on_inbound=on_inbound, on_status=outbox.wake, clock=self._clock
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
        self._picker = TemplatePicker(
            store,
            topics,
            catalog,
            chat_id=s.telegram.chat_id,
            operator_ids=s.telegram.operator_ids,
            on_queued=self.wake_outbound,
            clock=self._clock,
        )
        self._commands.on_new_topic = self._picker.show
        self._workers = [relay, outbox, feedback, alerts, reminders, catalog, Checkpoints(store)]
        self._workers.append(AliasNotes(store, topics, chat_id=s.telegram.chat_id))
        if s.storage.retention_days > 0:
            self._workers.append(
                Retention(store, retention_days=s.storage.retention_days, clock=self._clock)
            )
        self._add_handlers(self._telegram, topics)
        application = self._telegram

        async def handle(data: dict[str, object]) -> None:
            await application.process_update(Update.de_json(data, application.bot))

        self._feed = feed = UpdateFeed(store, handle, clock=self._clock)
        if s.telegram.updates == "polling":
            self._poller = UpdatePoller(
                bot, store, on_stored=feed.wake, on_error=self._polling_error, clock=self._clock
            )
        else:
            path_secret, header_secret = webhook_secrets(s.telegram.bot_token.get_secret_value())
            self._webhook = WebhookInbox(
                store,
                path_secret=path_secret,
                header_secret=header_secret,
                on_stored=feed.wake,
                clock=self._clock,
            )

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
        token = s.server.admin_token.get_secret_value() or None
        admin = s.server.admin_listen
        if s.logging.access_log:
            self._access_log = BackgroundLog(logging.getLogger("aiohttp.access"))
            self._access_log.start()
        self._runner = make_runner(
            build_app(
                intake=intake,
                health=health,
                callback_secret=s.server.callback_secret.get_secret_value(),
                media=media,
                metrics=metrics,
                telegram_webhook=self._webhook,
                admin_token=token if admin is None else None,
            ),
            shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
            access_log=self._access_log,
        )
        await self._runner.setup()
        await _serve(self._runner, s.server.host, s.server.port, "server.host and server.port")
        self.port = _bound_port(self._runner)
        log.info("bridge listening on %s:%s", s.server.host, self.port)
        if admin is None:
            log.info("/healthz and /metrics on the same port, with the admin token")
            return
        self._admin_runner = make_runner(
            build_admin_app(health=health, metrics=metrics, admin_token=token),
            shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
            access_log=self._access_log,
        )
        await self._admin_runner.setup()
        await _serve(self._admin_runner, admin[0], admin[1], "server.admin")
        self.admin_port = _bound_port(self._admin_runner)
        log.info("/healthz and /metrics on %s:%s", admin[0], self.admin_port)

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
            if self._poller is None:
                # Webhook mode never polls; setting the webhook replaces polling at Telegram.
                path_secret, header_secret = webhook_secrets(
                    self.settings.telegram.bot_token.get_secret_value()
                )
                await start_webhook(
                    self._telegram.bot,
                    webhook_url(self.settings.server.public_url, path_secret),
                    header_secret,
                )
            await self._telegram.start()
            self._polling = True
            assert self._feed is not None
            self._feed.start()
            if self._poller is not None:
                self._poller.start()
        self._relay.enable()
        return described

    def _polling_error(self, exc: TelegramError) -> None:
        if self.health is not None:
            self.health.telegram.set("unreachable", describe(exc))

    def _add_handlers(self, application: Application, topics: Topics) -> None:  # type: ignore[type-arg]
        replies = self._replies
        commands = self._commands
        picker = self._picker
        assert replies is not None
        assert picker is not None

        async def on_message(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
            if update.message is not None and not await picker.on_message(update.message):
                await replies.on_message(update.message)

        async def on_command(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
            if update.message is not None and commands is not None:
                if not await picker.handle_command(update.message):
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

        async def on_reopen(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
            if update.callback_query is not None:
                await replies.on_reopen(update.callback_query)

        async def on_template_button(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
            if update.callback_query is not None:
                await picker.on_button(update.callback_query)

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
        application.add_handler(CallbackQueryHandler(on_reopen, pattern=f"^{REOPEN_PREFIX}"))
        application.add_handler(CallbackQueryHandler(on_template_button, pattern="^tpl"))
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
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None
        if self._access_log is not None:
            # Written by its thread; a blocked sink is not waited for longer than this.
            await asyncio.to_thread(self._access_log.stop)
            self._access_log = None

    async def _stop_telegram(self) -> None:
        if self._poller is not None:
            await self._poller.stop()
        if self._feed is not None:
            # An update being handled is cut short and handled again after the restart.
            await self._feed.stop()
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
        if self._access_log is not None:  # a stop cut short before the HTTP side ended
            self._access_log.stop(timeout=0.5)
            self._access_log = None
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


async def _serve(runner: web.AppRunner, host: str, port: int, keys: str) -> None:
    """Listen on host:port, or a StartupError of one line naming the keys to change."""
    try:
        await run_site(runner, host, port)
    except OSError as exc:
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"cannot listen on {where}: the port is in use by another program: stop it "
                f"or change {keys.rpartition(' and ')[2]}"
            ) from exc
        raise StartupError(f"cannot listen on {where} ({exc.strerror}): check {keys}") from exc


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    return None


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
