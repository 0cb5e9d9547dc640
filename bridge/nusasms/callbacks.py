"""What NusaSMS POSTs to our callback URLs: inbox messages and delivery statuses.

The bodies come from the internet, so every field is checked here, once; anything that does
not fit raises pydantic's ValidationError and nothing else.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

__all__ = ["InboxCallback", "MessageStatus", "StatusCallback"]

_MAX_ID_CHARS = 200
_MAX_TEXT_CHARS = 100_000
_MIN_YEAR, _MAX_YEAR = 2000, 2100
# The documented "YYYY-MM-DD HH:MM:SS", or ISO-8601 with "T", fractions and an offset.
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII,
)
# Explicit [0-9]: `\d` would also accept Arabic-Indic and other Unicode digits.
_PHONE = re.compile(r"\+?[0-9][0-9 \-]*")
_MIN_PHONE_DIGITS, _MAX_PHONE_DIGITS = 6, 20


class MessageStatus(StrEnum):
    """Delivery state of a message we sent, as NusaSMS reports it."""

    UNSENT = "unsent"
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    ABORTED = "aborted"
    FAILED = "failed"

    @classmethod
    def _missing_(cls, value: object) -> MessageStatus | None:
        # NusaSMS speaks in words, in one-letter codes and in both spellings of some words.
        if not isinstance(value, str):
            return None
        key = value.strip().lower().replace("-", "").replace("_", "")
        return _STATUS_ALIASES.get(key)

    @property
    def rank(self) -> int:
        """Progress order; a status never replaces one of a higher rank."""
        return _STATUS_RANK[self]

    @property
    def is_final(self) -> bool:
        """No later status can follow (read, aborted or failed)."""
        return self in (MessageStatus.READ, MessageStatus.ABORTED, MessageStatus.FAILED)

    @property
    def is_failure(self) -> bool:
        """The message will never arrive (aborted or failed)."""
        return self in (MessageStatus.ABORTED, MessageStatus.FAILED)


_STATUS_RANK: dict[MessageStatus, int] = {
    MessageStatus.UNSENT: 0,
    MessageStatus.QUEUED: 1,
    MessageStatus.SENT: 2,
    MessageStatus.DELIVERED: 3,
    MessageStatus.READ: 4,
    # Terminal: once a message failed, a late "sent" or "delivered" must not revive it.
    MessageStatus.ABORTED: 5,
    MessageStatus.FAILED: 5,
}

_STATUS_ALIASES: dict[str, MessageStatus] = {
    "u": MessageStatus.UNSENT,
    "unsent": MessageStatus.UNSENT,
    "q": MessageStatus.QUEUED,
    "queue": MessageStatus.QUEUED,
    "queued": MessageStatus.QUEUED,
    "s": MessageStatus.SENT,
    "sent": MessageStatus.SENT,
    "d": MessageStatus.DELIVERED,
    "delivered": MessageStatus.DELIVERED,
    "r": MessageStatus.READ,
    "read": MessageStatus.READ,
    "a": MessageStatus.ABORTED,
    "abort": MessageStatus.ABORTED,
    "aborted": MessageStatus.ABORTED,
    "f": MessageStatus.FAILED,
    "failed": MessageStatus.FAILED,
}


def _wrong_type(expected: str) -> PydanticCustomError:
    # A TypeError would escape pydantic; a custom error becomes part of its ValidationError.
    return PydanticCustomError("wrong_type", "must be {expected}", {"expected": expected})


def _identifier(value: Any) -> str:
    """A room_id or ref_no: a non-blank string, or a JSON integer written as one."""
    if isinstance(value, bool):
        raise _wrong_type("a string, not a boolean")
    if isinstance(value, float):
        # 1e25 would come back as "10000000000000000905969664": refuse rather than guess.
        raise _wrong_type("a string or a whole number")
    if isinstance(value, int):
        if value.bit_length() > 700:  # far beyond 200 digits; spares str() a huge number
            raise ValueError(f"must be at most {_MAX_ID_CHARS} characters")
        value = str(value)
    if not isinstance(value, str):
        raise _wrong_type("a string")
    text: str = value.strip()
    if not text:
        raise ValueError("must not be empty")
    if len(text) > _MAX_ID_CHARS:
        raise ValueError(f"must be at most {_MAX_ID_CHARS} characters")
    return text


def _timestamp(value: Any) -> datetime:
    """A callback date; naive stays naive (it is in NusaSMS's local time zone)."""
    if not isinstance(value, str):
        raise _wrong_type("a date-time string")
    text = value.strip()
    if len(text) > 40 or not _TIMESTAMP.fullmatch(text):
        raise ValueError("must look like 'YYYY-MM-DD HH:MM:SS' or ISO-8601")
    try:
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"is not a valid date-time: {exc}") from None
    if not _MIN_YEAR <= parsed.year <= _MAX_YEAR:
        # Out-of-range years are garbage, and would overflow once a zone is applied.
        raise ValueError(f"year must be between {_MIN_YEAR} and {_MAX_YEAR}")
    return parsed


def _phone_number(value: Any) -> str:
    """The sender's number as digits only."""
    if isinstance(value, bool):
        raise _wrong_type("a phone number, not a boolean")
    if isinstance(value, int) and value >= 0 and value.bit_length() <= 70:
        value = str(value)
    if not isinstance(value, str):
        raise _wrong_type("a phone number string")
    text = value.strip()
    if len(text) > 64 or not _PHONE.fullmatch(text):
        raise ValueError("must be digits with an optional leading '+'")
    digits = re.sub(r"[^0-9]", "", text)
    if not _MIN_PHONE_DIGITS <= len(digits) <= _MAX_PHONE_DIGITS:
        raise ValueError(
            f"must have {_MIN_PHONE_DIGITS} to {_MAX_PHONE_DIGITS} digits, has {len(digits)}"
        )
    return digits


def _status(value: Any) -> MessageStatus:
    if not isinstance(value, str):
        raise _wrong_type("a status word or letter")
    try:
        return MessageStatus(value)
    except ValueError:
        raise ValueError(f"unknown message status {value[:20]!r}") from None


_Identifier = Annotated[str, BeforeValidator(_identifier)]
_Timestamp = Annotated[datetime, BeforeValidator(_timestamp)]
_PhoneNumber = Annotated[str, BeforeValidator(_phone_number)]
_Status = Annotated[MessageStatus, BeforeValidator(_status)]
_Text = Annotated[str, Field(max_length=_MAX_TEXT_CHARS)]


class _Callback(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class InboxCallback(_Callback):
    """A WhatsApp message a customer sent us."""

    room_id: _Identifier
    ref_no: _Identifier
    text: _Text
    inbox_date: _Timestamp
    sender_number: _PhoneNumber


class StatusCallback(_Callback):
    """A delivery status change of a message we sent."""

    ref_no: _Identifier
    status: _Status
    status_date: _Timestamp
