"""A fake Telegram Bot API for one forum supergroup, served over HTTP on loopback.

Point python-telegram-bot at it with
``Bot(token, base_url=fake.base_url, base_file_url=fake.base_file_url)``.

What the fake models, and the rules it enforces:

* One supergroup (``chat_id``) that is a forum when ``is_forum``. Any other ``chat_id`` is
  ``400 Bad Request: chat not found``. Message ids rise monotonically across the whole chat;
  a topic's ``message_thread_id`` is the id of its root ``forum_topic_created`` service message.
* As real Telegram does, every message inside a topic (bot or operator) carries
  ``message_thread_id``, ``is_topic_message`` and an implicit ``reply_to_message`` pointing at
  the topic's root service message unless it replies to something else.
  ``SentMessage.reply_to_message_id`` records only an explicit reply.
* Parameters arrive as PTB sends them (form fields, values JSON-encoded unless plain strings)
  or as a JSON body. ``Call.params`` holds them decoded by field name: ids and counters are
  ``int``, objects such as ``reply_markup``/``reaction``/``reply_parameters`` are parsed JSON,
  flags are ``bool``, text stays ``str``, uploads are ``UploadedFile``.
* ``parse_mode="HTML"`` follows the Bot API (tdlib) parser: only Telegram's tags, only the
  ``&lt; &gt; &amp; &quot;`` and numeric entities (any other ``&`` is literal), an unescaped
  ``<`` is an unsupported tag. Length limits (4096 for text, 1024 for captions) count code
  points of the text after parsing. MarkdownV2 is not parsed; its raw length is counted.
  Returned messages carry the parsed plain text but no entities for HTML input.
* Rate limit (``set_rate_limit``): accepted calls of the methods in ``_POSTING_METHODS``
  (posting, editing, topic changes, pins, reactions) share one
  budget of ``per_minute`` calls in any sliding window of ``60 / time_scale`` real seconds.
  Rejected calls do not spend it. Beyond it the answer is ``429 Too Many Requests: retry
  after N`` with ``parameters.retry_after = N``, where **N is in real seconds**: the time
  until a slot frees (a counted call leaves the window), rounded up to an int, at least 1. A client
  that sleeps exactly ``retry_after`` seconds is therefore guaranteed a free slot. With a
  large ``time_scale`` the window is shorter than one second, so N is always 1.
* ``getUpdates`` long-polls like Telegram: it confirms (forgets) updates below ``offset``,
  waits up to ``timeout`` seconds for one, and a second concurrent call terminates the first
  with ``409 Conflict``. ``allowed_updates`` is remembered across calls; until set, the
  ``chat_member``, ``message_reaction`` and ``message_reaction_count`` updates are not
  delivered (they are dropped, as Telegram never creates them).
* Webhook (``setWebhook``): updates are POSTed one at a time, in order, to the URL with the
  ``X-Telegram-Bot-Api-Secret-Token`` header; one is forgotten only after a 2xx answer, any
  other answer (or no connection) is retried after ``webhook_retry_seconds`` and recorded as
  ``last_error_message`` in getWebhookInfo. While a webhook is set getUpdates answers
  ``409 Conflict``; ``deleteWebhook`` stops the deliveries and keeps pending updates unless
  ``drop_pending_updates``.
* ``on_confirm(update_ids)`` is called (synchronously) when getUpdates' offset forgets updates,
  before anything is answered: tests kill the bridge right there.
* Closed topics, as on real Telegram: a bot that is an administrator with
  ``can_manage_topics`` posts into them without any error (the topic stays closed); any
  other bot gets ``400 Bad Request: TOPIC_CLOSED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from telegram.constants import ReactionEmoji

from bridge.sandbox.loopback import MAX_BODY, LoopbackServer

__all__ = [
    "DEFAULT_TOKEN",
    "Call",
    "FakeTelegram",
    "SentMessage",
    "Topic",
    "UploadedFile",
    "parse_html",
]

JSON = dict[str, Any]

DEFAULT_TOKEN = "123456:TEST-TOKEN"

# Handlers still running when the server goes down are cancelled after this long, which the
# client sees as a dropped connection: the same as a real server dying mid-request.
_MAX_TEXT = 4096
_MAX_CAPTION = 1024
_MAX_DOWNLOAD = 20 * 1024 * 1024
_DEFAULT_ICON_COLOR = 0x6FB9F0
_ICON_COLORS = frozenset({0x6FB9F0, 0xFFD67E, 0xCB86DB, 0x8EEE98, 0xFF93B2, 0xFB6F5F})
_UPDATES_OFF_BY_DEFAULT = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_REACTION_EMOJI = frozenset(e.value for e in ReactionEmoji)

# method name as the Bot API spells it -> field holding the media
_MEDIA_KINDS = {
    "sendPhoto": "photo",
    "sendDocument": "document",
    "sendVideo": "video",
    "sendAudio": "audio",
    "sendVoice": "voice",
    "sendAnimation": "animation",
}
# Methods that spend the group's flood budget (about 20 a minute, shared): everything that
# puts a message into the chat, and, as Telegram's team says (tdlib/td#2592, #3034), edits,
# which share the sending limit, and topic creation, which is sending a service message.
# Renaming, closing and reopening a topic and pinning also post a service message, so they
# count too. Reactions are counted as well: nothing public says they are free, and a fake
# stricter than Telegram only costs time, while a laxer one hides a 429. Not counted: reads
# (getChat, getUpdates, ...), answerCallbackQuery (no per-chat limit, tdlib/telegram-bot-api#648),
# deleting and unpinning (no message in the chat).
_POSTING_METHODS = frozenset(
    {
        "editmessagetext",
        "editmessagecaption",
        "editmessagemedia",
        "editmessagereplymarkup",
        "editforumtopic",
        "closeforumtopic",
        "reopenforumtopic",
        "pinchatmessage",
        "setmessagereaction",
        "sendmessage",
        *(method.lower() for method in _MEDIA_KINDS),
        "sendsticker",
        "sendmediagroup",
        "sendlocation",
        "sendvenue",
        "sendcontact",
        "sendpoll",
        "senddice",
        "copymessage",
        "copymessages",
        "forwardmessage",
        "forwardmessages",
        "createforumtopic",
    }
)

_INT_FIELDS = frozenset(
    {
        "chat_id",
        "from_chat_id",
        "message_id",
        "message_thread_id",
        "reply_to_message_id",
        "user_id",
        "offset",
        "limit",
        "timeout",
        "icon_color",
        "duration",
        "width",
        "height",
    }
)
_BOOL_FIELDS = frozenset(
    {
        "disable_notification",
        "protect_content",
        "allow_sending_without_reply",
        "allow_paid_broadcast",
        "disable_web_page_preview",
        "disable_content_type_detection",
        "drop_pending_updates",
        "has_spoiler",
        "is_big",
        "show_caption_above_media",
        "supports_streaming",
    }
)
_JSON_FIELDS = frozenset(
    {
        "allowed_updates",
        "caption_entities",
        "commands",
        "entities",
        "link_preview_options",
        "media",
        "reaction",
        "reply_markup",
        "reply_parameters",
        "scope",
    }
)


@dataclass(frozen=True)
class Call:
    """One request the client made, in arrival order, whatever its outcome."""

    method: str
    params: dict[str, Any]
    at: float


@dataclass
class Topic:
    """A forum topic as the fake currently sees it."""

    thread_id: int
    name: str
    closed: bool = False
    deleted: bool = False
    icon_color: int = _DEFAULT_ICON_COLOR
    icon_custom_emoji_id: str | None = None


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request."""

    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class SentMessage:
    """A message the bot posted and the fake accepted (text or media)."""

    message_id: int
    chat_id: int
    thread_id: int | None
    text: str | None
    parse_mode: str | None
    reply_to_message_id: int | None
    reply_markup: Any
    at: float
    method: str = "sendMessage"
    kind: str = "text"
    # text or caption with HTML tags removed and entities decoded
    plain_text: str | None = None
    entities: list[Any] | None = None
    file_id: str | None = None
    file: bytes | None = None
    filename: str | None = None
    disable_notification: bool = False
    # earlier texts, oldest first, pushed by each accepted editMessageText
    edits: list[str] = field(default_factory=list)
    deleted: bool = False
    pinned: bool = False


