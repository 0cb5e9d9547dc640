"""Re-engagement templates: what reopens a customer's closed 24-hour window.

`window.reopen_templates` names approved templates and the values of their body
placeholders; `{name}` in a value is the customer's name (or number). A template is looked
up in the catalog (refreshed, so one approved later works without a restart) when it is
needed; the channel is the catalog's (`nusasms.channel_id`, or the only one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.channels.templates import Catalog, ChannelError, TemplateMessage
from bridge.core.store import Room
from bridge.core.texts import _
from bridge.nusasms import NusaSMSError


class ReopenUnavailable(Exception):
    """The template cannot be sent now (unknown, not approved, NusaSMS away); says why."""


@dataclass(frozen=True, slots=True)
class ReopenEntry:
    """One configured reopen template."""

    name: str
    values: tuple[str, ...] = ()


class ReopenTemplates:
    """The configured reopen templates, filled in for one customer."""

    def __init__(self, catalog: Catalog, entries: Sequence[ReopenEntry]) -> None:
        self._catalog = catalog
        self.entries = tuple(entries)

    async def message(self, index: int, room: Room) -> TemplateMessage:
        """Entry `index` filled in for the room's customer; ReopenUnavailable if it cannot be."""
        entry = self.entries[index]
        try:
            spec = await self._catalog.lookup(entry.name)
            if spec is None:
                raise ReopenUnavailable(
                    _("NusaSMS has no template named {name}").format(name=entry.name)
                )
            if not spec.approved:
                raise ReopenUnavailable(
                    _("the template {name} is not approved ({status})").format(
                        name=entry.name, status=spec.status or "?"
                    )
                )
            channel_id = await self._catalog.channel()
            name = room.name or room.number or room.sender_number
            return spec.message(channel_id, [v.replace("{name}", name) for v in entry.values])
        except NusaSMSError as exc:
            raise ReopenUnavailable(exc.reason()) from exc
        except (ChannelError, ValueError) as exc:
            raise ReopenUnavailable(str(exc)) from exc
