"""Start-up checks of both services: are the credentials and the group set up right?

`Rejected` means a person has to change something; any other failure (network, 5xx) means
the service is only unreachable for now and the bridge retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from telegram import Bot, ChatMemberAdministrator
from telegram.constants import ChatType
from telegram.error import BadRequest, Forbidden, InvalidToken, TelegramError

from bridge.core.config import Settings
from bridge.core.store import StoreError, inspect_database
from bridge.nusasms import NusaSMSAuthError, NusaSMSClient, NusaSMSError, Person

# `bridge check` gives each service check this long before it calls the service unreachable.
CHECK_TIMEOUT_SECONDS = 10.0


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


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of `bridge check`."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


async def checklist(
    settings: Settings, *, per_check: float = CHECK_TIMEOUT_SECONDS
) -> AsyncIterator[CheckResult]:
    """Every start-up check, each with a fix when it fails (for `bridge check`).

    Results come as each is decided; no service check takes longer than `per_check`
    seconds. Both services are asked at once; their lines still come in a fixed order.
    """
    yield CheckResult("configuration", True, "valid")
    telegram = asyncio.create_task(_telegram_lines(settings, per_check))
    try:
        yield await _storage_check(settings)
        async with NusaSMSClient(
            settings.nusasms.api_key.get_secret_value(),
            base_url=settings.nusasms.base_url,
            request_timeout=settings.nusasms.request_timeout_seconds,
        ) as client:
            async for result in _nusasms_checks(client, settings, per_check):
                yield result
        for result in await telegram:
            yield result
    finally:
        telegram.cancel()


async def _storage_check(settings: Settings) -> CheckResult:
    try:
        found = await asyncio.to_thread(inspect_database, settings.storage.path)
    except StoreError as exc:
        return CheckResult("storage", False, exc.problem, exc.fix)
    return CheckResult("storage", True, found)


async def _telegram_lines(settings: Settings, per_check: float) -> list[CheckResult]:
    bot = Bot(
        settings.telegram.bot_token.get_secret_value(),
        base_url=settings.telegram.api_base_url,
        base_file_url=settings.telegram.api_file_url,
    )
    try:
        async with asyncio.timeout(per_check):
            return await _telegram_checks(bot, settings.telegram.chat_id)
    except TimeoutError:
        return [
            CheckResult(
                "Telegram bot token",
                False,
                f"Telegram unreachable: no answer in {per_check:g} s",
                "check telegram.api_base_url and this machine's outbound network",
            )
        ]


async def _nusasms_checks(
    client: NusaSMSClient, settings: Settings, per_check: float
) -> AsyncIterator[CheckResult]:
    unreachable_fix = "check nusasms.base_url and this machine's outbound network"
    try:
        async with asyncio.timeout(per_check):
            person = await client.get_user()
    except TimeoutError:
        yield CheckResult(
            "NusaSMS API key",
            False,
            f"NusaSMS unreachable: no answer in {per_check:g} s",
            unreachable_fix,
        )
        return
    except NusaSMSAuthError as exc:
        yield CheckResult(
            "NusaSMS API key",
            False,
            f"rejected ({exc.reason()})",
            "set nusasms.api_key / NUSASMS_API_KEY to the key from app.nusasms.com > "
            "Account > User management, and whitelist this server's IP (Account > IP "
            "Whitelist)",
        )
        return
    except NusaSMSError as exc:
        yield CheckResult("NusaSMS API key", False, f"NusaSMS unreachable: {exc}", unreachable_fix)
        return
    yield CheckResult("NusaSMS API key", True, f"accepted (user {person.userid})")
    try:
        async with asyncio.timeout(per_check):
            credit = await client.get_balance()
    except TimeoutError:
        yield CheckResult("NusaSMS balance", False, f"no answer in {per_check:g} s", "retry later")
        return
    except NusaSMSError as exc:
        yield CheckResult("NusaSMS balance", False, str(exc), "retry later")
        return
    values = credit.numeric_fields()
    low = [
        f"{field} {values[field]:g} < {limit:g}"
        for field, limit in sorted(settings.alerts.thresholds.items())
        if field in values and values[field] < limit
    ]
    shown = ", ".join(f"{k} {v:g}" for k, v in sorted(values.items()))
    if low:
        yield CheckResult(
            "NusaSMS balance", False, "low: " + "; ".join(low), "top up at app.nusasms.com"
        )
    else:
        yield CheckResult("NusaSMS balance", True, shown or "no balances reported")


async def _telegram_checks(bot: Bot, chat_id: int) -> list[CheckResult]:
    try:
        async with bot:
            described = await check_telegram(bot, chat_id)
    except InvalidToken:
        return [
            CheckResult(
                "Telegram bot token",
                False,
                "rejected by Telegram",
                "set telegram.bot_token / TELEGRAM_BOT_TOKEN to the token @BotFather gave you",
            )
        ]
    except Rejected as exc:
        name, fix = _TELEGRAM_FIXES.get(_which(str(exc)), ("Telegram group", ""))
        return [
            CheckResult("Telegram bot token", True, "accepted"),
            CheckResult(name, False, str(exc), fix),
        ]
    except TelegramError as exc:
        return [
            CheckResult(
                "Telegram bot token",
                False,
                f"Telegram unreachable: {exc.message}",
                "check telegram.api_base_url and this machine's outbound network",
            )
        ]
    return [
        CheckResult("Telegram bot token", True, "accepted"),
        CheckResult("Telegram group is a forum", True, described),
        CheckResult("bot may manage topics", True, "administrator with 'Manage topics'"),
    ]


_TELEGRAM_FIXES = {
    "token": (
        "Telegram bot token",
        "set telegram.bot_token / TELEGRAM_BOT_TOKEN to the token @BotFather gave you",
    ),
    "reach": ("Telegram group", "add the bot to the group and check telegram.chat_id"),
    "forum": ("Telegram group is a forum", "Group settings > Topics: turn topics on"),
    "admin": ("bot may manage topics", "Group settings > Administrators: add the bot"),
    "rights": (
        "bot may manage topics",
        "Group settings > Administrators > the bot: enable 'Manage topics'",
    ),
}


def _which(message: str) -> str:
    if "bot token" in message:
        return "token"
    if "not a forum" in message:
        return "forum"
    if "not an administrator" in message:
        return "admin"
    if "Manage topics" in message:
        return "rights"
    return "reach"
