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


# --- properties ----------------------------------------------------------------------------
#
# Each generated field comes with what the model must make of it: the parsed value, or
# INVALID. A body is accepted exactly when every field is present and valid, and then every
# parsed value is the expected one; a parsed model survives a round trip through its JSON.

INVALID: Any = object()
REQUIRED: dict[type[BaseModel], set[str]] = {
    InboxCallback: {"room_id", "ref_no", "text", "inbox_date", "sender_number"},
    StatusCallback: {"ref_no", "status", "status_date"},
}
Field = tuple[Any, Any]  # (what NusaSMS sends, what the model must make of it)


def refusal(model: type[BaseModel], raw: bytes) -> list[dict[str, Any]] | None:
    """The errors of a refused body; None if it was accepted."""
    try:
        model.model_validate_json(raw)
    except ValidationError as exc:
        return [dict(e) for e in exc.errors()]
    return None


def mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`valid` nine times in ten, so that whole bodies get accepted often enough."""
    return st.integers(0, 9).flatmap(lambda k: valid if k else other)


def _identifier_expected(raw: Any) -> Any:
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return INVALID
    text = str(raw).strip()
    return text if 0 < len(text) <= 200 else INVALID


identifier_fields: st.SearchStrategy[Field] = mostly(
    st.text(max_size=40).filter(str.strip) | st.integers(-(10**30), 10**30),
    st.text(max_size=40)
    | st.text(min_size=195, max_size=205)
    | st.integers(min_value=10**195, max_value=10**205)
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.none()
    | st.lists(st.text(max_size=3), max_size=2),
).map(lambda raw: (raw, _identifier_expected(raw)))

text_fields: st.SearchStrategy[Field] = mostly(
    st.text(max_size=40).map(lambda raw: (raw, raw)),
    (st.integers() | st.booleans() | st.none() | st.lists(st.text(max_size=3), max_size=2)).map(
        lambda raw: (raw, INVALID)
    ),
)


def _when_forms(when: datetime) -> st.SearchStrategy[Field]:
    in_range = 2000 <= when.year <= 2100
    aware = when.replace(tzinfo=timezone(timedelta(hours=7)))
    forms = [
        (str(when), when),
        (when.isoformat(), when),
        (f"  {when.isoformat(' ')} ", when),
        (when.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z"), when.replace(tzinfo=UTC)),
        (aware.isoformat(), aware),
        (aware.isoformat(" "), aware),
    ]
    return st.sampled_from([(raw, parsed if in_range else INVALID) for raw, parsed in forms])


date_fields: st.SearchStrategy[Field] = mostly(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 12, 31)).flatmap(
        _when_forms
    ),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31)).flatmap(
        _when_forms
    )
    | st.sampled_from(
        ["2022-08-12", "12/08/2022 10:50:13", "2022-02-30 10:00:00", "2022-08-12 25:00:00", ""]
    ).map(lambda raw: (raw, INVALID))
    | (st.integers() | st.none() | st.booleans()).map(lambda raw: (raw, INVALID)),
)


def _phone_expected(raw: Any) -> Any:
    if isinstance(raw, bool):
        return INVALID
    if isinstance(raw, int):
        raw = str(raw) if raw >= 0 else "-"
    if not isinstance(raw, str):
        return INVALID
    # An optional leading "+", then ASCII digits, with spaces and hyphens between them.
    number = raw.strip().removeprefix("+")
    if not number[:1].isascii() or not number[:1].isdigit():
        return INVALID
    if any(c not in "0123456789 -" for c in number):
        return INVALID
    digits = "".join(c for c in number if c in "0123456789")
    return digits if 6 <= len(digits) <= 20 else INVALID


phone_fields: st.SearchStrategy[Field] = mostly(
    st.from_regex(r" ?\+?[0-9]{6,20} ?", fullmatch=True)
    | st.from_regex(r"\+?62 ?8[0-9]{2}-[0-9]{4}-[0-9]{4}", fullmatch=True)
    | st.integers(min_value=10**5, max_value=10**19),
    st.from_regex(r"\+?[0-9][0-9 \-]{3,24}", fullmatch=True)
    | st.integers(min_value=-(10**21), max_value=10**21)
    | st.booleans()
    | st.sampled_from(
        ["628XXXXXXXX", "++6281234567", "62812345+67", "(021) 1234567", "٦٢٨١٢٣٤٥٦٧٨", ""]
    ),
).map(lambda raw: (raw, _phone_expected(raw)))

_STATUS_WORDS = {
    "u": MessageStatus.UNSENT,
    "un-sent": MessageStatus.UNSENT,
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
status_fields: st.SearchStrategy[Field] = mostly(
    st.tuples(
        st.sampled_from(sorted(_STATUS_WORDS)),
        st.sampled_from([str.lower, str.upper, str.title]),
        st.sampled_from(["", " "]),
    ).map(lambda t: (f"{t[2]}{t[1](t[0])}{t[2]}", _STATUS_WORDS[t[0]])),
    st.sampled_from(["seen", "pending", "x", "", "reads", "sentt"]).map(lambda r: (r, INVALID))
    | (st.integers() | st.none() | st.booleans()).map(lambda raw: (raw, INVALID)),
)

FIELDS: dict[str, st.SearchStrategy[Field]] = {
    "room_id": identifier_fields,
    "ref_no": identifier_fields,
    "text": text_fields,
    "inbox_date": date_fields,
    "status_date": date_fields,
    "sender_number": phone_fields,
    "status": status_fields,
}


def bodies(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Field]]:
    """Bodies with some or all of the model's fields, each with its expected meaning."""
    fields = {name: FIELDS[name] for name in sorted(REQUIRED[model])}
    return mostly(st.fixed_dictionaries(fields), st.fixed_dictionaries({}, optional=fields))


