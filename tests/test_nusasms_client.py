"""The NusaSMS client against a mocked HTTP boundary, with payloads from the API reference."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from bridge.nusasms import (
    DEFAULT_BASE_URL,
    BroadcastMessageParam,
    NusaSMSAuthError,
    NusaSMSClient,
    NusaSMSConnectionError,
    NusaSMSError,
    NusaSMSRateLimitError,
    NusaSMSResponseError,
    NusaSMSServerError,
    NusaSMSTimeoutError,
    NusaSMSUnavailableError,
    NusaSMSValidationError,
    ReplyFile,
    ReplyMessageType,
    ValidationIssue,
)

FIXTURES = Path(__file__).parent / "fixtures" / "nusasms"
API_KEY = "nusa-test-key-7d1e4b9a"
BASE = "https://api.nusasms.test/nusasms_api/1.0"
REPLY = f"{BASE}/wa_official/message/reply"
BALANCE = f"{BASE}/balance"


def load(name: str) -> Any:
    """A JSON payload from tests/fixtures/nusasms."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def sent_requests(api: aioresponses, method: str, url: str) -> list[Any]:
    """The calls aioresponses recorded for one method and URL."""
    return (api.requests or {}).get((method, URL(url)), [])


async def form_parts(form: aiohttp.FormData) -> dict[str, Any]:
    """Decode a multipart form the way the server would: name -> email part."""
    writer = form()
    assert writer.content_type.startswith("multipart/form-data")
    raw = await writer.as_bytes()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {writer.content_type}\r\n\r\n".encode() + raw
    )
    return {
        str(part.get_param("name", header="content-disposition")): part
        for part in message.iter_parts()
    }


def connector_error(os_error: OSError) -> aiohttp.ClientConnectorError:
    key = ConnectionKey("api.nusasms.test", 443, True, True, None, None, None)
    return aiohttp.ClientConnectorError(key, os_error)


@pytest.fixture
def api() -> Iterator[aioresponses]:
    with aioresponses() as mocked:
        yield mocked


@pytest.fixture
async def client() -> AsyncIterator[NusaSMSClient]:
    async with NusaSMSClient(API_KEY, base_url=BASE, request_timeout=5) as nusasms:
        yield nusasms


# --- success paths -------------------------------------------------------------------------


async def test_get_user_returns_the_person_behind_the_key(
    api: aioresponses, client: NusaSMSClient
) -> None:
    api.get(f"{BASE}/auth/api_key", payload=load("user.json"))

    person = await client.get_user()

    assert (person.userid, person.idPerson, person.idClient) == ("string", 0, 0)


async def test_get_balance_parses_the_reference_example(
    api: aioresponses, client: NusaSMSClient
) -> None:
    api.get(BALANCE, payload=load("balance.json"))

    credit = await client.get_balance()

    assert credit.wa_balance == 0
    assert credit.wa_expired_date == date(2019, 8, 24)
    assert credit.numeric_fields() == {
        "wa_balance": 0.0,
        "hlr_balance": 0.0,
        "sim_balance": 0.0,
        "sms_balance": 0.0,
        "pulsa_balance": 0.0,
    }
    assert set(credit.expiry_dates()) == {
        "wa_expired_date",
        "hlr_expired_date",
        "sim_expired_date",
        "sms_expired_date",
    }


async def test_balance_tolerates_sloppy_values_and_keeps_unknown_balances(
    api: aioresponses, client: NusaSMSClient
) -> None:
    api.get(BALANCE, payload=load("balance_sloppy.json"))

    credit = await client.get_balance()

    assert credit.idClient == 1234
    assert credit.wa_balance == 1500.5
    assert credit.hlr_balance is None
    assert credit.sim_balance is None
    assert credit.numeric_fields() == {
        "wa_balance": 1500.5,
        "sms_balance": 25.0,
        "pulsa_balance": 0.0,
        "voice_balance": 75.25,
    }
    assert credit.expiry_dates() == {
        "wa_expired_date": date(2026, 1, 31),
        "voice_expired_date": date(2026, 3, 1),
    }


