"""Logging set-up: one line per event (optionally JSON), secrets redacted everywhere.

Whatever a record carries (a callback's `room_id`, a request line sent by anyone), it
cannot forge a line: control characters are escaped, a traceback's lines are indented
under their record, a message is cut at `MAX_MESSAGE_CHARS`. The HTTP server's complaints
about malformed requests are one short line, said once and then counted.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

# A bot token in any URL or message: "<digits>:<35 or so url-safe characters>". Not `\b`:
# in Telegram's URLs the token follows "bot" with no word boundary between.
_BOT_TOKEN = re.compile(r"(?<![0-9])\d{4,}:[A-Za-z0-9_-]{20,}")
# The secret segment of a callback URL, whatever its spelling: aiohttp's access log writes
# the path as the client sent it, so a percent-encoded secret would slip past a plain
# replace, and a wrong secret may be a near miss of the real one (or the previous one).
_CALLBACK_PATH = re.compile(r"(?<=/callbacks/)[^/\s?#\"']+")
REDACTED = "***"

# Longer messages are cut: a log line is for reading, not for echoing what a client sent.
MAX_MESSAGE_CHARS = 2000
MAX_EXCEPTION_CHARS = 16000
# Every character that could end or rewrite a line: C0 and C1 controls, DEL, the Unicode
# line and paragraph separators (str.splitlines breaks on several of them).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# The HTTP server logs a malformed request with a traceback; this many seconds between
# two such lines, the ones in between are counted.
SERVER_NOISE_SECONDS = 60.0


def escape(text: str) -> str:
    """`text` on one line: control characters written as escapes."""
    return _CONTROL.sub(_escape_char, text)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters]"


class Redactor(logging.Filter):
    """Replaces every known secret and anything shaped like a bot token."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """`text` with secrets replaced."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        # Plain replacements and guards that skip a search that cannot match: this runs
        # for every access line.
        if "/callbacks/" in text:
            text = _CALLBACK_PATH.sub(REDACTED, text)
        return _BOT_TOKEN.sub(REDACTED, text) if ":" in text else text

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message once, redacted, so no handler sees the raw arguments."""
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        record.exc_info = None
        return True


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    text = record.exc_text or ""
    if not text and record.exc_info:
        text = formatter.formatException(record.exc_info)
    if record.stack_info:
        text = f"{text}\n{record.stack_info}" if text else record.stack_info
    return _cut(text, MAX_EXCEPTION_CHARS)


class LineFormatter(logging.Formatter):
    """`time level logger: message`, one line per record; a traceback indented below it."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The record as text no client can add a line to."""
        record.message = escape(_cut(record.getMessage(), MAX_MESSAGE_CHARS))
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        trace = _exception_text(self, record)
        if trace:
            # Every line of a traceback starts with "  | ", so none reads as a new record.
            line += "".join(f"\n  | {escape(part)}" for part in trace.split("\n"))
        return line


# JSON escapes C0 controls itself; these it leaves as they are with ensure_ascii=False.
_JSON_RAW = {c: f"\\u{c:04x}" for c in (*range(0x7F, 0xA0), 0x2028, 0x2029)}


class JSONFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise the record."""
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _cut(record.getMessage(), MAX_MESSAGE_CHARS),
        }
        trace = _exception_text(self, record)
        if trace:
            entry["exception"] = trace
        return json.dumps(entry, ensure_ascii=False).translate(_JSON_RAW)


class ServerNoise(logging.Filter):
    """The HTTP server's and the event loop's complaints about clients, made small.

    aiohttp logs every malformed request with a traceback (and the request's bytes in it);
    asyncio logs every failed accept the same way. Such a record becomes one short line
    without traceback, and while they keep coming, one line per `every` seconds with the
    number of those left out.
    """

    _NOISE = ("Error handling request", "socket.accept() out of system resource")
    # What a client's malformed request raises in aiohttp (its base class, matched by name:
    # this module knows nothing of aiohttp). A handler's own bug keeps its traceback.
    _CLIENTS_FAULT = "HttpProcessingError"

    def __init__(
        self, *, every: float = SERVER_NOISE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._every = every
        self._clock = clock
        self._last_said: float | None = None
        self.left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """Shrink a complaint to one line; drop it if one was said recently."""
        message = str(record.msg)
        if not any(message.startswith(noise) for noise in self._NOISE):
            return True
        error = record.exc_info[1] if record.exc_info else None
        if message.startswith("Error handling request") and not (
            error is not None
            and any(c.__name__ == self._CLIENTS_FAULT for c in type(error).__mro__)
        ):
            return True
        now = self._clock()
        if self._last_said is not None and now - self._last_said < self._every:
            self.left_out += 1
            return False
        summary = record.getMessage().split("\n", 1)[0]
        if error is not None:
            summary += f": {type(error).__name__}: {_cut(str(error), 200)}"
        if self.left_out:
            summary += f" ({self.left_out} more since last said)"
        record.msg, record.args = _cut(summary, 500), None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        self._last_said, self.left_out = now, 0
        return True


class BackgroundLog:
    """Lines for one logger, handed over cheaply and written by a thread of their own.

    For the access log: a request only appends `(time, message)` to a bounded buffer (no
    log record, no formatting, no write on the event loop); the thread turns them into
    records of `logger` and passes them through its filters (the redactor) and handlers.
    A slow or blocked sink holds up this thread, never a request; once `max_waiting`
    lines wait, new ones are dropped and counted (one line says how many).
    """

    def __init__(
        self, logger: logging.Logger, *, max_waiting: int = 10_000, every: float = 0.05
    ) -> None:
        self.logger = logger
        self.dropped = 0
        self._max = max_waiting
        self._every = every
        self._waiting: collections.deque[tuple[float, str]] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def put(self, created: float, message: str) -> None:
        """Queue one line (called from the event loop; never blocks)."""
        if len(self._waiting) >= self._max:
            self.dropped += 1
            return
        self._waiting.append((created, message))

    def start(self) -> None:
        """Start the writing thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"log-{self.logger.name}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Write what waits (at most `timeout` seconds of a slow sink) and end the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.write_waiting()
        self.write_waiting()

    def write_waiting(self) -> None:
        """Hand every waiting line to the logger (the thread's work, also for a benchmark)."""
        waiting, logger = self._waiting, self.logger
        while waiting:
            created, message = waiting.popleft()
            record = logger.makeRecord(logger.name, logging.INFO, "(access)", 0, message, (), None)
            record.created = created
            record.msecs = (created - int(created)) * 1000
            logger.handle(record)
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            logger.warning("%d lines left out: the log could not keep up", dropped)


# Libraries whose log lines may carry a secret: the access log prints callback paths (with
# the callback secret), httpx prints Telegram URLs (with the bot token).
SECRET_BEARING_LOGGERS = ("aiohttp.access", "aiohttp.server", "httpx", "telegram")
# Loggers that speak for every client that connects: anyone can make them talk.
NOISY_LOGGERS = ("aiohttp.server", "asyncio")


def redact_loggers(secrets: Iterable[str]) -> Callable[[], None]:
    """Redact at the source, and quiet the server's noise, whatever handlers are attached.

    Returns the undo.
    """
    redactor = Redactor(secrets)
    added: list[tuple[logging.Logger, logging.Filter]] = []
    # The noise filter goes first: it drops a traceback before anything renders it.
    for name in NOISY_LOGGERS:
        added.append((logging.getLogger(name), ServerNoise()))
    for name in SECRET_BEARING_LOGGERS:
        added.append((logging.getLogger(name), redactor))
    for logger, log_filter in added:
        logger.addFilter(log_filter)

    def undo() -> None:
        for logger, log_filter in added:
            logger.removeFilter(log_filter)

    return undo


def setup_logging(
    level: str = "INFO", *, json_lines: bool = False, secrets: Iterable[str] = ()
) -> None:
    """Configure the root logger for the bridge process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(Redactor(secrets))
    handler.setFormatter(JSONFormatter() if json_lines else LineFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request URL at INFO, and Telegram's URLs carry the token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