@dataclass
class _File:
    file_id: str
    file_unique_id: str
    file_path: str
    content: bytes
    filename: str | None = None
    mime_type: str | None = None


@dataclass
class _Failure:
    method: str
    status: int
    description: str
    retry_after: int | None
    remaining: int
    migrate_to_chat_id: int | None = None


@dataclass
class _Delay:
    method: str
    seconds: float
    remaining: int


class _ApiError(Exception):
    """An error answer of the Bot API."""

    def __init__(
        self,
        status: int,
        description: str,
        *,
        retry_after: int | None = None,
        migrate_to_chat_id: int | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after
        self.migrate_to_chat_id = migrate_to_chat_id

    def body(self) -> JSON:
        body: JSON = {"ok": False, "error_code": self.status, "description": self.description}
        parameters: JSON = {}
        if self.retry_after is not None:
            parameters["retry_after"] = self.retry_after
        if self.migrate_to_chat_id is not None:
            parameters["migrate_to_chat_id"] = self.migrate_to_chat_id
        if parameters:
            body["parameters"] = parameters
        return body


def _bad(description: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {description}")


def _decode_param(name: str, value: str) -> Any:
    """Undo PTB's form encoding for one field, knowing what type the field has."""
    if name in _INT_FIELDS:
        for number in (int, float):  # a float timeout is legal
            with contextlib.suppress(ValueError):
                return number(value)
        return value  # e.g. "@channelusername"
    if name in _BOOL_FIELDS and value in ("true", "false"):
        return value == "true"
    if name in _JSON_FIELDS:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


_ENTITY_RE = re.compile(r"&(#[xX][0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);")
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_HTML_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "tg-emoji",
        "code",
        "pre",
        "blockquote",
    }
)


def _decode_entity(text: str, pos: int) -> tuple[str, int] | None:
    match = _ENTITY_RE.match(text, pos)
    if match is None:
        return None
    name = match.group(1)
    if name[0] == "#":
        code = int(name[2:], 16) if name[1] in "xX" else int(name[1:])
        if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            return None
        return chr(code), match.end() - pos
    decoded = _NAMED_ENTITIES.get(name)
    return None if decoded is None else (decoded, match.end() - pos)


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        decoded = _decode_entity(text, i) if text[i] == "&" else None
        if decoded is None:
            out.append(text[i])
            i += 1
        else:
            out.append(decoded[0])
            i += decoded[1]
    return "".join(out)