async def test_get_templates_returns_every_template(
    api: aioresponses, client: NusaSMSClient
) -> None:
    api.get(f"{BASE}/wa_official/templates", payload=load("templates.json"))

    templates = await client.get_templates()

    assert [(t.id, t.name, t.status, t.category, t.body) for t in templates] == [
        ("string", "string", "string", "string", None)
    ]


async def test_get_channels_returns_every_channel(api: aioresponses, client: NusaSMSClient) -> None:
    api.get(f"{BASE}/wa_official/channels", payload=load("channels.json"))

    channels = await client.get_channels()

    assert len(channels) == 1
    assert channels[0].organization_id == "string"
    assert channels[0].created_at == datetime(2019, 8, 24, 14, 15, 22, tzinfo=UTC)


@pytest.mark.parametrize("path", ["/wa_official/templates", "/wa_official/channels"])
async def test_list_endpoint_without_data_means_no_items(
    api: aioresponses, client: NusaSMSClient, path: str
) -> None:
    api.get(f"{BASE}{path}", payload={"error": False, "message": "Empty", "data": None})

    method = client.get_templates if path.endswith("templates") else client.get_channels

    assert await method() == []


async def test_send_broadcast_posts_the_param_as_json_and_returns_ref_no(
    api: aioresponses, client: NusaSMSClient
) -> None:
    url = f"{BASE}/wa_official/message/broadcast"
    api.post(url, status=201, payload=load("broadcast.json"))
    param = BroadcastMessageParam(
        destination="628123456789",
        destination_name="Budi",
        template_id="65a08d56-a2b9-45f5-98d3-98671e639055",
        channel_id="15974c27-3116-49f4-8627-5fc30b0c66d8",
        parameters={"body": [{"key": "1", "value": "code", "value_text": "CODE"}]},
    )

    ref_no = await client.send_broadcast(param)

    assert ref_no == "string"
    [call] = sent_requests(api, "POST", url)
    assert call.kwargs["json"] == {
        "destination": "628123456789",
        "destination_name": "Budi",
        "template_id": "65a08d56-a2b9-45f5-98d3-98671e639055",
        "channel_id": "15974c27-3116-49f4-8627-5fc30b0c66d8",
        "parameters": {"body": [{"key": "1", "value": "code", "value_text": "CODE"}]},
    }


async def test_send_reply_posts_multipart_with_only_the_given_fields(
    api: aioresponses, client: NusaSMSClient
) -> None:
    received: dict[str, Any] = {}

    async def capture(url: URL, **kwargs: Any) -> CallbackResult:
        received.update(await form_parts(kwargs["data"]))
        return CallbackResult(status=201, payload=load("reply.json"))

    api.post(REPLY, callback=capture)

    ref_no = await client.send_reply("room-1", text="Halo, ada yang bisa dibantu? 🙂")

    assert ref_no == "string"
    assert set(received) == {"room_id", "type", "text"}
    assert received["room_id"].get_content() == "room-1"
    assert received["type"].get_content() == "text"
    assert received["text"].get_content() == "Halo, ada yang bisa dibantu? 🙂"


async def test_send_reply_uploads_a_file_with_its_name_and_type(
    api: aioresponses, client: NusaSMSClient
) -> None:
    received: dict[str, Any] = {}

    async def capture(url: URL, **kwargs: Any) -> CallbackResult:
        received.update(await form_parts(kwargs["data"]))
        return CallbackResult(status=201, payload=load("reply.json"))

    api.post(REPLY, callback=capture)
    upload = ReplyFile(
        filename="struk belanja.pdf", content=b"%PDF-1.4\x00\xff", content_type="application/pdf"
    )

    await client.send_reply(
        "room-1", type=ReplyMessageType.DOCUMENT, text="Struk Anda", file=upload
    )

    assert set(received) == {"room_id", "type", "text", "file"}
    assert received["type"].get_content() == "document"
    file_part = received["file"]
    # Sent as-is, not percent-encoded: the customer sees the name the operator uploaded.
    assert file_part.get_filename() == "struk belanja.pdf"
    assert file_part.get_content_type() == "application/pdf"
    assert file_part.get_payload(decode=True) == b"%PDF-1.4\x00\xff"


