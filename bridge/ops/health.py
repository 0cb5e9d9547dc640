"""What `/healthz` reports: is the bridge ready, and what needs a person's attention.

Besides the start-up checks, the state of each service follows what every call into it
shows: `saw_error` and `saw_success` are told by whoever makes the call (a group that
refuses the bot, a rejected API key). Every text `/healthz` repeats is redacted.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError

from bridge.core.logs import Redactor
from bridge.core.store import Store
from bridge.nusasms import (
    NusaSMSAuthError,
    NusaSMSConnectionError,
    NusaSMSTimeoutError,
    NusaSMSUnavailableError,
)

log = logging.getLogger(__name__)

ServiceStateName = Literal["unknown", "ok", "unreachable", "rejected"]
Service = Literal["telegram", "nusasms"]

# A customer message waiting longer than this is reported as stuck.
STUCK_AFTER_SECONDS = 300.0
# A failed database write, with no successful one since, is a problem for this long (the
# alerts worker retries a write every minute meanwhile, so a lasting fault stays visible).
WRITE_FAILURE_SECONDS = 300.0
# A service never reached this long after start is a problem, not a slow start.
START_GRACE_SECONDS = 60.0

# Telegram's words for a group that refuses the bot (kicked, not a member, no rights);
# PTB rewrites descriptions, so they are matched case-insensitively.
_GROUP_REFUSES = ("chat not found", "not enough rights", "not a member", "kicked", "chat_admin")


@dataclass
class ServiceState:
    """What the bridge last learned about one remote service."""

    state: ServiceStateName = "unknown"
    detail: str = ""
    since: float = field(default_factory=time.time)
    reached: bool = False

    def set(self, state: ServiceStateName, detail: str = "") -> None:
        """Record a new observation; log only changes."""
        if state == "ok":
            self.reached = True
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
        secrets: Iterable[str] = (),
        write_failure_for: float = WRITE_FAILURE_SECONDS,
        start_grace: float = START_GRACE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._workers_running = workers_running
        self._stuck_after = stuck_after
        self._redactor = Redactor(secrets)
        self._write_failure_for = write_failure_for
        self._start_grace = start_grace
        self._clock = clock
        self._started_at = clock()
        self.telegram = ServiceState()
        self.nusasms = ServiceState()
        self.last_callback_at: Callable[[], float | None] = lambda: None

    def redact(self, text: str) -> str:
        """`text` without any secret of the bridge (for anything shown to people)."""
        return self._redactor.redact(text)

    def service(self, name: Service) -> ServiceState:
        """The state of one service."""
        return self.telegram if name == "telegram" else self.nusasms

    def saw_error(self, name: Service, exc: BaseException) -> None:
        """A call into `name` failed with `exc`: mark the service if the error says how.

        Refused (a Forbidden from the group, a bad token, a rejected API key): "rejected",
        a problem until a call succeeds again. Unreachable (network, timeouts, 502-504):
        "unreachable", unless the service already refused us, which a later network error
        does not disprove. Anything else concerns one request, not the service.
        """
        state = self.service(name)
        rejected = _rejection(exc)
        if rejected is not None:
            state.set("rejected", self.redact(rejected))
        elif _unreachable(exc) and state.state != "rejected":
            state.set("unreachable", self.redact(describe(exc)))

    def saw_success(self, name: Service, detail: str = "") -> None:
        """A call into `name` succeeded: it is reachable and accepts us."""
        state = self.service(name)
        if state.state != "ok":
            state.set("ok", detail or "answered")

    def writes_failing(self) -> str | None:
        """Why the database takes no writes right now, or None.

        A failed write with no successful one since counts for `write_failure_for` seconds.
        """
        store = self._store
        failed_at = store.last_write_failed_at
        if not store.write_failing or failed_at is None:
            return None
        if self._clock() - failed_at > self._write_failure_for:
            return None
        return self.redact(store.last_write_error or "database write failed")

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
            body["database"] = {"state": "error", "detail": self.redact(str(exc))}
            return False, {"status": "unavailable", "problems": ["database unreadable"], **body}
        workers = self._workers_running()
        write_error = self.writes_failing()
        body["database"] = (
            {"state": "ok"}
            if write_error is None
            else {"state": "writes failing", "detail": write_error}
        )
        body["workers"] = {"state": "running" if workers else "stopped"}
        body["telegram"] = self._service(self.telegram)
        body["nusasms"] = self._service(self.nusasms)
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
                ("database writes failing", write_error is not None),
                ("telegram never reached", self._never_reached(self.telegram, now)),
                ("nusasms never reached", self._never_reached(self.nusasms, now)),
            )
            if bad
        ]
        body["problems"] = problems
        body["status"] = "ok" if not problems else "needs attention"
        return not problems, body

    def _service(self, state: ServiceState) -> dict[str, Any]:
        return {**state.as_dict(), "detail": self.redact(state.detail)}

    def _never_reached(self, state: ServiceState, now: float) -> bool:
        return not state.reached and now - self._started_at > self._start_grace

    def _queue(self, waiting: int, oldest: float | None, now: float) -> dict[str, Any]:
        age = None if oldest is None else max(0.0, now - oldest)
        return {
            "waiting": waiting,
            "oldest_age_seconds": None if age is None else round(age, 3),
            "stuck": age is not None and age > self._stuck_after,
        }


def _rejection(exc: BaseException) -> str | None:
    """What a refusal says, if `exc` is the service refusing us (not one request)."""
    if isinstance(exc, Forbidden | InvalidToken):
        return f"the group refuses the bot: {exc}"
    if isinstance(exc, ChatMigrated):
        return f"the group moved to id {exc.new_chat_id}"
    if isinstance(exc, BadRequest) and any(w in exc.message.lower() for w in _GROUP_REFUSES):
        return f"the group refuses the bot: {exc}"
    if isinstance(exc, NusaSMSAuthError):
        return exc.reason()
    return None


def _unreachable(exc: BaseException) -> bool:
    if isinstance(exc, BadRequest):  # a NetworkError by inheritance, but a refused request
        return False
    return isinstance(
        exc,
        NetworkError
        | TimeoutError
        | NusaSMSConnectionError
        | NusaSMSTimeoutError
        | NusaSMSUnavailableError,
    )


def describe(exc: BaseException) -> str:
    """A failed call in a few words, for a service's state."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, NetworkError):
        return f"network: {exc.message}"
    return str(exc)