def parse_html(text: str) -> str:
    """Return the plain text of a Bot API HTML string, or raise like Telegram's parser does."""

    def fail(reason: str) -> _ApiError:
        return _bad(f"can't parse entities: {reason}")

    def offset(pos: int) -> int:
        return len(text[:pos].encode("utf-8"))

    def skip_spaces(pos: int) -> int:
        while pos < n and text[pos].isspace():
            pos += 1
        return pos

    out: list[str] = []
    stack: list[str] = []
    n = len(text)
    i = 0
    while i < n:
        char = text[i]
        if char == "&":
            decoded = _decode_entity(text, i)
            if decoded is None:
                out.append("&")
                i += 1
            else:
                out.append(decoded[0])
                i += decoded[1]
            continue
        if char != "<":
            out.append(char)
            i += 1
            continue
        begin = i
        i += 1
        if i < n and text[i] == "/":
            end = text.find(">", i)
            end_tag = text[i + 1 : n if end < 0 else end].strip().lower()
            if not stack:
                raise fail(f"Unexpected end tag at byte offset {offset(begin)}")
            if end_tag and end_tag != stack[-1]:
                raise fail(
                    f"Unmatched end tag at byte offset {offset(begin)}, "
                    f'expected "</{stack[-1]}>", found "</{end_tag}>"'
                )
            if end < 0:
                raise fail(f"Unclosed end tag at byte offset {offset(begin)}")
            stack.pop()
            i = end + 1
            continue
        j = i
        while j < n and not text[j].isspace() and text[j] != ">":
            j += 1
        tag = text[i:j].lower()
        if tag not in _HTML_TAGS:
            raise fail(f'Unsupported start tag "{tag}" at byte offset {offset(begin)}')
        i = j
        attributes: dict[str, str] = {}
        while True:
            i = skip_spaces(i)
            if i >= n:
                raise fail(f"Unclosed start tag at byte offset {offset(begin)}")
            if text[i] == ">":
                i += 1
                break
            j = i
            while j < n and not text[j].isspace() and text[j] not in "=>":
                j += 1
            name = text[i:j].lower()
            if not name:
                raise fail(
                    f'Empty attribute name in the tag "{tag}" at byte offset {offset(begin)}'
                )
            i = skip_spaces(j)
            if i >= n or text[i] != "=":
                raise fail(
                    "Expected equal sign in declaration of an attribute of the tag "
                    f'"{tag}" at byte offset {offset(begin)}'
                )
            i = skip_spaces(i + 1)
            if i >= n:
                raise fail(f"Unclosed start tag at byte offset {offset(begin)}")
            if text[i] in "'\"":
                close = text.find(text[i], i + 1)
                if close < 0:
                    raise fail(f"Unclosed start tag at byte offset {offset(begin)}")
                attributes[name] = _unescape(text[i + 1 : close])
                i = close + 1
            else:
                j = i
                while j < n and not text[j].isspace() and text[j] != ">":
                    j += 1
                attributes[name] = _unescape(text[i:j])
                i = j
        if tag == "span" and attributes.get("class") != "tg-spoiler":
            raise fail(f'Tag "span" must have class "tg-spoiler" at byte offset {offset(begin)}')
        if tag == "tg-emoji" and "emoji-id" not in attributes:
            raise fail(
                f'Tag "tg-emoji" must have attribute "emoji-id" at byte offset {offset(begin)}'
            )
        stack.append(tag)
    if stack:
        raise fail(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


def _update_type(update: JSON) -> str:
    return next((key for key in update if key != "update_id"), "")


class FakeTelegram(LoopbackServer):
    """A Bot API server for one forum supergroup, with fault injection and an operator side."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        chat_id: int = -1001000000001,
        is_forum: bool = True,
        bot_is_admin: bool = True,
        can_manage_topics: bool = True,
        bot_id: int = 123456,
        bot_username: str = "bridge_test_bot",
    ) -> None:
        super().__init__()
        self.token = token
        self.chat_id = chat_id
        self.chat_title = "Bridge Test Group"
        # The flags below may be flipped mid-test (e.g. an admin revokes the bot's rights).
        self.is_forum = is_forum
        self.bot_is_admin = bot_is_admin
        self.can_manage_topics = can_manage_topics
        self.bot_id = bot_id
        self.bot_username = bot_username
        self.bot_first_name = "Bridge Test Bot"

        self.calls: list[Call] = []
        self.topics: dict[int, Topic] = {}
        self.messages: list[SentMessage] = []
        self.reactions: dict[int, list[str]] = {}
        # scope type + language code -> commands, as set through setMyCommands
        self.commands: dict[tuple[str, str], list[JSON]] = {}
        self.webhook_deleted = False
        self.last_update_id = 0
        self.webhook_url = ""
        self.webhook_secret: str | None = None
        self.webhook_retry_seconds = 0.2
        self.webhook_last_error = ""
        self.webhook_last_error_date = 0
        self.on_confirm: Callable[[list[int]], None] | None = None
        # Called with each update just before the webhook POST of it goes out.
        self.on_webhook_post: Callable[[JSON], None] | None = None
        self._webhook_task: asyncio.Task[None] | None = None

        self._http: aiohttp.ClientSession | None = None

        self._message_ids = itertools.count(100)
        self._update_ids = itertools.count(500_000)
        self._file_ids = itertools.count(1)
        self._raw: dict[int, JSON] = {}
        self._deleted: set[int] = set()
        self._sent: dict[int, SentMessage] = {}
        self._files: dict[str, _File] = {}
        self._files_by_path: dict[str, _File] = {}

        self._updates: list[JSON] = []
        self._allowed_updates: frozenset[str] | None = None
        self._updates_changed = asyncio.Event()
        self._poll_generation = 0

        self._failures: list[_Failure] = []
        self._delays: list[_Delay] = []
        self._rate_per_minute: int | None = None
        self._rate_window = 60.0
        self._posted_at: deque[float] = deque(maxlen=100_000)
        # How many calls the rate limit refused with 429.
        self.rate_limited = 0

        self._handlers: dict[str, Callable[[JSON], Awaitable[Any]]] = {
            "getme": self._get_me,
            "getchat": self._get_chat,
            "getchatmember": self._get_chat_member,
            "getchatadministrators": self._get_chat_administrators,
            "getupdates": self._get_updates,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "setwebhook": self._set_webhook,
            "setmycommands": self._set_my_commands,
            "getmycommands": self._get_my_commands,
            "deletemycommands": self._delete_my_commands,
            "sendmessage": self._send_message,
            "sendchataction": self._send_chat_action,
            "answercallbackquery": self._answer_callback_query,
            "editmessagetext": self._edit_message_text,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "deletemessage": self._delete_message,
            "pinchatmessage": self._pin_chat_message,
            "unpinchatmessage": self._unpin_chat_message,
            "createforumtopic": self._create_forum_topic,
            "editforumtopic": self._edit_forum_topic,
            "closeforumtopic": self._close_forum_topic,
            "reopenforumtopic": self._reopen_forum_topic,
            "deleteforumtopic": self._delete_forum_topic,
            "setmessagereaction": self._set_message_reaction,
            "getfile": self._get_file,
        }
        for method in _MEDIA_KINDS:
            self._handlers[method.lower()] = functools.partial(self._send_media, method)

    # ----------------------------------------------------------------- lifecycle

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{file_path:.+}", self._handle_file)
        return app

    async def stop(self) -> None:
        """Stop listening and release every resource; safe to call twice or after go_down."""
        await self._stop_webhook()
        await super().stop()
        if self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def base_url(self) -> str:
        """Value for ``Bot(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        """Value for ``Bot(base_file_url=...)``."""
        return f"http://127.0.0.1:{self.port}/file/bot"

    # ------------------------------------------------------------ observation

    def messages_in(self, thread_id: int | None) -> list[SentMessage]:
        """Messages the bot posted into one topic (None: General), oldest first, deleted too."""
        return [m for m in self.messages if m.thread_id == thread_id]

    def calls_of(self, method: str) -> list[Call]:
        """Calls of one method (case-insensitive), oldest first."""
        return [c for c in self.calls if c.method.lower() == method.lower()]

    def raw_message(self, message_id: int) -> JSON:
        """The Message JSON the fake holds for any message id (bot, operator or service)."""
        return self._raw[message_id]

    # The timeout is part of the assertion, not a cancellation scope, hence ASYNC109.
    def _state(self) -> str:
        recent = ", ".join(c.method for c in self.calls[-10:]) or "none"
        return (
            f"last calls: {recent}; {len(self.messages)} messages sent; "
            f"topics: {sorted(self.topics)}"
        )

    # -------------------------------------------------------- fault injection

    def fail_next(
        self,
        method: str,
        status: int,
        description: str,
        *,
        retry_after: int | None = None,
        times: int = 1,
        migrate_to_chat_id: int | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with this error, unprocessed.

        ``method`` is matched case-insensitively; ``"*"`` matches any method except
        getUpdates. With ``retry_after`` the body carries ``parameters.retry_after``, with
        ``migrate_to_chat_id`` (the group was upgraded) ``parameters.migrate_to_chat_id``.
        """
        self._failures.append(
            _Failure(method.lower(), status, description, retry_after, times, migrate_to_chat_id)
        )

    def delay_next(self, method: str, seconds: float, *, times: int = 1) -> None:
        """Process the next ``times`` calls of ``method`` normally but answer ``seconds`` late."""
        self._delays.append(_Delay(method.lower(), seconds, times))

    def delete_topic(self, thread_id: int) -> None:
        """Delete a topic and its messages as an operator would in the Telegram app.

        No update is pushed; afterwards sending into it fails with "message thread not found".
        """
        self.topics[thread_id].deleted = True
        for message_id, raw in self._raw.items():
            if raw.get("message_thread_id") == thread_id:
                self._deleted.add(message_id)
        for sent in self.messages_in(thread_id):
            sent.deleted = True

    def close_topic(self, thread_id: int, *, announce: bool = False, user_id: int = 777) -> None:
        """Close a topic as an operator would in the Telegram app.

        With ``announce`` the bot gets the service message real Telegram sends an admin bot
        (``forum_topic_closed``, from the operator); without, no update is pushed.
        """
        self.topics[thread_id].closed = True
        if announce:
            self.operator_message(
                thread_id=thread_id, user_id=user_id, extra={"forum_topic_closed": {}}
            )

    def reopen_topic(self, thread_id: int, *, user_id: int = 777) -> None:
        """Reopen a topic as an operator would in the Telegram app (announced to the bot)."""
        self.topics[thread_id].closed = False
        self.operator_message(
            thread_id=thread_id, user_id=user_id, extra={"forum_topic_reopened": {}}
        )

    def set_rate_limit(self, per_minute: int | None, *, time_scale: float = 1.0) -> None:
        """Share ``per_minute`` posting calls per ``60 / time_scale`` s; None lifts the limit.

        ``retry_after`` in the 429 answer is in real seconds (see the module docstring).
        """
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self._rate_per_minute = per_minute
        self._rate_window = 60.0 / time_scale

    # ----------------------------------------------------------- operator side

    def add_file(self, content: bytes, *, file_path: str | None = None) -> tuple[str, str]:
        """Store a file the operator sent; returns ``(file_id, file_unique_id)``.

        ``file_path`` defaults to ``photos/file_<n>.jpg``, n counting files from 1. getFile
        then reports that path and the size; the bytes are served under ``base_file_url``.
        """
        return self._store_file(content, file_path=file_path, folder="photos", ext="jpg")

    def pending_updates(self) -> int:
        """How many updates Telegram still holds for the bot (not confirmed yet)."""
        return len(self._deliverable())

    def push_update(self, update: JSON) -> int:
        """Queue a raw update for getUpdates; assigns ``update_id`` if missing and returns it."""
        update = dict(update)
        update.setdefault("update_id", next(self._update_ids))
        self._updates.append(update)
        self.last_update_id = int(update["update_id"])
        self._wake_pollers()
        return int(update["update_id"])

    def operator_message(
        self,
        *,
        thread_id: int | None,
        text: str | None = None,
        user_id: int = 777,
        first_name: str = "Opa",
        is_bot: bool = False,
        chat_id: int | None = None,
        entities: list[JSON] | None = None,
        extra: JSON | None = None,
        reply_to_message_id: int | None = None,
    ) -> int:
        """Push an update with a message a person wrote in the group; returns its message_id.

        In a topic the message has ``message_thread_id``, ``is_topic_message`` and, as real
        Telegram sends it, ``reply_to_message`` = the topic's root service message (or the
        message given by ``reply_to_message_id``). ``extra`` is merged in last (photo, caption,
        sender_chat, ...).
        """
        sender = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
        body: JSON = {}
        if text is not None:
            body["text"] = text
        if entities is not None:
            body["entities"] = entities
        body.update(extra or {})
        if chat_id is not None and chat_id != self.chat_id:
            message = {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "supergroup", "title": "Another group"},
                "from": sender,
                **body,
            }
        else:
            message = self._new_message(
                sender=sender, thread_id=thread_id, reply_to=reply_to_message_id, body=body
            )
        self.push_update({"message": message})
        return int(message["message_id"])

    # ------------------------------------------------------------- HTTP layer

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params = await self._read_params(request)
        self.calls.append(Call(method, params, time.monotonic()))
        if request.match_info["token"] != self.token:
            return web.json_response(_ApiError(401, "Unauthorized").body(), status=401)
        key = method.lower()
        handler = self._handlers.get(key)
        if handler is None:
            return web.json_response(_ApiError(404, "Not Found").body(), status=404)
        delay = self._pop_delay(key)
        try:
            failure = self._pop_failure(key)
            if failure is not None:
                raise failure
            posting = key in _POSTING_METHODS
            if posting:
                self._check_rate_limit()
            result = await handler(params)
            if posting:
                self._posted_at.append(time.monotonic())
            status, body = 200, {"ok": True, "result": result}
        except _ApiError as exc:
            status, body = exc.status, exc.body()
        if delay:
            await asyncio.sleep(delay)
        return web.json_response(body, status=status)

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.json_response(_ApiError(401, "Unauthorized").body(), status=401)
        stored = self._files_by_path.get(request.match_info["file_path"])
        if stored is None:
            return web.json_response(_ApiError(404, "Not Found").body(), status=404)
        return web.Response(
            body=stored.content, content_type=stored.mime_type or "application/octet-stream"
        )

    @staticmethod
    async def _read_params(request: web.Request) -> JSON:
        params: JSON = {}
        if request.content_type == "application/json":
            with contextlib.suppress(ValueError):
                body = await request.json()
                if isinstance(body, dict):
                    params.update(body)
        elif request.method == "POST":
            form = await request.post()
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    params[name] = UploadedFile(
                        filename=value.filename,
                        content_type=value.content_type,
                        data=value.file.read(),
                    )
                else:
                    params[name] = _decode_param(name, str(value))
        for name, value in request.query.items():
            params.setdefault(name, _decode_param(name, value))
        return params

    def _pop_failure(self, method: str) -> _ApiError | None:
        for failure in self._failures:
            wildcard = failure.method == "*" and method != "getupdates"
            if failure.method == method or wildcard:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return _ApiError(
                    failure.status,
                    failure.description,
                    retry_after=failure.retry_after,
                    migrate_to_chat_id=failure.migrate_to_chat_id,
                )
        return None

    def _pop_delay(self, method: str) -> float:
        for delay in self._delays:
            if delay.method in (method, "*"):
                delay.remaining -= 1
                if delay.remaining <= 0:
                    self._delays.remove(delay)
                return delay.seconds
        return 0.0

    def _check_rate_limit(self) -> None:
        if self._rate_per_minute is None:
            return
        now = time.monotonic()
        recent = [at for at in self._posted_at if at > now - self._rate_window]
        if len(recent) >= self._rate_per_minute:
            # The oldest of the newest `per_minute` calls must leave the window to free a slot.
            frees_at = recent[-self._rate_per_minute] + self._rate_window
            retry_after = max(1, math.ceil(frees_at - now))
            self.rate_limited += 1
            raise _ApiError(
                429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after
            )

    # ------------------------------------------------------------- model helpers

    def _bot_user(self) -> JSON:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
        }

    def _chat(self) -> JSON:
        chat: JSON = {"id": self.chat_id, "type": "supergroup", "title": self.chat_title}
        if self.is_forum:
            chat["is_forum"] = True
        return chat

    def _new_message(
        self, *, sender: JSON, thread_id: int | None, reply_to: int | None, body: JSON
    ) -> JSON:
        message_id = next(self._message_ids)
        message: JSON = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chat(),
            "from": sender,
        }
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        # A topic's root message has the topic's id, so the implicit reply is to `thread_id`.
        target = reply_to if reply_to is not None else thread_id
        if target is not None and target in self._raw:
            parent = dict(self._raw[target])
            parent.pop("reply_to_message", None)
            message["reply_to_message"] = parent
        message.update(body)
        self._raw[message_id] = message
        return message

    def _service_message(self, thread_id: int, body: JSON) -> JSON:
        return self._new_message(
            sender=self._bot_user(), thread_id=thread_id, reply_to=None, body=body
        )

    def _wake_pollers(self) -> None:
        self._updates_changed.set()
        self._updates_changed = asyncio.Event()

    def _check_chat(self, params: JSON) -> None:
        if params.get("chat_id") != self.chat_id:
            raise _bad("chat not found")

    def _message(self, params: JSON, not_found: str) -> int:
        message_id = params.get("message_id")
        if not isinstance(message_id, int) or message_id not in self._raw:
            raise _bad(not_found)
        if message_id in self._deleted:
            raise _bad(not_found)
        return message_id

    def _writable_thread(self, thread_id: Any) -> int:
        topic = self.topics.get(thread_id) if isinstance(thread_id, int) else None
        if topic is None or topic.deleted or not self.is_forum:
            raise _bad("message thread not found")
        if topic.closed and not (self.bot_is_admin and self.can_manage_topics):
            raise _bad("TOPIC_CLOSED")
        return topic.thread_id

    def _placement(self, params: JSON) -> tuple[int | None, int | None]:
        """Resolve where a new bot message goes: (thread id or None for General, reply id)."""
        thread_id = params.get("message_thread_id")
        if thread_id is not None:
            thread_id = self._writable_thread(thread_id)
        reply = params.get("reply_parameters")
        allow_without = bool(params.get("allow_sending_without_reply", False))
        reply_to = params.get("reply_to_message_id")
        if isinstance(reply, dict):
            reply_to = reply.get("message_id")
            allow_without = bool(reply.get("allow_sending_without_reply", allow_without))
        if reply_to is not None and (reply_to not in self._raw or reply_to in self._deleted):
            if not allow_without:
                raise _bad("message to be replied not found")
            reply_to = None
        if thread_id is None and reply_to is not None:
            inherited = self._raw[reply_to].get("message_thread_id")
            thread_id = None if inherited is None else self._writable_thread(inherited)
        return thread_id, reply_to

    def _plain(self, text: str, parse_mode: Any) -> str:
        if isinstance(parse_mode, str) and parse_mode.lower() == "html":
            return parse_html(text)
        return text

    def _record_sent(
        self,
        method: str,
        message: JSON,
        params: JSON,
        reply_to: int | None,
        text: str | None,
        **fields: Any,
    ) -> None:
        sent = SentMessage(
            message_id=message["message_id"],
            chat_id=self.chat_id,
            thread_id=message.get("message_thread_id"),
            text=text,
            parse_mode=params.get("parse_mode"),
            reply_to_message_id=reply_to,
            reply_markup=params.get("reply_markup"),
            at=time.monotonic(),
            method=method,
            disable_notification=bool(params.get("disable_notification", False)),
            **fields,
        )
        self.messages.append(sent)
        self._sent[sent.message_id] = sent

    def _store_file(
        self,
        content: bytes,
        *,
        file_path: str | None,
        folder: str,
        ext: str,
        filename: str | None = None,
        mime_type: str | None = None,
    ) -> tuple[str, str]:
        number = next(self._file_ids)
        path = file_path or f"{folder}/file_{number}.{ext}"
        stored = _File(
            file_id=f"FAKEFILE{number:06d}-{folder}",
            file_unique_id=f"U{number:06d}",
            file_path=path,
            content=content,
            filename=filename,
            mime_type=mime_type,
        )
        self._files[stored.file_id] = stored
        self._files_by_path[path] = stored
        return stored.file_id, stored.file_unique_id

    async def _download(self, url: str) -> bytes:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        try:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                response.raise_for_status()
                return await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _bad("failed to get HTTP URL content") from exc

    # ------------------------------------------------------------- methods

    async def _get_me(self, params: JSON) -> JSON:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_chat(self, params: JSON) -> JSON:
        self._check_chat(params)
        return {
            **self._chat(),
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
            "permissions": {"can_send_messages": True, "can_manage_topics": False},
        }

    def _member(self, user_id: int) -> JSON:
        if user_id != self.bot_id:
            user = {"id": user_id, "is_bot": False, "first_name": f"User {user_id}"}
            return {"status": "member", "user": user}
        if not self.bot_is_admin:
            return {"status": "member", "user": self._bot_user()}
        return {
            "status": "administrator",
            "user": self._bot_user(),
            "can_be_edited": False,
            "is_anonymous": False,
            "can_manage_chat": True,
            "can_delete_messages": True,
            "can_manage_video_chats": True,
            "can_restrict_members": True,
            "can_promote_members": False,
            "can_change_info": True,
            "can_invite_users": True,
            "can_post_stories": False,
            "can_edit_stories": False,
            "can_delete_stories": False,
            "can_pin_messages": True,
            "can_manage_topics": self.can_manage_topics,
        }

    async def _get_chat_member(self, params: JSON) -> JSON:
        self._check_chat(params)
        user_id = params.get("user_id")
        if not isinstance(user_id, int):
            raise _bad("invalid user_id specified")
        return self._member(user_id)

    async def _get_chat_administrators(self, params: JSON) -> list[JSON]:
        self._check_chat(params)
        owner = {
            "status": "creator",
            "user": {"id": 1, "is_bot": False, "first_name": "Owner"},
            "is_anonymous": False,
        }
        return [owner, self._member(self.bot_id)] if self.bot_is_admin else [owner]

    def _deliverable(self) -> list[JSON]:
        allowed = self._allowed_updates
        # Updates the bot did not subscribe to never exist for it.
        self._updates = [
            u
            for u in self._updates
            if (
                _update_type(u) in allowed
                if allowed
                else _update_type(u) not in _UPDATES_OFF_BY_DEFAULT
            )
        ]
        return self._updates

    async def _get_updates(self, params: JSON) -> list[JSON]:
        offset = params.get("offset")
        limit = params.get("limit")
        limit = min(max(limit, 1), 100) if isinstance(limit, int) else 100
        timeout = params.get("timeout")
        timeout = max(float(timeout), 0.0) if isinstance(timeout, int | float) else 0.0
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = frozenset(allowed) or None
        if self.webhook_url:
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        if isinstance(offset, int) and offset > 0:
            confirmed = [u["update_id"] for u in self._updates if u["update_id"] < offset]
            if confirmed and self.on_confirm is not None:
                self.on_confirm(confirmed)
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        elif isinstance(offset, int) and offset < 0:
            self._updates = self._updates[offset:]

        self._poll_generation += 1
        generation = self._poll_generation
        self._wake_pollers()  # terminates an older long poll
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if generation != self._poll_generation:
                raise _ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            ready = self._deliverable()[:limit]
            remaining = deadline - loop.time()
            if ready or remaining <= 0:
                return ready
            changed = self._updates_changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    async def _delete_webhook(self, params: JSON) -> bool:
        self.webhook_deleted = True
        self.webhook_url = ""
        self.webhook_secret = None
        await self._stop_webhook()
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _get_webhook_info(self, params: JSON) -> JSON:
        info: JSON = {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._deliverable()),
        }
        if self.webhook_last_error:
            info["last_error_message"] = self.webhook_last_error
            info["last_error_date"] = self.webhook_last_error_date
        if self._allowed_updates:
            info["allowed_updates"] = sorted(self._allowed_updates)
        return info

    async def _set_webhook(self, params: JSON) -> bool:
        url = params.get("url")
        if not isinstance(url, str) or not url:
            raise _bad("Bad Request: bad webhook: an HTTPS URL must be provided for webhook")
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = frozenset(allowed) or None
        if params.get("drop_pending_updates"):
            self._updates.clear()
        await self._stop_webhook()
        self.webhook_url = url
        secret = params.get("secret_token")
        self.webhook_secret = str(secret) if secret is not None else None
        self.webhook_deleted = False
        self._poll_generation += 1
        self._wake_pollers()  # a long poll in progress ends with 409
        self._webhook_task = asyncio.create_task(self._deliver_webhook(), name="fake-webhook")
        return True

    async def _stop_webhook(self) -> None:
        task, self._webhook_task = self._webhook_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _deliver_webhook(self) -> None:
        """POST pending updates one at a time, in order; forget each only after a 2xx."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        while True:
            ready = self._deliverable()
            if not ready:
                changed = self._updates_changed
                await changed.wait()
                continue
            update = ready[0]
            headers = {"Content-Type": "application/json"}
            if self.webhook_secret is not None:
                headers["X-Telegram-Bot-Api-Secret-Token"] = self.webhook_secret
            if self.on_webhook_post is not None:
                self.on_webhook_post(update)
            try:
                async with self._http.post(
                    self.webhook_url,
                    data=json.dumps(update),
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as response:
                    ok = 200 <= response.status < 300
                    error = f"Wrong response from the webhook: {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok, error = False, f"Connection failed: {type(exc).__name__}"
            if ok:
                self._updates = [u for u in self._updates if u is not update]
                continue
            self.webhook_last_error = error
            self.webhook_last_error_date = int(time.time())
            await asyncio.sleep(self.webhook_retry_seconds)

    @staticmethod
    def _commands_key(params: JSON) -> tuple[str, str]:
        scope = params.get("scope")
        scope_type = scope.get("type", "default") if isinstance(scope, dict) else "default"
        return scope_type, str(params.get("language_code") or "")

    async def _set_my_commands(self, params: JSON) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad('parameter "commands" is required')
        self.commands[self._commands_key(params)] = commands
        return True

    async def _get_my_commands(self, params: JSON) -> list[JSON]:
        return self.commands.get(self._commands_key(params), [])

    async def _delete_my_commands(self, params: JSON) -> bool:
        self.commands.pop(self._commands_key(params), None)
        return True

    async def _send_message(self, params: JSON) -> JSON:
        self._check_chat(params)
        text = params.get("text")
        if not isinstance(text, str):
            raise _bad("message text is empty")
        parse_mode = params.get("parse_mode")
        plain = self._plain(text, parse_mode).strip()
        if not plain:
            raise _bad("message text is empty")
        if len(plain) > _MAX_TEXT:
            raise _bad("message is too long")
        thread_id, reply_to = self._placement(params)
        body: JSON = {"text": plain}
        entities = params.get("entities")
        if parse_mode is None and isinstance(entities, list):
            body["entities"] = entities
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            body["reply_markup"] = markup
        message = self._new_message(
            sender=self._bot_user(), thread_id=thread_id, reply_to=reply_to, body=body
        )
        self._record_sent(
            "sendMessage", message, params, reply_to, text=text, plain_text=plain, entities=entities
        )
        return message

    async def _send_media(self, method: str, params: JSON) -> JSON:
        kind = _MEDIA_KINDS[method]
        self._check_chat(params)
        media = params.get(kind)
        if isinstance(media, str) and media.startswith("attach://"):
            media = params.get(media.removeprefix("attach://"))
        if isinstance(media, UploadedFile):
            ext = (media.filename or "file.bin").rsplit(".", 1)[-1]
            file_id, _ = self._store_file(
                media.data,
                file_path=None,
                folder=f"{kind}s",
                ext=ext,
                filename=media.filename,
                mime_type=media.content_type,
            )
        elif isinstance(media, str) and media in self._files:
            file_id = media
        elif isinstance(media, str) and media.startswith(("http://", "https://")):
            content = await self._download(media)
            name = media.rsplit("/", 1)[-1] or "file.bin"
            file_id, _ = self._store_file(
                content,
                file_path=None,
                folder=f"{kind}s",
                ext=name.rsplit(".", 1)[-1],
                filename=name,
            )
        elif media is None:
            raise _bad(f"there is no {kind} in the request")
        else:
            raise _bad("wrong file identifier/HTTP URL specified")
        caption = params.get("caption")
        plain: str | None = None
        if isinstance(caption, str):
            plain = self._plain(caption, params.get("parse_mode")).strip()
            if len(plain) > _MAX_CAPTION:
                raise _bad("message caption is too long")
        thread_id, reply_to = self._placement(params)
        stored = self._files[file_id]
        body: JSON = {kind: self._media_json(kind, stored)}
        if plain:
            body["caption"] = plain
        message = self._new_message(
            sender=self._bot_user(), thread_id=thread_id, reply_to=reply_to, body=body
        )
        self._record_sent(
            method,
            message,
            params,
            reply_to,
            text=caption if isinstance(caption, str) else None,
            plain_text=plain,
            kind=kind,
            file_id=file_id,
            file=stored.content,
            filename=stored.filename,
        )
        return message

    @staticmethod
    def _media_json(kind: str, stored: _File) -> Any:
        base: JSON = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.content),
        }
        if kind == "photo":
            return [{**base, "width": 800, "height": 600}]
        if stored.filename:
            base["file_name"] = stored.filename
        if stored.mime_type:
            base["mime_type"] = stored.mime_type
        if kind in ("video", "animation"):
            return {**base, "width": 640, "height": 360, "duration": 1}
        if kind in ("audio", "voice"):
            return {**base, "duration": 1}
        return base

    async def _send_chat_action(self, params: JSON) -> bool:
        self._check_chat(params)
        if params.get("message_thread_id") is not None:
            self._writable_thread(params["message_thread_id"])
        return True

    async def _answer_callback_query(self, params: JSON) -> bool:
        return True

    async def _edit_message_text(self, params: JSON) -> JSON:
        self._check_chat(params)
        message_id = self._message(params, "message to edit not found")
        sent = self._sent.get(message_id)
        if sent is None:
            raise _bad("message can't be edited")
        if sent.kind != "text":
            raise _bad("there is no text in the message to edit")
        text = params.get("text")
        if not isinstance(text, str):
            raise _bad("message text is empty")
        plain = self._plain(text, params.get("parse_mode")).strip()
        if not plain:
            raise _bad("message text is empty")
        if len(plain) > _MAX_TEXT:
            raise _bad("message is too long")
        raw = self._raw[message_id]
        markup = params.get("reply_markup")
        if plain == raw.get("text") and markup == raw.get("reply_markup"):
            raise _bad(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        raw["text"] = plain
        raw["edit_date"] = int(time.time())
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            raw["reply_markup"] = markup
        else:
            raw.pop("reply_markup", None)
        if sent.text is not None:
            sent.edits.append(sent.text)
        sent.text = text
        sent.plain_text = plain
        sent.parse_mode = params.get("parse_mode")
        sent.reply_markup = markup
        return raw

    async def _edit_message_reply_markup(self, params: JSON) -> JSON:
        self._check_chat(params)
        message_id = self._message(params, "message to edit not found")
        sent = self._sent.get(message_id)
        if sent is None:
            raise _bad("message can't be edited")
        raw = self._raw[message_id]
        markup = params.get("reply_markup")
        if markup == raw.get("reply_markup") or (markup is None and "reply_markup" not in raw):
            raise _bad(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            raw["reply_markup"] = markup
        else:
            raw.pop("reply_markup", None)
        raw["edit_date"] = int(time.time())
        sent.reply_markup = markup
        return raw

    async def _delete_message(self, params: JSON) -> bool:
        self._check_chat(params)
        message_id = self._message(params, "message to delete not found")
        self._deleted.add(message_id)
        if message_id in self._sent:
            self._sent[message_id].deleted = True
        return True

    async def _pin_chat_message(self, params: JSON) -> bool:
        self._check_chat(params)
        message_id = self._message(params, "message to pin not found")
        if message_id in self._sent:
            self._sent[message_id].pinned = True
        return True

    async def _unpin_chat_message(self, params: JSON) -> bool:
        self._check_chat(params)
        if params.get("message_id") is None:
            for sent in self.messages:
                sent.pinned = False
            return True
        message_id = self._message(params, "message to unpin not found")
        if message_id in self._sent:
            self._sent[message_id].pinned = False
        return True

    def _check_topic_rights(self, create: bool = False) -> None:
        if not self.is_forum:
            raise _bad("the chat is not a forum")
        if not (self.bot_is_admin and self.can_manage_topics):
            raise _bad("not enough rights to create a topic" if create else "CHAT_ADMIN_REQUIRED")

    def _existing_topic(self, params: JSON) -> Topic:
        self._check_chat(params)
        self._check_topic_rights()
        thread_id = params.get("message_thread_id")
        topic = self.topics.get(thread_id) if isinstance(thread_id, int) else None
        if topic is None:
            raise _bad("message thread not found")
        if topic.deleted:
            raise _bad("TOPIC_DELETED")
        return topic

    async def _create_forum_topic(self, params: JSON) -> JSON:
        self._check_chat(params)
        self._check_topic_rights(create=True)
        name = params.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _bad("TOPIC_TITLE_EMPTY")
        if len(name) > 128:
            raise _bad("TOPIC_TITLE_TOO_LONG")  # the Bot API allows 1-128 characters
        icon_color = params.get("icon_color", _DEFAULT_ICON_COLOR)
        if icon_color not in _ICON_COLORS:
            raise _bad("TOPIC_ICON_COLOR_INVALID")  # only the six documented colours exist
        emoji_id = params.get("icon_custom_emoji_id")
        thread_id = next(self._message_ids)
        created: JSON = {"name": name, "icon_color": icon_color}
        if emoji_id:
            created["icon_custom_emoji_id"] = emoji_id
        self._raw[thread_id] = {
            "message_id": thread_id,
            "date": int(time.time()),
            "chat": self._chat(),
            "from": self._bot_user(),
            "message_thread_id": thread_id,
            "is_topic_message": True,
            "forum_topic_created": created,
        }
        self.topics[thread_id] = Topic(
            thread_id=thread_id, name=name, icon_color=icon_color, icon_custom_emoji_id=emoji_id
        )
        return {"message_thread_id": thread_id, **created}

    async def _edit_forum_topic(self, params: JSON) -> bool:
        topic = self._existing_topic(params)
        name = params.get("name")
        emoji_id = params.get("icon_custom_emoji_id")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise _bad("TOPIC_TITLE_EMPTY")
        if (name is None or name == topic.name) and (
            emoji_id is None or emoji_id == topic.icon_custom_emoji_id
        ):
            raise _bad("TOPIC_NOT_MODIFIED")
        edited: JSON = {}
        if name is not None:
            topic.name = edited["name"] = name
        if emoji_id is not None:
            topic.icon_custom_emoji_id = edited["icon_custom_emoji_id"] = emoji_id or None
        self._service_message(topic.thread_id, {"forum_topic_edited": edited})
        return True

    async def _close_forum_topic(self, params: JSON) -> bool:
        topic = self._existing_topic(params)
        if topic.closed:
            raise _bad("TOPIC_NOT_MODIFIED")
        topic.closed = True
        self._service_message(topic.thread_id, {"forum_topic_closed": {}})
        return True

    async def _reopen_forum_topic(self, params: JSON) -> bool:
        topic = self._existing_topic(params)
        if not topic.closed:
            raise _bad("TOPIC_NOT_MODIFIED")
        topic.closed = False
        self._service_message(topic.thread_id, {"forum_topic_reopened": {}})
        return True

    async def _delete_forum_topic(self, params: JSON) -> bool:
        topic = self._existing_topic(params)
        self.delete_topic(topic.thread_id)
        return True

    async def _set_message_reaction(self, params: JSON) -> bool:
        self._check_chat(params)
        message_id = self._message(params, "message to react not found")
        reaction = params.get("reaction") or []
        if isinstance(reaction, dict):
            reaction = [reaction]
        if not isinstance(reaction, list):
            raise _bad("REACTION_INVALID")
        if len(reaction) > 1:
            # Bots are non-premium users: one reaction per message.
            raise _bad("REACTIONS_TOO_MANY")
        emoji = ""
        for item in reaction:
            if not isinstance(item, dict):
                raise _bad("REACTION_INVALID")
            if item.get("type") == "emoji":
                emoji = str(item.get("emoji", ""))
                if emoji not in _REACTION_EMOJI:
                    raise _bad("REACTION_INVALID")
            else:
                # The fake group offers no custom emoji reactions. Note that PTB turns a plain
                # str that is not a standard reaction emoji (say "✅") into a custom_emoji one.
                raise _bad("REACTION_INVALID")
        # An empty string records that the bot removed its reaction.
        self.reactions.setdefault(message_id, []).append(emoji)
        return True

    async def _get_file(self, params: JSON) -> JSON:
        stored = self._files.get(str(params.get("file_id")))
        if stored is None:
            raise _bad("invalid file_id")
        if len(stored.content) > _MAX_DOWNLOAD:
            raise _bad("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.content),
            "file_path": stored.file_path,
        }