async def test_send_reply_filename_cannot_break_out_of_its_header(
    api: aioresponses, client: NusaSMSClient
) -> None:
    received: dict[str, Any] = {}

    async def capture(url: URL, **kwargs: Any) -> CallbackResult:
        received.update(await form_parts(kwargs["data"]))
        return CallbackResult(status=201, payload=load("reply.json"))

    api.post(REPLY, callback=capture)
    upload = ReplyFile(
        filename='a"\r\nX-Evil: 1.jpg', content=b"\xff\xd8", content_type="image/jpeg"
    )

    await client.send_reply("room-1", type=ReplyMessageType.IMAGE, file=upload)

    assert set(received) == {"room_id", "type", "file"}
    assert received["file"].get_filename() == "a___X-Evil: 1.jpg"


async def test_send_reply_by_file_url_sends_the_url_field(
    api: aioresponses, client: NusaSMSClient
) -> None:
    received: dict[str, Any] = {}

    async def capture(url: URL, **kwargs: Any) -> CallbackResult:
        received.update(await form_parts(kwargs["data"]))
        return CallbackResult(status=201, payload=load("reply.json"))

    api.post(REPLY, callback=capture)

    await client.send_reply(
        "room-1", type=ReplyMessageType.IMAGE, file_url="https://files.example/p.jpg"
    )

    assert set(received) == {"room_id", "type", "file_url"}
    assert received["file_url"].get_content() == "https://files.example/p.jpg"


@pytest.mark.parametrize(
    ("room_id", "kwargs"),
    [
        ("  ", {"text": "hi"}),
        ("room-1", {}),
        ("room-1", {"file_url": "https://x.example/a.jpg", "file": ReplyFile("a", b"", "a/b")}),
    ],
    ids=["blank-room", "nothing-to-send", "file-and-url"],
)
async def test_send_reply_refuses_a_malformed_call_without_a_request(
    api: aioresponses, client: NusaSMSClient, room_id: str, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match=r"room_id|needs|either"):
        await client.send_reply(room_id, **kwargs)

    assert not api.requests


async def test_every_request_sends_the_api_key_and_asks_for_json(
    api: aioresponses, client: NusaSMSClient
) -> None:
    api.get(BALANCE, payload=load("balance.json"))

    await client.get_balance()

    [call] = sent_requests(api, "GET", BALANCE)
    assert call.kwargs["headers"]["APIKey"] == API_KEY
    assert call.kwargs["headers"]["Accept"] == "application/json"


@pytest.mark.parametrize("base_url", [BASE, BASE + "/"])
async def test_base_url_works_with_or_without_trailing_slash(
    api: aioresponses, base_url: str
) -> None:
    api.get(BALANCE, payload=load("balance.json"))

    async with NusaSMSClient(API_KEY, base_url=base_url) as nusasms:
        await nusasms.get_balance()

    assert sent_requests(api, "GET", BALANCE)


def test_default_base_url_is_the_production_host() -> None:
    assert (
        NusaSMSClient(API_KEY).base_url
        == DEFAULT_BASE_URL
        == ("https://api.nusasms.com/nusasms_api/1.0")
    )


