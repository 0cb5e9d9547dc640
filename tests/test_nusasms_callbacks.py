"""What NusaSMS POSTs to us is checked once, and anything odd is a pydantic ValidationError."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from bridge.nusasms import InboxCallback, MessageStatus, StatusCallback

FIXTURES = Path(__file__).parent / "fixtures" / "nusasms"


def load(name: str) -> dict[str, Any]:
    """A JSON payload from tests/fixtures/nusasms."""
    payload: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return payload


def inbox(**changes: Any) -> bytes:
    """The reference inbox callback with some fields changed (None removes one)."""
    payload = load("inbox_callback.json") | changes
    return json.dumps({key: value for key, value in payload.items() if value is not None}).encode()


def status(**changes: Any) -> bytes:
    """The reference status callback with some fields changed."""
    return json.dumps(load("status_callback.json") | changes).encode()


# --- the documented examples ----------------------------------------------------------------


def test_the_reference_inbox_callback_is_accepted() -> None:
    message = InboxCallback.model_validate_json(inbox())

    assert message.room_id == "xxxx-fb79-xxxx-b19e-546f761dfebf"
    assert message.ref_no == "XXXX05224010031105891853"
    assert message.text == "Pesan inbox"
    assert message.inbox_date == datetime(2022, 8, 12, 10, 50, 13)
    assert message.inbox_date.tzinfo is None
    assert message.sender_number == "6281234567890"


def test_the_reference_status_callback_is_accepted() -> None:
    update = StatusCallback.model_validate_json(status())

    assert update.ref_no == "YOUR_MESSAGE_REF_NO"
    assert update.status is MessageStatus.READ
    assert update.status_date == datetime(2022, 8, 12, 10, 22, 50)


def test_unknown_fields_are_ignored_and_the_result_is_frozen() -> None:
    message = InboxCallback.model_validate_json(inbox(channel="x", extra={"a": 1}))

    assert not hasattr(message, "channel")
    with pytest.raises(ValidationError):
        message.text = "changed"  # type: ignore[misc]


# --- statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sent", MessageStatus.SENT),
        ("DELIVERED", MessageStatus.DELIVERED),
        ("Read", MessageStatus.READ),
        ("failed", MessageStatus.FAILED),
        ("queue", MessageStatus.QUEUED),
        ("queued", MessageStatus.QUEUED),
        ("unsent", MessageStatus.UNSENT),
        ("un-sent", MessageStatus.UNSENT),
        ("abort", MessageStatus.ABORTED),
        ("aborted", MessageStatus.ABORTED),
        (" delivered ", MessageStatus.DELIVERED),
        ("U", MessageStatus.UNSENT),
        ("q", MessageStatus.QUEUED),
        ("S", MessageStatus.SENT),
        ("d", MessageStatus.DELIVERED),
        ("R", MessageStatus.READ),
        ("a", MessageStatus.ABORTED),
        ("F", MessageStatus.FAILED),
    ],
)
def test_status_accepts_words_and_letter_codes_in_any_case(
    raw: str, expected: MessageStatus
) -> None:
    assert StatusCallback.model_validate_json(status(status=raw)).status is expected


@pytest.mark.parametrize("raw", ["", "x", "pending", "seen", 1, True, None, ["read"]])
def test_an_unknown_status_is_refused(raw: Any) -> None:
    with pytest.raises(ValidationError):
        StatusCallback.model_validate_json(status(status=raw))


def test_status_rank_orders_progress_and_puts_failures_last() -> None:
    progress = [
        MessageStatus.UNSENT,
        MessageStatus.QUEUED,
        MessageStatus.SENT,
        MessageStatus.DELIVERED,
        MessageStatus.READ,
    ]
    assert [s.rank for s in progress] == [0, 1, 2, 3, 4]
    assert MessageStatus.ABORTED.rank == MessageStatus.FAILED.rank == 5


def test_only_read_aborted_and_failed_are_final() -> None:
    assert {s for s in MessageStatus if s.is_final} == {
        MessageStatus.READ,
        MessageStatus.ABORTED,
        MessageStatus.FAILED,
    }
    assert {s for s in MessageStatus if s.is_failure} == {
        MessageStatus.ABORTED,
        MessageStatus.FAILED,
    }


# --- dates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2022-08-12 10:50:13", datetime(2022, 8, 12, 10, 50, 13)),
        ("2022-08-12T10:50:13", datetime(2022, 8, 12, 10, 50, 13)),
        ("2022-08-12T10:50:13.250", datetime(2022, 8, 12, 10, 50, 13, 250_000)),
        ("2022-08-12T03:50:13Z", datetime(2022, 8, 12, 3, 50, 13, tzinfo=UTC)),
        (
            "2022-08-12T10:50:13+07:00",
            datetime(2022, 8, 12, 10, 50, 13, tzinfo=timezone(timedelta(hours=7))),
        ),
        ("2000-01-01 00:00:00", datetime(2000, 1, 1)),
        ("2100-12-31 23:59:59", datetime(2100, 12, 31, 23, 59, 59)),
    ],
)
def test_dates_in_the_documented_or_iso_form_are_accepted_and_naive_stays_naive(
    raw: str, expected: datetime
) -> None:
    parsed = InboxCallback.model_validate_json(inbox(inbox_date=raw)).inbox_date

    assert parsed == expected
    assert (parsed.tzinfo is None) == (expected.tzinfo is None)


@pytest.mark.parametrize(
    "raw",
    [
        "1999-12-31 23:59:59",
        "2101-01-01 00:00:00",
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+14:00",
        "2022-13-01 00:00:00",
        "2022-02-30 10:00:00",
        "2022-08-12",
        "12/08/2022 10:50:13",
        "2022-08-12 10:50:13 WIB",
        "2022-08-12T10:50:13+25:00",
        "",
        1660301413,
        None,
    ],
)
def test_garbage_dates_are_a_validation_error(raw: Any) -> None:
    with pytest.raises(ValidationError):
        InboxCallback.model_validate_json(inbox(inbox_date=raw))
    with pytest.raises(ValidationError):
        StatusCallback.model_validate_json(status(status_date=raw))


# --- identifiers, text and sender ------------------------------------------------------------


def test_numeric_room_id_and_ref_no_become_strings() -> None:
    message = InboxCallback.model_validate_json(inbox(room_id=12345, ref_no=98765432109876543210))

    assert message.room_id == "12345"
    assert message.ref_no == "98765432109876543210"
    assert StatusCallback.model_validate_json(status(ref_no=7)).ref_no == "7"


def test_identifiers_are_stripped_and_may_be_200_characters() -> None:
    message = InboxCallback.model_validate_json(inbox(room_id="  r-1  ", ref_no="x" * 200))

    assert message.room_id == "r-1"
    assert len(message.ref_no) == 200


@pytest.mark.parametrize(
    "raw", ["", "   ", "x" * 201, True, False, 1.5, 1e25, {"id": 1}, ["a"], 10**250]
)
@pytest.mark.parametrize("field", ["room_id", "ref_no"])
def test_bad_identifiers_are_refused(field: str, raw: Any) -> None:
    with pytest.raises(ValidationError):
        InboxCallback.model_validate_json(inbox(**{field: raw}))


def test_a_null_ref_no_in_a_status_is_refused() -> None:
    with pytest.raises(ValidationError):
        StatusCallback.model_validate_json(status(ref_no=None))


@pytest.mark.parametrize("text", ["", "  ", "x" * 100_000, "🙂 línea\nnueva"])
def test_text_may_be_empty_and_is_kept_as_sent(text: str) -> None:
    assert InboxCallback.model_validate_json(inbox(text=text)).text == text


@pytest.mark.parametrize(
    "payload",
    [
        inbox(text=None),  # missing
        inbox(text="x" * 100_001),
        inbox(text=5),
        inbox(text=["hi"]),
        inbox().replace(b'"Pesan inbox"', b"null"),
    ],
    ids=["missing", "too-long", "number", "list", "null"],
)
def test_bad_or_missing_text_is_refused(payload: bytes) -> None:
    with pytest.raises(ValidationError):
        InboxCallback.model_validate_json(payload)


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("6281234567890", "6281234567890"),
        ("+62 812-3456-7890", "6281234567890"),
        ("  +6281234567890 ", "6281234567890"),
        ("123456", "123456"),
        ("1" * 20, "1" * 20),
        (6281234567890, "6281234567890"),
    ],
)
def test_sender_number_is_normalised_to_digits(raw: Any, digits: str) -> None:
    assert InboxCallback.model_validate_json(inbox(sender_number=raw)).sender_number == digits


@pytest.mark.parametrize(
    "raw",
    [
        "12345",
        "1" * 21,
        "628XXXXXXXX",
        "++6281234567",
        "62812345+67",
        "(021) 1234567",
        "٦٢٨١٢٣٤٥٦٧٨",  # Arabic-Indic digits are digits to str.isdigit, not to us
        "",
        True,
        -6281234567,
        62812345.67,
    ],
)
def test_bad_sender_numbers_are_refused(raw: Any) -> None:
    with pytest.raises(ValidationError):
        InboxCallback.model_validate_json(inbox(sender_number=raw))


# --- hostile bodies ------------------------------------------------------------------------


MODELS: list[type[BaseModel]] = [InboxCallback, StatusCallback]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe\x00{",
        b'{"room_id": "\xff"}',
        b"[]",
        b'[{"ref_no": "1"}]',
        b"null",
        b'"read"',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"ref_no": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"ref_no": 1' + b"0" * 5_000 + b"}",
        b'{"ref_no": 1e999, "status": "read", "status_date": "2022-08-12 10:22:50"}',
        b'{"ref_no": NaN}',
        b'{"ref_no": "\\ud800"}',
    ],
    ids=[
        "empty",
        "bad-utf8",
        "bad-utf8-in-string",
        "array",
        "array-of-objects",
        "null",
        "string",
        "deep-array",
        "deep-field",
        "huge-int",
        "huge-float",
        "nan",
        "lone-surrogate",
    ],
)
def test_hostile_bodies_are_a_validation_error(model: type[BaseModel], raw: bytes) -> None:
    with pytest.raises(ValidationError):
        model.model_validate_json(raw)


def validates_or_refuses(model: type[BaseModel], raw: bytes) -> BaseModel | None:
    """The parsed model, or None when refused; any exception but ValidationError escapes."""
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        return None


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
identifiers = st.text(min_size=1, max_size=40) | st.integers(min_value=0, max_value=10**30)
timestamps = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2110, 12, 31)).flatmap(
    lambda when: st.sampled_from(
        [
            str(when),
            when.isoformat(),
            when.replace(tzinfo=UTC).isoformat(),
            when.replace(tzinfo=timezone(timedelta(hours=7))).isoformat(" "),
        ]
    )
)
# Mostly well-formed values, so that whole bodies get past validation now and then.
WELL_FORMED: dict[str, st.SearchStrategy[Any]] = {
    "room_id": identifiers,
    "ref_no": identifiers,
    "text": st.text(max_size=40),
    "inbox_date": timestamps,
    "status_date": timestamps,
    "sender_number": st.from_regex(r"\+?[0-9][0-9 \-]{3,24}", fullmatch=True),
    "status": st.sampled_from(["read", "SENT", "un-sent", "queue", "Q", "f", "Aborted", "seen"]),
}


def field_payloads(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies with the model's fields: well-formed, arbitrary JSON, or missing."""
    values = {name: WELL_FORMED[name] | WELL_FORMED[name] | json_values for name in fields}
    return st.fixed_dictionaries(values) | st.fixed_dictionaries({}, optional=values)


