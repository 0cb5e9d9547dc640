"""Data retention: what the bridge is done with is deleted after `storage.retention_days`.

Deleted once older than that: customer messages already posted to Telegram, operators'
replies in a final state (their reaction shown), and status events already applied or
for no reply the bridge knows. Kept whatever their age: anything still queued or in
flight, and the rooms themselves (a customer keeps their topic). Media files expire
sooner, after `nusasms.media_ttl_hours`, through the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable

from bridge.core.store import Pruned, Store, StoreError
from bridge.core.workers import ErrorLog, Worker

log = logging.getLogger(__name__)

# How often old rows are looked for; retention is counted in days, an hour is plenty.
SWEEP_SECONDS = 3600.0
# Rows deleted per table in one transaction. Callbacks wait for the writer meanwhile: 500
# kept their commit p99 under 50 ms while 500,000 old rows went (2,000: over 100 ms).
BATCH_ROWS = 500


class Retention(Worker):
    """Owns the loop that deletes rows older than the retention period."""

    name = "retention"

    def __init__(
        self,
        store: Store,
        *,
        retention_days: float,
        clock: Callable[[], float] = time.time,
        batch: int = BATCH_ROWS,
    ) -> None:
        super().__init__()
        if retention_days <= 0:
            raise ValueError("retention_days must be positive (0 means: run no Retention)")
        self._store = store
        self._keep_seconds = retention_days * 86400
        self._clock = clock
        self._batch = batch
        self._errors = ErrorLog(log)

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except (StoreError, sqlite3.Error) as exc:
                self._errors.failed("sweep", "old rows not deleted yet: %s", exc)
            except Exception:  # a bug must not end retention for good
                log.exception("data retention failed unexpectedly")
            else:
                self._errors.recovered("sweep", "old rows are deleted again")
            await self._doze(SWEEP_SECONDS)

    async def sweep(self) -> Pruned:
        """Delete everything due now, batch by batch; returns how many rows of each kind."""
        cutoff = self._clock() - self._keep_seconds
        bounds = await self._store.prune_bounds(cutoff)
        inbound = replies = events = 0
        while True:
            pruned = await self._store.prune(bounds, cutoff, self._batch)
            inbound += pruned.inbound
            replies += pruned.replies
            events += pruned.status_events
            if max(pruned.inbound, pruned.replies, pruned.status_events) < self._batch:
                break
            await asyncio.sleep(0)  # let callbacks' commits take the writer in between
        total = Pruned(inbound, replies, events)
        if total.total:
            log.info(
                "data retention: deleted %d messages, %d replies, %d status events "
                "older than %g days",
                inbound,
                replies,
                events,
                self._keep_seconds / 86400,
            )
        return total
