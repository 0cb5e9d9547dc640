"""Callbacks from NusaSMS become durable records: persist first, then let workers act."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, tzinfo

from bridge.core import phones
from bridge.core.store import NewInbound, NewStatus, Store, StoreError
from bridge.nusasms import InboxCallback, StatusCallback


class Intake:
    """Turns validated callbacks into committed rows and wakes whoever consumes them."""

    def __init__(
        self,
        store: Store,
        *,
        tz: tzinfo,
        on_inbound: Callable[[], None],
        on_status: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._tz = tz
        self._on_inbound = on_inbound
        self._on_status = on_status
        self._clock = clock
        self.last_callback_at: float | None = None
        # Told when a callback could not be stored (the alerts watch looks at once).
        self.on_failure: Callable[[], None] = lambda: None

    async def inbox(self, callback: InboxCallback) -> None:
        """Commit a customer message; returns only once it is durable."""
        received_at = self._clock()
        await self._add(
            NewInbound(
                ref_no=callback.ref_no,
                room_id=callback.room_id,
                sender_number=callback.sender_number,
                text=callback.text,
                # NusaSMS's clock may run ahead of ours; the window never starts in the future.
                inbox_at=min(self._timestamp(callback.inbox_date), received_at),
                received_at=received_at,
                number=_customer(callback.sender_number),
            )
        )
        self.last_callback_at = received_at
        self._on_inbound()

    async def status(self, callback: StatusCallback) -> None:
        """Commit a delivery status; returns only once it is durable."""
        received_at = self._clock()
        await self._add(
            NewStatus(
                ref_no=callback.ref_no,
                status=callback.status.value,
                status_at=self._timestamp(callback.status_date),
                received_at=received_at,
            )
        )
        self.last_callback_at = received_at
        self._on_status()

    async def _add(self, item: NewInbound | NewStatus) -> None:
        try:
            await self._store.add(item)
        except StoreError:
            self.on_failure()
            raise

    def _timestamp(self, moment: datetime) -> float:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self._tz)
        return moment.timestamp()


def _customer(sender_number: str) -> str:
    """The customer a sender number is; a number E.164 cannot read stays itself (kept, not lost)."""
    try:
        return phones.e164(sender_number)
    except phones.InvalidNumberError:
        return "+" + sender_number.lstrip("+")
