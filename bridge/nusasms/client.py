"""The one place that talks HTTP to the NusaSMS API."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import aiohttp
import pydantic_core
from pydantic import SecretStr, ValidationError
from yarl import URL

from bridge.nusasms.errors import (
    NusaSMSAuthError,
    NusaSMSConnectionError,
    NusaSMSError,
    NusaSMSRateLimitError,
    NusaSMSResponseError,
    NusaSMSServerError,
    NusaSMSTimeoutError,
    NusaSMSUnavailableError,
    NusaSMSValidationError,
)
from bridge.nusasms.models import (
    BroadcastMessage,
    BroadcastMessageParam,
    Channel,
    Credit,
    Envelope,
    EnvelopeStatus,
    Person,
    ReplyFile,
    ReplyMessageType,
    Template,
)

__all__ = ["DEFAULT_BASE_URL", "NusaSMSClient"]

DEFAULT_BASE_URL: Final = "https://api.nusasms.com/nusasms_api/1.0"

_SUCCESS: Final = frozenset({200, 201, 202, 204})
_UNAVAILABLE: Final = frozenset({502, 503, 504})
# A misbehaving proxy must not make us buffer an endless page; no real answer comes close.
_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
# Errors keep their body for diagnosis, but only as much as a log line can bear.
_MAX_ERROR_BODY_CHARS: Final = 64 * 1024
_REDACTED: Final = "<redacted>"
# Quotes, backslashes and control characters (CR/LF above all) in a filename header.
_UNSAFE_FILENAME_CHARS: Final = re.compile(r'["\\\x00-\x1f\x7f]')

EnvelopeT = TypeVar("EnvelopeT", bound=Envelope[Any])


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def _safe_filename(name: str) -> str:
    """The name with the characters that could break out of its multipart header replaced."""
    cleaned = _UNSAFE_FILENAME_CHARS.sub("_", name).strip()
    return cleaned or "file"


def _shape_problem(exc: ValidationError) -> str:
    """Where the body differs from the documented schema, without echoing its values."""
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)[:3]
    ]
    return "undocumented response: " + "; ".join(problems)


class NusaSMSClient:
    """Async client for the NusaSMS account and WhatsApp Official endpoints."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        session: aiohttp.ClientSession | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        if not api_key.strip():
            raise ValueError("api_key is empty")
        if any(char in api_key for char in "\r\n\0"):
            # A header value with a line break would be refused only at the first request.
            raise ValueError("api_key contains a control character")
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an absolute http(s) URL, got {base_url!r}")
        if url.query_string or url.fragment:
            raise ValueError(f"base_url must not have a query or fragment, got {base_url!r}")
        if not request_timeout > 0:
            raise ValueError(f"request_timeout must be positive, got {request_timeout!r}")
        self._api_key = SecretStr(api_key)
        # Endpoint paths start with "/", so either spelling of the base joins the same way.
        self._base_url = base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._request_timeout = request_timeout
        self._closed = False

    def __repr__(self) -> str:
        return f"NusaSMSClient(base_url={self._base_url!r})"

    @property
    def base_url(self) -> str:
        """The API root every endpoint path is appended to."""
        return self._base_url

    async def close(self) -> None:
        """Stop using the client; the session is closed only if the client created it."""
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def get_user(self) -> Person:
        """The account the API key belongs to."""
        envelope = await self._call("GET", "/auth/api_key", Envelope[Person])
        return envelope.data

    async def get_balance(self) -> Credit:
        """The account's balances and their expiry dates."""
        envelope = await self._call("GET", "/balance", Envelope[Credit])
        return envelope.data

    async def get_templates(self) -> list[Template]:
        """The account's WhatsApp message templates."""
        envelope = await self._call(
            "GET", "/wa_official/templates", Envelope[list[Template]], empty_data=[]
        )
        return envelope.data

    async def get_channels(self) -> list[Channel]:
        """The account's WhatsApp channels (senders)."""
        envelope = await self._call(
            "GET", "/wa_official/channels", Envelope[list[Channel]], empty_data=[]
        )
        return envelope.data

    async def send_broadcast(self, param: BroadcastMessageParam) -> str:
        """Send a template message; returns its ref_no."""
        envelope = await self._call(
            "POST",
            "/wa_official/message/broadcast",
            Envelope[BroadcastMessage],
            json=param.model_dump(mode="json", exclude_none=True),
        )
        return envelope.data.ref_no

    async def send_reply(
        self,
        room_id: str,
        *,
        type: ReplyMessageType = ReplyMessageType.TEXT,
        text: str | None = None,
        file_url: str | None = None,
        file: ReplyFile | None = None,
    ) -> str:
        """Send a free-form message into an open room; returns its ref_no."""
        if not room_id.strip():
            raise ValueError("room_id is empty")
        if text is None and file_url is None and file is None:
            raise ValueError("a reply needs text, file_url or file")
        if file_url is not None and file is not None:
            raise ValueError("give either file_url or file, not both")
        # Unquoted (raw UTF-8) like browsers and curl send them: with aiohttp's default
        # percent-encoding the customer would see "my%20photo.jpg".
        form = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
        form.add_field("room_id", room_id)
        form.add_field("type", ReplyMessageType(type).value)
        if text is not None:
            form.add_field("text", text)
        if file_url is not None:
            form.add_field("file_url", file_url)
        if file is not None:
            form.add_field(
                "file",
                file.content,
                filename=_safe_filename(file.filename),
                content_type=file.content_type,
            )
        envelope = await self._call(
            "POST", "/wa_official/message/reply", Envelope[BroadcastMessage], form=form
        )
        return envelope.data.ref_no

    async def _call(
        self,
        method: str,
        path: str,
        envelope_type: type[EnvelopeT],
        *,
        json: Any = None,
        form: aiohttp.FormData | None = None,
        empty_data: Any = None,
    ) -> EnvelopeT:
        """Send one request and return its documented answer, or raise a NusaSMSError."""
        status, headers, raw = await self._send(method, path, json=json, form=form)
        if status not in _SUCCESS:
            raise self._error_for_status(status, headers, raw, method, path)
        body = self._body_text(raw)
        try:
            parsed = pydantic_core.from_json(raw)
        except ValueError as exc:
            raise NusaSMSResponseError(
                status, body, method, path, message="response body is not JSON"
            ) from exc
        if not isinstance(parsed, dict):
            raise NusaSMSResponseError(
                status, body, method, path, message="response body is not a JSON object"
            )
        try:
            outcome = EnvelopeStatus.model_validate(parsed)
        except ValidationError as exc:
            raise NusaSMSResponseError(
                status, body, method, path, message=_shape_problem(exc)
            ) from exc
        if outcome.error:
            raise NusaSMSResponseError(
                status,
                body,
                method,
                path,
                message=self._redact(outcome.message or "") or "the API reported an error",
            )
        if empty_data is not None and parsed.get("data") is None:
            # List endpoints document `data` as optional: no data means no items.
            parsed = {**parsed, "data": empty_data}
        try:
            return envelope_type.model_validate(parsed)
        except ValidationError as exc:
            raise NusaSMSResponseError(
                status, body, method, path, message=_shape_problem(exc)
            ) from exc

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        form: aiohttp.FormData | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Do the HTTP exchange; transport failures become NusaSMS errors."""
        session = self._get_session()
        headers = {"APIKey": self._api_key.get_secret_value(), "Accept": "application/json"}
        try:
            async with (
                asyncio.timeout(self._request_timeout),
                session.request(
                    method,
                    f"{self._base_url}{path}",
                    headers=headers,
                    json=json,
                    data=form,
                    # A redirect would carry the APIKey header to wherever it points.
                    allow_redirects=False,
                    # An injected session may raise on status itself; we classify statuses here.
                    raise_for_status=False,
                ) as response,
            ):
                raw = await self._read_capped(response)
                return response.status, response.headers, raw
        except (
            aiohttp.ClientConnectorError,
            aiohttp.ConnectionTimeoutError,
            aiohttp.InvalidURL,
        ) as exc:
            # The connection never came up, so the API cannot have seen the request.
            raise NusaSMSConnectionError(
                None, None, method, path, message=self._transport_reason(exc)
            ) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise NusaSMSTimeoutError(
                None, None, method, path, message=self._transport_reason(exc)
            ) from exc

    @staticmethod
    async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            chunks.append(chunk)
            size += len(chunk)
            if size >= _MAX_BODY_BYTES:
                break
        return b"".join(chunks)[:_MAX_BODY_BYTES]

    def _error_for_status(
        self,
        status: int,
        headers: Mapping[str, str],
        raw: bytes,
        method: str,
        path: str,
    ) -> NusaSMSError:
        body = self._body_text(raw)
        if status in (401, 403):
            return NusaSMSAuthError(status, body, method, path)
        if status == 422:
            return NusaSMSValidationError(status, body, method, path)
        if status == 429:
            return NusaSMSRateLimitError(
                status, body, method, path, retry_after=_retry_after(headers.get("Retry-After"))
            )
        if status in _UNAVAILABLE:
            return NusaSMSUnavailableError(status, body, method, path)
        if 500 <= status <= 599:
            return NusaSMSServerError(status, body, method, path)
        return NusaSMSResponseError(status, body, method, path)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("NusaSMSClient is closed")
        if self._session is None:
            # Created on first use, inside the running event loop aiohttp wants.
            self._session = aiohttp.ClientSession()
        return self._session

    def _body_text(self, raw: bytes) -> str:
        return self._redact(raw[: _MAX_ERROR_BODY_CHARS * 4].decode("utf-8", errors="replace"))[
            :_MAX_ERROR_BODY_CHARS
        ]

    def _transport_reason(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError) and not str(exc):
            return f"no complete answer within {self._request_timeout:g}s"
        return self._redact(str(exc)) or type(exc).__name__

    def _redact(self, text: str) -> str:
        """The text with the API key blanked out; a server may echo our headers back."""
        return text.replace(self._api_key.get_secret_value(), _REDACTED)
