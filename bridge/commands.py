"""Operator commands inside Telegram: /info and /close in a room's topic; /balance, /status
and /help anywhere in the group. Answers are posted as replies in the same topic."""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, tzinfo

from telegram import BotCommand, Message

from bridge import render
from bridge.alerts import Alerts
from bridge.health import Health
from bridge.nusasms import Credit
from bridge.store import Store
from bridge.topics import Topics

log = logging.getLogger(__name__)

COMMANDS: tuple[tuple[str, str], ...] = (
    ("info", "In a customer's topic: number, reply window, message counts"),
    ("close", "In a customer's topic: close it (the next customer message reopens it)"),
    ("balance", "NusaSMS balances and expiry dates"),
    ("status", "Queues, last callback, last error"),
    ("help", "What the bridge does and how to use it"),
)

HELP = (
    "<b>WhatsApp bridge</b>\n"
    "Every WhatsApp customer has a topic here. Write in the topic to answer: text, photos, "
    "documents, videos, audio and voice notes reach the customer. Reactions on your message "
    "show what happened: 🕊 accepted, 👌 delivered, 👀 read, 💔 failed.\n"
    "Messages starting with <code>{note}</code> are notes between operators and stay here. "
    "Edits do not reach WhatsApp. Free-form replies are possible for {hours:g} h after the "
    "customer's last message.\n\n"
    "{commands}"
)


def bot_commands() -> list[BotCommand]:
    """The commands registered with Telegram for autocompletion."""
    return [BotCommand(name, description) for name, description in COMMANDS]


def format_balance(credit: Credit, *, read_at: float | None, tz: tzinfo) -> str:
    """All balances and expiry dates of a GET /balance answer."""
    lines = ["<b>NusaSMS balance</b>"]
    expiries = credit.expiry_dates()
    for field, value in sorted(credit.numeric_fields().items()):
        expiry = expiries.pop(f"{field.removesuffix('_balance')}_expired_date", None)
        until = f" (until {expiry:%d %b %Y})" if expiry else ""
        lines.append(f"• {html.escape(field)}: <b>{_amount(value)}</b>{until}")
    # A date whose balance is blank is still a date someone must act on.
    for field, expiry in sorted(expiries.items()):
        lines.append(f"• {html.escape(field)}: until {expiry:%d %b %Y}")
    if read_at is not None:
        lines.append(f"<i>read {_local(read_at, tz)}</i>")
    return "\n".join(lines)


def _amount(value: float) -> str:
    """A balance with thousands separators; cents only when there are any (never rounded)."""
    if value.is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".") if round(value, 2) == value else f"{value:,}"


def _local(moment: float, tz: tzinfo) -> str:
    return f"{datetime.fromtimestamp(moment, UTC).astimezone(tz):%d %b %H:%M}"


class Commands:
    """Answers operator commands."""

    def __init__(
        self,
        store: Store,
        topics: Topics,
        alerts: Alerts,
        health: Health,
        *,
        chat_id: int,
        operator_ids: Sequence[int],
        note_prefix: str,
        window_seconds: float,
        tz: tzinfo,
        last_errors: Callable[[], list[str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._topics = topics
        self._alerts = alerts
        self._health = health
        self._chat_id = chat_id
        self._operators = frozenset(operator_ids)
        self._note_prefix = note_prefix
        self._window = window_seconds
        self._tz = tz
        self._last_errors = last_errors
        self._clock = clock

    async def handle(self, message: Message) -> None:
        """Answer a `/command` message (ignored outside the group or from non-operators)."""
        if message.chat_id != self._chat_id or message.text is None:
            return
        user = message.from_user
        if user is None or user.is_bot or (self._operators and user.id not in self._operators):
            return
        name = message.text.split()[0][1:].split("@")[0].lower()
        topic_id = message.message_thread_id if message.is_topic_message else None
        answer = await self.answer(name, topic_id)
        if answer is not None:
            await self._topics.notify(topic_id, answer, reply_to=message.message_id)

    async def answer(self, name: str, topic_id: int | None) -> str | None:
        """The HTML answer to one command, or None for commands that are not ours."""
        if name == "help":
            return HELP.format(
                note=html.escape(self._note_prefix),
                hours=self._window / 3600,
                commands="\n".join(f"/{n} — {html.escape(d)}" for n, d in COMMANDS),
            )
        if name == "balance":
            # The answer does not depend on an alert being posted first.
            credit = await self._alerts.read_balance()
            if credit is None:
                return "⚠️ NusaSMS did not answer the balance request; see /status."
            return format_balance(credit, read_at=self._alerts.last_balance_at, tz=self._tz)
        if name == "status":
            return await self._status()
        if name in ("info", "close"):
            room = None if topic_id is None else await self._store.room_by_topic(topic_id)
            if room is None:
                return f"/{name} works inside a customer's topic."
            if name == "close":
                assert topic_id is not None
                await self._topics.call(
                    lambda: self._topics.bot.close_forum_topic(self._chat_id, topic_id)
                )
                return None
            received, sent, last_status = await self._store.room_counts(room.room_id)
            closes = room.last_inbox_at + self._window
            state = "open until" if self._clock() < closes else "closed at"
            return (
                f"<b>{html.escape(render.format_phone(room.sender_number))}</b>\n"
                f"Room: <code>{html.escape(room.room_id)}</code>\n"
                f"Reply window: {state} {_local(closes, self._tz)}\n"
                f"Messages: {received} from the customer, {sent} replies\n"
                f"Last reply status: {html.escape(last_status or '—')}"
            )
        return None

    async def _status(self) -> str:
        ready, report = await self._health.report()
        queue = report.get("inbound_queue", {})
        outbound = report.get("outbound_queue", {})
        last = report.get("last_callback_at")
        errors = self._last_errors()
        lines = [
            f"<b>Bridge {'ready' if ready else 'NOT ready'}</b>",
            f"Telegram: {report.get('telegram', {}).get('state')}, "
            f"NusaSMS: {report.get('nusasms', {}).get('state')}",
            f"To Telegram: {queue.get('waiting', 0)} waiting "
            f"(oldest {queue.get('oldest_age_seconds') or 0:.0f} s)",
            f"To WhatsApp: {outbound.get('waiting', 0)} waiting "
            f"(oldest {outbound.get('oldest_age_seconds') or 0:.0f} s)",
            f"Last callback: {_local(last, self._tz) if last else 'none yet'}",
            f"Last error: {html.escape(self._health.redact(errors[0])) if errors else 'none'}",
        ]
        return "\n".join(lines)
