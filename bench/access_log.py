"""Cost of one access-log line on the event loop, aiohttp's logger vs the bridge's.

Calls each access logger's `log()` for a callback request as the server would, with the
bridge's logging set-up (redaction, line format) writing to a file, and reports the
microseconds per request spent on the calling thread (for the bridge's logger, also the
time its writing thread takes per line, which shares the interpreter).

    python -m bench.access_log [--lines 50000]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from unittest import mock

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_log import AccessLogger

from bench.common import SECRET, median
from bridge.core.logs import BackgroundLog, LineFormatter, Redactor, redact_loggers
from bridge.web.server import CompactAccessLogger


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        handler = logging.FileHandler(Path(tmp) / "log")
        handler.addFilter(Redactor([SECRET]))
        handler.setFormatter(LineFormatter())
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        redact_loggers([SECRET])
        access = logging.getLogger("aiohttp.access")
        request = make_mocked_request(
            "POST",
            f"/callbacks/{SECRET}/wa/inbox",
            transport=mock.Mock(get_extra_info=lambda *_: ("127.0.0.1", 5555)),
        )
        response = web.Response(body=b'{"ok": true}')
        old = AccessLogger(access, AccessLogger.LOG_FORMAT)
        sink = BackgroundLog(access, max_waiting=args.lines + 1, every=3600)
        new = type("C", (CompactAccessLogger,), {"__slots__": (), "sink": sink})(access, "")
        figures: dict[str, list[float]] = {"aiohttp": [], "bridge": [], "bridge thread": []}
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(args.lines):
                old.log(request, response, 0.001)
            figures["aiohttp"].append((time.perf_counter() - started) / args.lines * 1e6)
            started = time.perf_counter()
            for _ in range(args.lines):
                new.log(request, response, 0.001)
            figures["bridge"].append((time.perf_counter() - started) / args.lines * 1e6)
            started = time.perf_counter()
            sink.write_waiting()  # what the thread does with them, timed on this thread
            figures["bridge thread"].append((time.perf_counter() - started) / args.lines * 1e6)
        text = (Path(tmp) / "log").read_text()
        assert SECRET not in text
        for name, values in figures.items():
            runs = ", ".join(f"{v:.1f}" for v in values)
            print(f"{name}: {median(values):.1f} µs per line (runs {runs})")


if __name__ == "__main__":
    main()
