"""The reply window, watched: one reminder before an unanswered window closes, one notice
when it has closed. What was said is remembered per customer message, across restarts."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo

from telegram.error import BadRequest, TelegramError

from bridge.core import texts
from bridge.core.store import Room, Store, StoreError
from bridge.core.texts import _
from bridge.core.workers import Worker
from bridge.group.topics import Topics, is_topic_closed, is_topic_gone

log = logging.getLogger(__name__)

CHECK_SECONDS = 30.0
# Closed-window notices are only posted this long after closing (not for ancient rooms).
CLOSED_NOTICE_HORIZON_SECONDS = 3600.0


class WindowReminders(Worker):
    """Owns the loop that posts window reminders and closed-window notices."""

    name = "window-reminders"

    def __init__(
        self,
        store: Store,
        topics: Topics,
        *,
        window_seconds: float,
        warn_seconds: float,
        tz: tzinfo,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self._store = store
        self._topics = topics
        self._window = window_seconds
        self._warn = min(warn_seconds, window_seconds)
        self._tz = tz
        self._clock = clock

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except (TelegramError, StoreError, sqlite3.Error) as exc:
                log.warning("window reminders not posted yet: %s", exc)
            except Exception:  # a bug must not end the reminders for good
                log.exception("window reminders failed unexpectedly")
            await asyncio.sleep(CHECK_SECONDS)

    async def check(self) -> int:
        """Post what is due now; returns how many posts were made."""
        now = self._clock()
        posted = 0
        for room in await self._store.rooms_to_remind(
            now - self._window, now - self._window + self._warn
        ):
            closes = room.last_inbox_at + self._window
            if await self._notify(
                room,
                _(
                    "⏳ The customer's message is unanswered and the reply window closes at "
                    "{when} (in {minutes:.0f} min)."
                ).format(when=self._local(closes), minutes=max(0, (closes - now) / 60)),
            ):
                posted += 1
            await self._store.window_noted(room.room_id, "reminded_for", room.last_inbox_at)
        closed = await self._store.rooms_just_closed(
            now - self._window - CLOSED_NOTICE_HORIZON_SECONDS, now - self._window
        )
        for room in closed:
            if await self._notify(
                room,
                _(
                    "🔒 The reply window closed at {when}. "
                    "Replies are refused until the customer writes again."
                ).format(when=self._local(room.last_inbox_at + self._window)),
            ):
                posted += 1
            await self._store.window_noted(room.room_id, "closed_notice_for", room.last_inbox_at)
        return posted

    async def _notify(self, room: Room, html: str) -> bool:
        """Post into the room's topic; False if an operator closed or deleted the topic.

        Such a room is passed over (and remembered as done), so it cannot hold up the
        reminders of every other room; a closed topic is left closed on purpose.
        """
        assert room.topic_id is not None
        try:
            await self._topics.notify(room.topic_id, html)
        except BadRequest as exc:
            if not (is_topic_closed(exc) or is_topic_gone(exc)):
                raise
            log.info("no window notice for room %s: its topic is closed or gone", room.room_id)
            return False
        return True

    def _local(self, moment: float) -> str:
        return texts.strftime(
            datetime.fromtimestamp(moment, UTC).astimezone(self._tz), "%d %b %H:%M"
        )
