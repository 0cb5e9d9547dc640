"""Re-engagement templates: what reopens a customer's closed 24-hour window.

`window.reopen_templates` names approved templates and the values of their body
placeholders; `{name}` in a value is the customer's name (or number). A template is looked
up in NusaSMS's current list when it is needed, so a template approved later works without
a restart; the channel is `nusasms.channel_id` if set, else the account's first one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.nusasms import NusaSMSClient, NusaSMSError
from bridge.store import Room
from bridge.templates import TemplateMessage, TemplateValues
from bridge.texts import _

_PLACEHOLDER = re.compile(r"\{\{\s*(\d+)\s*\}\}")


class ReopenUnavailable(Exception):
    """The template cannot be sent now (unknown, not approved, NusaSMS away); says why."""


@dataclass(frozen=True, slots=True)
class ReopenEntry:
    """One configured reopen template."""

    name: str
    values: tuple[str, ...] = ()


def _body_text(body: Any) -> str:
    if isinstance(body, str):
        return body
    if isinstance(body, dict):
        return str(body.get("text") or "")
    return ""


def _render(body: str, values: Sequence[str]) -> str:
    def fill(match: re.Match[str]) -> str:
        index = int(match.group(1)) - 1
        return values[index] if 0 <= index < len(values) else match.group(0)

    return _PLACEHOLDER.sub(fill, body)


class ReopenTemplates:
    """The configured reopen templates, filled in for one customer."""

    def __init__(
        self, client: NusaSMSClient, entries: Sequence[ReopenEntry], channel_id: str | None = None
    ) -> None:
        self._client = client
        self.entries = tuple(entries)
        self._channel_id = channel_id

    async def message(self, index: int, room: Room) -> TemplateMessage:
        """Entry `index` filled in for the room's customer; ReopenUnavailable if it cannot be."""
        entry = self.entries[index]
        try:
            templates = await self._client.get_templates()
            channel_id = self._channel_id
            if channel_id is None:
                channels = await self._client.get_channels()
                if not channels:
                    raise ReopenUnavailable(_("NusaSMS lists no WhatsApp channel"))
                channel_id = channels[0].id
        except NusaSMSError as exc:
            raise ReopenUnavailable(exc.reason()) from exc
        template = next((t for t in templates if t.name == entry.name), None)
        if template is None:
            raise ReopenUnavailable(
                _("NusaSMS has no template named {name}").format(name=entry.name)
            )
        if (template.status or "").upper() != "APPROVED":
            raise ReopenUnavailable(
                _("the template {name} is not approved ({status})").format(
                    name=entry.name, status=template.status or "?"
                )
            )
        name = getattr(room, "name", None) or room.sender_number
        values = tuple(v.replace("{name}", name) for v in entry.values)
        body = _body_text(template.body)
        return TemplateMessage(
            template_id=template.id,
            template_name=template.name,
            channel_id=channel_id,
            values=TemplateValues(body=values),
            text=_render(body, values),
        )
