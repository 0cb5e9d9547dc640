"""Operators' messages in a room's topic become replies queued for WhatsApp.

Only people (no bots, no posts on behalf of a chat), in the configured group, inside a
known room's topic, and on the allowlist when one is set, reach a customer. Commands and
internal notes stay in Telegram. A reply outside the 24-hour window, or of a kind WhatsApp
cannot carry, is refused with a notice in the topic; nothing is sent.

Text starting with "/" that is no command of the bridge (`/home/user is the folder`) is not
sent either, since a mistyped command must never reach a customer; the operator is told
that a leading backslash sends it (`\\/home/user ...` reaches WhatsApp as `/home/user ...`).
"""

from __future__ import annotations

import html
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from telegram import (
    Bot,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
)
from telegram.error import BadRequest, TelegramError

from bridge.channels.outbox import TEMPLATE, AttachmentRefused, AttachmentUnavailable
from bridge.channels.templates import TemplateMessage
from bridge.core import texts
from bridge.core.pacing import BACKGROUND
from bridge.core.store import NewReply, Room, Store, StoreError
from bridge.core.texts import N_, _
from bridge.core.workers import ErrorLog
from bridge.group import markup
from bridge.group.commands import bot_commands
from bridge.group.feedback import RETRY_PREFIX
from bridge.group.reopen import ReopenTemplates, ReopenUnavailable
from bridge.group.topics import Topics
from bridge.nusasms import ReplyMessageType

log = logging.getLogger(__name__)

# What a Retry button carries: our prefix and a reply id (one SQLite can hold, or unknown).
_RETRY_DATA = re.compile(rf"{re.escape(RETRY_PREFIX)}([0-9]+)")
_MAX_ROW_ID = 2**63 - 1
# A reopen button: our prefix, the pending reply's id, the template's index in the config.
REOPEN_PREFIX = "reopen:"
_REOPEN_DATA = re.compile(rf"{re.escape(REOPEN_PREFIX)}([0-9]+):([0-9]{{1,3}})")
# A backslash before a leading "/" sends the text as it is, without the backslash.
ESCAPE = "\\"
SENDING_AGAIN = N_("Sending again.")

# Bots may download files up to 20 MB from Telegram's Bot API.
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024

# Kinds the reply endpoint cannot carry, by the Message attribute that holds them.
_UNSUPPORTED = {
    "sticker": N_("stickers"),
    "video_note": N_("round video messages"),
    "location": N_("locations"),
    "venue": N_("venues"),
    "contact": N_("contacts"),
    "poll": N_("polls"),
    "dice": N_("dice"),
    "game": N_("games"),
    "story": N_("stories"),
    "paid_media": N_("paid media"),
    "invoice": N_("invoices"),
    "checklist": N_("checklists"),
}


@dataclass(frozen=True, slots=True)
class Attachment:
    """The file part of an operator's message."""

    kind: ReplyMessageType
    file_id: str
    file_name: str
    mime: str
    size: int | None


# Media kinds in the order they are checked: a GIF arrives as both animation and
# document, and is a (silent) video for WhatsApp. (attribute, type, default name, mime)
_MEDIA: tuple[tuple[str, ReplyMessageType, str, str], ...] = (
    ("animation", ReplyMessageType.VIDEO, "animation.mp4", "video/mp4"),
    ("video", ReplyMessageType.VIDEO, "video.mp4", "video/mp4"),
    ("voice", ReplyMessageType.VOICE, "voice.ogg", "audio/ogg"),
    ("audio", ReplyMessageType.AUDIO, "audio.mp3", "audio/mpeg"),
    ("document", ReplyMessageType.DOCUMENT, "document", "application/octet-stream"),
)


