"""A small typed library for the NusaSMS API: one client, its models, its errors, and the
callbacks NusaSMS sends us. Nothing else in the bridge builds a NusaSMS URL."""

from bridge.nusasms.callbacks import InboxCallback, MessageStatus, StatusCallback
from bridge.nusasms.client import DEFAULT_BASE_URL, NusaSMSClient
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
    BroadcastMessageParam,
    Channel,
    Credit,
    Person,
    ReplyFile,
    ReplyMessageType,
    Template,
    ValidationIssue,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "BroadcastMessageParam",
    "Channel",
    "Credit",
    "InboxCallback",
    "MessageStatus",
    "NusaSMSAuthError",
    "NusaSMSClient",
    "NusaSMSConnectionError",
    "NusaSMSError",
    "NusaSMSRateLimitError",
    "NusaSMSResponseError",
    "NusaSMSServerError",
    "NusaSMSTimeoutError",
    "NusaSMSUnavailableError",
    "NusaSMSValidationError",
    "Person",
    "ReplyFile",
    "ReplyMessageType",
    "StatusCallback",
    "Template",
    "ValidationIssue",
]
