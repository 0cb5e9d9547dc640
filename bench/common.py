"""Shared pieces of the benchmarks: fakes, a bridge process, a load generator, statistics."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import FakeTelegram

SECRET = "bench-callback-secret-0123456789"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def median(values: list[float]) -> float:
    """The median."""
    return statistics.median(values)


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class BridgeProcess:
    """`python -m bridge run` against the fakes, in its own process (its own core)."""

    telegram: FakeTelegram
    nusasms: FakeNusaSMS
    workdir: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def db(self) -> Path:
        return self.workdir / "bridge.sqlite3"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """The admin listener: /healthz and /metrics."""
        return f"http://127.0.0.1:{self.admin_port}"

    def config(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "nusasms": {"api_key": self.nusasms.api_key, "base_url": self.nusasms.base_url},
            "telegram": {
                "bot_token": self.telegram.token,
                "chat_id": self.telegram.chat_id,
                "api_base_url": self.telegram.base_url,
                "api_file_url": self.telegram.base_file_url,
            },
            "server": {
                "host": "127.0.0.1",
                "port": self.port,
                "public_url": f"http://127.0.0.1:{self.port}",
                "callback_secret": SECRET,
                "admin": f"127.0.0.1:{self.admin_port}",
            },
            "storage": {"path": str(self.db)},
            "alerts": {"balance_interval_seconds": 3600},
            "logging": {"level": "WARNING"},
        }
        for section, values in self.overrides.items():
            data.setdefault(section, {}).update(values)
        return data

    async def start(self, session: aiohttp.ClientSession, within: float = 30.0) -> float:
        """Start it and wait for a healthy /healthz; returns the seconds that took."""
        path = self.workdir / "config.yaml"
        path.write_text(yaml.safe_dump(self.config()))
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "bridge.log").open("ab"),
        )
        deadline = started + within
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.workdir / "bridge.log").read_text())
            with suppress(aiohttp.ClientError):
                async with session.get(f"{self.admin_url}/healthz") as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            await asyncio.sleep(0.01)
        raise RuntimeError("bridge did not become healthy")

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@asynccontextmanager
async def environment() -> AsyncIterator[tuple[FakeTelegram, FakeNusaSMS, Path]]:
    """Both fakes and a scratch directory."""
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        async with FakeTelegram() as telegram, FakeNusaSMS() as nusasms:
            yield telegram, nusasms, Path(tmp)


def inbox(ref_no: str, room: int, text: str = "Halo, apakah pesanan saya sudah dikirim?") -> bytes:
    """An inbox callback body."""
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 7 * 3600))
    return json.dumps(
        {
            "room_id": f"00000000-0000-4000-8000-{room:012d}",
            "ref_no": ref_no,
            "text": text,
            "inbox_date": now,
            "sender_number": f"62812{room:08d}",
        }
    ).encode()


@dataclass
class LoadResult:
    """What a load run measured."""

    ok: int
    errors: int
    seconds: float
    latencies: list[float]
    acknowledged: list[str]

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000


async def load(
    url: str,
    *,
    clients: int,
    seconds: float,
    body: Callable[[int], tuple[str, bytes]],
) -> LoadResult:
    """`clients` keep-alive connections posting as fast as answers come, for `seconds`."""
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    latencies: list[float] = []
    acknowledged: list[str] = []
    errors = 0
    counter = 0
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal counter, errors
            while time.perf_counter() < stop_at:
                counter += 1
                ref_no, data = body(counter)
                started = time.perf_counter()
                try:
                    async with session.post(url, data=data, headers=headers) as response:
                        await response.read()
                        status = response.status
                except aiohttp.ClientError:
                    errors += 1
                    continue
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                    acknowledged.append(ref_no)
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    return LoadResult(len(latencies), errors, elapsed, latencies, acknowledged)


def cpu_note() -> str:
    """The machine, for the results file."""
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
