"""Operators choose and send templates from Telegram: /templates, /template, a guided flow.

- `/templates [CHANNEL]` anywhere in the group lists the approved templates (name,
  category, language, body with its numbered placeholders, how to send it) with one button
  each; templates not approved are listed apart with their status.
- `/template NAME v1 | v2 ...` in a customer's topic sends one. Values are split on "|",
  or, without any "|", like a shell (`"Budi Santoso" ORD-1`). Their order is the message's:
  the header's (a TEXT header's `{{1}}`, or a media header's URL, left out when the command
  replies to a photo, video or document), the body's `{{1}}`, `{{2}}`..., then each URL
  button's suffix. A wrong count is refused before anything is sent, naming what it takes.
- Tapping a template's button inside a topic asks for each value in turn: the next message
  of that operator in that topic is the answer (a file, for a media header), /cancel stops.
  Then a preview with Send and Cancel; Send queues it (`replies.queue_template`).

The guided flows live in memory only: one per operator and topic, forgotten after
`FLOW_TIMEOUT_SECONDS` without an answer, and by a restart (the operator taps again).
"""

from __future__ import annotations

import html
import logging
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from telegram import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from telegram.error import TelegramError

from bridge.channels.templates import (
    MEDIA_KINDS,
    Catalog,
    ChannelError,
    TemplateMessage,
    TemplateSpec,
)
from bridge.core.pacing import BACKGROUND
from bridge.core.store import Room, Store, StoreError
from bridge.core.texts import _
from bridge.group.replies import attachment_of, queue_template
from bridge.group.topics import Topics
from bridge.nusasms import NusaSMSError, ReplyMessageType

log = logging.getLogger(__name__)

FLOW_TIMEOUT_SECONDS = 600.0
PICK_PREFIX = "tpl:"
SEND_PREFIX = "tplsend:"
CANCEL_PREFIX = "tplcancel:"
# Telegram refuses a message longer than 4096 characters; a body is cut after this many.
MAX_LIST_CHARS = 3500
MAX_BODY_CHARS = 300
_MEDIA_OF = {
    ReplyMessageType.IMAGE: "image",
    ReplyMessageType.VIDEO: "video",
    ReplyMessageType.DOCUMENT: "document",
}


@dataclass(slots=True)
class _Flow:
    """One operator filling in one template in one topic."""

    spec: TemplateSpec
    channel_id: str
    room_id: str
    asked_at: float
    values: list[str] = field(default_factory=list)
    header_file_id: str | None = None
    slots: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Preview:
    room_id: str
    operator_id: int
    message: TemplateMessage


def split_values(text: str) -> list[str]:
    """The values of a /template command (after its name); ValueError on unclosed quotes."""
    text = text.strip()
    if not text:
        return []
    if "|" in text:
        return [_unquoted(part.strip()) for part in text.split("|")]
    return shlex.split(text)


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def usage(spec: TemplateSpec) -> str:
    """How to send a template by command, e.g. `/template name <{{1}}> | <{{2}}>`."""
    slots = " | ".join(f"<{slot}>" for slot in spec.slots())
    return f"/template {spec.name} {slots}".rstrip()


