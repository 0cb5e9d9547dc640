"""What `/healthz` reports: is the bridge ready, and what needs a person's attention."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.store import Store

log = logging.getLogger(__name__)

ServiceStateName = Literal["unknown", "ok", "unreachable", "rejected"]

# A customer message waiting longer than this is reported as stuck.
STUCK_AFTER_SECONDS = 300.0


@dataclass
class ServiceState:
    """What the bridge last learned about one remote service."""

    state: ServiceStateName = "unknown"
    detail: str = ""
    since: float = field(default_factory=time.time)

    def set(self, state: ServiceStateName, detail: str = "") -> None:
        """Record a new observation; log only changes."""
        if state != self.state or detail != self.detail:
            level = logging.INFO if state == "ok" else logging.WARNING
            log.log(level, "service state: %s%s", state, f" ({detail})" if detail else "")
            self.state, self.detail, self.since = state, detail, time.time()

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"state": self.state, "detail": self.detail, "since": round(self.since, 3)}


class Health:
    """Collects readiness from the database, the workers and the remote services."""

    def __init__(
        self,
        store: Store,
        *,
        workers_running: Callable[[], bool],
        stuck_after: float = STUCK_AFTER_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._workers_running = workers_running
        self._stuck_after = stuck_after
        self._clock = clock
        self.telegram = ServiceState()
        self.nusasms = ServiceState()
        self.last_callback_at: Callable[[], float | None] = lambda: None

    async def report(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, body): healthy means ready and nothing needs a person.

        Ready: the database answers and the workers run. Needing a person: a service
        rejected our credentials, or a queue has a message older than `stuck_after`.
        """
        now = self._clock()
        body: dict[str, Any] = {}
        try:
            await self._store.ping()
            stats = await self._store.queue_stats()
            waiting_out, oldest_out = await self._store.outbound_stats()
        except (sqlite3.Error, ValueError) as exc:
            body["database"] = {"state": "error", "detail": str(exc)}
            return False, {"status": "unavailable", **body}
        workers = self._workers_running()
        body["database"] = {"state": "ok"}
        body["workers"] = {"state": "running" if workers else "stopped"}
        body["telegram"] = self.telegram.as_dict()
        body["nusasms"] = self.nusasms.as_dict()
        body["inbound_queue"] = {
            **self._queue(stats.waiting, stats.oldest_received_at, now),
            "rooms_waiting": stats.rooms_waiting,
            "failing_rooms": stats.failing_rooms,
        }
        body["outbound_queue"] = self._queue(waiting_out, oldest_out, now)
        last = self.last_callback_at()
        body["last_callback_at"] = None if last is None else round(last, 3)
        problems = [
            name
            for name, bad in (
                ("workers stopped", not workers),
                ("telegram rejected", self.telegram.state == "rejected"),
                ("nusasms rejected", self.nusasms.state == "rejected"),
                ("inbound queue stuck", body["inbound_queue"]["stuck"]),
                ("outbound queue stuck", body["outbound_queue"]["stuck"]),
            )
            if bad
        ]
        body["problems"] = problems
        body["status"] = "ok" if not problems else "needs attention"
        return not problems, body

    def _queue(self, waiting: int, oldest: float | None, now: float) -> dict[str, Any]:
        age = None if oldest is None else max(0.0, now - oldest)
        return {
            "waiting": waiting,
            "oldest_age_seconds": None if age is None else round(age, 3),
            "stuck": age is not None and age > self._stuck_after,
        }
