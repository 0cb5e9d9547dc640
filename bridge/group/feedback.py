"""What became of a reply, shown on the operator's own message in Telegram.

A reaction follows the reply's state (😴 still waiting after a minute, 🕊 accepted by
NusaSMS, 👌 delivered, 👀 read, 💔 failed); a failure or an unknown outcome also gets a
notice with the reason and a Retry button, and a reply NusaSMS keeps turning away (busy,
unreachable) one notice saying so and until when it keeps trying. What is due is derived
from the database (`display` vs `shown`), so nothing is lost when Telegram is down: it is
shown once Telegram answers again.

A template message is shown as a message of its own in the topic (its rendered text),
posted here once its row is stored; its reactions and notices go on that message. A crash
between the post and its record posts the text once more, never the template.

Reactions wait behind customers' messages in the group's budget (BACKGROUND). A reaction
reads the reply's state only once its slot is taken, so a state superseded while it
waited (🕊 then 👌) is never sent: the newest one goes out, once.
"""

from __future__ import annotations

import html
import logging
import sqlite3
from datetime import UTC, datetime, tzinfo

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, ReactionTypeEmoji
from telegram.error import BadRequest, Forbidden, TelegramError

from bridge.core.pacing import BACKGROUND, backoff_delay
from bridge.core.store import Reply, Store, StoreError
from bridge.core.texts import _
from bridge.core.workers import ErrorLog, Worker
from bridge.group.topics import Topics

log = logging.getLogger(__name__)

REACTIONS = {
    # Telegram offers no hourglass among the reactions bots may set.
    "waiting": "😴",
    "accepted": "🕊",
    "delivered": "👌",
    "read": "👀",
    "failed": "💔",
    "unknown": "🤔",
    # Kept until the customer writes again (no hourglass either: a writing hand).
    "pending": "✍",
    "expired": "💔",
}
RETRY_PREFIX = "retry:"
IDLE_POLL_SECONDS = 30.0


def retry_markup(reply_id: int) -> InlineKeyboardMarkup:
    """The Retry button under a failure notice."""
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(_("🔁 Retry"), callback_data=f"{RETRY_PREFIX}{reply_id}")]]
    )


def notice_html(reply: Reply, window_closes: str | None = None) -> str | None:
    """The notice a reply's state needs, if any (`window_closes`: when, for a waiting one)."""
    reason = html.escape(reply.error or _("no reason given"), quote=False)
    if reply.display == "waiting":
        if reply.error is None:
            return None  # it waits behind an earlier reply of the room, which says why
        until = (
            _(", until the reply window closes at {when}").format(when=window_closes)
            if window_closes
            else ""
        )
        return _(
            "⏳ <b>Not sent yet.</b> NusaSMS is busy or unreachable (last attempt: {reason}). "
            "The bridge keeps trying{until}; this message and the ones after it go out "
            "in order as soon as NusaSMS takes them."
        ).format(reason=reason, until=until)
    if reply.display == "expired":
        return _("🗑 <b>Dropped, not sent to WhatsApp.</b>\nReason: {reason}").format(reason=reason)
    if reply.display == "failed":
        return _("💔 <b>Not delivered to WhatsApp.</b>\nReason: {reason}").format(reason=reason)
    if reply.display == "unknown":
        return _(
            "🤔 <b>Outcome unknown.</b> NusaSMS may or may not have sent this message "
            "({reason}).\nCheck with the customer before you press Retry: it sends it again."
        ).format(reason=reason)
    return None


class Feedback(Worker):
    """Owns the worker that reflects reply states onto operators' messages."""

    name = "feedback"

    def __init__(
        self,
        store: Store,
        topics: Topics,
        *,
        chat_id: int,
        window_seconds: float = 24 * 3600.0,
        tz: tzinfo = UTC,
    ) -> None:
        super().__init__()
        self._store = store
        self._topics = topics
        self._chat_id = chat_id
        self._window_seconds = window_seconds
        self._tz = tz
        self._errors = ErrorLog(log)

    async def _run(self) -> None:
        while True:
            timeout: float | None = IDLE_POLL_SECONDS
            try:
                for reply in await self._store.templates_to_post(20):
                    await self._post_template(reply)
                for reply in await self._store.feedback_due(50):
                    if reply.kind == "template" and reply.post_message_id is None:
                        continue  # queued meanwhile: shown once its text is posted
                    shown = await self._show(reply)
                    await self._store.mark_shown(shown.id, shown.display)
            except (TelegramError, StoreError, sqlite3.Error) as exc:
                timeout = backoff_delay(self._errors.failures("show"))
                self._errors.failed("show", "cannot show reply states yet: %s", exc)
            else:
                self._errors.recovered("show", "reply states are shown again")
            await self._doze(timeout)

    async def _post_template(self, reply: Reply) -> None:
        """Show a template message's rendered text in its topic, as a message of its own."""
        text = _("📨 <b>Template</b>\n{text}").format(
            text=html.escape(reply.text or "", quote=False)
        )
        try:
            message = await self._topics.post(reply.room_id, text)
        except (BadRequest, Forbidden, LookupError) as exc:
            # It can never be posted: its reactions go on the message that asked for it.
            log.warning("cannot show template %d in its topic: %s", reply.id, exc)
            await self._store.template_posted(reply.id, reply.operator_message_id)
            return
        await self._store.template_posted(reply.id, message.message_id)

    async def _show(self, reply: Reply) -> Reply:
        """Show the reply's state; returns the reply as shown (its state may have moved on)."""
        if reply.display in REACTIONS:
            seen = reply

            async def react() -> None:
                nonlocal seen
                # The slot is ours now: show the newest state, not the one that was due.
                seen = await self._store.reply(reply.id) or reply
                emoji = REACTIONS.get(seen.display)
                if emoji is not None:
                    await self._topics.bot.set_message_reaction(
                        self._chat_id, seen.shown_on, ReactionTypeEmoji(emoji)
                    )

            try:
                await self._topics.call(react, priority=BACKGROUND)
            except (BadRequest, Forbidden) as exc:
                # The operator's message was deleted, or reactions are off: nothing to mark.
                log.info("cannot react to message %d: %s", reply.shown_on, exc)
            reply = seen
        if notice_html(reply) is None:
            return reply
        room = await self._store.room(reply.room_id)
        if room is None or room.topic_id is None:
            return reply
        closes = datetime.fromtimestamp(room.last_inbox_at + self._window_seconds, UTC)
        # No reply window holds a template back.
        when = None if reply.kind == "template" else f"{closes.astimezone(self._tz):%d %b %H:%M}"
        notice = notice_html(reply, when)
        assert notice is not None
        try:
            await self._topics.notify(
                room.topic_id,
                notice,
                reply_to=reply.shown_on,
                # Only a reply that was given up can be retried; a waiting one is retried.
                # An expired one would only be kept again: the window is still closed.
                markup=None if reply.display in ("waiting", "expired") else retry_markup(reply.id),
            )
        except (BadRequest, Forbidden) as exc:
            # The topic was deleted (or the bot lost its rights): this notice can never be
            # posted, and retrying it would hold up every later reply's state.
            log.warning("cannot post the notice of reply %d: %s", reply.id, exc)
        return reply