def attachment_of(message: Message) -> Attachment | None:
    """The media of a message, mapped to the reply endpoint's types."""
    if message.photo:
        photo = message.photo[-1]  # the largest size
        return Attachment(
            ReplyMessageType.IMAGE, photo.file_id, "photo.jpg", "image/jpeg", photo.file_size
        )
    for attribute, kind, default_name, default_mime in _MEDIA:
        media = getattr(message, attribute)
        if media:
            return Attachment(
                kind,
                media.file_id,
                getattr(media, "file_name", None) or default_name,
                media.mime_type or default_mime,
                media.file_size,
            )
    return None


def unsupported_kind(message: Message) -> str | None:
    """What the message holds that WhatsApp replies cannot carry, if anything."""
    for attribute, name in _UNSUPPORTED.items():
        if getattr(message, attribute, None):
            return name
    return None


async def fetch_file(bot: Bot, file_id: str) -> bytes:
    """Download an operator's file from Telegram (the link, with its token, stays here)."""
    try:
        file = await bot.get_file(file_id)
        if file.file_size is not None and file.file_size > MAX_DOWNLOAD_BYTES:
            raise AttachmentRefused(_("the file is larger than the 20 MB bots may fetch"))
        return bytes(await file.download_as_bytearray())
    except BadRequest as exc:
        if "too big" in exc.message.lower():
            raise AttachmentRefused(_("the file is larger than the 20 MB bots may fetch")) from exc
        if "invalid file_id" in exc.message.lower() or "file not found" in exc.message.lower():
            raise AttachmentRefused(_("Telegram no longer has this file")) from exc
        raise AttachmentUnavailable(exc.message) from exc
    except TelegramError as exc:
        raise AttachmentUnavailable(exc.message) from exc


async def queue_template(
    store: Store,
    room: Room,
    message: TemplateMessage,
    *,
    request_message_id: int,
    operator_id: int | None,
    now: float,
) -> int | None:
    """Queue a template message to the room's customer; its outbound id, None if queued before.

    It shares the replies' durable queue (and its rule: a request that may have reached
    NusaSMS is never resent by itself); the outbox sends it as a broadcast to the customer's
    number, whatever the reply window. `request_message_id` is the Telegram message that
    asked for it (a command, a pressed button's message): asking twice queues it once.
    Its rendered text is posted in the topic by the feedback worker, which shows its
    reactions there. The caller wakes the outbox (and the feedback worker).
    """
    reply_id = await store.add_reply(
        NewReply(
            room.room_id,
            request_message_id,
            operator_id,
            TEMPLATE,
            message.text,
            template=message.to_json(),
        ),
        now,
    )
    if reply_id is not None:
        log.info(
            "template %s queued as %d for room %s by operator %s",
            message.template_name,
            reply_id,
            room.room_id,
            operator_id,
        )
    return reply_id