@pytest.mark.parametrize("model", MODELS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_any_json_value_validates_or_is_refused(model: type[BaseModel], value: Any) -> None:
    validates_or_refuses(model, json.dumps(value).encode())


@pytest.mark.parametrize("model", MODELS)
@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_any_bytes_validate_or_are_refused(model: type[BaseModel], raw: bytes) -> None:
    validates_or_refuses(model, raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=field_payloads(["room_id", "ref_no", "text", "inbox_date", "sender_number"]),
)
def test_any_inbox_shaped_body_validates_or_is_refused(payload: dict[str, Any]) -> None:
    message = validates_or_refuses(InboxCallback, json.dumps(payload).encode())

    if isinstance(message, InboxCallback):
        assert message.room_id == message.room_id.strip() != ""
        assert 2000 <= message.inbox_date.year <= 2100
        assert message.sender_number.isascii()
        assert message.sender_number.isdigit()
        assert 6 <= len(message.sender_number) <= 20


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=field_payloads(["ref_no", "status", "status_date"]))
def test_any_status_shaped_body_validates_or_is_refused(payload: dict[str, Any]) -> None:
    update = validates_or_refuses(StatusCallback, json.dumps(payload).encode())

    if isinstance(update, StatusCallback):
        assert isinstance(update.status, MessageStatus)
        assert 0 < len(update.ref_no) <= 200
