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

import json
from dataclasses import dataclass, field
from typing import Any

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
