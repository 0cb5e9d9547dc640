"""Waiting for a bridge to have nothing left to do, instead of sleeping and hoping."""

from __future__ import annotations

import asyncio

from bridge.app import Bridge


async def settled(bridge: Bridge, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Return once both queues are empty and no room turn of the relay or outbox is running.

    A message posted but never recorded stays queued, so this times out (AssertionError)
    rather than letting a duplicate post go unseen; after it, a count is final.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        inbound = await bridge.store.queue_stats()
        outbound, _ = await bridge.store.outbound_stats()
        # The workers are private to the bridge; their turns are what a count must outlast.
        busy = [
            room
            for worker in (bridge._relay, bridge._outbox)
            if worker is not None
            for room in worker.unavailable()
        ]
        if inbound.waiting == 0 and outbound == 0 and not busy:
            return
        if loop.time() >= deadline:
            raise AssertionError(
                f"bridge not settled within {timeout}s: {inbound.waiting} inbound and "
                f"{outbound} outbound waiting, rooms busy or held: {busy}"
            )
        await asyncio.sleep(0.01)