class TemplatePicker:
    """Answers /templates and /template, runs the guided flows."""

    def __init__(
        self,
        store: Store,
        topics: Topics,
        catalog: Catalog,
        *,
        chat_id: int,
        operator_ids: Sequence[int],
        on_queued: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._topics = topics
        self._catalog = catalog
        self._chat_id = chat_id
        self._operators = frozenset(operator_ids)
        self._on_queued = on_queued
        self._clock = clock
        self._flows: dict[tuple[int, int], _Flow] = {}
        self._previews: dict[int, _Preview] = {}

    def _allowed(self, message: Message) -> bool:
        user = message.from_user
        return (
            message.chat_id == self._chat_id
            and user is not None
            and not user.is_bot
            and message.sender_chat is None
            and (not self._operators or user.id in self._operators)
        )

    # --- commands ---------------------------------------------------------------------

    async def handle_command(self, message: Message) -> bool:
        """Answer /templates, /template or /cancel; False for any other command."""
        if message.text is None or not self._allowed(message):
            return False
        head, _sep, rest = message.text.partition(" ")
        name = head[1:].split("@")[0].lower()
        if name not in ("templates", "template", "cancel"):
            return False
        topic_id = message.message_thread_id if message.is_topic_message else None
        try:
            if name == "templates":
                await self._list(topic_id, message.message_id, rest.strip() or None)
            elif name == "cancel":
                await self._cancel(message, topic_id)
            else:
                await self._template(message, topic_id, rest)
        except NusaSMSError as exc:
            log.warning("cannot read the templates: %s", exc)
            await self._say(
                topic_id,
                message.message_id,
                _("⚠️ NusaSMS did not give the templates just now: {error}").format(
                    error=html.escape(exc.reason(), quote=False)
                ),
            )
        return True

    async def show(self, topic_id: int) -> None:
        """The approved templates with a button each, posted in a topic (a new customer's)."""
        await self._list(topic_id, None, None)

    async def _list(self, topic_id: int | None, reply_to: int | None, channel: str | None) -> None:
        try:
            channel_id = await self._catalog.channel(channel)
        except ChannelError as exc:
            await self._say(topic_id, reply_to, _channel_refusal(exc))
            return
        channels = await self._catalog.channels()
        templates = await self._catalog.templates()
        approved = [t for t in templates if t.approved]
        others = [t for t in templates if not t.approved]
        lines = [_("<b>Templates</b> (channel <code>{channel}</code>)").format(channel=channel_id)]
        if not approved:
            lines.append(_("No approved template."))
        shown = 0
        for spec in approved:
            entry = _entry_html(spec)
            if sum(len(line) for line in lines) + len(entry) > MAX_LIST_CHARS:
                break
            lines.append(entry)
            shown += 1
        if shown < len(approved):
            lines.append(_("… and {count} more.").format(count=len(approved) - shown))
        if others:
            lines.append(_("<b>Not approved</b> (cannot be sent):"))
            lines.extend(f"• {html.escape(t.name)}: {html.escape(t.status)}" for t in others[:30])
        lines.append(_("Tap a template inside a customer's topic to fill it in step by step."))
        suffix = "" if channel is None else f":{channels.index(channel_id)}"
        keyboard = [
            [InlineKeyboardButton(spec.name[:60], callback_data=f"{PICK_PREFIX}{spec.id}{suffix}")]
            for spec in approved[:shown][:50]
            if len(f"{PICK_PREFIX}{spec.id}{suffix}".encode()) <= 64
        ]
        await self._topics.notify(
            topic_id,
            "\n\n".join(lines),
            reply_to=reply_to,
            markup=InlineKeyboardMarkup(keyboard) if keyboard else None,
        )

    async def _template(self, message: Message, topic_id: int | None, rest: str) -> None:
        room = None if topic_id is None else await self._store.room_by_topic(topic_id)
        if room is None:
            await self._say(
                topic_id, message.message_id, _("/template works inside a customer's topic.")
            )
            return
        name, _sep, raw_values = rest.strip().partition(" ")
        if not name:
            await self._say(
                topic_id,
                message.message_id,
                _("Usage: <code>/template NAME value1 | value2 …</code>; /templates lists them."),
            )
            return
        spec = await self._spec(name, topic_id, message.message_id)
        if spec is None:
            return
        try:
            values = split_values(raw_values)
        except ValueError as exc:
            await self._say(
                topic_id,
                message.message_id,
                _("🚫 Not sent: the values cannot be read ({error}).").format(
                    error=html.escape(str(exc), quote=False)
                ),
            )
            return
        header_file_id = _header_file(message, spec)
        try:
            channel_id = await self._catalog.channel()
            filled = spec.message(channel_id, values, header_file_id=header_file_id)
        except ChannelError as exc:
            await self._say(topic_id, message.message_id, _channel_refusal(exc))
            return
        except ValueError as exc:
            await self._say(
                topic_id,
                message.message_id,
                _("🚫 Not sent: {reason}.\nUsage: <code>{usage}</code>").format(
                    reason=html.escape(str(exc), quote=False),
                    usage=html.escape(usage(spec), quote=False),
                ),
            )
            return
        await self._queue(room, filled, message.message_id, _user_id(message), topic_id)

    async def _spec(self, name: str, topic_id: int | None, reply_to: int) -> TemplateSpec | None:
        """The approved template of that name, or None once the operator was told why not."""
        spec = await self._catalog.lookup(name)
        if spec is None:
            matches = self._catalog.close_matches(name)
            hint = (
                _(" Did you mean: {names}?").format(
                    names=", ".join(f"<code>{html.escape(m)}</code>" for m in matches)
                )
                if matches
                else _(" /templates lists them.")
            )
            await self._say(
                topic_id,
                reply_to,
                _("🚫 No template is called <code>{name}</code>.").format(
                    name=html.escape(name, quote=False)
                )
                + hint,
            )
            return None
        if not spec.approved:
            await self._say(
                topic_id,
                reply_to,
                _(
                    "🚫 Not sent: template <code>{name}</code> is not approved (status {status})."
                ).format(name=html.escape(spec.name), status=html.escape(spec.status)),
            )
            return None
        return spec

    async def _queue(
        self,
        room: Room,
        message: TemplateMessage,
        request_message_id: int,
        operator_id: int | None,
        topic_id: int | None,
    ) -> bool:
        try:
            await queue_template(
                self._store,
                room,
                message,
                request_message_id=request_message_id,
                operator_id=operator_id,
                now=self._clock(),
            )
        except StoreError as exc:
            log.error("cannot queue template %s: %s", message.template_name, exc)
            await self._say(
                topic_id,
                request_message_id,
                _("⚠️ Not sent: the bridge could not store this just now. Please try again."),
            )
            return False
        self._on_queued()
        return True

    # --- the guided flow ----------------------------------------------------------------

    async def on_button(self, query: CallbackQuery) -> None:
        """A template button, or Send / Cancel under a preview."""
        answer = await self._button(query)
        try:
            await query.answer(answer)
        except TelegramError as exc:
            log.info("cannot answer a template button: %s", exc)

    async def _button(self, query: CallbackQuery) -> str | None:
        data = query.data or ""
        user = query.from_user
        if self._operators and user.id not in self._operators:
            return _("Only operators can send templates.")
        message = query.message
        if not isinstance(message, Message) or message.chat_id != self._chat_id:
            return _("Unknown button.")
        if data.startswith(SEND_PREFIX) or data.startswith(CANCEL_PREFIX):
            return await self._preview_pressed(query, message, data.startswith(SEND_PREFIX))
        if not data.startswith(PICK_PREFIX):
            return _("Unknown button.")
        topic_id = message.message_thread_id if message.is_topic_message else None
        room = None if topic_id is None else await self._store.room_by_topic(topic_id)
        if room is None or topic_id is None:
            return _("Tap it inside a customer's topic.")
        template_id, _sep, channel_index = data[len(PICK_PREFIX) :].partition(":")
        try:
            templates = await self._catalog.templates()
            channels = await self._catalog.channels()
            wanted = channels[int(channel_index)] if channel_index else None
            channel_id = await self._catalog.channel(wanted)
        except (NusaSMSError, ChannelError, ValueError, IndexError) as exc:
            log.info("template button not usable: %s", exc)
            return _("The templates cannot be read just now.")
        spec = next((t for t in templates if t.id == template_id and t.approved), None)
        if spec is None:
            return _("This template is no longer approved.")
        flow = _Flow(spec, channel_id, room.room_id, self._clock(), slots=spec.slots())
        self._flows[(topic_id, user.id)] = flow
        await self._next_step(flow, topic_id, user.id, message.message_id)
        return None

    async def on_message(self, message: Message) -> bool:
        """An operator's message in a topic: True if it answered their guided flow."""
        if not self._allowed(message) or not message.is_topic_message:
            return False
        topic_id = message.message_thread_id
        user_id = _user_id(message)
        if topic_id is None or user_id is None:
            return False
        flow = self._flows.get((topic_id, user_id))
        if flow is None:
            return False
        if self._clock() - flow.asked_at > FLOW_TIMEOUT_SECONDS:
            del self._flows[(topic_id, user_id)]
            return False  # forgotten: the message is what it looks like
        if message.text is not None and message.text.startswith("/"):
            return False  # a command (/cancel is one)
        slot = len(flow.values) + (1 if flow.header_file_id else 0)
        media_slot = slot == 0 and flow.spec.header_kind in MEDIA_KINDS
        attachment = attachment_of(message)
        if media_slot and attachment is not None and attachment.kind in _MEDIA_OF:
            flow.header_file_id = attachment.file_id
        elif message.text is not None:
            flow.values.append(message.text)
        else:
            await self._say(topic_id, message.message_id, _("Please answer with text."))
            return True
        flow.asked_at = self._clock()
        await self._next_step(flow, topic_id, user_id, message.message_id)
        return True

    async def _next_step(self, flow: _Flow, topic_id: int, user_id: int, reply_to: int) -> None:
        done = len(flow.values) + (1 if flow.header_file_id else 0)
        if done < len(flow.slots):
            await self._say(
                topic_id,
                reply_to,
                _(
                    "✍️ <b>{name}</b>: send {slot} ({step} of {steps}) as your next message "
                    "here, or /cancel."
                ).format(
                    name=html.escape(flow.spec.name),
                    slot=html.escape(flow.slots[done], quote=False),
                    step=done + 1,
                    steps=len(flow.slots),
                ),
            )
            return
        del self._flows[(topic_id, user_id)]
        try:
            message = flow.spec.message(
                flow.channel_id, flow.values, header_file_id=flow.header_file_id
            )
        except ValueError as exc:
            await self._say(
                topic_id,
                reply_to,
                _("🚫 Not sent: {reason}.").format(reason=html.escape(str(exc), quote=False)),
            )
            return
        preview = await self._topics.notify(
            topic_id,
            _("<b>Preview</b> of {name}:\n\n{text}").format(
                name=html.escape(flow.spec.name), text=html.escape(message.text, quote=False)
            ),
            reply_to=reply_to,
            markup=InlineKeyboardMarkup(
                [
                    [
                        InlineKeyboardButton(_("✅ Send"), callback_data=f"{SEND_PREFIX}"),
                        InlineKeyboardButton(_("✖️ Cancel"), callback_data=f"{CANCEL_PREFIX}"),
                    ]
                ]
            ),
        )
        self._previews[preview.message_id] = _Preview(flow.room_id, user_id, message)
        self._forget_old_previews()

    def _forget_old_previews(self) -> None:
        # Previews nobody answers are bounded, oldest first out.
        while len(self._previews) > 200:
            del self._previews[next(iter(self._previews))]

    async def _preview_pressed(self, query: CallbackQuery, message: Message, send: bool) -> str:
        preview = self._previews.pop(message.message_id, None)
        if preview is None:
            return _("This preview was already answered (or the bridge restarted).")
        if send:
            room = await self._store.room(preview.room_id)
            if room is None:
                return _("Unknown room.")
            topic_id = message.message_thread_id
            queued = await self._queue(
                room, preview.message, message.message_id, query.from_user.id, topic_id
            )
            if not queued:
                self._previews[message.message_id] = preview
                return _("Not stored; press Send again.")
        try:
            await self._topics.call(
                lambda: query.edit_message_reply_markup(None), priority=BACKGROUND
            )
        except TelegramError as exc:
            log.info("cannot remove the preview's buttons: %s", exc)
        return _("Sending.") if send else _("Cancelled.")

    async def _cancel(self, message: Message, topic_id: int | None) -> None:
        user_id = _user_id(message)
        flow = None
        if topic_id is not None and user_id is not None:
            flow = self._flows.pop((topic_id, user_id), None)
        await self._say(
            topic_id,
            message.message_id,
            _("Cancelled.") if flow is not None else _("Nothing to cancel."),
        )

    async def _say(self, topic_id: int | None, reply_to: int | None, text: str) -> None:
        await self._topics.notify(topic_id, text, reply_to=reply_to)


def _header_file(message: Message, spec: TemplateSpec) -> str | None:
    """The photo, video or document the command replies to, for a media header."""
    replied = message.reply_to_message
    if replied is None or replied.message_id == message.message_thread_id:
        return None  # in a topic, every message "replies" to the topic's first message
    attachment = attachment_of(replied)
    if attachment is None or attachment.kind not in _MEDIA_OF:
        return None
    return attachment.file_id if spec.header_kind in MEDIA_KINDS else None


def _entry_html(spec: TemplateSpec) -> str:
    facts = " · ".join(html.escape(f) for f in (spec.category, spec.language or "") if f)
    body = spec.body if len(spec.body) <= MAX_BODY_CHARS else spec.body[:MAX_BODY_CHARS] + "…"
    header = ""
    if spec.header_kind in MEDIA_KINDS:
        header = f"[{spec.header_kind}]\n"
    elif spec.header_text:
        header = html.escape(spec.header_text, quote=False) + "\n"
    return (
        f"<b>{html.escape(spec.name)}</b> ({facts})\n{header}<i>{html.escape(body, quote=False)}"
        f"</i>\n<code>{html.escape(usage(spec), quote=False)}</code>"
    )


def _channel_refusal(exc: ChannelError) -> str:
    listed = ", ".join(f"<code>{html.escape(c)}</code>" for c in exc.channels) or "—"
    return _("🚫 {problem}. Channels: {channels}").format(
        problem=html.escape(str(exc), quote=False), channels=listed
    )


def _user_id(message: Message) -> int | None:
    return message.from_user.id if message.from_user else None