@pytest.mark.parametrize("base_url", ["api.nusasms.com", "ftp://api.nusasms.com", ""])
def test_a_base_url_that_is_not_http_is_refused(base_url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        NusaSMSClient(API_KEY, base_url=base_url)


def test_an_empty_api_key_is_refused() -> None:
    with pytest.raises(ValueError, match="api_key"):
        NusaSMSClient("  ")


# --- HTTP errors ---------------------------------------------------------------------------


async def test_401_is_an_auth_error_with_the_api_message(
    api: aioresponses, client: NusaSMSClient
) -> None:
    api.get(BALANCE, status=401, payload=load("unauthorized.json"))

    with pytest.raises(NusaSMSAuthError) as caught:
        await client.get_balance()

    assert caught.value.status == 401
    assert caught.value.reason() == "Invalid API Key"
    assert str(caught.value) == "GET /balance -> 401: Invalid API Key"
    assert not caught.value.retry_safe


async def test_403_ip_not_whitelisted_is_an_auth_error(
    api: aioresponses, client: NusaSMSClient
) -> None:
    api.post(REPLY, status=403, payload=load("forbidden.json"))

    with pytest.raises(NusaSMSAuthError) as caught:
        await client.send_reply("room-1", text="hi")

    assert caught.value.reason() == "IP address is not whitelisted"
    assert caught.value.method == "POST"
    assert caught.value.path == "/wa_official/message/reply"


async def test_reply_422_keeps_validation_detail(api: aioresponses, client: NusaSMSClient) -> None:
    api.post(REPLY, status=422, payload=load("validation_error.json"))

    with pytest.raises(NusaSMSValidationError) as caught:
        await client.send_reply("room-1", text="hi")

    error = caught.value
    assert error.detail[0] == ValidationIssue(
        loc=("body", "room_id"), msg="field required", type="value_error.missing"
    )
    assert len(error.detail) == 2
    assert error.reason().startswith("body.room_id: field required; body.type: value is not")
    assert str(error).startswith("POST /wa_official/message/reply -> 422: body.room_id: field")
    assert not error.retry_safe


async def test_422_without_a_readable_detail_falls_back_to_the_http_reason(
    api: aioresponses, client: NusaSMSClient
) -> None:
    api.post(REPLY, status=422, body="<html>nope</html>", content_type="text/html")

    with pytest.raises(NusaSMSValidationError) as caught:
        await client.send_reply("room-1", text="hi")

    assert caught.value.detail == ()
    assert caught.value.reason() == "Unprocessable Entity"
    assert caught.value.body == "<html>nope</html>"


async def test_429_carries_retry_after_and_is_retry_safe(
    api: aioresponses, client: NusaSMSClient
) -> None:
    api.get(BALANCE, status=429, payload=load("rate_limited.json"), headers={"Retry-After": "7"})

    with pytest.raises(NusaSMSRateLimitError) as caught:
        await client.get_balance()

    assert caught.value.retry_after == 7.0
    assert caught.value.retry_safe
    assert caught.value.reason() == "Too many requests"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("soon", None),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date already past: go now
    ],
)
async def test_429_retry_after_is_none_or_never_negative(
    api: aioresponses, client: NusaSMSClient, header: str | None, expected: float | None
) -> None:
    headers = {"Retry-After": header} if header is not None else None
    api.get(BALANCE, status=429, body="", headers=headers)

    with pytest.raises(NusaSMSRateLimitError) as caught:
        await client.get_balance()

    assert caught.value.retry_after == expected


async def test_500_is_a_server_error_that_must_not_be_blindly_retried(
    api: aioresponses, client: NusaSMSClient
) -> None:
    api.post(REPLY, status=500, body="Internal Server Error", content_type="text/plain")

    with pytest.raises(NusaSMSServerError) as caught:
        await client.send_reply("room-1", text="hi")

    assert caught.value.status == 500
    assert not caught.value.retry_safe
    assert str(caught.value) == "POST /wa_official/message/reply -> 500: Internal Server Error"


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gateway_errors_are_unavailable_and_retry_safe(
    api: aioresponses, client: NusaSMSClient, status: int
) -> None:
    api.get(BALANCE, status=status, body="<html>Bad gateway</html>", content_type="text/html")

    with pytest.raises(NusaSMSUnavailableError) as caught:
        await client.get_balance()

    assert caught.value.status == status
    assert caught.value.retry_safe


@pytest.mark.parametrize("status", [400, 404, 405, 302])
async def test_other_statuses_are_response_errors(
    api: aioresponses, client: NusaSMSClient, status: int
) -> None:
    api.get(BALANCE, status=status, body="", headers={"Location": "https://evil.example/"})

    with pytest.raises(NusaSMSResponseError) as caught:
        await client.get_balance()

    assert caught.value.status == status
    assert not caught.value.retry_safe
    # Redirects are not followed: the APIKey header must not travel elsewhere.
    assert list(api.requests or {}) == [("GET", URL(BALANCE))]


