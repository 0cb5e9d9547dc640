"""Operator commands inside Telegram: /info and /close in a room's topic; /balance, /status
and /help anywhere in the group. Answers are posted as replies in the same topic."""

from __future__ import annotations

import html
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo

from telegram import BotCommand, Message

from bridge.core import phones, texts
from bridge.core.store import Room, Store
from bridge.core.texts import N_, _
from bridge.group import render
from bridge.group.alerts import Alerts
from bridge.group.topics import Topics
from bridge.nusasms import Credit
from bridge.ops.health import Health

log = logging.getLogger(__name__)

_NUMBER_PART = re.compile(r"[+0-9][0-9\s().\-/]*[0-9]")

COMMANDS: tuple[tuple[str, str], ...] = (
    ("info", N_("In a customer's topic: number, reply window, message counts")),
    ("close", N_("In a customer's topic: close it (the next customer message reopens it)")),
    ("templates", N_("The approved WhatsApp templates, to send one")),
    ("template", N_("In a customer's topic: send a template (/template NAME v1 | v2)")),
    ("cancel", N_("Stop filling in a template")),
    ("new", N_("In General: /new +62812… [name] starts a conversation with a customer")),
    ("balance", N_("NusaSMS balances and expiry dates")),
    ("status", N_("Queues, last callback, last error")),
    ("help", N_("What the bridge does and how to use it")),
)

HELP = N_(
    "<b>WhatsApp bridge</b>\n"
    "Every WhatsApp customer has a topic here. Write in the topic to answer: text, photos, "
    "documents, videos, audio and voice notes reach the customer. Reactions on your message "
    "show what happened: 😴 still waiting, 🕊 accepted, 👌 delivered, 👀 read, 💔 failed.\n"
    "Messages starting with <code>{note}</code> are notes between operators and stay here. "
    "To send text that starts with “/”, put a backslash before it: <code>\\/home</code>. "
    "Edits do not reach WhatsApp. Free-form replies are possible for {hours:g} h after the "
    "customer's last message.\n\n"
    "{commands}"
)


def bot_commands() -> list[BotCommand]:
    """The commands registered with Telegram for autocompletion."""
    return [BotCommand(name, _(description)) for name, description in COMMANDS]


def format_balance(credit: Credit, *, read_at: float | None, tz: tzinfo) -> str:
    """All balances and expiry dates of a GET /balance answer."""
    lines = [_("<b>NusaSMS balance</b>")]
    expiries = credit.expiry_dates()
    for field, value in sorted(credit.numeric_fields().items()):
        expiry = expiries.pop(f"{field.removesuffix('_balance')}_expired_date", None)
        until = (
            _(" (until {date})").format(date=texts.strftime(expiry, "%d %b %Y")) if expiry else ""
        )
        lines.append(f"• {html.escape(field)}: <b>{_amount(value)}</b>{until}")
    # A date whose balance is blank is still a date someone must act on.
    for field, expiry in sorted(expiries.items()):
        lines.append(
            _("• {field}: until {date}").format(
                field=html.escape(field), date=texts.strftime(expiry, "%d %b %Y")
            )
        )
    if read_at is not None:
        lines.append(_("<i>read {when}</i>").format(when=_local(read_at, tz)))
    return "\n".join(lines)


def _amount(value: float) -> str:
    """A balance with thousands separators; cents only when there are any (never rounded)."""
    if value.is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".") if round(value, 2) == value else f"{value:,}"


