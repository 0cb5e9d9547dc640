"""Benchmark 1, callback intake: 50 keep-alive clients posting inbox callbacks for 10 s.

The reference is a bare aiohttp handler that parses the same JSON and answers 200 (in the
same run, same client). The bridge answers 200 only once a callback is committed (WAL,
synchronous=FULL). Afterwards every acknowledged ref_no must be in the database.

    python -m bench.intake [--runs 3] [--seconds 10] [--clients 50] [--log-level WARNING]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import subprocess
import sys
import time
from contextlib import suppress

import aiohttp

from bench.common import SECRET, BridgeProcess, environment, free_port, inbox, load, median


async def bare_run(clients: int, seconds: float, run: int) -> tuple[float, float]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.bare", str(port)])
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(500):
                with suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.01)
        result = await load(
            f"http://127.0.0.1:{port}/callbacks/{SECRET}/wa/inbox",
            clients=clients,
            seconds=seconds,
            body=lambda i: (f"bare-{run}-{i}", inbox(f"bare-{run}-{i}", i % 100)),
        )
    finally:
        process.terminate()
        process.wait()
    return result.throughput, result.p99_ms


async def bridge_run(
    clients: int, seconds: float, run: int, log_level: str
) -> tuple[float, float, int, int]:
    async with environment() as (telegram, nusasms, workdir), aiohttp.ClientSession() as session:
        bridge = BridgeProcess(
            telegram, nusasms, workdir, overrides={"logging": {"level": log_level}}
        )
        await bridge.start(session)
        try:
            result = await load(
                f"{bridge.url}/callbacks/{SECRET}/wa/inbox",
                clients=clients,
                seconds=seconds,
                body=lambda i: (f"b-{run}-{i}", inbox(f"b-{run}-{i}", i % 100)),
            )
        finally:
            bridge.stop()
        with sqlite3.connect(bridge.db) as db:
            stored = {r[0] for r in db.execute("SELECT ref_no FROM inbound")}
        missing = sum(1 for ref in result.acknowledged if ref not in stored)
    return result.throughput, result.p99_ms, result.ok, missing


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=50)
    # INFO is the shipped default (an access log line per callback); WARNING logs none.
    parser.add_argument("--log-level", default="INFO", choices=["INFO", "WARNING"])
    args = parser.parse_args()
    ratios, bridge_p99, bare_p99, bridge_tput, bare_tput = [], [], [], [], []
    lost = 0
    for run in range(args.runs):
        bare, bare_lat = await bare_run(args.clients, args.seconds, run)
        durable, lat, acked, missing = await bridge_run(
            args.clients, args.seconds, run, args.log_level
        )
        lost += missing
        ratios.append(durable / bare)
        bridge_p99.append(lat)
        bare_p99.append(bare_lat)
        bridge_tput.append(durable)
        bare_tput.append(bare)
        print(
            f"run {run + 1}: bare {bare:.0f}/s p99 {bare_lat:.1f} ms | bridge {durable:.0f}/s "
            f"p99 {lat:.1f} ms, {acked} acknowledged, {missing} missing"
            f" | ratio {durable / bare:.2f}",
            flush=True,
        )
    print(
        f"median: bare {median(bare_tput):.0f}/s, bridge {median(bridge_tput):.0f}/s, "
        f"ratio {median(ratios):.2f} (goal >= 0.6); bridge p99 {median(bridge_p99):.1f} ms "
        f"(goal <= 50); acknowledged but missing: {lost} (goal 0)"
    )


if __name__ == "__main__":
    started = time.perf_counter()
    asyncio.run(main())
    print(f"({time.perf_counter() - started:.0f} s)")
