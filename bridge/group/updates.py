"""Operators' Telegram updates, persist-then-confirm, in polling or webhook mode.

Telegram keeps re-delivering an update until it is confirmed: in polling mode by a later
getUpdates whose offset passes it, in webhook mode by a 2xx answer. Both modes here store the
raw update in the `telegram_updates` table first, and confirm only after that commit. The
`UpdateFeed` hands stored updates to the handlers one at a time, in update_id order (so in
order per topic), and marks each done after its handlers ran; on start it replays whatever a
crash left stored but not done. A re-delivered update is dropped by its update_id, and a
replayed one is recognised by the handlers (replies are keyed by the operator's message id).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Bot
from telegram.error import RetryAfter, TelegramError

from bridge.core.store import Store, StoreError
from bridge.core.workers import ErrorLog, Worker
from bridge.group.topics import retry_after_seconds

log = logging.getLogger(__name__)

# One getUpdates long poll; a shutdown cancels it rather than waiting for its answer.
POLL_SECONDS = 10
# The last getUpdates that confirms stored updates may take this long at shutdown.
CONFIRM_UPDATES_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0
# Every kind of update a handler acts on; nothing else is subscribed to.
ALLOWED_UPDATES = ("message", "edited_message", "callback_query")
WEBHOOK_PATH = "/telegram/"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name

Handle = Callable[[dict[str, Any]], Awaitable[None]]


def webhook_secrets(bot_token: str) -> tuple[str, str]:
    """(path secret, header secret) for the webhook, derived from the bot token.

    Derived rather than configured: stable across restarts (Telegram keeps the URL), nothing
    more to keep secret, and whoever knows the bot token could re-point the webhook anyway.
    """
    key = bot_token.encode()
    path = hmac.new(key, b"bridge webhook path", hashlib.sha256).hexdigest()[:32]
    header = hmac.new(key, b"bridge webhook secret_token", hashlib.sha256).hexdigest()
    return path, header


def webhook_url(public_url: str, path_secret: str) -> str:
    """Where Telegram POSTs updates in webhook mode."""
    return public_url.rstrip("/") + WEBHOOK_PATH + path_secret


def parse_update(body: bytes) -> tuple[int, str] | None:
    """(update_id, raw JSON) of a webhook body, or None if it is no update."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    update_id = data.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        return None
    return update_id, json.dumps(data, separators=(",", ":"))