def _local(moment: float, tz: tzinfo) -> str:
    return texts.strftime(datetime.fromtimestamp(moment, UTC).astimezone(tz), "%d %b %H:%M")


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
        # Posts the template list in a topic /new created (the picker's `show`).
        self.on_new_topic: Callable[[int], Awaitable[None]] | None = None
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
        if name == "new":
            answer: str | None = await self.new_customer(message.text, topic_id)
        else:
            answer = await self.answer(name, topic_id)
        if answer is not None:
            await self._topics.notify(topic_id, answer, reply_to=message.message_id)

    async def answer(self, name: str, topic_id: int | None) -> str | None:
        """The HTML answer to one command, or None for commands that are not ours."""
        if name == "help":
            return _(HELP).format(
                note=html.escape(self._note_prefix),
                hours=self._window / 3600,
                commands="\n".join(f"/{n} — {html.escape(_(d))}" for n, d in COMMANDS),
            )
        if name == "balance":
            # The answer does not depend on an alert being posted first.
            credit = await self._alerts.read_balance()
            if credit is None:
                return _("⚠️ NusaSMS did not answer the balance request; see /status.")
            return format_balance(credit, read_at=self._alerts.last_balance_at, tz=self._tz)
        if name == "status":
            return await self._status()
        if name in ("info", "close"):
            room = None if topic_id is None else await self._store.room_by_topic(topic_id)
            if room is None:
                return _("/{name} works inside a customer's topic.").format(name=name)
            if name == "close":
                assert topic_id is not None
                await self._topics.call(
                    lambda: self._topics.bot.close_forum_topic(self._chat_id, topic_id)
                )
                # Telegram lets the bot post into a closed topic: the next post must reopen it.
                await self._topics.closed(room.room_id)
                return None
            received, sent, last_status = await self._store.room_counts(room.room_id)
            closes = room.last_inbox_at + self._window
            state = _("open until") if self._clock() < closes else _("closed at")
            return _(
                "<b>{number}</b>\n"
                "Room: <code>{room}</code>\n"
                "Reply window: {state} {when}\n"
                "Messages: {received} from the customer, {sent} replies\n"
                "Last reply status: {status}"
            ).format(
                number=html.escape(render.format_phone(room.sender_number)),
                room=html.escape(room.room_id),
                state=state,
                when=_local(closes, self._tz),
                received=received,
                sent=sent,
                status=html.escape(last_status or "—"),
            ) + await self._customer_lines(room)
        return None

    async def _templates_sent(self) -> str:
        """Templates sent today and yesterday (local days): each one costs money."""
        today = datetime.fromtimestamp(self._clock(), UTC).astimezone(self._tz)
        midnight = today.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        yesterday = (
            today.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        ).timestamp()
        return _("Templates sent: {today} today, {yesterday} yesterday").format(
            today=await self._store.templates_sent(midnight, self._clock() + 1),
            yesterday=await self._store.templates_sent(yesterday, midnight),
        )

    async def new_customer(self, text: str, topic_id: int | None) -> str:
        """`/new NUMBER [name]` in General: the customer's topic, created now if they have none."""
        if topic_id is not None:
            return _("/new works in the General topic, not inside a topic.")
        args = text.split(maxsplit=1)[1].strip() if len(text.split(maxsplit=1)) > 1 else ""
        if not args:
            return _("Usage: /new {format} [name]").format(
                format=html.escape(phones.EXPECTED_FORMAT)
            )
        # The number may be written with spaces (`+62 812 3456 7890`); the name follows it.
        written = _NUMBER_PART.match(args)
        raw = written.group(0).strip() if written else args.split()[0]
        try:
            number = phones.e164(raw)
        except phones.InvalidNumberError:
            return _("🚫 {number} is not a phone number. Expected: {format}").format(
                number=html.escape(args.split()[0]), format=html.escape(phones.EXPECTED_FORMAT)
            )
        name = args[len(raw) :].strip() or None
        room = await self._store.customer_by_number(number)
        if room is not None and room.topic_id is not None:
            return _('{number} already has a topic: <a href="{link}">open it</a>.').format(
                number=html.escape(render.format_phone(number)),
                link=_topic_link(self._chat_id, room.topic_id),
            )
        room = await self._store.add_customer(number, name, self._clock())
        new_topic = await self._topics.create_topic(render.topic_name(number, room.name))
        await self._store.set_topic(room.room_id, new_topic)
        # The usual header would give a window that closed in 1970: this one says none is open.
        await self._store.header_posted(room.room_id)
        await self._topics.notify(
            new_topic,
            _(
                "<b>{who}</b>\nNo reply window is open yet: the customer has never written. "
                "WhatsApp lets the first message be an approved template only."
            ).format(who=html.escape(render.topic_name(number, room.name))),
        )
        await self.first_message_prompt(room, new_topic)
        return _('Topic for {number} created: <a href="{link}">open it</a>.').format(
            number=html.escape(render.format_phone(number)),
            link=_topic_link(self._chat_id, new_topic),
        )

    async def first_message_prompt(self, room: Room, topic_id: int) -> None:
        """How to send the first template, in the new customer's topic.

        The templates picker (`on_new_topic`, set by the app) then posts its list there.
        """
        await self._topics.notify(
            topic_id,
            _(
                "To write first, send a template here: /templates lists them, "
                "<code>/template NAME value1 | value2</code> sends one."
            ),
        )
        if self.on_new_topic is not None:
            await self.on_new_topic(topic_id)

    async def _customer_lines(self, room: Room) -> str:
        """/info's part about the customer: every NusaSMS room of theirs, templates sent."""
        lines = ["", _("Rooms of this customer:")]
        for wa_room in await self._store.wa_rooms(room.room_id):
            lines.append(
                _("<code>{room}</code>: first {first}, last {last}").format(
                    room=html.escape(wa_room.wa_room_id),
                    first=_local(wa_room.first_at, self._tz),
                    last=_local(wa_room.last_at, self._tz),
                )
            )
        if len(lines) == 2:
            lines.append(_("none yet (the customer never wrote)"))
        lines.append(
            _("Templates sent: {count}").format(
                count=await self._store.templates_sent(0, float("inf"), room.room_id)
            )
        )
        return "\n".join(lines)

    async def _status(self) -> str:
        ready, report = await self._health.report()
        queue = report.get("inbound_queue", {})
        outbound = report.get("outbound_queue", {})
        last = report.get("last_callback_at")
        errors = self._last_errors()
        lines = [
            _("<b>Bridge ready</b>") if ready else _("<b>Bridge NOT ready</b>"),
            f"Telegram: {report.get('telegram', {}).get('state')}, "
            f"NusaSMS: {report.get('nusasms', {}).get('state')}",
            _("To Telegram: {waiting} waiting (oldest {age:.0f} s)").format(
                waiting=queue.get("waiting", 0), age=queue.get("oldest_age_seconds") or 0
            ),
            _("To WhatsApp: {waiting} waiting (oldest {age:.0f} s)").format(
                waiting=outbound.get("waiting", 0), age=outbound.get("oldest_age_seconds") or 0
            ),
            _("Last callback: {when}").format(
                when=_local(last, self._tz) if last else _("none yet")
            ),
            _("Last error: {error}").format(
                error=html.escape(self._health.redact(errors[0])) if errors else _("none")
            ),
            await self._templates_sent(),
        ]
        return "\n".join(lines)


def _topic_link(chat_id: int, topic_id: int) -> str:
    internal = str(chat_id).removeprefix("-100").lstrip("-")
    return f"https://t.me/c/{internal}/{topic_id}"
