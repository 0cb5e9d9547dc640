"""Benchmark 4, footprint: resident memory and time to a healthy /healthz with 100,000 rooms
and 1,000,000 stored messages in the database (all already posted, as after months of use).

Reference, same run: the same bridge on an empty database, so the ratios say what months
of history cost.

    python -m bench.footprint [--runs 3] [--rooms 100000] [--messages 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import time
from pathlib import Path

import aiohttp

from bench.common import BridgeProcess, environment, median, rss_mb
from bridge.core.store import Store


async def build(db: Path, rooms: int, messages: int) -> None:
    store = await Store.open(db)  # the real schema, migrated
    await store.close()
    now = time.time()
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO rooms (room_id, sender_number, topic_id, header_pending, last_inbox_at,"
            " created_at) VALUES (?, ?, ?, 0, ?, ?)",
            (
                (f"00000000-0000-4000-8000-{r:012d}", f"62812{r:08d}", r + 10, now - r, now - r)
                for r in range(rooms)
            ),
        )
        conn.executemany(
            "INSERT INTO inbound (ref_no, room_id, text, inbox_at, received_at, posted_at,"
            " telegram_message_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    f"ref-{i}",
                    f"00000000-0000-4000-8000-{i % rooms:012d}",
                    "Halo kak, pesanan saya nomor 12345 sudah dikirim belum ya?",
                    now - i,
                    now - i,
                    now - i,
                    i + 1000,
                )
                for i in range(messages)
            ),
        )


async def one_run(db_template: Path | None) -> tuple[float, float, float]:
    async with environment() as (telegram, nusasms, workdir), aiohttp.ClientSession() as session:
        bridge = BridgeProcess(telegram, nusasms, workdir)
        if db_template is not None:
            bridge.db.write_bytes(db_template.read_bytes())
        ready = await bridge.start(session)
        assert bridge.process is not None
        idle = rss_mb(bridge.process.pid)
        for _ in range(20):  # a little traffic, then memory again
            async with session.get(f"{bridge.admin_url}/healthz") as response:
                await response.read()
            async with session.get(f"{bridge.admin_url}/metrics") as response:
                await response.read()
        busy = rss_mb(bridge.process.pid)
        bridge.stop()
    return ready, idle, busy


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rooms", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args()
    async with environment() as (_, _, workdir):
        template = workdir / "template.sqlite3"
        started = time.perf_counter()
        await build(template, args.rooms, args.messages)
        size = template.stat().st_size / 1024 / 1024
        print(
            f"database: {args.rooms} rooms, {args.messages} messages, {size:.0f} MB "
            f"(built in {time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        readies, rsses, ready_ratios, rss_ratios = [], [], [], []
        for run in range(args.runs):
            empty_ready, empty_idle, empty_busy = await one_run(None)
            ready, idle, busy = await one_run(template)
            empty_rss = max(empty_idle, empty_busy)
            readies.append(ready)
            rsses.append(max(idle, busy))
            ready_ratios.append(ready / empty_ready)
            rss_ratios.append(max(idle, busy) / empty_rss)
            print(
                f"run {run + 1}: healthy after {ready:.2f} s (empty db {empty_ready:.2f} s), "
                f"RSS {idle:.0f} MB idle, {busy:.0f} MB after /healthz and /metrics "
                f"(empty db {empty_rss:.0f} MB)",
                flush=True,
            )
    print(
        f"median: ready in {median(readies):.2f} s (goal <= 3) = {median(ready_ratios):.2f}x "
        f"the empty database; RSS {median(rsses):.0f} MB (goal <= 100) = "
        f"{median(rss_ratios):.2f}x the empty database"
    )


if __name__ == "__main__":
    asyncio.run(main())