def check_body(model: type[BaseModel], fields: dict[str, Field]) -> None:
    raw = json.dumps({name: value for name, (value, _) in fields.items()}).encode()
    errors = refusal(model, raw)
    missing = REQUIRED[model] - fields.keys()
    invalid = {name for name, (_, expected) in fields.items() if expected is INVALID}

    if missing or invalid:
        assert errors is not None, f"accepted although {missing or invalid} is wrong"
        assert {e["loc"][0] for e in errors} == missing | invalid
        assert {e["loc"][0] for e in errors if e["type"] == "missing"} == missing
        return
    assert errors is None, errors
    parsed = model.model_validate_json(raw)
    for name, (_, expected) in fields.items():
        value = getattr(parsed, name)
        assert value == expected, name
        if isinstance(expected, datetime):
            assert value.utcoffset() == expected.utcoffset(), name
    again = model.model_validate_json(parsed.model_dump_json())
    assert again == parsed


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=bodies(InboxCallback))
def test_an_inbox_body_is_accepted_exactly_when_every_field_is_valid(
    fields: dict[str, Field],
) -> None:
    check_body(InboxCallback, fields)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=bodies(StatusCallback))
def test_a_status_body_is_accepted_exactly_when_every_field_is_valid(
    fields: dict[str, Field],
) -> None:
    check_body(StatusCallback, fields)


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


@pytest.mark.parametrize("model", MODELS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_json_that_is_not_a_callback_is_refused_naming_what_is_missing(
    model: type[BaseModel], value: Any
) -> None:
    errors = refusal(model, json.dumps(value).encode())

    assert errors is not None
    if not isinstance(value, dict):
        assert [e["type"] for e in errors] == ["model_type"]
        return
    # Unknown keys are ignored: every complaint is about a field of the model.
    assert {e["loc"][0] for e in errors} <= REQUIRED[model]
    assert {e["loc"][0] for e in errors if e["type"] == "missing"} == REQUIRED[model] - set(value)


def strictly_json(raw: bytes) -> bool:
    """Whether the bytes are one JSON document in UTF-8 (NaN allowed, as pydantic's parser)."""
    try:
        json.loads(raw.decode("utf-8"))
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("model", MODELS)
@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_are_refused_and_non_json_is_called_invalid_json(
    model: type[BaseModel], raw: bytes
) -> None:
    errors = refusal(model, raw)

    assert errors is not None
    types = {e["type"] for e in errors}
    if b"\\u" not in raw:  # Python's parser keeps lone surrogates, pydantic's refuses them
        assert (types == {"json_invalid"}) == (not strictly_json(raw))
