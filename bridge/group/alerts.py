"""Warnings a person must see: low balances, expiring credit, operational trouble.

Each alert is an episode: one message when it starts, at most one reminder every
`alerts.repeat_hours` while it lasts, one short "recovered" message when it ends. Episodes
live in the database, so a restart neither repeats nor forgets them, and in memory, so a
database that takes no writes (the very thing the "intake failing" alert is about) does not
make an alert repeat. Alerts go to one "Alerts" topic the bridge creates once (or a topic
the config names).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, tzinfo

from telegram.error import BadRequest, TelegramError

from bridge.core import texts
from bridge.core.config import AlertSettings
from bridge.core.metrics import Metrics
from bridge.core.store import AlertState, Store, StoreError
from bridge.core.texts import N_, _
from bridge.core.workers import Worker
from bridge.group.topics import Topics, is_topic_closed, is_topic_gone
from bridge.nusasms import Credit, NusaSMSAuthError, NusaSMSClient, NusaSMSError
from bridge.ops.health import Health

log = logging.getLogger(__name__)

ALERTS_TOPIC_FACT = "alerts_topic_id"
ALERTS_TOPIC_NAME = N_("🔔 Alerts")
QUEUE_CHECK_SECONDS = 60.0
# However often the watch is woken, checks are at least this far apart.
MIN_CHECK_SECONDS = 1.0
INTAKE_KEY = "intake_failing"
WRITE_PROBE_FACT = "write_probe"


class Alerts(Worker):
    """Owns the balance watch and the alert episodes."""

    name = "alerts"

    def __init__(
        self,
        store: Store,
        topics: Topics,
        client: NusaSMSClient,
        health: Health,
        *,
        settings: AlertSettings,
        tz: tzinfo,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__()
        self._store = store
        self._topics = topics
        self._client = client
        self._health = health
        self._settings = settings
        self._tz = tz
        self._clock = clock
        self._metrics = metrics or Metrics()
        self._episodes = asyncio.Lock()
        # The newest state of every episode seen, and those the database has not taken yet.
        self._known: dict[str, AlertState] = {}
        self._unsaved: set[str] = set()
        self._topic_id: int | None = None
        self.last_balance: Credit | None = None
        self.last_balance_at: float | None = None
        self.on_balance: Callable[[Credit], None] = lambda _: None

    async def _run(self) -> None:
        next_balance = 0.0
        while True:
            started = time.monotonic()
            now = self._clock()
            try:
                await self.check_intake()
            except (TelegramError, StoreError, sqlite3.Error) as exc:
                log.warning("the intake alert could not be checked or posted: %s", exc)
            except Exception:
                log.exception("checking the intake failed unexpectedly")
            try:
                if now >= next_balance:
                    # A check whose alert cannot be posted (Telegram down) is retried within
                    # a minute, not every second: GET /balance is not hammered meanwhile.
                    interval = self._settings.balance_interval_seconds
                    next_balance = now + min(interval, QUEUE_CHECK_SECONDS)
                    await self.check_balance()
                    next_balance = now + interval
                await self.check_queues()
            except (TelegramError, StoreError, sqlite3.Error) as exc:
                log.warning("alerts could not be checked or posted: %s", exc)
            except Exception:  # a bug must not end the watch for good
                log.exception("checking alerts failed unexpectedly")
            await self._doze(min(QUEUE_CHECK_SECONDS, max(1.0, next_balance - self._clock())))
            # A wake-up per failed callback must not turn the watch into a spin.
            await asyncio.sleep(max(0.0, started + MIN_CHECK_SECONDS - time.monotonic()))

    async def check_intake(self) -> None:
        """Alert while callbacks cannot be stored (the database takes no writes).

        While writes fail, each check tries one small write: the episode ends on a write
        that succeeds, not on silence (NusaSMS may have stopped calling meanwhile).
        """
        if self._store.write_failing:
            with contextlib.suppress(StoreError):
                await self._store.set_fact(WRITE_PROBE_FACT, f"{self._clock():.3f}")
        error = self._health.writes_failing()
        await self.episode(
            INTAKE_KEY,
            error is not None,
            _(
                "🛑 Callbacks cannot be stored: the database takes no writes "
                "({error}). NusaSMS is answered 503 and retries; customer "
                "messages arrive once it can be written again. Check the free disk space and "
                "the database file."
            ).format(error=html.escape(error or "")),
            _("✅ Callbacks are stored again."),
        )

    async def read_balance(self) -> Credit | None:
        """The balance for a person asking: the answer never waits on an alert being posted.

        The alerts it implies are moved as in `check_balance`, but one that cannot be posted
        is left to the watch (which retries within a minute) instead of failing the answer.
        """
        return await self.check_balance(best_effort=True)

    async def check_balance(self, *, best_effort: bool = False) -> Credit | None:
        """Read the balance and raise or end the alerts it implies."""
        move = self._try_episode if best_effort else self.episode
        try:
            credit = await self._client.get_balance()
        except NusaSMSAuthError as exc:
            self._metrics.api_errors.labels("nusasms", type(exc).__name__).inc()
            self._health.nusasms.set("rejected", exc.reason())
            await move(
                "nusasms_key",
                True,
                _(
                    "🔑 NusaSMS rejected the API key ({reason}). Replies and "
                    "balance checks fail until nusasms.api_key is fixed or this IP is whitelisted."
                ).format(reason=html.escape(exc.reason())),
                _("🔑 NusaSMS accepts the API key again."),
            )
            return None
        except NusaSMSError as exc:
            self._metrics.api_errors.labels("nusasms", type(exc).__name__).inc()
            self._health.nusasms.set("unreachable", str(exc))
            log.warning("cannot read the NusaSMS balance: %s", exc)
            return None
        self._health.nusasms.set("ok", "balance read")
        self.last_balance, self.last_balance_at = credit, self._clock()
        self.on_balance(credit)
        await move("nusasms_key", False, "", _("🔑 NusaSMS accepts the API key again."))
        values = credit.numeric_fields()
        for field, threshold in sorted(self._settings.thresholds.items()):
            value = values.get(field)
            if value is None:
                log.warning("alerts.thresholds names %s, which GET /balance does not report", field)
                continue
            # Field names come from NusaSMS's answer: text, never markup.
            name = html.escape(field)
            await move(
                f"balance:{field}",
                value < threshold,
                _(
                    "💸 Low balance: <b>{field}</b> is {value:g}, below {threshold:g}. "
                    "Top up at app.nusasms.com."
                ).format(field=name, value=value, threshold=threshold),
                _("✅ {field} is back at {value:g} (threshold {threshold:g}).").format(
                    field=name, value=value, threshold=threshold
                ),
            )
        today = datetime.fromtimestamp(self._clock(), UTC).astimezone(self._tz).date()
        for field, expires in sorted(credit.expiry_dates().items()):
            days = (expires - today).days
            await move(
                f"expiry:{field}",
                days <= self._settings.expiry_warning_days,
                _expiry_text(field, expires, days),
                _("✅ {field} now runs until {date}.").format(
                    field=html.escape(field), date=texts.strftime(expires, "%d %b %Y")
                ),
            )
        return credit

    async def _try_episode(self, key: str, active: bool, text: str, recovered: str) -> None:
        try:
            await self.episode(key, active, text, recovered)
        except (TelegramError, StoreError, sqlite3.Error) as exc:
            log.warning("alert %s could not be posted now (the watch retries): %s", key, exc)

    async def check_queues(self) -> None:
        """Alert when messages wait in a queue longer than `stuck_after_minutes`."""
        now = self._clock()
        limit = self._settings.stuck_after_minutes * 60
        inbound = await self._store.queue_stats()
        waiting_out, oldest_out = await self._store.outbound_stats()
        for key, count, oldest, where in (
            ("stuck:inbound", inbound.waiting, inbound.oldest_received_at, _("to Telegram")),
            ("stuck:outbound", waiting_out, oldest_out, _("to WhatsApp")),
        ):
            age = None if oldest is None else now - oldest
            await self.episode(
                key,
                age is not None and age > limit,
                _(
                    "⏳ {count} message(s) waiting to go {where}, the oldest for "
                    "{minutes:.0f} min. See /status."
                ).format(count=count, where=where, minutes=(age or 0) / 60),
                _("✅ Messages flow {where} again.").format(where=where),
            )

    async def group_moved(self, new_chat_id: int) -> None:
        """Telegram moved the group to a new id: nothing reaches it until the config says so."""
        detail = (
            f"the group now has id {new_chat_id}: set telegram.chat_id to {new_chat_id} "
            "and restart the bridge"
        )
        log.error("Telegram: %s", detail)
        self._health.telegram.set("rejected", detail)
        if await self._store.fact("group_moved_to") == str(new_chat_id):
            return  # said once already
        try:
            # The Alerts topic is in the old group; the new group's General topic is reachable.
            await self._topics.bot.send_message(
                new_chat_id,
                _(
                    "⚠️ Bridge stopped posting: the group now has id {chat_id}: set "
                    "telegram.chat_id to {chat_id} and restart the bridge."
                ).format(chat_id=new_chat_id),
            )
        except TelegramError as exc:
            log.warning("cannot tell the moved group: %s", exc)
            return
        await self._store.set_fact("group_moved_to", str(new_chat_id))

    async def episode(self, key: str, active: bool, text: str, recovered: str) -> None:
        """Move one alert's episode: start, remind, or end it (posting as needed)."""
        # One episode step at a time: the watch loop and an operator's /balance may check at
        # once, and each must see what the other posted (and the Alerts topic it made).
        async with self._episodes:
            state = await self._state(key)
            now = self._clock()
            repeat = self._settings.repeat_hours * 3600
            if active:
                if state is None or not state.active:
                    await self.post(text)
                    await self._remember(AlertState(key, True, now, now, text))
                elif now - state.last_sent_at >= repeat:
                    await self.post(_("Reminder: {text}").format(text=text))
                    await self._remember(AlertState(key, True, state.since, now, text))
                elif key in self._unsaved:
                    await self._remember(state)
            elif state is not None and state.active:
                await self.post(recovered)
                await self._remember(AlertState(key, False, now, now, ""))
            elif state is not None and key in self._unsaved:
                await self._remember(state)

    async def _state(self, key: str) -> AlertState | None:
        known = self._known.get(key)
        if known is not None:
            return known
        try:
            state = await self._store.alert(key)
        except (sqlite3.Error, ValueError) as exc:
            # An unreadable database is no reason to stay silent about it.
            log.warning("cannot read alert %s (taking it as not yet raised): %s", key, exc)
            return None
        if state is not None:
            self._known[key] = state
        return state

    async def _remember(self, state: AlertState) -> None:
        """Keep the episode in memory at once, in the database when it takes the write."""
        self._known[state.key] = state
        try:
            await self._store.save_alert(state)
        except StoreError as exc:
            if state.key not in self._unsaved:
                log.warning("alert %s is kept in memory until it can be saved: %s", state.key, exc)
            self._unsaved.add(state.key)
        else:
            self._unsaved.discard(state.key)

    async def post(self, html_text: str) -> None:
        """Post into the Alerts topic, making it first if needed."""
        try:
            await self._post(html_text)
        except TelegramError as exc:
            self._health.saw_error("telegram", exc)
            raise
        self._health.saw_success("telegram", "alert posted")

    async def _post(self, html_text: str) -> None:
        topic_id = await self.topic()
        try:
            await self._topics.notify(topic_id, html_text)
        except BadRequest as exc:
            if is_topic_closed(exc):
                # Someone closed the Alerts topic; an alert nobody can see is no alert.
                log.info("the Alerts topic %d was closed; reopening", topic_id)
                chat_id = self._topics._chat_id
                await self._topics.call(
                    lambda: self._topics.bot.reopen_forum_topic(chat_id, topic_id)
                )
                await self._topics.notify(topic_id, html_text)
                return
            if not is_topic_gone(exc) or self._settings.topic_id is not None:
                raise
            self._topic_id = None
            with contextlib.suppress(StoreError):
                await self._store.set_fact(ALERTS_TOPIC_FACT, None)
            await self._topics.notify(await self.topic(), html_text)

    async def topic(self) -> int:
        """The Alerts topic's id."""
        if self._settings.topic_id is not None:
            return self._settings.topic_id
        if self._topic_id is not None:
            return self._topic_id
        known = await self._store.fact(ALERTS_TOPIC_FACT)
        if known is not None:
            self._topic_id = int(known)
            return self._topic_id
        topic_id = await self._topics.create_topic(_(ALERTS_TOPIC_NAME))
        # Remembered in memory first: a database that refuses the write must not make the
        # next alert create another topic.
        self._topic_id = topic_id
        log.info("created the Alerts topic %d", topic_id)
        try:
            await self._store.set_fact(ALERTS_TOPIC_FACT, str(topic_id))
        except StoreError as exc:
            log.warning("the Alerts topic %d is not saved yet: %s", topic_id, exc)
        return topic_id


def _expiry_text(field: str, expires: date, days: int) -> str:
    name = html.escape(field)
    when = texts.strftime(expires, "%d %b %Y")
    if days < 0:
        return _("⌛ <b>{field}</b> expired on {date}.").format(field=name, date=when)
    return _("⌛ <b>{field}</b> expires on {date} (in {days} day(s)).").format(
        field=name, date=when, days=days
    )
