"""Typed shapes of what the NusaSMS API sends back and what we send it (see the reference's
"Schemas"). Every model is frozen; numbers and dates are read leniently because the real API
is looser than its documentation."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "BroadcastMessage",
    "BroadcastMessageParam",
    "Channel",
    "Credit",
    "Envelope",
    "EnvelopeStatus",
    "Person",
    "ReplyFile",
    "ReplyMessageType",
    "Template",
    "ValidationIssue",
]

DataT = TypeVar("DataT")

# Zero dates are MySQL's way of saying "never set".
_NO_DATE = frozenset({"", "0000-00-00", "0000-00-00 00:00:00"})
_DATE_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}")
# Identifier-like keys are numbers but not balances (idClient, idPerson, channel_id).
_ID_KEY = re.compile(r"^id(?:[A-Z_]|$)|_id$|Id$")


class _Frozen(BaseModel):
    # The API sends ids as numbers in some places and strings in others.
    model_config = ConfigDict(frozen=True, coerce_numbers_to_str=True)


def _lenient_date(value: Any) -> date | None:
    """A date from "YYYY-MM-DD" (a time part is ignored), or None when unset or unparsable."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text in _NO_DATE or not _DATE_PREFIX.match(text):
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _as_float(value: Any) -> float | None:
    """A finite float from a JSON number or numeric string; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            return None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


class ReplyMessageType(StrEnum):
    """Kind of content in a reply message."""

    TEXT = "text"
    IMAGE = "image"
    DOCUMENT = "document"
    VIDEO = "video"
    AUDIO = "audio"
    VOICE = "voice"


class EnvelopeStatus(BaseModel):
    """The `error` and `message` fields every NusaSMS response wraps its data in."""

    model_config = ConfigDict(frozen=True, coerce_numbers_to_str=True)

    error: bool = False
    message: str | None = None


class Envelope(EnvelopeStatus, Generic[DataT]):
    """A whole NusaSMS response: `{"error": bool, "message": str, "data": ...}`."""

    data: DataT


class Person(_Frozen):
    """The account an API key belongs to."""

    userid: str
    idPerson: int
    idClient: int


class Credit(_Frozen):
    """Balances and their expiry dates; unknown balances are kept so they can be alerted on."""

    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False)

    idClient: int
    wa_balance: float | None = None
    wa_expired_date: date | None = None
    hlr_balance: float | None = None
    hlr_expired_date: date | None = None
    sim_balance: float | None = None
    sim_expired_date: date | None = None
    sms_balance: float | None = None
    sms_expired_date: date | None = None
    pulsa_balance: float | None = None

    @field_validator(
        "wa_balance", "hlr_balance", "sim_balance", "sms_balance", "pulsa_balance", mode="before"
    )
    @classmethod
    def _blank_balance_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "wa_expired_date",
        "hlr_expired_date",
        "sim_expired_date",
        "sms_expired_date",
        mode="before",
    )
    @classmethod
    def _lenient_expiry(cls, value: Any) -> date | None:
        return _lenient_date(value)

    def _all_fields(self) -> dict[str, Any]:
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        fields.update(self.model_extra or {})
        return fields

    def numeric_fields(self) -> dict[str, float]:
        """Every numeric balance, the unknown ones included; ids are left out."""
        numbers: dict[str, float] = {}
        for name, value in self._all_fields().items():
            if _ID_KEY.search(name) or name.endswith("_date"):
                continue
            number = _as_float(value)
            if number is not None:
                numbers[name] = number
        return numbers

    def expiry_dates(self) -> dict[str, date]:
        """Every `*_expired_date` that holds a real date, the unknown ones included."""
        dates: dict[str, date] = {}
        for name, value in self._all_fields().items():
            if name.endswith("_expired_date"):
                parsed = _lenient_date(value)
                if parsed is not None:
                    dates[name] = parsed
        return dates


class Channel(_Frozen):
    """A WhatsApp sender (gateway) of the account."""

    id: str
    webhook: str | None = None
    settings: Any = None
    organization_id: str | None = None
    created_at: datetime | None = None

    @field_validator("created_at", mode="before")
    @classmethod
    def _unset_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() in _NO_DATE else value


class Template(_Frozen):
    """An approved (or pending) broadcast message template."""

    id: str
    name: str
    header: Any = None
    body: Any = None
    footer: Any = None
    status: str | None = None
    category: str | None = None
    # Not in the reference, but seen (Meta's shape): kept so templates read either way.
    language: Any = None
    components: Any = None
    buttons: Any = None


class BroadcastMessageParam(_Frozen):
    """Body of a template (broadcast) message."""

    destination: str = Field(min_length=1)
    destination_name: str
    template_id: str = Field(min_length=1)
    channel_id: str = Field(min_length=1)
    parameters: dict[str, list[Any] | dict[str, Any]] | None = None


class BroadcastMessage(_Frozen):
    """The `data` of a send answer: the reference of the queued message."""

    ref_no: str

    @field_validator("ref_no")
    @classmethod
    def _ref_no_present(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("ref_no is empty")
        return value


class ValidationIssue(_Frozen):
    """One entry of a 422 answer's `detail` list."""

    loc: tuple[str | int, ...] = ()
    msg: str
    type: str = ""

    def describe(self) -> str:
        """The message, prefixed by where it applies (`body.room_id: field required`)."""
        where = ".".join(str(part) for part in self.loc)
        return f"{where}: {self.msg}" if where else self.msg


@dataclass(frozen=True, slots=True)
class ReplyFile:
    """A file uploaded with a reply message."""

    filename: str
    content: bytes
    content_type: str

    def __repr__(self) -> str:
        # The content may be megabytes; a repr in a log line must stay short.
        return (
            f"ReplyFile(filename={self.filename!r}, content=<{len(self.content)} bytes>, "
            f"content_type={self.content_type!r})"
        )
