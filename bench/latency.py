"""Benchmark 2, forwarding latency: from a callback's 200 to `sendMessage` arriving at the
fake Telegram, with no rate limit. Rooms are warmed first (their topics exist), then one
callback at a time is posted, spaced so each is forwarded on its own.

Reference, same run: one bare HTTP round trip (a callback POST answered 200 by the
bridge), so the ratio says how many round trips forwarding costs.

    python -m bench.latency [--runs 3] [--messages 300]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp

from bench.common import SECRET, BridgeProcess, environment, inbox, median, percentile

ROOMS = 20


async def one_run(messages: int, run: int) -> tuple[float, float, float]:
    async with environment() as (telegram, nusasms, workdir), aiohttp.ClientSession() as session:
        bridge = BridgeProcess(
            telegram,
            nusasms,
            workdir,
            overrides={"telegram": {"group_budget": {"messages": 1_000_000, "seconds": 1}}},
        )
        await bridge.start(session)
        url = f"{bridge.url}/callbacks/{SECRET}/wa/inbox"
        try:
            for room in range(ROOMS):  # warm-up: topics and headers
                async with session.post(url, data=inbox(f"warm-{run}-{room}", room)) as r:
                    assert r.status == 200
            await telegram.wait_for(lambda: len(telegram.calls_of("sendMessage")) >= 2 * ROOMS, 30)
            latencies, round_trips = [], []
            for i in range(messages):
                marker = f"m-{run}-{i}"
                before = len(telegram.messages)
                sent = time.monotonic()
                async with session.post(url, data=inbox(marker, i % ROOMS, text=marker)) as r:
                    answered = time.monotonic()
                    assert r.status == 200
                round_trips.append(answered - sent)
                while not any(m.plain_text == marker for m in telegram.messages[before:]):
                    await asyncio.sleep(0.0005)
                arrived = next(m.at for m in telegram.messages[before:] if m.plain_text == marker)
                latencies.append(arrived - answered)
                await asyncio.sleep(0.005)
        finally:
            bridge.stop()
    return (
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        percentile(round_trips, 50) * 1000,
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()
    p50s, p99s, ratios = [], [], []
    for run in range(args.runs):
        p50, p99, rtt = await one_run(args.messages, run)
        p50s.append(p50)
        p99s.append(p99)
        ratios.append(p50 / rtt)
        print(
            f"run {run + 1}: p50 {p50:.2f} ms, p99 {p99:.2f} ms; reference round trip "
            f"{rtt:.2f} ms (p50 = {p50 / rtt:.1f} round trips)",
            flush=True,
        )
    print(
        f"median of {args.runs} runs: p50 {median(p50s):.2f} ms (goal <= 20), "
        f"p99 {median(p99s):.2f} ms (goal <= 100), p50 = {median(ratios):.1f} round trips"
    )


if __name__ == "__main__":
    asyncio.run(main())