class Replies:
    """Turns operators' Telegram messages into queued replies."""

    def __init__(
        self,
        store: Store,
        topics: Topics,
        *,
        chat_id: int,
        operator_ids: Sequence[int],
        note_prefix: str,
        window_seconds: float,
        tz: tzinfo,
        on_queued: Callable[[], None],
        clock: Callable[[], float] = time.time,
        reopen: ReopenTemplates | None = None,
        auto_reopen: bool = False,
        pending_max_age: float = 24 * 3600.0,
    ) -> None:
        self._store = store
        self._topics = topics
        self._chat_id = chat_id
        self._operators = frozenset(operator_ids)
        self._note_prefix = note_prefix
        self._window_seconds = window_seconds
        self._tz = tz
        self._on_queued = on_queued
        self._clock = clock
        # Without reopen templates a reply into a closed window is refused: no dead end
        # would be offered, only a wait.
        self._reopen = reopen if reopen is not None and reopen.entries else None
        self._auto_reopen = auto_reopen
        self._pending_max_age = pending_max_age
        self._commands = frozenset(c.command.lower() for c in bot_commands())
        self._errors = ErrorLog(log)

    async def room_of(self, message: Message) -> Room | None:
        """The room an operator's message answers, or None if it is not a reply at all."""
        if message.chat_id != self._chat_id:
            return None
        if not message.is_topic_message or message.message_thread_id is None:
            return None  # the General topic
        user = message.from_user
        if user is None or user.is_bot or message.sender_chat is not None:
            return None
        if self._operators and user.id not in self._operators:
            return None
        return await self._store.room_by_topic(message.message_thread_id)

    async def on_message(self, message: Message) -> None:
        """A new message in the group."""
        room = await self.room_of(message)
        if room is None or room.topic_id is None:
            return
        text = message.text
        said = text if text is not None else message.caption
        if self._note_prefix and said is not None and said.startswith(self._note_prefix):
            return  # a note between operators (a captioned file is one too)
        if text is not None and text.startswith("/"):
            if not self._is_command(text):
                await self._notice(room, message, _not_a_command_html(text))
            return  # a command: Commands answers it
        attachment = attachment_of(message)
        if text is None and attachment is None:
            what = unsupported_kind(message)
            if what is not None:
                await self._notice(
                    room,
                    message,
                    _("🚫 Not sent: {what} cannot be sent to WhatsApp.").format(what=_(what)),
                )
            return  # a service message (topic edited, pinned, ...)
        if attachment is not None and (attachment.size or 0) > MAX_DOWNLOAD_BYTES:
            size = (attachment.size or 0) / 1024 / 1024
            await self._notice(
                room,
                message,
                _(
                    "🚫 Not sent: the file is {size:.1f} MB, and bots can only fetch files up to "
                    "20 MB from Telegram. Send a smaller file, or a link to it."
                ).format(size=size),
            )
            return
        closes_at = room.last_inbox_at + self._window_seconds
        closed = self._clock() > closes_at
        if closed and self._reopen is None:
            when = datetime.fromtimestamp(closes_at, UTC).astimezone(self._tz)
            await self._notice(
                room,
                message,
                _(
                    "⏰ Not sent: the reply window closed at {when} "
                    "({tz}). Free-form replies are only possible within "
                    "{hours:g} hours of the customer's last message; the "
                    "customer has to write again (or reach them with an approved template)."
                ).format(
                    when=texts.strftime(when, "%d %b %H:%M"),
                    tz=html.escape(str(self._tz)),
                    hours=self._window_seconds / 3600,
                ),
            )
            return
        if attachment is None:
            text, entities = _unescaped(text or "", _entities(message.entities))
            body = markup.to_whatsapp(text, entities)
            new = NewReply(room.room_id, message.message_id, _user_id(message), "text", body)
        else:
            caption = message.caption or ""
            body = markup.to_whatsapp(caption, _entities(message.caption_entities))
            new = NewReply(
                room.room_id,
                message.message_id,
                _user_id(message),
                attachment.kind.value,
                body or None,
                attachment.file_id,
                attachment.file_name,
                attachment.mime,
            )
        try:
            if closed:
                await self._keep_pending(room, message, new)
                return
            reply_id = await self._store.add_reply(new, self._clock())
        except StoreError as exc:
            # Telegram will not deliver this update again: say so rather than lose it quietly.
            log.error("cannot queue the reply to room %s: %s", room.room_id, exc)
            await self._notice(
                room,
                message,
                _(
                    "⚠️ Not sent: the bridge could not store this message just now. "
                    "Please send it again."
                ),
            )
            return
        if reply_id is not None:
            log.info("reply %d queued for room %s (%s)", reply_id, room.room_id, new.kind)
            self._on_queued()

    async def _keep_pending(self, room: Room, message: Message, new: NewReply) -> None:
        """A reply into a closed window: kept until the customer writes again, offered a
        template that invites them to (or, with auto_reopen, sent one)."""
        assert self._reopen is not None
        template: NewReply | None = None
        why_not = ""
        if self._auto_reopen:
            try:
                filled = await self._reopen.message(0, room)
            except ReopenUnavailable as exc:
                why_not = str(exc)
                log.warning("cannot send the reopen template to room %s: %s", room.room_id, exc)
            else:
                # Its own row in the queue, keyed apart from the operator's message (Telegram
                # message ids are positive).
                template = NewReply(
                    room.room_id,
                    -message.message_id,
                    _user_id(message),
                    TEMPLATE,
                    filled.text,
                    template=filled.to_json(),
                )
        reply_id, reopened = await self._store.add_pending_reply(
            new, self._clock(), reopen=template, window=room.last_inbox_at
        )
        if reply_id is None:
            return  # this update was handled before
        log.info("reply %d kept pending: the window of room %s is closed", reply_id, room.room_id)
        self._on_queued()
        closes_at = room.last_inbox_at + self._window_seconds
        when = datetime.fromtimestamp(closes_at, UTC).astimezone(self._tz)
        text = _(
            "⏰ <b>Kept, not sent yet:</b> the reply window closed at {when} ({tz}). "
            "This message goes out by itself, in order, as soon as the customer writes again "
            "(if they do within {hours:g} hours)."
        ).format(
            when=texts.strftime(when, "%d %b %H:%M"),
            tz=html.escape(str(self._tz)),
            hours=self._pending_max_age / 3600,
        )
        if reopened:
            text += "\n" + _("📨 The bridge sent the template {name} to invite them back.").format(
                name=html.escape(self._reopen.entries[0].name)
            )
        else:
            if why_not:
                text += "\n" + _("The reopen template could not be sent: {reason}").format(
                    reason=html.escape(why_not)
                )
            text += "\n" + _("To invite the customer to write now, send a template:")
        buttons = (
            None
            if reopened
            else InlineKeyboardMarkup(
                [
                    [
                        InlineKeyboardButton(
                            _("📨 Send {name}").format(name=entry.name),
                            callback_data=f"{REOPEN_PREFIX}{reply_id}:{i}",
                        )
                    ]
                    for i, entry in enumerate(self._reopen.entries)
                ]
            )
        )
        assert room.topic_id is not None
        await self._topics.notify(room.topic_id, text, reply_to=message.message_id, markup=buttons)

    async def on_reopen(self, query: CallbackQuery) -> None:
        """A reopen button: send that template (once per notice), answer, drop the buttons."""
        answer, sent = await self._reopen_pressed(query)
        try:
            await query.answer(answer)
        except TelegramError as exc:
            self._errors.failed("answer", "cannot answer a reopen press: %s", exc)
        if sent:
            try:
                await self._topics.call(
                    lambda: query.edit_message_reply_markup(None), priority=BACKGROUND
                )
            except TelegramError as exc:
                log.info("cannot remove the reopen buttons: %s", exc)

    async def _reopen_pressed(self, query: CallbackQuery) -> tuple[str, bool]:
        match = _REOPEN_DATA.fullmatch(query.data or "")
        if match is None or self._reopen is None or query.message is None:
            return _("Unknown button."), False
        user = query.from_user
        if self._operators and user.id not in self._operators:
            return _("Only operators can send templates."), False
        reply_id, index = int(match.group(1)), int(match.group(2))
        if reply_id > _MAX_ROW_ID or index >= len(self._reopen.entries):
            return _("Unknown message."), False
        try:
            reply = await self._store.reply(reply_id)
            room = None if reply is None else await self._store.room(reply.room_id)
            if room is None:
                return _("Unknown message."), False
            try:
                filled = await self._reopen.message(index, room)
            except ReopenUnavailable as exc:
                return _("Not sent: {reason}").format(reason=str(exc))[:190], False
            queued = await queue_template(
                self._store,
                room,
                filled,
                request_message_id=query.message.message_id,
                operator_id=user.id,
                now=self._clock(),
            )
        except (StoreError, sqlite3.Error) as exc:
            log.error("cannot queue a reopen template: %s", exc)
            return _("The bridge could not store this just now. Press again in a moment."), False
        if queued is None:
            return _("A template was already sent from this message."), True
        self._on_queued()
        return _("Sending the template."), True

    async def on_edited(self, message: Message) -> None:
        """An operator edited a message: WhatsApp keeps the original."""
        room = await self.room_of(message)
        if room is None or room.topic_id is None:
            return
        if await self._store.reply_to_message(message.message_id) is None:
            return  # a note, a command or a refused message: nothing reached the customer
        await self._notice(
            room,
            message,
            _(
                "✏️ Edits do not reach WhatsApp: the customer keeps the first version. "
                "Send a new message to correct it."
            ),
        )

    def _is_command(self, text: str) -> bool:
        """`/name` of one of the bridge's commands, or `/name@bot` (meant for some bot)."""
        token = text.split(maxsplit=1)[0]
        return "@" in token or token[1:].lower() in self._commands

    async def on_retry(self, query: CallbackQuery) -> None:
        """The Retry button: queue the reply again (once), answer the press, drop the button.

        The answer is best effort: Telegram refuses answers to presses older than about 15
        s ("query is too old"), and the retry has happened by then anyway.
        """
        answer = await self._retry(query)
        try:
            await query.answer(answer)
        except TelegramError as exc:
            self._errors.failed("answer", "cannot answer a Retry press: %s", exc)
        else:
            self._errors.recovered("answer", "Retry presses are answered again")
        if answer == _(SENDING_AGAIN):
            try:
                await self._topics.call(
                    lambda: query.edit_message_reply_markup(None), priority=BACKGROUND
                )
            except TelegramError as exc:
                log.info("cannot remove a Retry button: %s", exc)

    async def _retry(self, query: CallbackQuery) -> str:
        """Requeue the reply a Retry press names; the short answer shown to the operator."""
        match = _RETRY_DATA.fullmatch(query.data or "")
        if match is None:
            return _("Unknown button.")
        user = query.from_user
        if self._operators and user.id not in self._operators:
            return _("Only operators can retry.")
        reply_id = int(match.group(1))
        if reply_id > _MAX_ROW_ID:
            return _("Unknown message.")
        try:
            if await self._store.reply(reply_id) is None:
                return _("Unknown message.")
            requeued = await self._store.requeue_reply(reply_id, self._clock())
        except (StoreError, sqlite3.Error) as exc:
            log.error("cannot queue reply %d again: %s", reply_id, exc)
            return _("The bridge could not store this just now. Press Retry again in a moment.")
        if requeued:
            log.info("reply %d queued again by operator %d", reply_id, user.id)
            self._on_queued()
            return _(SENDING_AGAIN)
        return _("Nothing to retry: it was already sent again.")

    async def _notice(self, room: Room, message: Message, text: str) -> None:
        assert room.topic_id is not None
        await self._topics.notify(room.topic_id, text, reply_to=message.message_id)