async def test_error_true_in_a_2xx_body_is_a_response_error_with_the_api_message(
    api: aioresponses, client: NusaSMSClient
) -> None:
    api.post(REPLY, status=201, payload=load("error_true.json"))

    with pytest.raises(NusaSMSResponseError) as caught:
        await client.send_reply("room-1", text="hi")

    assert caught.value.status == 201
    assert caught.value.reason() == "Room is expired"
    assert str(caught.value) == "POST /wa_official/message/reply -> 201: Room is expired"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("<html>maintenance</html>", "response body is not JSON"),
        ("", "response body is not JSON"),
        ("[1, 2]", "response body is not a JSON object"),
        ('{"error": false, "data": {"ref_no": "  "}}', "undocumented response: data.ref_no"),
        ('{"error": false, "message": "ok"}', "undocumented response: data"),
        ('{"error": "perhaps", "data": {"ref_no": "1"}}', "undocumented response: error"),
    ],
    ids=["html", "empty", "array", "blank-ref-no", "no-data", "odd-error-flag"],
)
async def test_a_2xx_body_that_is_not_the_documented_json_is_a_response_error(
    api: aioresponses, client: NusaSMSClient, body: str, reason: str
) -> None:
    api.post(REPLY, status=201, body=body)

    with pytest.raises(NusaSMSResponseError) as caught:
        await client.send_reply("room-1", text="hi")

    assert caught.value.reason().startswith(reason)
    assert caught.value.body == body


@pytest.mark.parametrize("wa_balance", ["n/a", "nan", "Infinity", [1]])
async def test_a_balance_that_is_not_a_number_is_a_response_error(
    api: aioresponses, client: NusaSMSClient, wa_balance: Any
) -> None:
    payload = load("balance.json")
    payload["data"]["wa_balance"] = wa_balance
    api.get(BALANCE, payload=payload)

    with pytest.raises(NusaSMSResponseError) as caught:
        await client.get_balance()

    assert caught.value.reason().startswith("undocumented response: data.wa_balance")


async def test_an_injected_session_that_raises_for_status_still_gets_classified(
    api: aioresponses,
) -> None:
    api.get(BALANCE, status=503, body="")

    async with aiohttp.ClientSession(raise_for_status=True) as session:
        nusasms = NusaSMSClient(API_KEY, base_url=BASE, session=session)
        with pytest.raises(NusaSMSUnavailableError):
            await nusasms.get_balance()


# --- transport errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        connector_error(ConnectionRefusedError(111, "Connection refused")),
        aiohttp.ClientConnectorDNSError(
            ConnectionKey("api.nusasms.test", 443, True, True, None, None, None),
            OSError(-2, "Name or service not known"),
        ),
        aiohttp.ConnectionTimeoutError("Connection timeout to host"),
    ],
    ids=["refused", "dns", "connect-timeout"],
)
async def test_failing_to_connect_is_a_retry_safe_connection_error(
    api: aioresponses, client: NusaSMSClient, exc: Exception
) -> None:
    api.post(REPLY, exception=exc)

    with pytest.raises(NusaSMSConnectionError) as caught:
        await client.send_reply("room-1", text="hi")

    assert caught.value.retry_safe
    assert caught.value.status is None
    assert caught.value.__cause__ is exc
    assert str(caught.value).startswith("POST /wa_official/message/reply -> no response: ")


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        aiohttp.SocketTimeoutError("Timeout on reading data from socket"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ClientOSError(104, "Connection reset by peer"),
    ],
    ids=["timeout", "read-timeout", "disconnected", "payload", "reset"],
)
async def test_losing_the_answer_is_an_unknown_outcome_not_retry_safe(
    api: aioresponses, client: NusaSMSClient, exc: Exception
) -> None:
    api.post(REPLY, exception=exc)

    with pytest.raises(NusaSMSTimeoutError) as caught:
        await client.send_reply("room-1", text="hi")

    assert not caught.value.retry_safe
    assert caught.value.__cause__ is exc
    assert caught.value.reason()


