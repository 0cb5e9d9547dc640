"""Start-up checks of both services: are the credentials and the group set up right?

`Rejected` means a person has to change something; any other failure (network, 5xx) means
the service is only unreachable for now and the bridge retries.
"""

from __future__ import annotations

from telegram import Bot, ChatMemberAdministrator
from telegram.constants import ChatType
from telegram.error import BadRequest, Forbidden, InvalidToken

from bridge.nusasms import NusaSMSAuthError, NusaSMSClient, Person


class Rejected(Exception):
    """A service refused the configured credentials or set-up; the message says how to fix it."""


def token_rejected() -> Rejected:
    """The error for a bot token Telegram does not accept."""
    return Rejected(
        "Telegram rejected the bot token: check telegram.bot_token / TELEGRAM_BOT_TOKEN"
    )


async def check_telegram(bot: Bot, chat_id: int) -> str:
    """Check the token, that the chat is a forum and that the bot may manage its topics."""
    try:
        me = await bot.get_me()
    except InvalidToken as exc:
        raise token_rejected() from exc
    try:
        chat = await bot.get_chat(chat_id)
        member = await bot.get_chat_member(chat_id, me.id)
    except (BadRequest, Forbidden) as exc:
        raise Rejected(
            f"Telegram cannot reach group {chat_id} ({exc.message}): add @{me.username} to the "
            "group and check telegram.chat_id"
        ) from exc
    if chat.type != ChatType.SUPERGROUP or not chat.is_forum:
        raise Rejected(f"group {chat_id} is not a forum: enable Topics in the group's settings")
    if not isinstance(member, ChatMemberAdministrator):
        raise Rejected(f"@{me.username} is not an administrator of group {chat_id}: promote it")
    if not member.can_manage_topics:
        raise Rejected(
            f"@{me.username} lacks the 'Manage topics' admin right in group {chat_id}: grant it"
        )
    return f"@{me.username} in forum {chat.title!r}"


async def check_nusasms(client: NusaSMSClient) -> Person:
    """Check that NusaSMS accepts the API key (and this machine's IP)."""
    try:
        return await client.get_user()
    except NusaSMSAuthError as exc:
        raise Rejected(
            f"NusaSMS rejected the API key ({exc.reason()}): check nusasms.api_key / "
            "NUSASMS_API_KEY and that this server's IP is whitelisted at app.nusasms.com"
        ) from exc
