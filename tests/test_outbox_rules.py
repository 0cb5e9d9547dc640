"""The outbox's rules, one at a time: statuses only move forward, and what a refusal leads to.

A real Store in `tmp_path`, the real NusaSMS client against the fake on 127.0.0.1, and the
Outbox worker itself with a frozen clock and a fixed draw of jitter: the outcomes are read
back from the database once the worker has nothing left to do.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bridge.channels.outbox import (
    AttachmentUnavailable,
    Outbox,
    _refused_outright,
    _retry_after,
    status_rank,
)
from bridge.core.store import NewInbound, NewReply, NewStatus, Store
from bridge.nusasms import (
    MessageStatus,
    NusaSMSAuthError,
    NusaSMSClient,
    NusaSMSConnectionError,
    NusaSMSError,
    NusaSMSRateLimitError,
    NusaSMSResponseError,
    NusaSMSServerError,
    NusaSMSTimeoutError,
    NusaSMSUnavailableError,
    NusaSMSValidationError,
)
from tests.fakes.nusasms import FakeNusaSMS

REPLY = "/wa_official/message/reply"
ROOM = "room-1"
NOW = 1_800_000_000.0


@dataclass
class Rig:
    """The outbox worker and what it works on."""

    store: Store
    outbox: Outbox
    path: Path
    changed: list[None]
    draw: list[float]
    files: dict[str, Exception]

    def row(self, reply_id: int, columns: str) -> tuple[Any, ...]:
        with sqlite3.connect(self.path) as db:
            row: tuple[Any, ...] = db.execute(
                f"SELECT {columns} FROM outbound WHERE id = ?",  # noqa: S608
                (reply_id,),
            ).fetchone()
            return row

    async def reply(self, message_id: int, *, room: str = ROOM, **fields: Any) -> int:
        reply_id = await self.store.add_reply(
            NewReply(room, message_id, 7, "text", f"reply {message_id}"), NOW
        )
        assert reply_id is not None
        if fields:
            await self.store.update_reply(reply_id, **fields)
        return reply_id

    async def settle(self, done: Callable[[], Any]) -> None:
        """Wake the worker until `done()` holds and no turn is running (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:
            self.outbox.wake()
            await asyncio.sleep(0.01)
            # A room held for its backoff is settled too: only a running turn is not.
            if await done() and not self.outbox.turns_running:
                return
            assert loop.time() < deadline, "the outbox never settled"


@pytest.fixture
async def nusasms() -> AsyncIterator[FakeNusaSMS]:
    async with FakeNusaSMS() as fake:
        yield fake


@pytest.fixture
async def rig(tmp_path: Path, nusasms: FakeNusaSMS) -> AsyncIterator[Rig]:
    path = tmp_path / "outbox.sqlite3"
    store = await Store.open(path)
    await store.add(NewInbound("in-1", ROOM, "6281234567890", "halo", NOW, NOW))
    changed: list[None] = []
    draw = [1.0]  # what the jitter draws
    files: dict[str, Exception] = {}

    async def no_files(file_id: str) -> bytes:
        raise files.get(file_id, AssertionError(f"no file expected, asked for {file_id}"))

    async with NusaSMSClient(
        nusasms.api_key, base_url=nusasms.base_url, request_timeout=2
    ) as client:
        outbox = Outbox(
            store,
            client,
            fetch_file=no_files,
            media=None,
            window_seconds=86_400,
            tz=timezone(timedelta(hours=7)),
            on_changed=lambda: changed.append(None),
            clock=lambda: NOW,
            rng=lambda: draw[0],
        )
        try:
            yield Rig(store, outbox, path, changed, draw, files)
        finally:
            await outbox.stop()
            await store.close()


# --- statuses --------------------------------------------------------------------------


def test_status_rank_follows_delivery_and_puts_anything_unknown_below_it() -> None:
    ranked = ["unsent", "queued", "sent", "delivered", "read"]
    assert [status_rank(s) for s in ranked] == [0, 1, 2, 3, 4]
    assert status_rank("failed") == status_rank("aborted") == 5
    assert status_rank("q") == status_rank("queued")  # NusaSMS's letter codes count too
    assert status_rank(None) == -1
    assert status_rank("seen") == -1


async def statuses_applied(rig: Rig) -> bool:
    return await rig.store.pending_statuses() == []


@pytest.mark.parametrize(
    ("current", "events", "status", "display"),
    [
        (None, ["unsent"], "unsent", "accepted"),
        (None, ["sent", "delivered"], "delivered", "delivered"),
        (None, ["delivered", "sent"], "delivered", "delivered"),
        ("sent", ["queued"], "sent", "accepted"),
        ("read", ["delivered", "sent"], "read", "accepted"),
        ("delivered", ["read"], "read", "read"),
        (None, ["read", "failed"], "failed", "failed"),
        ("failed", ["read", "delivered"], "failed", "accepted"),
        ("failed", ["aborted"], "failed", "accepted"),
        (None, ["aborted", "failed"], "aborted", "failed"),
    ],
)
async def test_a_status_only_ever_moves_forward(
    rig: Rig, current: str | None, events: list[str], status: str, display: str
) -> None:
    reply_id = await rig.reply(
        501, state="sent", ref_no="out-1", status=current, display="accepted"
    )
    for n, event in enumerate(events):
        await rig.store.add(NewStatus("out-1", event, NOW + n, NOW + n))

    rig.outbox.start()
    await rig.settle(lambda: statuses_applied(rig))

    assert rig.row(reply_id, "status, display") == (status, display)


async def test_a_failure_reported_by_whatsapp_is_shown_with_its_reason(rig: Rig) -> None:
    failed = await rig.reply(501, state="sent", ref_no="out-1", status="sent")
    aborted = await rig.reply(502, state="sent", ref_no="out-2", status="sent")
    read = await rig.reply(503, state="sent", ref_no="out-3", status="sent", error="earlier")
    await rig.store.add(NewStatus("out-1", "failed", NOW, NOW))
    await rig.store.add(NewStatus("out-2", "aborted", NOW, NOW))
    await rig.store.add(NewStatus("out-3", "read", NOW, NOW))

    rig.outbox.start()
    await rig.settle(lambda: statuses_applied(rig))

    assert rig.row(failed, "status, display, error") == (
        "failed",
        "failed",
        "WhatsApp reports the message failed",
    )
    assert rig.row(aborted, "status, display, error") == (
        "aborted",
        "failed",
        "WhatsApp reports the message aborted",
    )
    assert rig.row(read, "status, display, error") == ("read", "read", "earlier")


async def test_the_operator_is_told_only_when_a_status_changed_something(rig: Rig) -> None:
    reply_id = await rig.reply(501, state="sent", ref_no="out-1", status="read")
    rig.outbox.start()
    await rig.settle(lambda: statuses_applied(rig))
    after_start = len(rig.changed)

    await rig.store.add(NewStatus("out-1", "delivered", NOW, NOW))
    await rig.settle(lambda: statuses_applied(rig))
    assert len(rig.changed) == after_start
    assert rig.row(reply_id, "status") == ("read",)

    other = await rig.reply(502, state="sent", ref_no="out-2", status="sent")
    await rig.store.add(NewStatus("out-2", "delivered", NOW, NOW))
    await rig.settle(lambda: statuses_applied(rig))
    assert len(rig.changed) == after_start + 1
    assert rig.row(other, "status") == ("delivered",)


# --- refusals and retries -----------------------------------------------------------------


async def test_an_unavailable_api_is_retried_after_a_doubling_backoff(
    rig: Rig, nusasms: FakeNusaSMS
) -> None:
    nusasms.fail_next(REPLY, 503, times=1)
    reply_id = await rig.reply(501)

    rig.outbox.start()
    await rig.settle(lambda: _attempted(rig, reply_id, 1))

    # The first retry waits the whole first backoff ceiling (the draw is 1.0): 2 s.
    assert rig.row(reply_id, "state, attempts, next_attempt_at") == ("queued", 1, NOW + 2.0)
    assert rig.row(reply_id, "error") == ("Service Unavailable",)
    assert nusasms.replies == []


async def test_a_long_retry_after_is_honoured_and_a_short_one_does_not_shorten_backoff(
    rig: Rig, nusasms: FakeNusaSMS
) -> None:
    nusasms.fail_next(REPLY, 429, headers={"Retry-After": "30"})
    nusasms.fail_next(REPLY, 429, headers={"Retry-After": "0.5"})
    first = await rig.reply(501)
    second = await rig.reply(502)

    rig.outbox.start()
    await rig.settle(lambda: _attempted(rig, first, 1))
    assert rig.row(first, "state, next_attempt_at") == ("queued", NOW + 30.0)

    # The head reply waits; a later one of another room is not held up by it.
    await rig.store.add(NewInbound("in-2", "room-2", "6281234567891", "x", NOW, NOW))
    await rig.store.update_reply(second, room_id="room-2")
    await rig.settle(lambda: _attempted(rig, second, 1))
    assert rig.row(second, "state, next_attempt_at") == ("queued", NOW + 2.0)


async def test_a_reply_refused_outright_fails_and_one_that_may_have_arrived_is_unknown(
    rig: Rig, nusasms: FakeNusaSMS
) -> None:
    outcomes = [
        (400, None, "failed"),
        (422, {"detail": [{"loc": ["body", "text"], "msg": "bad", "type": "x"}]}, "failed"),
        (200, {"error": True, "message": "room is closed"}, "failed"),
        (500, None, "unknown"),
        (200, "<html>proxy page</html>", "unknown"),
    ]
    rig.outbox.start()
    replies = []
    for n, (status, body, _) in enumerate(outcomes):
        room = f"room-{n}"
        await rig.store.add(NewInbound(f"in-{n}", room, f"62812345678{n}", "x", NOW, NOW))
        nusasms.fail_next(REPLY, status, body)
        # Queued in its own room at once: the outbox is running and must not see it elsewhere.
        reply_id = await rig.reply(600 + n, room=room)
        replies.append(reply_id)
        await rig.settle(lambda reply_id=reply_id: _attempted(rig, reply_id, 1))

    assert [rig.row(r, "state, display")[0] for r in replies] == [o[2] for o in outcomes]
    assert [rig.row(r, "display")[0] for r in replies] == [o[2] for o in outcomes]
    assert rig.row(replies[2], "error") == ("room is closed",)


async def test_a_file_telegram_cannot_give_now_is_retried_after_the_first_backoff(
    rig: Rig,
) -> None:
    rig.draw[0] = 0.0  # the shortest jitter: half the first ceiling
    rig.files["file-1"] = AttachmentUnavailable("Telegram timed out")
    reply_id = await rig.store.add_reply(
        NewReply(ROOM, 501, 7, "document", "the invoice", "file-1", "invoice.pdf"), NOW
    )
    assert reply_id is not None

    rig.outbox.start()
    await rig.settle(lambda: _next_attempt_set(rig, reply_id))

    # No request went out, so no attempt is counted; the wait is the bridge's own backoff.
    assert rig.row(reply_id, "state, attempts, next_attempt_at") == ("queued", 0, NOW + 0.5)
    assert "Telegram timed out" in rig.row(reply_id, "error")[0]

    # Due again (as if the wait had passed) and still unavailable: the wait grows, though
    # no attempt was counted, since the room's failures are.
    await rig.store.update_reply(reply_id, next_attempt_at=0)
    await rig.settle(lambda: _next_attempt_set(rig, reply_id))
    assert rig.row(reply_id, "state, attempts, next_attempt_at") == ("queued", 0, NOW + 1.0)


async def _next_attempt_set(rig: Rig, reply_id: int) -> bool:
    return bool(rig.row(reply_id, "next_attempt_at")[0] > 0)


async def _attempted(rig: Rig, reply_id: int, attempts: int) -> bool:
    state, done = rig.row(reply_id, "state, attempts")
    return bool(state != "sending" and done >= attempts)


# --- the classification itself (private helpers, pure) ----------------------------------------


def error(kind: type[NusaSMSError], status: int | None, body: str | None = None) -> NusaSMSError:
    return kind(status, body, "POST", REPLY)


@pytest.mark.parametrize(
    ("exc", "outright"),
    [
        (error(NusaSMSConnectionError, None), True),
        (error(NusaSMSUnavailableError, 503), True),
        (NusaSMSRateLimitError(429, None, "POST", REPLY, retry_after=3), True),
        (error(NusaSMSAuthError, 401), True),
        (error(NusaSMSValidationError, 422), True),
        (error(NusaSMSResponseError, 404, "Not Found"), True),
        (error(NusaSMSResponseError, 300, '{"error": false}'), True),
        (error(NusaSMSResponseError, 299, '{"error": false}'), False),
        (error(NusaSMSResponseError, 299, '{"error": true}'), True),
        (error(NusaSMSResponseError, 200, '{"error": true, "message": "no"}'), True),
        (error(NusaSMSResponseError, 200, '{"error": false}'), False),
        (error(NusaSMSResponseError, 200, '{"error": "yes"}'), False),
        (error(NusaSMSResponseError, 200, "[true]"), False),
        (error(NusaSMSResponseError, 200, "<html>"), False),
        (error(NusaSMSResponseError, 200, None), False),
        (error(NusaSMSResponseError, None, '{"error": true}'), True),
        (error(NusaSMSTimeoutError, None), False),
        (error(NusaSMSServerError, 500), False),
    ],
    ids=lambda v: repr(v) if isinstance(v, NusaSMSError) else str(v),
)
def test_which_errors_mean_nusasms_never_took_the_request(
    exc: NusaSMSError, outright: bool
) -> None:
    assert _refused_outright(exc) is outright


def test_only_a_rate_limit_that_said_how_long_asks_for_a_wait() -> None:
    assert _retry_after(NusaSMSRateLimitError(429, None, "POST", REPLY, retry_after=7.5)) == 7.5
    assert _retry_after(NusaSMSRateLimitError(429, None, "POST", REPLY, retry_after=0)) == 0.0
    assert _retry_after(NusaSMSRateLimitError(429, None, "POST", REPLY)) == 0.0
    assert _retry_after(error(NusaSMSUnavailableError, 503)) == 0.0
    assert MessageStatus.READ.rank == 4
