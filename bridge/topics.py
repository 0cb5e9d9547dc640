"""Each WhatsApp room has one topic in the forum group: created, reopened, recreated here.

Every post into the group goes through `Topics.post`, which keeps Telegram's shared budget,
waits exactly as long as a 429 asks, and repairs a topic someone closed or deleted.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, tzinfo
from typing import TypeVar

from telegram import Bot, InlineKeyboardMarkup, LinkPreviewOptions, Message, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, RetryAfter

from bridge import render
from bridge.pacing import GroupBudget
from bridge.store import Room, Store

log = logging.getLogger(__name__)

T = TypeVar("T")

_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
# After this many 429s in a row for one post, let the caller back off instead.
_MAX_RETRY_AFTER_ROUNDS = 5


def is_topic_gone(exc: BadRequest) -> bool:
    """Telegram says the topic was deleted (PTB words it in more than one way)."""
    text = exc.message.lower()
    return "message thread not found" in text or "topic_deleted" in text


def is_topic_closed(exc: BadRequest) -> bool:
    """Telegram says the topic is closed."""
    return "topic_closed" in exc.message.lower()


def retry_after_seconds(exc: RetryAfter) -> float:
    """`retry_after` as seconds, whichever type this PTB version hands out."""
    with warnings.catch_warnings():
        # PTB 22 warns that the int will become a timedelta; both are handled here.
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value if isinstance(value, int | float) else value.total_seconds()


class Topics:
    """Finds or makes a room's topic and posts into it."""

    def __init__(
        self,
        bot: Bot,
        store: Store,
        budget: GroupBudget,
        *,
        chat_id: int,
        tz: tzinfo,
        window_hours: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bot = bot
        self._store = store
        self._budget = budget
        self._chat_id = chat_id
        self._tz = tz
        self._window_seconds = window_hours * 3600
        self._clock = clock
        # Told when Telegram says the group now lives under another id.
        self.on_migrated: Callable[[int], Awaitable[None]] = _ignore_migration

    async def post(self, room_id: str, html: str) -> Message:
        """Post `html` into the room's topic, making or repairing the topic as needed."""
        room = await self._current(room_id)
        topic_id = await self._ready_topic(room)
        try:
            return await self._send(topic_id, html)
        except BadRequest as exc:
            if is_topic_closed(exc):
                log.info("topic %d of room %s was closed; reopening", topic_id, room_id)
                await self._call(lambda: self._bot.reopen_forum_topic(self._chat_id, topic_id))
                return await self._send(topic_id, html)
            if is_topic_gone(exc):
                log.info("topic %d of room %s is gone; making a new one", topic_id, room_id)
                await self._store.set_topic(room_id, None)
                topic_id = await self._ready_topic(await self._current(room_id))
                return await self._send(topic_id, html)
            raise

    async def prepare(self, room_id: str) -> None:
        """Make sure the room's topic and header exist, then wait for the group's budget.

        Called before reading what to post, so the post carries everything that arrived
        while waiting instead of a stale picture.
        """
        await self._ready_topic(await self._current(room_id))
        await self._budget.ready()

    async def _current(self, room_id: str) -> Room:
        room = await self._store.room(room_id)
        if room is None:
            raise LookupError(f"unknown room {room_id}")
        return room

    async def _ready_topic(self, room: Room) -> int:
        topic_id = room.topic_id
        if topic_id is None:
            topic = await self._call(
                lambda: self._bot.create_forum_topic(
                    self._chat_id, render.topic_name(room.sender_number)
                )
            )
            topic_id = topic.message_thread_id
            await self._store.set_topic(room.room_id, topic_id)
            log.info("room %s has a new topic %d", room.room_id, topic_id)
        elif not room.header_pending:
            return topic_id
        header = render.header_html(
            number=room.sender_number,
            room_id=room.room_id,
            window_closes_at=datetime.fromtimestamp(room.last_inbox_at + self._window_seconds, UTC),
            tz=self._tz,
        )
        await self._send(topic_id, header)
        await self._store.header_posted(room.room_id)
        return topic_id

    async def _send(self, topic_id: int, html: str) -> Message:
        return await self._call(
            lambda: self._bot.send_message(
                self._chat_id,
                html,
                parse_mode=ParseMode.HTML,
                message_thread_id=topic_id,
                link_preview_options=_NO_PREVIEW,
            )
        )

    async def create_topic(self, name: str) -> int:
        """A new topic of the bridge's own (e.g. for alerts); returns its id."""
        topic = await self._call(lambda: self._bot.create_forum_topic(self._chat_id, name))
        return topic.message_thread_id

    async def notify(
        self,
        topic_id: int | None,
        html: str,
        *,
        reply_to: int | None = None,
        markup: InlineKeyboardMarkup | None = None,
    ) -> Message:
        """Post a notice of the bridge's own into a topic (as a reply, if `reply_to`)."""
        return await self._call(
            lambda: self._bot.send_message(
                self._chat_id,
                html,
                parse_mode=ParseMode.HTML,
                message_thread_id=topic_id,
                link_preview_options=_NO_PREVIEW,
                reply_parameters=None
                if reply_to is None
                else ReplyParameters(reply_to, allow_sending_without_reply=True),
                reply_markup=markup,
            )
        )

    @property
    def bot(self) -> Bot:
        """The bot everything is posted with."""
        return self._bot

    async def call(self, request: Callable[[], Awaitable[T]], *, counts: bool = True) -> T:
        """Any other request into the group, within the budget, waiting out 429s."""
        return await self._call(request, counts=counts)

    async def _call(self, request: Callable[[], Awaitable[T]], *, counts: bool = True) -> T:
        """One request into the group, within the budget, waiting out 429s."""
        for _ in range(_MAX_RETRY_AFTER_ROUNDS):
            slot = await self._budget.acquire(counts=counts)
            try:
                result = await request()
            except ChatMigrated as exc:
                await self.on_migrated(exc.new_chat_id)
                raise
            except RetryAfter as exc:
                self._budget.release(slot)
                seconds = retry_after_seconds(exc)
                log.warning("Telegram asks to wait %.0f s (group budget)", seconds)
                self._budget.pause(seconds)
                continue
            finally:
                self._budget.finish(slot)
            return result
        slot = await self._budget.acquire(counts=counts)
        try:
            return await request()
        finally:
            self._budget.finish(slot)


async def _ignore_migration(new_chat_id: int) -> None:
    log.error("the group moved to id %d", new_chat_id)
