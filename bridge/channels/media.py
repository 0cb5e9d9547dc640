"""Files handed to NusaSMS by link: unguessable, expiring, served by our own HTTP server.

A Telegram file link carries the bot token, so it is never passed on; the bridge keeps a
copy of the file and publishes it under a random token instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from bridge.core.store import MediaFile, Store

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


class MediaLibrary:
    """Publishes files under `<public_url>/media/<token>` for a limited time."""

    def __init__(
        self,
        store: Store,
        directory: Path,
        *,
        public_url: str,
        ttl_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._directory = directory
        self._public_url = public_url.rstrip("/")
        self._ttl = ttl_seconds
        self._clock = clock

    async def publish(self, content: bytes, *, content_type: str, filename: str) -> str:
        """Keep a copy of `content` and return the URL it can be fetched from."""
        token = secrets.token_urlsafe(32)
        path = self._directory / token
        await asyncio.to_thread(_write, path, content)
        await self._store.add_media(
            MediaFile(token, str(path), content_type, filename, self._clock() + self._ttl)
        )
        return f"{self._public_url}/media/{token}"

    async def lookup(self, token: str) -> MediaFile | None:
        """The live file behind a token, or None (unknown, malformed or expired)."""
        if not _TOKEN.match(token):
            return None
        media = await self._store.media(token)
        if media is None or media.expires_at <= self._clock():
            return None
        return media

    async def withdraw(self, url: str) -> None:
        """Unpublish a file at once: the request that carried its link was refused."""
        token = url.rsplit("/", 1)[-1]
        media = await self._store.media(token) if _TOKEN.match(token) else None
        if media is None:
            return
        await self._store.forget_media([token])
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(Path(media.path).unlink)

    async def purge(self) -> int:
        """Delete expired files; returns how many."""
        expired = await self._store.expired_media(self._clock())
        for media in expired:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(Path(media.path).unlink)
        if expired:
            await self._store.forget_media([m.token for m in expired])
            log.info("deleted %d expired media files", len(expired))
        return len(expired)


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".part")
    temporary.write_bytes(content)
    temporary.replace(path)
