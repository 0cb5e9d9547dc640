"""Logging set-up: one line per event (optionally JSON), secrets redacted everywhere."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

# A bot token in any URL or message: "<digits>:<35 or so url-safe characters>".
_BOT_TOKEN = re.compile(r"\b\d{4,}:[A-Za-z0-9_-]{20,}")
# The secret segment of a callback URL, whatever its spelling: aiohttp's access log writes
# the path as the client sent it, so a percent-encoded secret would slip past a plain
# replace, and a wrong secret may be a near miss of the real one (or the previous one).
_CALLBACK_PATH = re.compile(r"(/callbacks/)[^/\s?#\"']+")
REDACTED = "***"


class Redactor(logging.Filter):
    """Replaces every known secret and anything shaped like a bot token."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """`text` with secrets replaced."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        text = _CALLBACK_PATH.sub(rf"\g<1>{REDACTED}", text)
        return _BOT_TOKEN.sub(REDACTED, text)

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


class JSONFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise the record."""
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


# Libraries whose log lines may carry a secret: the access log prints callback paths (with
# the callback secret), httpx prints Telegram URLs (with the bot token).
SECRET_BEARING_LOGGERS = ("aiohttp.access", "aiohttp.server", "httpx", "telegram")


def redact_loggers(secrets: Iterable[str]) -> Callable[[], None]:
    """Redact at the source, whatever handlers are attached; returns the undo."""
    redactor = Redactor(secrets)
    loggers = [logging.getLogger(name) for name in SECRET_BEARING_LOGGERS]
    for logger in loggers:
        logger.addFilter(redactor)

    def undo() -> None:
        for logger in loggers:
            logger.removeFilter(redactor)

    return undo


def setup_logging(
    level: str = "INFO", *, json_lines: bool = False, secrets: Iterable[str] = ()
) -> None:
    """Configure the root logger for the bridge process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(Redactor(secrets))
    handler.setFormatter(
        JSONFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request URL at INFO, and Telegram's URLs carry the token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
