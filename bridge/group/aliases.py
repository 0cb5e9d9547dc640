"""One topic per customer: the older topics of a customer point to the one that is theirs now.

Before a customer was their number, each NusaSMS room had a topic of its own. The migration
keeps those topics as aliases (a reply written there still reaches the customer's latest
room) and marks a note due in each; this worker posts it, at most once: the note is claimed
in the database before the post, so a crash mid-post leaves it unsent rather than doubled.
"""

from __future__ import annotations

import html
import logging
from typing import Protocol

from telegram import Message
from telegram.error import BadRequest, TelegramError

from bridge.core.store import Store, StoreError
from bridge.core.texts import _
from bridge.core.workers import Worker
from bridge.group import render

log = logging.getLogger(__name__)


class Notifier(Protocol):
    """What the worker posts through (bridge.group.topics.Topics)."""

    async def notify(self, topic_id: int | None, html: str) -> Message: ...


def topic_link(chat_id: int, topic_id: int) -> str:
    """A t.me link to a topic of the group (`-100…` ids drop their prefix)."""
    internal = str(chat_id).removeprefix("-100").lstrip("-")
    return f"https://t.me/c/{internal}/{topic_id}"


def alias_note_html(*, number: str, link: str) -> str:
    """The note in a customer's older topic."""
    return _(
        "➡️ {number} now has one topic for all their conversations: "
        '<a href="{link}">open it</a>. Replies written here still reach them.'
    ).format(number=html.escape(render.format_phone(number)), link=html.escape(link))


class AliasNotes(Worker):
    """Posts the due notes of older topics, each at most once."""

    name = "alias-notes"

    def __init__(self, store: Store, topics: Notifier, *, chat_id: int) -> None:
        super().__init__()
        self._store = store
        self._topics = topics
        self._chat_id = chat_id

    async def _run(self) -> None:
        while True:
            try:
                await self.post_due()
            except StoreError as exc:
                log.warning("older-topic notes wait: %s", exc)
                await self._doze(60)
                continue
            await self._doze(None)

    async def post_due(self) -> int:
        """Post every due note; returns how many went out."""
        posted = 0
        for alias in await self._store.alias_notes_due():
            room = await self._store.room(alias.room_id)
            if room is None or room.topic_id is None:
                continue  # the customer's topic is created first; woken again later
            if not await self._store.claim_alias_note(alias.topic_id):
                continue
            html_text = alias_note_html(
                number=room.number, link=topic_link(self._chat_id, room.topic_id)
            )
            try:
                await self._topics.notify(alias.topic_id, html_text)
            except BadRequest as exc:
                # The old topic is gone or refuses posts: nothing to point from.
                log.warning("note in older topic %d refused: %s", alias.topic_id, exc)
                await self._store.alias_note_done(alias.topic_id, "failed")
                continue
            except TelegramError as exc:
                # It may have been posted: left claimed, never sent a second time.
                log.warning("note in older topic %d may not have gone out: %s", alias.topic_id, exc)
                continue
            await self._store.alias_note_done(alias.topic_id)
            posted += 1
        return posted