def _entities(entities: Sequence[MessageEntity] | None) -> Sequence[MessageEntity]:
    return entities or ()


def _not_a_command_html(text: str) -> str:
    token = text.split(maxsplit=1)[0][:40]
    example = html.escape(text[:40], quote=False)
    return _(
        "🚫 Not sent: <code>{token}</code> is no command of this "
        "bot, and messages starting with “/” stay in Telegram. To send text that starts "
        "with “/”, put a backslash before it: <code>{escaped}</code> "
        "(the customer gets it without the backslash)."
    ).format(token=html.escape(token, quote=False), escaped=f"{ESCAPE}{example}")


def _unescaped(text: str, entities: Sequence[MessageEntity]) -> tuple[str, Sequence[MessageEntity]]:
    """Text sent as `\\/...` loses its backslash; its formatting moves along with it."""
    if not text.startswith(ESCAPE + "/"):
        return text, entities
    shifted = []
    for entity in entities:
        start = max(entity.offset - 1, 0)
        end = entity.offset + entity.length - 1
        if end > start:
            shifted.append(
                MessageEntity(
                    entity.type,
                    start,
                    end - start,
                    url=entity.url,
                    user=entity.user,
                    language=entity.language,
                    custom_emoji_id=entity.custom_emoji_id,
                )
            )
    return text[1:], shifted


def _user_id(message: Message) -> int | None:
    return message.from_user.id if message.from_user else None
