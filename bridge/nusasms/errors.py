"""Everything the NusaSMS client raises; one flat tree under `NusaSMSError`.

NusaSMSError                  base: status, body, method, path; retry_safe; reason()
├── NusaSMSConnectionError    could not connect; the request was certainly not received (retry-safe)
├── NusaSMSTimeoutError       sent, but no complete answer came back; outcome unknown
├── NusaSMSAuthError          401/403: key rejected or our IP is not whitelisted
├── NusaSMSValidationError    422: the request was refused; `.detail` holds the API's issues
├── NusaSMSRateLimitError     429: too many requests; `.retry_after` seconds (retry-safe)
├── NusaSMSUnavailableError   502/503/504: the API is down or overloaded (retry-safe)
├── NusaSMSServerError        500 and other 5xx: it may have been processed
└── NusaSMSResponseError      2xx with `"error": true`, an undocumented body, or another status

`retry_safe` is True only where the API should not have acted on the request, so a retry
is not expected to send a WhatsApp message twice (a 504 is the gateway's word for that).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any, ClassVar

import pydantic_core
from pydantic import ValidationError

from bridge.nusasms.models import ValidationIssue

__all__ = [
    "NusaSMSAuthError",
    "NusaSMSConnectionError",
    "NusaSMSError",
    "NusaSMSRateLimitError",
    "NusaSMSResponseError",
    "NusaSMSServerError",
    "NusaSMSTimeoutError",
    "NusaSMSUnavailableError",
    "NusaSMSValidationError",
]

# Long enough for any API message, short enough for a log line or a Telegram notice.
_MAX_REASON = 200
_WHITESPACE = re.compile(r"\s+")


def _json_object(body: str | None) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        parsed = pydantic_core.from_json(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _issues(raw: Any) -> tuple[ValidationIssue, ...]:
    if not isinstance(raw, list):
        return ()
    issues = []
    for item in raw:
        try:
            issues.append(ValidationIssue.model_validate(item))
        except ValidationError:
            # One malformed entry must not hide the readable ones.
            continue
    return tuple(issues)


def _validation_detail(body: str | None) -> tuple[ValidationIssue, ...]:
    """The issues listed in an HTTPValidationError body; empty when there are none."""
    parsed = _json_object(body)
    return _issues(parsed.get("detail")) if parsed else ()


def _api_reason(body: str | None) -> str | None:
    """The API's own explanation in a JSON body (`message`, or FastAPI's `detail`)."""
    parsed = _json_object(body)
    if parsed is None:
        return None
    message = parsed.get("message")
    if isinstance(message, str) and message.strip():
        return message.strip()
    detail = parsed.get("detail")
    if isinstance(detail, str) and detail.strip():
        return detail.strip()
    issues = _issues(detail)
    return "; ".join(issue.describe() for issue in issues) if issues else None


def _http_phrase(status: int | None) -> str:
    if status is None:
        return "no response"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


class NusaSMSError(Exception):
    """Base of every error the NusaSMS client raises."""

    retry_safe: ClassVar[bool] = False

    def __init__(
        self,
        status: int | None,
        body: str | None,
        method: str,
        path: str,
        *,
        message: str | None = None,
    ) -> None:
        super().__init__(status, body, method, path)
        self.status = status
        self.body = body
        self.method = method
        self.path = path
        self._message = message

    def reason(self) -> str:
        """The API's own reason when it gave one, else what went wrong, else the HTTP reason."""
        return self._message or _api_reason(self.body) or _http_phrase(self.status)

    def __str__(self) -> str:
        reason = _WHITESPACE.sub(" ", self.reason()).strip()
        if len(reason) > _MAX_REASON:
            reason = reason[: _MAX_REASON - 1] + "…"
        outcome = self.status if self.status is not None else "no response"
        return f"{self.method} {self.path} -> {outcome}: {reason}"

    def __repr__(self) -> str:
        # The default repr would dump the whole body.
        return f"{type(self).__name__}({str(self)!r})"


class NusaSMSConnectionError(NusaSMSError):
    """Could not connect (DNS, refused, TLS); the request was certainly not received."""

    retry_safe: ClassVar[bool] = True


class NusaSMSTimeoutError(NusaSMSError):
    """The request went out but no complete answer came back; it may have been processed."""


class NusaSMSAuthError(NusaSMSError):
    """401/403: the API key was rejected or this IP address is not whitelisted."""


class NusaSMSValidationError(NusaSMSError):
    """422: the API refused the request's fields; `detail` says which and why."""

    def __init__(
        self,
        status: int | None,
        body: str | None,
        method: str,
        path: str,
        *,
        message: str | None = None,
        detail: Iterable[ValidationIssue] | None = None,
    ) -> None:
        super().__init__(status, body, method, path, message=message)
        self.detail: tuple[ValidationIssue, ...] = (
            tuple(detail) if detail is not None else _validation_detail(body)
        )

    def reason(self) -> str:
        """The API's validation messages joined, else the generic reason."""
        if self.detail:
            return "; ".join(issue.describe() for issue in self.detail)
        return super().reason()


class NusaSMSRateLimitError(NusaSMSError):
    """429: too many requests; wait `retry_after` seconds when the API said how long."""

    retry_safe: ClassVar[bool] = True

    def __init__(
        self,
        status: int | None,
        body: str | None,
        method: str,
        path: str,
        *,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, body, method, path, message=message)
        self.retry_after = retry_after


class NusaSMSUnavailableError(NusaSMSError):
    """502/503/504: the API is down or overloaded behind its gateway; try again later."""

    retry_safe: ClassVar[bool] = True


class NusaSMSServerError(NusaSMSError):
    """500 or another 5xx: the API failed, possibly after acting on the request."""


class NusaSMSResponseError(NusaSMSError):
    """A 2xx with `"error": true`, a body that is not the documented JSON, or another status."""