class UpdateFeed(Worker):
    """Hands stored updates to the handlers in order; marks each done after they ran."""

    name = "telegram-update-feed"

    def __init__(
        self, store: Store, handle: Handle, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__()
        self._store = store
        self._handle = handle
        self._clock = clock
        self._errors = ErrorLog(log)

    async def _run(self) -> None:
        # Started with work to do: updates a crash left stored but not handled come first.
        delay: float | None = 0.0
        while True:
            await self._doze(delay)
            try:
                delay = None if await self._drain() else 0.0
                self._errors.recovered("feed", "stored Telegram updates are handled again")
            except StoreError as exc:
                self._errors.failed("feed", "cannot read or mark stored Telegram updates: %s", exc)
                delay = 1.0

    async def _drain(self) -> bool:
        """Handle every pending update; True when none is left."""
        batch = await self._store.pending_updates()
        for update_id, raw in batch:
            try:
                data = json.loads(raw)
            except ValueError:
                log.error("stored Telegram update %d is not JSON; skipped", update_id)
            else:
                try:
                    await self._handle(data)
                except Exception:
                    # The handlers report their own errors; one update must not block the rest.
                    log.exception("handling Telegram update %d failed", update_id)
            await self._store.update_done(update_id, self._clock())
        return not batch


class UpdatePoller(Worker):
    """Long-polls getUpdates; stores each batch, and confirms it only after the commit.

    The confirmation is the next getUpdates' offset, computed from what is committed, so a
    crash between fetch and commit means Telegram delivers the same updates again. At
    shutdown the long poll is cancelled and the stored updates are confirmed with a short
    call of their own (if that fails, they are fetched again and dropped as duplicates).
    """

    name = "telegram-updates"

    def __init__(
        self,
        bot: Bot,
        store: Store,
        *,
        on_stored: Callable[[], None],
        on_error: Callable[[TelegramError], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self._bot = bot
        self._store = store
        self._on_stored = on_stored
        self._on_error = on_error
        self._clock = clock
        self._offset: int | None = None
        self._confirmed: int | None = None

    async def _run(self) -> None:
        webhook_cleared = False
        delay = 0.0
        while True:
            if delay:
                await asyncio.sleep(delay)
            try:
                if self._offset is None:
                    last = await self._store.last_update_id()
                    self._offset = 0 if last is None else last + 1
                if not webhook_cleared:
                    # Polling and a webhook exclude each other at Telegram; pending updates
                    # are kept (never drop_pending_updates).
                    await self._bot.delete_webhook()
                    webhook_cleared = True
                fetched = await self._bot.get_updates(
                    offset=self._offset, timeout=POLL_SECONDS, allowed_updates=ALLOWED_UPDATES
                )
                self._confirmed = self._offset
                # to_dict keeps fields PTB does not know (api_kwargs): the update as sent.
                updates = [
                    (u.update_id, json.dumps(u.to_dict(), separators=(",", ":"))) for u in fetched
                ]
                if updates:
                    await self._store.add_updates(updates, self._clock())
                    # Only now may the next getUpdates confirm them.
                    self._offset = max(self._offset, max(i for i, _ in updates) + 1)
                    self._on_stored()
            except RetryAfter as exc:
                delay = min(retry_after_seconds(exc) + 0.5, RETRY_MAX_SECONDS)
                continue
            except TelegramError as exc:
                self._on_error(exc)
                delay = min(max(delay * 2, 1.0), 30.0)
                continue
            except StoreError as exc:
                log.error("cannot store Telegram updates (they stay at Telegram): %s", exc)
                delay = min(max(delay * 2, 1.0), 30.0)
                continue
            delay = 0.0

    async def stop(self) -> None:
        """Cancel the long poll, then confirm the stored updates to Telegram, briefly."""
        await super().stop()
        if self._offset is None or self._offset == self._confirmed:
            return
        try:
            async with asyncio.timeout(CONFIRM_UPDATES_SECONDS):
                await self._bot.get_updates(offset=self._offset, timeout=0)
            self._confirmed = self._offset
        except (TimeoutError, TelegramError) as exc:
            log.warning("could not confirm the last Telegram updates: %s", exc)


async def start_webhook(bot: Bot, url: str, secret_token: str) -> None:
    """Point Telegram at our webhook; pending updates are kept (never drop_pending_updates)."""
    await bot.set_webhook(url, secret_token=secret_token, allowed_updates=list(ALLOWED_UPDATES))


class WebhookInbox:
    """What the webhook route does with one POST: check both secrets, store, then answer.

    Answers (HTTP statuses): 403 for a wrong path or header secret (nothing is stored), 400
    for a body that is no update, 503 when the database cannot take it (Telegram delivers it
    again), 200 only once the update is committed.
    """

    def __init__(
        self,
        store: Store,
        *,
        path_secret: str,
        header_secret: str,
        on_stored: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._path = path_secret.encode()
        self._header = header_secret.encode()
        self._on_stored = on_stored
        self._clock = clock

    async def receive(self, path_secret: str, header_secret: str | None, body: bytes) -> int:
        """Handle one webhook request; the HTTP status to answer."""
        path_ok = hmac.compare_digest(path_secret.encode(), self._path)
        header_ok = hmac.compare_digest((header_secret or "").encode(), self._header)
        if not (path_ok and header_ok):
            return 403
        update = parse_update(body)
        if update is None:
            return 400
        try:
            await self._store.add_updates([update], self._clock())
        except StoreError as exc:
            log.error("cannot store a Telegram update (Telegram will send it again): %s", exc)
            return 503
        self._on_stored()
        return 200
