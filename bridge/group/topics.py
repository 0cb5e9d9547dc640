"""Each WhatsApp room has one topic in the forum group: created, reopened, recreated here.

Every call into the group that posts, edits, renames, closes, reopens, pins or reacts goes
through `Topics` and counts against the group's one budget, by priority: customers'
messages (`post`, with the topic, header and reopening they need) first, the bridge's
notices next, background calls (reactions, renames) last. It waits as long as a 429 asks
(up to a cap) and repairs a topic someone closed or deleted.

What Telegram did is remembered in memory until the database has recorded it: a topic
created, a header posted, a topic reopened. A write that fails after a successful call is
retried on its own later; the call is never repeated blindly (a second topic for a room, a
second header).
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
from telegram.error import BadRequest, ChatMigrated, RetryAfter, TelegramError

from bridge.core.pacing import BACKGROUND, CUSTOMER, NOTICE, GroupBudget
from bridge.core.store import Room, Store
from bridge.group import render

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


def is_not_modified(exc: BadRequest) -> bool:
    """Telegram says the topic already is as asked (e.g. reopening an open topic)."""
    return "topic_not_modified" in exc.message.lower()


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
        # Told of every group call's outcome (None: it worked), e.g. for /healthz to see a
        # bot that was removed from the group.
        self.on_outcome: Callable[[BaseException | None], None] = _ignore_outcome
        # Done at Telegram, not yet recorded: room -> topic created / topic with its header.
        self._unrecorded_topics: dict[str, int] = {}
        self._unrecorded_headers: dict[str, int] = {}
        # Rooms whose topic was reopened but is still recorded as closed.
        self._unrecorded_reopens: set[str] = set()
        # Rooms whose topic was closed with /close but is not yet recorded as closed.
        self._unrecorded_closes: set[str] = set()

    async def post(
        self, room_id: str, html: str, *, plain: bool = False, priority: int = CUSTOMER
    ) -> Message:
        """Post `html` (or `plain` text) into the room's topic, making or repairing the topic.

        A topic an operator closed with /close is reopened first: a bot allowed to manage
        topics may post into a closed topic without any error, and nobody would notice.
        """
        room = await self._current(room_id)
        topic_id = await self._ready_topic(room, priority)
        await self._reopen_if_closed(room, topic_id, priority)
        try:
            return await self._send(topic_id, html, plain=plain, priority=priority)
        except BadRequest as exc:
            if is_topic_closed(exc):
                # Closed where the bridge did not see it (the Telegram app), and this bot
                # may not post into closed topics.
                log.info("topic %d of room %s was closed; reopening", topic_id, room_id)
                await self._reopen(topic_id, priority)
                return await self._send(topic_id, html, plain=plain, priority=priority)
            if is_topic_gone(exc):
                log.info("topic %d of room %s is gone; making a new one", topic_id, room_id)
                await self._store.set_topic(room_id, None)
                topic_id = await self._ready_topic(await self._current(room_id), priority)
                return await self._send(topic_id, html, plain=plain, priority=priority)
            raise

    async def prepare(self, room_id: str, *, priority: int = CUSTOMER) -> None:
        """Make sure the room's topic and header exist, then wait for the group's budget.

        Called before reading what to post, so the post carries everything that arrived
        while waiting instead of a stale picture.
        """
        await self._ready_topic(await self._current(room_id), priority)
        await self._budget.ready(priority=priority)

    async def closed(self, room_id: str) -> None:
        """An operator closed the room's topic (with /close): reopen it before the next post."""
        self._unrecorded_reopens.discard(room_id)
        self._unrecorded_closes.add(room_id)
        await self._store.set_closed(room_id, True)
        self._unrecorded_closes.discard(room_id)

    async def closed_in_telegram(self, topic_id: int, *, closed: bool) -> None:
        """Someone closed (or reopened) a topic in the Telegram app: track it like /close."""
        room = await self._store.room_by_topic(topic_id)
        if room is None:
            return
        if closed:
            await self.closed(room.room_id)
            return
        self._unrecorded_closes.discard(room.room_id)
        await self._store.set_closed(room.room_id, False)

    async def record(self) -> None:
        """Write every outcome still only in memory; raises StoreError if the database cannot."""
        for room_id, topic_id in list(self._unrecorded_topics.items()):
            await self._store.set_topic(room_id, topic_id)
            del self._unrecorded_topics[room_id]
        for room_id, topic_id in list(self._unrecorded_headers.items()):
            room = await self._store.room(room_id)
            if room is not None and room.topic_id == topic_id:
                await self._store.header_posted(room_id)
            del self._unrecorded_headers[room_id]
        for room_id in list(self._unrecorded_closes):
            await self._store.set_closed(room_id, True)
            self._unrecorded_closes.discard(room_id)
        for room_id in list(self._unrecorded_reopens):
            await self._store.set_closed(room_id, False)
            self._unrecorded_reopens.discard(room_id)

    @property
    def unrecorded(self) -> int:
        """How many Telegram outcomes wait for the database to record them."""
        return (
            len(self._unrecorded_topics)
            + len(self._unrecorded_headers)
            + len(self._unrecorded_reopens)
            + len(self._unrecorded_closes)
        )

    async def _current(self, room_id: str) -> Room:
        room = await self._store.room(room_id)
        if room is None:
            raise LookupError(f"unknown room {room_id}")
        return room

    async def _ready_topic(self, room: Room, priority: int = CUSTOMER) -> int:
        room_id = room.room_id
        topic_id = room.topic_id
        if topic_id is None:
            topic_id = self._unrecorded_topics.get(room_id)
            if topic_id is None:
                topic = await self._call(
                    lambda: self._bot.create_forum_topic(
                        self._chat_id, render.topic_name(room.sender_number)
                    ),
                    priority,
                )
                topic_id = self._unrecorded_topics[room_id] = topic.message_thread_id
                log.info("room %s has a new topic %d", room_id, topic_id)
            await self._store.set_topic(room_id, topic_id)
            del self._unrecorded_topics[room_id]
        elif not room.header_pending:
            return topic_id
        if self._unrecorded_headers.get(room_id) != topic_id:
            header = render.header_html(
                number=room.sender_number,
                room_id=room_id,
                window_closes_at=datetime.fromtimestamp(
                    room.last_inbox_at + self._window_seconds, UTC
                ),
                tz=self._tz,
            )
            await self._send(topic_id, header, priority=priority)
            self._unrecorded_headers[room_id] = topic_id
        await self._store.header_posted(room_id)
        self._unrecorded_headers.pop(room_id, None)
        return topic_id

    async def _reopen_if_closed(self, room: Room, topic_id: int, priority: int) -> None:
        room_id = room.room_id
        if not (room.closed or room_id in self._unrecorded_closes):
            self._unrecorded_reopens.discard(room_id)
            return
        if room_id not in self._unrecorded_reopens:
            log.info("reopening topic %d of room %s for the customer's message", topic_id, room_id)
            await self._reopen(topic_id, priority)
            self._unrecorded_reopens.add(room_id)
            self._unrecorded_closes.discard(room_id)
        if room.closed:
            await self._store.set_closed(room_id, False)
        self._unrecorded_reopens.discard(room_id)

    async def _reopen(self, topic_id: int, priority: int) -> None:
        try:
            await self._call(
                lambda: self._bot.reopen_forum_topic(self._chat_id, topic_id), priority
            )
        except BadRequest as exc:
            if not is_not_modified(exc):  # already open: someone reopened it by hand
                raise

    async def _send(
        self, topic_id: int, html: str, *, plain: bool = False, priority: int
    ) -> Message:
        return await self._call(
            lambda: self._bot.send_message(
                self._chat_id,
                html,
                parse_mode=None if plain else ParseMode.HTML,
                message_thread_id=topic_id,
                link_preview_options=_NO_PREVIEW,
            ),
            priority,
        )

    async def create_topic(self, name: str, *, priority: int = NOTICE) -> int:
        """A new topic of the bridge's own (e.g. for alerts); returns its id."""
        topic = await self._call(
            lambda: self._bot.create_forum_topic(self._chat_id, name), priority
        )
        return topic.message_thread_id

    async def notify(
        self,
        topic_id: int | None,
        html: str,
        *,
        reply_to: int | None = None,
        markup: InlineKeyboardMarkup | None = None,
        priority: int = NOTICE,
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
            ),
            priority,
        )

    @property
    def budget(self) -> GroupBudget:
        """The group's budget every call here counts against."""
        return self._budget

    @property
    def bot(self) -> Bot:
        """The bot everything is posted with."""
        return self._bot

    async def call(
        self,
        request: Callable[[], Awaitable[T]],
        *,
        counts: bool = True,
        priority: int | None = None,
    ) -> T:
        """Any other request into the group, within the budget, waiting out 429s.

        Every call counts: `priority` defaults to NOTICE, or to BACKGROUND with
        `counts=False` (what reactions and edits passed when they were not counted).
        `request` runs only once the slot is taken, so it may read then what to send.
        """
        if priority is None:
            priority = NOTICE if counts else BACKGROUND
        return await self._call(request, priority)

    async def _call(self, request: Callable[[], Awaitable[T]], priority: int = NOTICE) -> T:
        """One request into the group, within the budget, waiting out 429s."""
        for _ in range(_MAX_RETRY_AFTER_ROUNDS):
            slot = await self._budget.acquire(priority=priority)
            try:
                result = await request()
            except ChatMigrated as exc:
                self.on_outcome(exc)
                await self.on_migrated(exc.new_chat_id)
                raise
            except RetryAfter as exc:
                self._budget.release(slot)
                asked = retry_after_seconds(exc)
                seconds = self._budget.pause(asked)
                if seconds < asked:
                    log.warning(
                        "Telegram asks to wait %.0f s; pausing the group for %.0f s (the cap), "
                        "then trying again",
                        asked,
                        seconds,
                    )
                else:
                    log.warning("Telegram asks to wait %.0f s (group budget)", seconds)
                continue
            except TelegramError as exc:
                self.on_outcome(exc)
                raise
            finally:
                self._budget.finish(slot)
            self.on_outcome(None)
            return result
        slot = await self._budget.acquire(priority=priority)
        try:
            result = await request()
        except TelegramError as exc:
            self.on_outcome(exc)
            raise
        finally:
            self._budget.finish(slot)
        self.on_outcome(None)
        return result


def _ignore_outcome(_: BaseException | None) -> None:
    pass


async def _ignore_migration(new_chat_id: int) -> None:
    log.error("the group moved to id %d", new_chat_id)
