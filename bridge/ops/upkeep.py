"""Database upkeep off the hot path: the WAL is checkpointed and truncated now and then.

SQLite checkpoints the WAL by itself after commits, but never truncates it: after a burst
the file stays as large as the burst made it, and a reader that is never idle can stop the
automatic checkpoints altogether. A worker does it every few minutes instead.
"""

from __future__ import annotations

import logging

from bridge.core.store import Store, StoreError
from bridge.core.workers import ErrorLog, Worker

log = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 300.0


class Checkpoints(Worker):
    """Runs `PRAGMA wal_checkpoint(TRUNCATE)` every `every` seconds."""

    name = "checkpoints"

    def __init__(self, store: Store, *, every: float = CHECKPOINT_SECONDS) -> None:
        super().__init__()
        self._store = store
        self._every = every
        self._errors = ErrorLog(log)
        self.done = 0

    async def _run(self) -> None:
        while True:
            await self._doze(self._every)
            await self.checkpoint()

    async def checkpoint(self) -> None:
        """One checkpoint; a failure is logged (once, then counted) and tried next time."""
        try:
            pages, copied = await self._store.checkpoint()
        except StoreError as exc:
            self._errors.failed("checkpoint", "WAL checkpoint failed: %s", exc)
            return
        self._errors.recovered("checkpoint", "WAL checkpoints work again")
        self.done += 1
        log.debug("WAL checkpoint: %d pages, %d copied", pages, copied)