async def test_a_server_slower_than_request_timeout_gives_a_timeout_error(
    api: aioresponses,
) -> None:
    async def slow(url: URL, **kwargs: Any) -> CallbackResult:
        await asyncio.sleep(5)
        return CallbackResult(payload=load("balance.json"))

    api.get(BALANCE, callback=slow)

    async with NusaSMSClient(API_KEY, base_url=BASE, request_timeout=0.05) as nusasms:
        with pytest.raises(NusaSMSTimeoutError) as caught:
            await nusasms.get_balance()

    assert caught.value.reason() == "no complete answer within 0.05s"


# --- secrets and sessions ------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 401, 422, 429, 500, 503, 404])
async def test_the_api_key_never_appears_in_errors_or_the_client(
    api: aioresponses, client: NusaSMSClient, status: int
) -> None:
    echo = {
        "error": True,
        "message": f"Bad key {API_KEY}",
        "detail": [{"loc": ["header", API_KEY], "msg": f"unknown {API_KEY}", "type": "x"}],
    }
    api.get(BALANCE, status=status, payload=echo)

    with pytest.raises(NusaSMSError) as caught:
        await client.get_balance()

    error = caught.value
    for text in (str(error), repr(error), error.reason(), error.body or ""):
        assert API_KEY not in text
    assert API_KEY not in repr(client)
    assert API_KEY not in str(client)


async def test_the_api_key_never_appears_in_transport_errors(
    api: aioresponses, client: NusaSMSClient
) -> None:
    api.get(BALANCE, exception=aiohttp.ClientOSError(1, f"weird proxy said {API_KEY}"))

    with pytest.raises(NusaSMSTimeoutError) as caught:
        await client.get_balance()

    assert API_KEY not in str(caught.value)
    assert API_KEY not in repr(caught.value)


async def test_an_injected_session_is_left_open(api: aioresponses) -> None:
    api.get(BALANCE, payload=load("balance.json"))

    async with aiohttp.ClientSession() as session:
        async with NusaSMSClient(API_KEY, base_url=BASE, session=session) as nusasms:
            await nusasms.get_balance()
        assert not session.closed


async def test_its_own_session_is_closed_with_the_client(api: aioresponses) -> None:
    api.get(BALANCE, payload=load("balance.json"))
    nusasms = NusaSMSClient(API_KEY, base_url=BASE)
    await nusasms.get_balance()
    session = nusasms._session
    assert session is not None

    await nusasms.close()

    assert session.closed


async def test_a_closed_client_refuses_to_send(client: NusaSMSClient) -> None:
    await client.close()

    with pytest.raises(RuntimeError, match="closed"):
        await client.get_balance()


# --- the error classes themselves -----------------------------------------------------------


def test_only_connection_rate_limit_and_unavailable_errors_are_retry_safe() -> None:
    safe = {
        cls.__name__: cls.retry_safe
        for cls in (
            NusaSMSError,
            NusaSMSConnectionError,
            NusaSMSTimeoutError,
            NusaSMSAuthError,
            NusaSMSValidationError,
            NusaSMSRateLimitError,
            NusaSMSUnavailableError,
            NusaSMSServerError,
            NusaSMSResponseError,
        )
    }
    assert {name for name, is_safe in safe.items() if is_safe} == {
        "NusaSMSConnectionError",
        "NusaSMSRateLimitError",
        "NusaSMSUnavailableError",
    }


def test_an_error_built_by_hand_reads_the_reason_from_its_body() -> None:
    with_message = NusaSMSServerError(500, '{"message": "DB down"}', "GET", "/balance")
    without = NusaSMSServerError(599, "oops", "GET", "/balance")
    validation = NusaSMSValidationError(
        422, json.dumps(load("validation_error.json")), "POST", "/wa_official/message/reply"
    )

    assert with_message.reason() == "DB down"
    assert without.reason() == "HTTP 599"
    assert validation.detail[0].msg == "field required"


def test_a_long_reason_is_shortened_in_the_message() -> None:
    error = NusaSMSResponseError(200, json.dumps({"message": "x" * 5000}), "GET", "/balance")

    assert len(str(error)) < 300
    assert error.reason() == "x" * 5000
    assert re.fullmatch(r"GET /balance -> 200: x+…", str(error))
