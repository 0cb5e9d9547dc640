"""Benchmark 3, a burst under Telegram's limits: 1,000 callbacks across 100 new rooms while
the fake Telegram enforces a per-group budget of 20 calls a minute (time-scaled: one
"minute" lasts 60/scale seconds), shared by posts, edits, topic changes, pins and
reactions, and answers 429 with retry_after beyond it. As soon as a room's topic shows, an
operator answers in it, and the reply's state (🕊 accepted by NusaSMS) becomes a reaction:
one more call into the same group for each room.

The lower bound is the number of calls the specification requires (per room: its topic,
its header, at least one post of messages and the reaction on the operator's reply)
divided by the budget's rate, less the first window's burst. Checks: nothing lost,
nothing posted twice, each room's order kept, every reply's reaction shown, no 429.

    python -m bench.burst [--runs 3] [--scale 60]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time

import aiohttp

from bench.common import SECRET, BridgeProcess, environment, inbox, median

ROOMS = 100
MESSAGES = 1000
BUDGET = 20
# Calls the fake counts against the group's budget (see tests/fakes/telegram.py).
POSTING = (
    "sendMessage",
    "createForumTopic",
    "reopenForumTopic",
    "closeForumTopic",
    "editForumTopic",
    "editMessageText",
    "pinChatMessage",
    "setMessageReaction",
)
CALLS_PER_ROOM = 4  # topic + header + one post + the reaction on the operator's reply


async def one_run(scale: float, run: int) -> dict[str, float]:
    window = 60 / scale
    async with environment() as (telegram, nusasms, workdir), aiohttp.ClientSession() as session:
        telegram.set_rate_limit(BUDGET, time_scale=scale)
        bridge = BridgeProcess(
            telegram,
            nusasms,
            workdir,
            overrides={"telegram": {"group_budget": {"messages": BUDGET, "seconds": window}}},
        )
        await bridge.start(session)
        url = f"{bridge.url}/callbacks/{SECRET}/wa/inbox"
        try:
            started = time.monotonic()
            semaphore = asyncio.Semaphore(50)

            async def post(i: int) -> None:
                async with (
                    semaphore,
                    session.post(
                        url, data=inbox(f"burst-{run}-{i}", i % ROOMS, text=f"msg {i}")
                    ) as response,
                ):
                    assert response.status == 200

            answered: dict[int, int] = {}  # topic -> the operator's message in it

            async def operators() -> None:
                # An operator answers in each topic as soon as the customer's first post shows.
                while len(answered) < ROOMS:
                    for topic in list(telegram.topics):
                        if topic not in answered and len(telegram.messages_in(topic)) >= 2:
                            answered[topic] = telegram.operator_message(
                                thread_id=topic, text=f"Baik, kami cek ({topic})"
                            )
                    await asyncio.sleep(0.02)

            answering = asyncio.create_task(operators())
            await asyncio.gather(*(post(i) for i in range(MESSAGES)))
            acked = time.monotonic() - started

            def shown() -> list[int]:
                return [
                    int(n)
                    for m in telegram.messages
                    for n in re.findall(r"^msg (\d+)$", m.plain_text or "", re.M)
                ]

            def reacted() -> bool:
                return len(answered) == ROOMS and all(
                    telegram.reactions.get(mid) for mid in answered.values()
                )

            await telegram.wait_for(lambda: len(set(shown())) >= MESSAGES, timeout=600)
            await telegram.wait_for(reacted, timeout=600)
            last_reaction = max(c.at for c in telegram.calls if c.method == "setMessageReaction")
            drained = max(max(m.at for m in telegram.messages), last_reaction) - started
            await answering
        finally:
            bridge.stop()
    numbers = shown()
    calls = [c for c in telegram.calls if c.method in POSTING]
    rejected = telegram.rate_limited
    order_kept = all(
        [n for n in numbers if n % ROOMS == room] == sorted(n for n in numbers if n % ROOMS == room)
        for room in range(ROOMS)
    )
    required = ROOMS * CALLS_PER_ROOM
    bound = max(0, required - BUDGET) / BUDGET * window
    return {
        "acked_s": acked,
        "drain_s": drained,
        "bound_s": bound,
        "ratio": drained / bound,
        "calls": len(calls),
        "rejected_429": rejected,
        "lost": MESSAGES - len(set(numbers)),
        "duplicates": len(numbers) - len(set(numbers)),
        "order_kept": float(order_kept),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=60.0)
    args = parser.parse_args()
    results = []
    for run in range(args.runs):
        r = await one_run(args.scale, run)
        results.append(r)
        print(
            f"run {run + 1}: drained in {r['drain_s']:.1f} s vs bound {r['bound_s']:.1f} s "
            f"(ratio {r['ratio']:.2f}); {r['calls']:.0f} calls into the group, "
            f"{r['rejected_429']:.0f} answered 429; lost {r['lost']:.0f}, duplicates "
            f"{r['duplicates']:.0f}, order kept {bool(r['order_kept'])}; all acknowledged "
            f"in {r['acked_s']:.2f} s",
            flush=True,
        )
    print(
        f"median ratio {median([r['ratio'] for r in results]):.2f} (goal <= 1.2); "
        f"lost {sum(r['lost'] for r in results):.0f}, duplicates "
        f"{sum(r['duplicates'] for r in results):.0f}, order kept in every run: "
        f"{all(r['order_kept'] for r in results)}"
    )


if __name__ == "__main__":
    asyncio.run(main())
