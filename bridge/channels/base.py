"""The channels a customer can write on, and what each one allows.

A customer is `(channel, number)`: the same number on WhatsApp Official and on SMS is two
customers with two topics. Every rule that differs by channel reads it here (a title mark,
whether a 24-hour window applies, whether media can be sent), never `if channel == ...`
spread through the modules; the sending itself is each channel's adapter, beside this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["CHANNELS", "ChannelInfo", "ChannelName", "channel_info"]


class ChannelName(StrEnum):
    """The NusaSMS product a conversation runs on (stored as `rooms.channel`)."""

    WA_OFFICIAL = "wa_official"  # WhatsApp Business API: rooms, templates, a 24-hour window
    WHATSAPP = "whatsapp"  # the WhatsApp gateway: a sender number, no window
    SMS = "sms"  # plain SMS, billed per part


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """What the rest of the bridge needs to know about a channel."""

    name: ChannelName
    # Said to operators, e.g. in the header card and /info.
    label: str
    # Put before the number in the topic's title ("" keeps the titles of before).
    title_mark: str
    # Replies are refused outside 24 hours after the customer's last message.
    has_window: bool
    # Operators' photos, files, voice notes can be sent.
    sends_media: bool
    # Templates (and so reopening a closed window) exist.
    has_templates: bool


CHANNELS: dict[ChannelName, ChannelInfo] = {
    ChannelName.WA_OFFICIAL: ChannelInfo(
        ChannelName.WA_OFFICIAL,
        label="WhatsApp Official",
        title_mark="",
        has_window=True,
        sends_media=True,
        has_templates=True,
    ),
    ChannelName.WHATSAPP: ChannelInfo(
        ChannelName.WHATSAPP,
        label="WhatsApp",
        title_mark="💬",
        has_window=False,
        sends_media=True,
        has_templates=False,
    ),
    ChannelName.SMS: ChannelInfo(
        ChannelName.SMS,
        label="SMS",
        title_mark="✉️ SMS",
        has_window=False,
        sends_media=False,
        has_templates=False,
    ),
}


def channel_info(name: str) -> ChannelInfo:
    """The channel stored as `name` (`rooms.channel`); ValueError for an unknown one."""
    return CHANNELS[ChannelName(name)]
