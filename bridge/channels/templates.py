"""WhatsApp message templates: what an operator sends to reach a customer at any time.

`TemplateMessage` is one template filled in for one customer, as it waits in the outbound
queue (`to_json`/`from_json`) and as NusaSMS's broadcast gets it (`parameters`).

The `parameters` shape (the reference only gives one example, `{"body": [{"key": "1",
"value": "code", "value_text": "CODE"}]}`) is, section by section, one entry per
placeholder, all entries alike:

    {"key": <placeholder number, or the button's index>,
     "value": <what it is: "text", "image", "document", "video" or "url">,
     "value_text": <the value: the text, the media's URL, or the URL button's suffix>}

- ``header``: one entry: the TEXT header's `{{1}}` (value "text") or the header media's URL
  (value "image", "document" or "video");
- ``body``: one entry per `{{n}}`, keys "1", "2", ... in order;
- ``buttons``: one entry per URL button whose URL ends in `{{1}}`, keyed by the button's
  index among all the template's buttons ("0" for the first).
A section without placeholders is left out. The sandbox emulator checks the same counts.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.core.workers import ErrorLog, Worker
from bridge.nusasms import NusaSMSClient, NusaSMSError, Template

log = logging.getLogger(__name__)

# Kinds of header media WhatsApp templates may carry.
MEDIA_KINDS = ("image", "document", "video")


@dataclass(frozen=True, slots=True)
class TemplateValues:
    """What the operator gave for a template's placeholders."""

    body: tuple[str, ...] = ()
    # A TEXT header's `{{1}}`, or a media header's URL (None: the file replied to, if any).
    header: str | None = None
    # URL-button suffixes: (the button's index among all buttons, the value).
    buttons: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TemplateMessage:
    """One template filled in for one customer, ready to be sent as a broadcast."""

    template_id: str
    template_name: str
    channel_id: str
    values: TemplateValues = field(default_factory=TemplateValues)
    # A Telegram file the command replied to, as header media: the outbox publishes it as a
    # /media/<token> URL when it sends (a Telegram file link holds the bot token).
    header_file_id: str | None = None
    # "text", "image", "document", "video", or None for a template without a header value.
    header_kind: str | None = None
    # The rendered text, as shown in the customer's topic.
    text: str = ""

    def parameters(self, media_url: str | None = None) -> dict[str, list[dict[str, str]]]:
        """NusaSMS's `BroadcastMessageParam.parameters` (see the module docstring)."""
        parameters: dict[str, list[dict[str, str]]] = {}
        if self.header_kind == "text" and self.values.header is not None:
            parameters["header"] = [_entry("1", "text", self.values.header)]
        elif self.header_kind in MEDIA_KINDS:
            url = media_url if media_url is not None else self.values.header
            if url is not None:
                parameters["header"] = [_entry("1", self.header_kind, url)]
        if self.values.body:
            parameters["body"] = [
                _entry(str(number), "text", value)
                for number, value in enumerate(self.values.body, start=1)
            ]
        if self.values.buttons:
            parameters["buttons"] = [
                _entry(str(index), "url", value) for index, value in self.values.buttons
            ]
        return parameters

    def to_json(self) -> str:
        """This message as it is stored with its outbound row."""
        return json.dumps(
            {
                "template_id": self.template_id,
                "template_name": self.template_name,
                "channel_id": self.channel_id,
                "body": list(self.values.body),
                "header": self.values.header,
                "buttons": [list(button) for button in self.values.buttons],
                "header_file_id": self.header_file_id,
                "header_kind": self.header_kind,
                "text": self.text,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, raw: str) -> TemplateMessage:
        """A message stored with `to_json`; ValueError if it is not one."""
        try:
            data: dict[str, Any] = json.loads(raw)
            return cls(
                template_id=str(data["template_id"]),
                template_name=str(data["template_name"]),
                channel_id=str(data["channel_id"]),
                values=TemplateValues(
                    body=tuple(str(v) for v in data.get("body") or ()),
                    header=None if data.get("header") is None else str(data["header"]),
                    buttons=tuple((int(i), str(v)) for i, v in data.get("buttons") or ()),
                ),
                header_file_id=data.get("header_file_id"),
                header_kind=data.get("header_kind"),
                text=str(data.get("text") or ""),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a stored template message: {exc}") from exc


def _entry(key: str, value: str, value_text: str) -> dict[str, str]:
    return {"key": key, "value": value, "value_text": value_text}


# --- the templates NusaSMS has, read leniently -------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{\s*(\d+)\s*\}\}")
APPROVED = "APPROVED"


def placeholder_count(text: str | None) -> int:
    """How many values a text with `{{1}}`, `{{2}}`... takes (its highest number)."""
    return max((int(n) for n in _PLACEHOLDER.findall(text or "")), default=0)


def fill(text: str, values: Sequence[str]) -> str:
    """`text` with `{{n}}` replaced by the n-th value (a missing one stays as it is)."""

    def value(match: re.Match[str]) -> str:
        number = int(match.group(1))
        return values[number - 1] if 0 < number <= len(values) else match.group(0)

    return _PLACEHOLDER.sub(value, text)


@dataclass(frozen=True, slots=True)
class Button:
    """One button of a template; a URL button may take a suffix (`.../{{1}}`)."""

    index: int
    kind: str  # "url", "quick_reply", "phone_number", ... as the template says, lower case
    text: str
    url: str | None = None

    @property
    def takes_suffix(self) -> bool:
        """A URL button whose URL ends in a placeholder."""
        return self.kind == "url" and placeholder_count(self.url) > 0


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """A template as the bridge understands it, whatever shape NusaSMS gave it in."""

    id: str
    name: str
    status: str
    category: str
    language: str | None
    header_kind: str | None  # None, "text" or one of MEDIA_KINDS
    header_text: str | None
    body: str
    footer: str | None
    buttons: tuple[Button, ...] = ()

    @property
    def approved(self) -> bool:
        """Only approved templates can be sent."""
        return self.status.upper() == APPROVED

    @property
    def header_values(self) -> int:
        """Values the header takes: a TEXT header's `{{1}}`, or the media (URL or file)."""
        if self.header_kind in MEDIA_KINDS:
            return 1
        return min(1, placeholder_count(self.header_text)) if self.header_kind == "text" else 0

    @property
    def body_values(self) -> int:
        """Values the body takes."""
        return placeholder_count(self.body)

    @property
    def suffix_buttons(self) -> tuple[Button, ...]:
        """The URL buttons that take a suffix."""
        return tuple(b for b in self.buttons if b.takes_suffix)

    def slots(self) -> list[str]:
        """What each value is, in the order the operator gives them (header, body, buttons)."""
        slots: list[str] = []
        if self.header_kind in MEDIA_KINDS:
            slots.append(f"header {self.header_kind} URL")
        elif self.header_values:
            slots.append("header {{1}}")
        slots.extend(f"{{{{{n}}}}}" for n in range(1, self.body_values + 1))
        slots.extend(f"button “{b.text}” URL suffix" for b in self.suffix_buttons)
        return slots

    def message(
        self, channel_id: str, values: Sequence[str], *, header_file_id: str | None = None
    ) -> TemplateMessage:
        """This template filled in; ValueError naming what it expects on a wrong count.

        With `header_file_id` (a file replied to) a media header needs no URL among `values`.
        """
        expected = self.slots()
        if header_file_id is not None and self.header_kind in MEDIA_KINDS:
            expected = expected[1:]
        elif header_file_id is not None:
            raise ValueError("this template has no media header for the file replied to")
        if len(values) != len(expected):
            raise ValueError(
                f"{self.name} takes {len(expected)} value(s) ({', '.join(expected) or 'none'}), "
                f"got {len(values)}"
            )
        rest = list(values)
        header: str | None = None
        if self.header_kind in MEDIA_KINDS and header_file_id is None:
            header = rest.pop(0)
            if not header.startswith(("http://", "https://")):
                raise ValueError(f"the header {self.header_kind} must be an http(s) URL")
        elif self.header_kind == "text" and self.header_values:
            header = rest.pop(0)
        body = tuple(rest[: self.body_values])
        suffixes = rest[self.body_values :]
        buttons = tuple(
            (b.index, value) for b, value in zip(self.suffix_buttons, suffixes, strict=True)
        )
        return TemplateMessage(
            template_id=self.id,
            template_name=self.name,
            channel_id=channel_id,
            values=TemplateValues(body=body, header=header, buttons=buttons),
            header_file_id=header_file_id,
            header_kind=self.header_kind if (header is not None or header_file_id) else None,
            text=self.render(body, header, [v for _, v in buttons]),
        )

    def render(
        self, body: Sequence[str], header: str | None = None, suffixes: Sequence[str] = ()
    ) -> str:
        """The text the customer sees (a media header shown by its kind)."""
        lines: list[str] = []
        if self.header_kind in MEDIA_KINDS:
            lines.append(f"[{self.header_kind}{': ' + header if header else ''}]")
        elif self.header_text:
            lines.append(fill(self.header_text, [header] if header is not None else []))
        lines.append(fill(self.body, body))
        if self.footer:
            lines.append(self.footer)
        suffix = iter(suffixes)
        for button in self.buttons:
            if button.takes_suffix:
                url = fill(button.url or "", [next(suffix, "")])
                lines.append(f"[{button.text}: {url}]")
            else:
                lines.append(f"[{button.text}]")
        return "\n".join(line for line in lines if line)


def spec_of(template: Template) -> TemplateSpec:
    """Read a template in any of the shapes seen: plain strings, `{text, format, example}`
    dicts, or Meta-style `components` (in `components`, or as a list in `body`)."""
    header: Any = template.header
    body: Any = template.body
    footer: Any = template.footer
    buttons: Any = template.buttons
    components = template.components
    if components is None and isinstance(body, list):
        components, body = body, None
    if isinstance(components, list):
        for component in components:
            if not isinstance(component, dict):
                continue
            kind = str(component.get("type", "")).upper()
            if kind == "HEADER":
                header = component
            elif kind == "BODY":
                body = component
            elif kind == "FOOTER":
                footer = component
            elif kind == "BUTTONS":
                buttons = component.get("buttons")
    header_kind, header_text = _header(header)
    return TemplateSpec(
        id=template.id,
        name=template.name,
        status=(template.status or "UNKNOWN").upper(),
        category=template.category or "",
        language=_language(template.language),
        header_kind=header_kind,
        header_text=header_text,
        body=_text(body) or "",
        footer=_text(footer),
        buttons=_buttons(buttons),
    )


def _language(value: Any) -> str | None:
    if isinstance(value, dict):  # Meta's {"code": "id"}
        value = value.get("code")
    return str(value) if value else None


def _text(part: Any) -> str | None:
    if part is None:
        return None
    if isinstance(part, str):
        return part
    if isinstance(part, dict):
        text = part.get("text")
        return text if isinstance(text, str) else None
    return None


def _header(part: Any) -> tuple[str | None, str | None]:
    if part is None or part == "":
        return None, None
    if isinstance(part, dict):
        kind = str(part.get("format") or part.get("type") or "TEXT").lower()
        if kind == "header":  # a component whose format is missing: text
            kind = "text"
        if kind in MEDIA_KINDS:
            return kind, None
        text = _text(part)
        return ("text", text) if text else (None, None)
    text = _text(part)
    return ("text", text) if text else (None, None)


def _buttons(part: Any) -> tuple[Button, ...]:
    if not isinstance(part, list):
        return ()
    buttons: list[Button] = []
    for index, button in enumerate(part):
        if not isinstance(button, dict):
            continue
        url = button.get("url")
        buttons.append(
            Button(
                index=index,
                kind=str(button.get("type") or ("url" if url else "quick_reply")).lower(),
                text=str(button.get("text") or ""),
                url=url if isinstance(url, str) else None,
            )
        )
    return tuple(buttons)


# --- the catalog ---------------------------------------------------------------------------

REFRESH_SECONDS = 300.0
# A name nobody knows makes the catalog ask NusaSMS again, at most this often.
MISS_REFRESH_SECONDS = 60.0


class ChannelError(Exception):
    """No channel can be chosen (none, or several and none configured); says which exist."""

    def __init__(self, message: str, channels: Sequence[str]) -> None:
        super().__init__(message)
        self.channels = tuple(channels)


class Catalog(Worker):
    """The account's templates and channels, cached; refreshed every `REFRESH_SECONDS`, and
    on an unknown name at most every `MISS_REFRESH_SECONDS`, so a new template appears
    without a restart."""

    name = "templates"

    def __init__(
        self,
        client: NusaSMSClient,
        *,
        channel_id: str | None = None,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._client = client
        self._channel_id = channel_id
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._templates: list[TemplateSpec] | None = None
        self._channels: list[str] | None = None
        self._refreshed_at: float | None = None
        self._lock = asyncio.Lock()
        self._errors = ErrorLog(log)

    async def _run(self) -> None:
        # Read first when someone asks (`templates`, `lookup`), then kept fresh from here.
        delay = self._refresh_seconds
        while True:
            await self._doze(delay)
            delay = self._refresh_seconds
            if self._templates is None:
                continue
            try:
                await self.refresh()
            except NusaSMSError as exc:
                self._errors.failed("refresh", "cannot read the templates: %s", exc)
                delay = MISS_REFRESH_SECONDS
            else:
                self._errors.recovered("refresh", "templates are read again")

    async def refresh(self) -> None:
        """Read templates and channels from NusaSMS now (NusaSMSError if it fails)."""
        async with self._lock:
            templates, channels = await asyncio.gather(
                self._client.get_templates(), self._client.get_channels()
            )
            self._templates = [spec_of(t) for t in templates]
            self._channels = [c.id for c in channels]
            self._refreshed_at = self._clock()

    async def _loaded(self) -> None:
        if self._templates is None or self._channels is None:
            await self.refresh()

    async def templates(self) -> list[TemplateSpec]:
        """Every template (approved or not), read once if never read."""
        await self._loaded()
        assert self._templates is not None
        return list(self._templates)

    async def channels(self) -> list[str]:
        """The ids of the account's channels."""
        await self._loaded()
        assert self._channels is not None
        return list(self._channels)

    def find(self, name: str) -> TemplateSpec | None:
        """The cached template of that name (case-insensitive), or None."""
        wanted = name.strip().lower()
        return next((t for t in self._templates or () if t.name.lower() == wanted), None)

    async def lookup(self, name: str) -> TemplateSpec | None:
        """`find`, asking NusaSMS again on a miss (at most every `MISS_REFRESH_SECONDS`)."""
        await self._loaded()
        found = self.find(name)
        stale = (
            self._refreshed_at is None or self._clock() - self._refreshed_at >= MISS_REFRESH_SECONDS
        )
        if found is None and stale:
            await self.refresh()
            found = self.find(name)
        return found

    def close_matches(self, name: str) -> list[str]:
        """Names like `name`, best first."""
        names = {t.name.lower(): t.name for t in self._templates or ()}
        return [names[n] for n in difflib.get_close_matches(name.lower(), names, n=5, cutoff=0.5)]

    async def channel(self, wanted: str | None = None) -> str:
        """The channel to send with: `wanted`, else the configured one, else the only one."""
        channels = await self.channels()
        choice = wanted or self._channel_id or None
        if choice is not None:
            if choice not in channels:
                raise ChannelError(f"unknown channel {choice}", channels)
            return choice
        if len(channels) == 1:
            return channels[0]
        if not channels:
            raise ChannelError("the NusaSMS account has no WhatsApp channel", channels)
        raise ChannelError(
            "there are several channels; set nusasms.channel_id or name one", channels
        )
