"""The fakes are the ground truth of the suite: prove they behave like the real services.

FakeTelegram is driven through a real python-telegram-bot ``Bot`` so every answer must
deserialize in PTB; FakeNusaSMS is driven with plain aiohttp requests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from telegram import (
    Bot,
    ChatMemberAdministrator,
    ChatMemberMember,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReactionTypeEmoji,
)
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)

from tests.fakes.nusasms import FakeNusaSMS, fetch
from tests.fakes.telegram import FakeTelegram, parse_html

# --------------------------------------------------------------------- fixtures

# These tests drive PTB against the fake directly, as the bridge would, with its redaction.
pytestmark = pytest.mark.usefixtures("redact_test_clients")


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url) as bot:
        yield bot


@pytest.fixture
def timedelta_periods(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make PTB report time periods as timedelta instead of warning about ints."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
async def nusa() -> AsyncIterator[FakeNusaSMS]:
    async with FakeNusaSMS() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


def key(fake: FakeNusaSMS) -> dict[str, str]:
    return {"APIKey": fake.api_key, "Accept": "application/json"}


async def new_topic(bot: Bot, tg: FakeTelegram, name: str = "Budi +6281234567890") -> int:
    topic = await bot.create_forum_topic(tg.chat_id, name)
    return topic.message_thread_id


# ------------------------------------------------------------- Telegram: identity


async def test_get_me_describes_the_configured_bot(tg: FakeTelegram, bot: Bot) -> None:
    me = await bot.get_me()

    assert (me.id, me.username, me.is_bot) == (tg.bot_id, tg.bot_username, True)
    assert bot.username == tg.bot_username


async def test_wrong_token_is_refused_as_invalid_token(tg: FakeTelegram) -> None:
    wrong = Bot("999:WRONG", base_url=tg.base_url, base_file_url=tg.base_file_url)

    # The fake answers 401 "Unauthorized"; PTB's initialize() rewords it.
    with pytest.raises(InvalidToken, match="was rejected by the server"):
        await wrong.initialize()
    await wrong.shutdown()
    assert tg.calls[-1].method == "getMe"


async def test_unknown_method_is_not_found(bot: Bot) -> None:
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("frobnicateChat")


@pytest.mark.parametrize("is_forum", [True, False])
async def test_get_chat_reports_a_supergroup_and_whether_it_is_a_forum(is_forum: bool) -> None:
    async with (
        FakeTelegram(is_forum=is_forum) as tg,
        Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url) as bot,
    ):
        chat = await bot.get_chat(tg.chat_id)

    assert chat.type == "supergroup"
    assert bool(chat.is_forum) is is_forum


async def test_unknown_chat_is_not_found(bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message(-100999, "hello")


@pytest.mark.parametrize(
    ("is_admin", "can_manage", "expected_type", "expected_manage"),
    [
        (True, True, ChatMemberAdministrator, True),
        (True, False, ChatMemberAdministrator, False),
        (False, True, ChatMemberMember, None),
    ],
)
async def test_get_chat_member_reports_the_bots_rights(
    is_admin: bool, can_manage: bool, expected_type: type, expected_manage: bool | None
) -> None:
    async with (
        FakeTelegram(bot_is_admin=is_admin, can_manage_topics=can_manage) as tg,
        Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url) as bot,
    ):
        member = await bot.get_chat_member(tg.chat_id, tg.bot_id)
        someone = await bot.get_chat_member(tg.chat_id, 42)

    assert type(member) is expected_type
    assert getattr(member, "can_manage_topics", None) is expected_manage
    assert isinstance(someone, ChatMemberMember)
    assert someone.user.id == 42


async def test_bot_commands_round_trip(tg: FakeTelegram, bot: Bot) -> None:
    assert await bot.delete_webhook()
    assert await bot.set_my_commands([("status", "Bridge status")])

    commands = await bot.get_my_commands()

    assert [(c.command, c.description) for c in commands] == [("status", "Bridge status")]
    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == ()
    assert tg.webhook_deleted


# --------------------------------------------------------------- Telegram: topics


async def test_create_forum_topic_records_it_and_its_root_message(
    tg: FakeTelegram, bot: Bot
) -> None:
    first = await bot.create_forum_topic(tg.chat_id, "Budi +6281234567890")
    second = await bot.create_forum_topic(tg.chat_id, "Sari +6289876543210")

    assert first.name == "Budi +6281234567890"
    assert second.message_thread_id > first.message_thread_id
    topic = tg.topics[first.message_thread_id]
    assert (topic.name, topic.closed, topic.deleted) == (first.name, False, False)
    root = tg.raw_message(first.message_thread_id)
    assert root["forum_topic_created"]["name"] == first.name


async def test_html_message_lands_in_the_topic_replying_implicitly_to_its_root(
    tg: FakeTelegram, bot: Bot
) -> None:
    thread_id = await new_topic(bot, tg)

    message = await bot.send_message(
        tg.chat_id,
        "<b>Budi</b>: harga &lt;100&gt; &amp; ongkir?",
        parse_mode="HTML",
        message_thread_id=thread_id,
    )

    assert message.is_topic_message
    assert message.message_thread_id == thread_id
    assert message.text == "Budi: harga <100> & ongkir?"
    assert message.reply_to_message is not None
    assert message.reply_to_message.forum_topic_created is not None
    [sent] = tg.messages_in(thread_id)
    assert sent.message_id == message.message_id
    assert sent.text == "<b>Budi</b>: harga &lt;100&gt; &amp; ongkir?"
    assert sent.plain_text == "Budi: harga <100> & ongkir?"
    assert (sent.parse_mode, sent.reply_to_message_id) == ("HTML", None)


async def test_message_ids_rise_across_the_whole_chat(tg: FakeTelegram, bot: Bot) -> None:
    a = await new_topic(bot, tg, "A")
    b = await new_topic(bot, tg, "B")
    ids = [
        (await bot.send_message(tg.chat_id, "x", message_thread_id=a)).message_id,
        tg.operator_message(thread_id=b, text="y"),
        (await bot.send_message(tg.chat_id, "z")).message_id,
    ]

    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    assert tg.messages[-1].thread_id is None


async def test_reply_markup_is_parsed_and_returned(tg: FakeTelegram, bot: Bot) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Tutup", callback_data="close:1")]])

    message = await bot.send_message(tg.chat_id, "pilih", reply_markup=markup)

    assert tg.messages[-1].reply_markup == {
        "inline_keyboard": [[{"text": "Tutup", "callback_data": "close:1"}]]
    }
    assert message.reply_markup is not None
    assert message.reply_markup.inline_keyboard[0][0].callback_data == "close:1"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<b>open", 'find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'expected "</b>", found "</i>"'),
        ("1 < 2", 'unsupported start tag ""'),
        ("line<br>break", 'unsupported start tag "br"'),
        ("x</b>", "unexpected end tag"),
        ('<span class="big">x</span>', 'must have class "tg-spoiler"'),
        ("<a href=x", "unclosed start tag"),
    ],
)
async def test_html_that_telegram_cannot_parse_is_refused(
    tg: FakeTelegram, bot: Bot, text: str, reason: str
) -> None:
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities") as caught:
        await bot.send_message(tg.chat_id, text, parse_mode="HTML")

    assert reason.lower() in caught.value.message.lower()
    assert tg.messages == []


def test_html_parser_keeps_unknown_ampersands_literal() -> None:
    text = 'R&amp;D &copy; &#128512; &#x41; A&B <a href="https://x.test/?a=1&amp;b=2">l</a>'

    assert parse_html(text) == "R&D &copy; \U0001f600 A A&B l"


async def test_length_limit_counts_text_after_html_parsing(tg: FakeTelegram, bot: Bot) -> None:
    await bot.send_message(tg.chat_id, "<b>" + "a" * 4096 + "</b>", parse_mode="HTML")
    await bot.send_message(tg.chat_id, "&lt;" * 4096, parse_mode="HTML")

    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(tg.chat_id, "a" * 4097)
    assert len(tg.messages) == 2


async def test_blank_text_is_refused(bot: Bot, tg: FakeTelegram) -> None:
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(tg.chat_id, "<b> </b>", parse_mode="HTML")


async def test_deleted_topic_is_not_found_and_cannot_be_reopened(
    tg: FakeTelegram, bot: Bot
) -> None:
    thread_id = await new_topic(bot, tg)
    tg.delete_topic(thread_id)

    with pytest.raises(BadRequest) as caught:
        await bot.send_message(tg.chat_id, "halo", message_thread_id=thread_id)
    assert "message thread not found" in caught.value.message.lower()
    with pytest.raises(BadRequest, match=r"(?i)topic_deleted"):
        await bot.reopen_forum_topic(tg.chat_id, thread_id)


async def test_unknown_thread_is_not_found(tg: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)message thread not found"):
        await bot.send_message(tg.chat_id, "halo", message_thread_id=424242)


async def test_delete_forum_topic_marks_topic_and_its_messages_deleted(
    tg: FakeTelegram, bot: Bot
) -> None:
    thread_id = await new_topic(bot, tg)
    await bot.send_message(tg.chat_id, "halo", message_thread_id=thread_id)

    assert await bot.delete_forum_topic(tg.chat_id, thread_id)

    assert tg.topics[thread_id].deleted
    assert all(m.deleted for m in tg.messages_in(thread_id))


async def test_an_admin_bot_posts_into_a_closed_topic_without_error(
    tg: FakeTelegram, bot: Bot
) -> None:
    thread_id = await new_topic(bot, tg)
    tg.close_topic(thread_id)

    # As on real Telegram: Manage topics lets the bot write where members no longer can.
    sent = await bot.send_message(tg.chat_id, "halo", message_thread_id=thread_id)

    assert sent.message_thread_id == thread_id
    assert tg.topics[thread_id].closed
    assert [m.plain_text for m in tg.messages_in(thread_id)] == ["halo"]


async def test_closed_topic_refuses_a_bot_without_manage_topics_until_reopened(
    tg: FakeTelegram, bot: Bot
) -> None:
    thread_id = await new_topic(bot, tg)
    tg.close_topic(thread_id)
    tg.can_manage_topics = False

    with pytest.raises(BadRequest) as caught:
        await bot.send_message(tg.chat_id, "halo", message_thread_id=thread_id)
    # PTB strips "Bad Request: " and capitalizes: "TOPIC_CLOSED" becomes "Topic_closed".
    assert caught.value.message == "Topic_closed"

    tg.can_manage_topics = True
    assert await bot.reopen_forum_topic(tg.chat_id, thread_id)
    tg.can_manage_topics = False
    await bot.send_message(tg.chat_id, "halo", message_thread_id=thread_id)
    assert not tg.topics[thread_id].closed
    tg.can_manage_topics = True
    with pytest.raises(BadRequest, match=r"(?i)topic_not_modified"):
        await bot.reopen_forum_topic(tg.chat_id, thread_id)


async def test_close_and_edit_topic_through_the_api(tg: FakeTelegram, bot: Bot) -> None:
    thread_id = await new_topic(bot, tg)

    assert await bot.edit_forum_topic(tg.chat_id, thread_id, name="Budi (closed)")
    assert await bot.close_forum_topic(tg.chat_id, thread_id)

    assert tg.topics[thread_id].name == "Budi (closed)"
    assert tg.topics[thread_id].closed
    with pytest.raises(BadRequest, match=r"(?i)topic_not_modified"):
        await bot.close_forum_topic(tg.chat_id, thread_id)


async def test_topics_need_the_manage_topics_right() -> None:
    async with (
        FakeTelegram(can_manage_topics=False) as tg,
        Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url) as bot,
    ):
        with pytest.raises(BadRequest, match=r"(?i)not enough rights"):
            await bot.create_forum_topic(tg.chat_id, "x")


async def test_topics_need_a_forum() -> None:
    async with (
        FakeTelegram(is_forum=False) as tg,
        Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url) as bot,
    ):
        with pytest.raises(BadRequest, match=r"(?i)not a forum"):
            await bot.create_forum_topic(tg.chat_id, "x")


async def test_reply_to_a_missing_message_is_refused_unless_allowed(
    tg: FakeTelegram, bot: Bot
) -> None:
    with pytest.raises(BadRequest, match=r"(?i)message to be replied not found"):
        await bot.send_message(tg.chat_id, "x", reply_to_message_id=999_999)

    await bot.send_message(
        tg.chat_id, "x", reply_to_message_id=999_999, allow_sending_without_reply=True
    )
    assert tg.messages[-1].reply_to_message_id is None


async def test_reply_to_an_operator_message_inherits_its_topic(tg: FakeTelegram, bot: Bot) -> None:
    thread_id = await new_topic(bot, tg)
    operator_id = tg.operator_message(thread_id=thread_id, text="tolong cek")

    message = await bot.send_message(tg.chat_id, "ok", reply_to_message_id=operator_id)

    assert message.message_thread_id == thread_id
    assert message.reply_to_message is not None
    assert message.reply_to_message.message_id == operator_id
    assert tg.messages[-1].reply_to_message_id == operator_id


async def test_edit_pin_and_delete_are_recorded(tg: FakeTelegram, bot: Bot) -> None:
    message = await bot.send_message(tg.chat_id, "draft")

    edited = await bot.edit_message_text("final", tg.chat_id, message.message_id)
    assert await bot.pin_chat_message(tg.chat_id, message.message_id)
    assert tg.messages[-1].pinned
    assert await bot.unpin_chat_message(tg.chat_id, message.message_id)
    assert await bot.pin_chat_message(tg.chat_id, message.message_id)
    assert await bot.delete_message(tg.chat_id, message.message_id)

    assert isinstance(edited, Message)
    assert edited.text == "final"
    assert edited.edit_date is not None
    sent = tg.messages[-1]
    assert (sent.text, sent.edits, sent.pinned, sent.deleted) == ("final", ["draft"], True, True)
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await bot.delete_message(tg.chat_id, message.message_id)


async def test_reply_markup_can_be_edited_away(tg: FakeTelegram, bot: Bot) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Tutup", callback_data="close:1")]])
    message = await bot.send_message(tg.chat_id, "pilih", reply_markup=markup)

    edited = await bot.edit_message_reply_markup(tg.chat_id, message.message_id)

    assert isinstance(edited, Message)
    assert edited.reply_markup is None
    assert tg.messages[-1].reply_markup is None


async def test_editing_to_the_same_text_is_not_modified(tg: FakeTelegram, bot: Bot) -> None:
    message = await bot.send_message(tg.chat_id, "same")

    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("same", tg.chat_id, message.message_id)


# ------------------------------------------------------- Telegram: fault injection


async def test_injected_flood_error_raises_retry_after(
    tg: FakeTelegram, bot: Bot, timedelta_periods: None
) -> None:
    tg.fail_next("sendMessage", 429, "Too Many Requests: retry after 7", retry_after=7)

    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(tg.chat_id, "x")

    assert caught.value.retry_after == dt.timedelta(seconds=7)
    assert tg.messages == []
    await bot.send_message(tg.chat_id, "x")
    assert len(tg.messages) == 1


async def test_injected_server_error_raises_network_error_then_recovers(
    tg: FakeTelegram, bot: Bot
) -> None:
    tg.fail_next("sendMessage", 502, "Bad Gateway", times=2)

    for _ in range(2):
        with pytest.raises(NetworkError, match="Bad Gateway"):
            await bot.send_message(tg.chat_id, "x")
    await bot.send_message(tg.chat_id, "x")

    assert len(tg.messages) == 1
    assert [c.method for c in tg.calls_of("sendMessage")] == ["sendMessage"] * 3


async def test_wildcard_failure_hits_any_method_but_get_updates(tg: FakeTelegram, bot: Bot) -> None:
    tg.fail_next("*", 500, "Internal Server Error")

    assert await bot.get_updates() == ()
    with pytest.raises(NetworkError):
        await bot.get_me()
    await bot.get_me()


async def test_telegram_go_down_refuses_connections_and_come_up_reuses_the_port(
    tg: FakeTelegram, bot: Bot
) -> None:
    thread_id = await new_topic(bot, tg)
    port = tg.port

    await tg.go_down()
    with pytest.raises(NetworkError):
        await bot.send_message(tg.chat_id, "x", message_thread_id=thread_id)
    await tg.come_up()

    assert tg.port == port
    await bot.send_message(tg.chat_id, "x", message_thread_id=thread_id)
    assert len(tg.messages_in(thread_id)) == 1


async def test_slow_answer_times_out_in_ptb_but_the_message_was_posted(
    tg: FakeTelegram, bot: Bot
) -> None:
    tg.delay_next("sendMessage", 1.0)

    with pytest.raises(TimedOut):
        await bot.send_message(tg.chat_id, "x", read_timeout=0.1)

    assert len(tg.messages) == 1


async def test_rate_limit_answers_429_after_the_budget_and_frees_with_the_window(
    tg: FakeTelegram, bot: Bot, timedelta_periods: None
) -> None:
    tg.set_rate_limit(3, time_scale=60)  # a "Telegram minute" lasts one real second
    thread_id = await new_topic(bot, tg)
    await bot.send_message(tg.chat_id, "1", message_thread_id=thread_id)
    await bot.send_message(tg.chat_id, "2", message_thread_id=thread_id)

    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(tg.chat_id, "3", message_thread_id=thread_id)
    retry_after = caught.value.retry_after
    assert retry_after == dt.timedelta(seconds=1)
    with pytest.raises(RetryAfter):  # edits share the budget of posts
        await bot.edit_message_text("edited", tg.chat_id, tg.messages[0].message_id)
    await bot.get_chat(tg.chat_id)  # reads do not

    # Sleeping exactly retry_after (real seconds) is enough to get a slot.
    assert isinstance(retry_after, dt.timedelta)
    await asyncio.sleep(retry_after.total_seconds())
    await bot.send_message(tg.chat_id, "3", message_thread_id=thread_id)
    assert [m.text for m in tg.messages_in(thread_id)] == ["1", "2", "3"]


@pytest.mark.parametrize(
    "call",
    [
        "edit_message_text",
        "edit_forum_topic",
        "close_forum_topic",
        "reopen_forum_topic",
        "pin_chat_message",
        "set_message_reaction",
        "create_forum_topic",
        "send_message",
    ],
)
async def test_every_call_that_changes_the_group_shares_the_rate_limit(
    tg: FakeTelegram, bot: Bot, call: str
) -> None:
    thread_id = await new_topic(bot, tg)
    sent = await bot.send_message(tg.chat_id, "hello", message_thread_id=thread_id)
    if call == "reopen_forum_topic":
        await bot.close_forum_topic(tg.chat_id, thread_id)
    requests = {
        "edit_message_text": lambda: bot.edit_message_text("x", tg.chat_id, sent.message_id),
        "edit_forum_topic": lambda: bot.edit_forum_topic(tg.chat_id, thread_id, name="renamed"),
        "close_forum_topic": lambda: bot.close_forum_topic(tg.chat_id, thread_id),
        "reopen_forum_topic": lambda: bot.reopen_forum_topic(tg.chat_id, thread_id),
        "pin_chat_message": lambda: bot.pin_chat_message(tg.chat_id, sent.message_id),
        "set_message_reaction": lambda: bot.set_message_reaction(tg.chat_id, sent.message_id, "👌"),
        "create_forum_topic": lambda: bot.create_forum_topic(tg.chat_id, "another"),
        "send_message": lambda: bot.send_message(tg.chat_id, "more"),
    }
    hour = 1 / 60  # a window of an hour: nothing leaves it during the test
    tg.set_rate_limit(len(tg._posted_at) + 1, time_scale=hour)  # room for one more call
    await requests[call]()
    with pytest.raises(RetryAfter):
        await requests["send_message"]()
    tg.set_rate_limit(None)
    await requests["send_message"]()
    tg.set_rate_limit(len(tg._posted_at), time_scale=hour)  # full
    with pytest.raises(RetryAfter):
        await requests[call]()
    await bot.get_chat(tg.chat_id)  # reads never count


async def test_rate_limit_retry_after_is_in_real_seconds_rounded_up(
    tg: FakeTelegram, bot: Bot, timedelta_periods: None
) -> None:
    tg.set_rate_limit(1, time_scale=60 / 2.5)  # 1 post per 2.5 s
    await bot.send_message(tg.chat_id, "1")

    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(tg.chat_id, "2")

    assert caught.value.retry_after == dt.timedelta(seconds=3)
    tg.set_rate_limit(None)
    await bot.send_message(tg.chat_id, "2")


# ---------------------------------------------------------- Telegram: operator side


async def test_get_updates_delivers_an_operator_message_in_a_topic(
    tg: FakeTelegram, bot: Bot
) -> None:
    thread_id = await new_topic(bot, tg)
    message_id = tg.operator_message(thread_id=thread_id, text="Baik, kami kirim besok")

    [update] = await bot.get_updates()

    message = update.message
    assert message is not None
    assert (message.message_id, message.text) == (message_id, "Baik, kami kirim besok")
    assert message.is_topic_message
    assert message.message_thread_id == thread_id
    assert message.chat.id == tg.chat_id
    assert message.from_user is not None
    assert (message.from_user.id, message.from_user.is_bot) == (777, False)
    assert message.reply_to_message is not None
    assert message.reply_to_message.forum_topic_created is not None


async def test_operator_message_in_general_has_no_thread(tg: FakeTelegram, bot: Bot) -> None:
    tg.operator_message(thread_id=None, text="/status")

    [update] = await bot.get_updates()

    assert update.message is not None
    assert update.message.message_thread_id is None
    assert not update.message.is_topic_message


async def test_get_updates_forgets_updates_below_offset(tg: FakeTelegram, bot: Bot) -> None:
    tg.operator_message(thread_id=None, text="one")
    tg.operator_message(thread_id=None, text="two")

    first = await bot.get_updates(limit=1)
    again = await bot.get_updates()
    rest = await bot.get_updates(offset=first[0].update_id + 1)
    after = await bot.get_updates(offset=rest[-1].update_id + 1)

    assert [u.message.text for u in first if u.message] == ["one"]
    assert len(again) == 2
    assert [u.message.text for u in rest if u.message] == ["two"]
    assert after == ()


async def test_get_updates_long_polls_until_an_update_arrives(tg: FakeTelegram, bot: Bot) -> None:
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await tg.wait_for(lambda: bool(tg.calls_of("getUpdates")))
    await asyncio.sleep(0.05)
    tg.operator_message(thread_id=None, text="x")

    [update] = await poll

    assert update.message is not None
    assert update.message.text == "x"
    assert time.monotonic() - started < 2


async def test_go_down_drops_a_pending_long_poll(tg: FakeTelegram, bot: Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await tg.wait_for(lambda: bool(tg.calls_of("getUpdates")))

    await tg.go_down()

    with pytest.raises(NetworkError):
        await poll
    await tg.come_up()
    assert await bot.get_updates() == ()


async def test_get_updates_with_timeout_returns_empty_after_waiting(
    tg: FakeTelegram, bot: Bot
) -> None:
    started = time.monotonic()

    assert await bot.get_updates(timeout=dt.timedelta(seconds=0.3)) == ()
    assert time.monotonic() - started >= 0.25
    assert tg.calls_of("getUpdates")[-1].params["timeout"] == 0.3


async def test_a_second_bot_instance_polling_terminates_the_first_with_conflict(
    tg: FakeTelegram, bot: Bot
) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await tg.wait_for(lambda: len(tg.calls_of("getUpdates")) == 1)

    async with Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url) as other:
        assert await other.get_updates(timeout=0) == ()
    with pytest.raises(Conflict, match="terminated by other getUpdates"):
        await first


async def test_reaction_updates_arrive_only_when_allowed(tg: FakeTelegram, bot: Bot) -> None:
    reaction = {
        "chat": {"id": tg.chat_id, "type": "supergroup", "title": "g"},
        "message_id": 5,
        "date": int(time.time()),
        "user": {"id": 777, "is_bot": False, "first_name": "Opa"},
        "old_reaction": [],
        "new_reaction": [{"type": "emoji", "emoji": "👍"}],
    }
    tg.push_update({"message_reaction": reaction})
    assert await bot.get_updates() == ()

    tg.push_update({"message_reaction": reaction})
    [update] = await bot.get_updates(allowed_updates=["message", "message_reaction"])

    assert update.message_reaction is not None
    assert update.message_reaction.message_id == 5


async def test_operator_photo_can_be_fetched_with_get_file(tg: FakeTelegram, bot: Bot) -> None:
    content = b"\xff\xd8\xff\xe0 fake jpeg bytes"
    file_id, unique_id = tg.add_file(content)
    thread_id = await new_topic(bot, tg)
    photo = [{"file_id": file_id, "file_unique_id": unique_id, "width": 800, "height": 600}]
    tg.operator_message(thread_id=thread_id, extra={"photo": photo, "caption": "nota"})

    [update] = await bot.get_updates()
    assert update.message is not None
    telegram_file = await update.message.photo[-1].get_file()

    assert telegram_file.file_path is not None
    assert telegram_file.file_path.endswith("photos/file_1.jpg")
    assert telegram_file.file_size == len(content)
    assert await telegram_file.download_as_bytearray() == bytearray(content)


async def test_unknown_file_id_is_refused(bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)invalid file_id"):
        await bot.get_file("nope")


async def test_uploaded_photo_is_recorded_and_downloadable(tg: FakeTelegram, bot: Bot) -> None:
    thread_id = await new_topic(bot, tg)

    message = await bot.send_photo(
        tg.chat_id,
        b"\x89PNG fake",
        caption="<i>foto dari WhatsApp</i>",
        parse_mode="HTML",
        message_thread_id=thread_id,
    )

    assert message.caption == "foto dari WhatsApp"
    sent = tg.messages_in(thread_id)[-1]
    assert (sent.kind, sent.method, sent.file) == ("photo", "sendPhoto", b"\x89PNG fake")
    downloaded = await (await bot.get_file(message.photo[-1].file_id)).download_as_bytearray()
    assert downloaded == bytearray(b"\x89PNG fake")


async def test_uploaded_document_keeps_its_name(tg: FakeTelegram, bot: Bot) -> None:
    message = await bot.send_document(tg.chat_id, b"%PDF-1.4", filename="invoice.pdf")

    assert message.document is not None
    assert message.document.file_name == "invoice.pdf"
    assert tg.messages[-1].filename == "invoice.pdf"


async def test_set_message_reaction_records_each_call(tg: FakeTelegram, bot: Bot) -> None:
    message = await bot.send_message(tg.chat_id, "x")

    assert await bot.set_message_reaction(tg.chat_id, message.message_id, "👍")
    assert await bot.set_message_reaction(tg.chat_id, message.message_id, [ReactionTypeEmoji("👌")])
    assert await bot.set_message_reaction(tg.chat_id, message.message_id, [])

    assert tg.reactions[message.message_id] == ["👍", "👌", ""]


async def test_reactions_telegram_does_not_offer_are_refused(tg: FakeTelegram, bot: Bot) -> None:
    message = await bot.send_message(tg.chat_id, "x")

    with pytest.raises(BadRequest, match=r"(?i)reaction_invalid"):
        await bot.set_message_reaction(tg.chat_id, message.message_id, ReactionTypeEmoji("✅"))
    # PTB sends a str that is no standard reaction as a custom emoji id; also refused.
    with pytest.raises(BadRequest, match=r"(?i)reaction_invalid"):
        await bot.set_message_reaction(tg.chat_id, message.message_id, "✅")
    assert tg.calls[-1].params["reaction"] == [{"type": "custom_emoji", "custom_emoji_id": "✅"}]
    with pytest.raises(BadRequest, match=r"(?i)reactions_too_many"):
        await bot.set_message_reaction(tg.chat_id, message.message_id, ["👍", "🔥"])
    assert message.message_id not in tg.reactions


async def test_wait_for_fails_with_the_condition_and_recent_calls(tg: FakeTelegram) -> None:
    with pytest.raises(AssertionError, match=r"(?s)len\(tg.messages\) == 1.*last calls"):
        await tg.wait_for(lambda: len(tg.messages) == 1, timeout=0.05)


# ------------------------------------------------------------------ NusaSMS


async def test_api_key_is_checked(nusa: FakeNusaSMS, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{nusa.base_url}/auth/api_key", headers=key(nusa)) as response:
        assert response.status == 200
        assert (await response.json())["data"] == nusa.person

    for headers in ({"APIKey": "wrong"}, {}):
        async with http.get(f"{nusa.base_url}/balance", headers=headers) as response:
            assert response.status == 401
            assert await response.json() == {"error": True, "message": "Invalid API key"}
    assert [c.headers.get("apikey") for c in nusa.calls] == [nusa.api_key, "wrong", None]


async def test_balance_is_served_in_the_documented_envelope(
    nusa: FakeNusaSMS, http: aiohttp.ClientSession
) -> None:
    nusa.balance["wa_balance"] = 12

    async with http.get(f"{nusa.base_url}/balance", headers=key(nusa)) as response:
        body = await response.json()

    assert response.status == 200
    assert (body["error"], body["message"]) == (False, "Data message")
    assert body["data"]["wa_balance"] == 12
    assert body["data"]["sms_balance"] > 0
    assert dt.date.fromisoformat(body["data"]["wa_expired_date"]) > dt.date.today()


async def test_multipart_text_reply_is_accepted_and_recorded(
    nusa: FakeNusaSMS, http: aiohttp.ClientSession
) -> None:
    refs = []
    for text in ("Halo kak", "Pesanan dikirim"):
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("room_id", "6f1c2a9e-5b7d-4c1e-9a2b-6d8e0f1a2b3c")
        form.add_field("text", text)
        url = f"{nusa.base_url}/wa_official/message/reply"
        async with http.post(url, data=form, headers=key(nusa)) as response:
            body = await response.json()
            assert response.status == 201
        assert (body["error"], body["message"]) == (False, "Send reply message")
        refs.append(body["data"]["ref_no"])

    assert [(r.type, r.text, r.ref_no) for r in nusa.replies] == [
        ("text", "Halo kak", refs[0]),
        ("text", "Pesanan dikirim", refs[1]),
    ]
    assert refs[0] != refs[1]
    assert nusa.calls[-1].path == "/wa_official/message/reply"
    assert nusa.calls[-1].body == {
        "room_id": "6f1c2a9e-5b7d-4c1e-9a2b-6d8e0f1a2b3c",
        "text": "Pesanan dikirim",
    }


async def test_reply_accepts_urlencoded_and_json(
    nusa: FakeNusaSMS, http: aiohttp.ClientSession
) -> None:
    url = f"{nusa.base_url}/wa_official/message/reply"
    fields = {"room_id": "room-1", "type": "text", "text": "form"}
    async with http.post(url, data=fields, headers=key(nusa)) as response:
        assert response.status == 201
    async with http.post(url, json={"room_id": "room-2", "text": "json"}, headers=key(nusa)) as r:
        assert r.status == 201

    assert [(r.room_id, r.text) for r in nusa.replies] == [("room-1", "form"), ("room-2", "json")]


async def test_image_reply_with_an_uploaded_file_keeps_the_bytes(
    nusa: FakeNusaSMS, http: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData()
    form.add_field("room_id", "room-1")
    form.add_field("type", "image")
    form.add_field("text", "caption")
    form.add_field("file", b"\x89PNG img", filename="nota.png", content_type="image/png")

    url = f"{nusa.base_url}/wa_official/message/reply"
    async with http.post(url, data=form, headers=key(nusa)) as response:
        assert response.status == 201

    [reply] = nusa.replies
    assert (reply.type, reply.file, reply.filename, reply.content_type) == (
        "image",
        b"\x89PNG img",
        "nota.png",
        "image/png",
    )
    assert nusa.calls[-1].body["file"] == {
        "filename": "nota.png",
        "content_type": "image/png",
        "size": 8,
    }


async def test_document_reply_by_url_is_not_downloaded_but_fetch_can(
    nusa: FakeNusaSMS, tg: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    tg.add_file(b"%PDF-1.4 bytes", file_path="documents/file_9.pdf")
    file_url = f"{tg.base_file_url}{tg.token}/documents/file_9.pdf"
    fields = {"room_id": "room-1", "type": "document", "file_url": file_url}

    url = f"{nusa.base_url}/wa_official/message/reply"
    async with http.post(url, data=fields, headers=key(nusa)) as response:
        assert response.status == 201

    [reply] = nusa.replies
    assert (reply.file_url, reply.file) == (file_url, None)
    assert await nusa.fetch(file_url) == b"%PDF-1.4 bytes"
    assert await fetch(file_url) == b"%PDF-1.4 bytes"


@pytest.mark.parametrize(
    ("fields", "loc", "error_type"),
    [
        ({"text": "no room"}, ["body", "room_id"], "value_error.missing"),
        ({"room_id": "r", "type": "sticker", "text": "x"}, ["body", "type"], "type_error.enum"),
        ({"room_id": "r", "type": "image"}, ["body", "file_url"], "value_error.missing"),
        (
            {"room_id": "r", "type": "image", "file_url": "ftp.example/x.png"},
            ["body", "file_url"],
            "value_error.url.scheme",
        ),
        ({"room_id": "r"}, ["body", "text"], "value_error.missing"),
    ],
)
async def test_invalid_reply_is_refused_fastapi_style(
    nusa: FakeNusaSMS,
    http: aiohttp.ClientSession,
    fields: dict[str, str],
    loc: list[str],
    error_type: str,
) -> None:
    url = f"{nusa.base_url}/wa_official/message/reply"
    async with http.post(url, data=fields, headers=key(nusa)) as response:
        body = await response.json()

    assert response.status == 422
    assert {"loc": loc, "type": error_type} in [
        {"loc": d["loc"], "type": d["type"]} for d in body["detail"]
    ]
    assert nusa.replies == []


async def test_missing_room_id_detail_matches_fastapi_exactly(
    nusa: FakeNusaSMS, http: aiohttp.ClientSession
) -> None:
    url = f"{nusa.base_url}/wa_official/message/reply"
    async with http.post(url, data={"text": "x"}, headers=key(nusa)) as response:
        assert await response.json() == {
            "detail": [
                {"loc": ["body", "room_id"], "msg": "field required", "type": "value_error.missing"}
            ]
        }


async def test_injected_failure_is_answered_without_processing(
    nusa: FakeNusaSMS, http: aiohttp.ClientSession
) -> None:
    url = f"{nusa.base_url}/wa_official/message/reply"
    fields = {"room_id": "r", "text": "x"}
    nusa.fail_next("/wa_official/message/reply", 429, times=2, headers={"Retry-After": "3"})
    nusa.fail_next("*", 502, "<html>Bad Gateway</html>")

    for _ in range(2):
        async with http.post(url, data=fields, headers=key(nusa)) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "3"
            assert await response.json() == {"error": True, "message": "Too Many Requests"}
    async with http.get(f"{nusa.base_url}/balance", headers=key(nusa)) as response:
        assert response.status == 502
        assert response.content_type == "text/html"
    async with http.post(url, data=fields, headers=key(nusa)) as response:
        assert response.status == 201

    assert len(nusa.replies) == 1
    assert len(nusa.calls) == 4


async def test_full_prefix_path_is_accepted_for_fault_injection(
    nusa: FakeNusaSMS, http: aiohttp.ClientSession
) -> None:
    nusa.fail_next("/nusasms_api/1.0/balance", 503, {"error": True, "message": "maintenance"})

    async with http.get(f"{nusa.base_url}/balance", headers=key(nusa)) as response:
        assert response.status == 503
        assert (await response.json())["message"] == "maintenance"


async def test_slow_reply_times_out_the_client_but_is_still_recorded(
    nusa: FakeNusaSMS, http: aiohttp.ClientSession
) -> None:
    nusa.delay_next("/wa_official/message/reply", 1.0)
    url = f"{nusa.base_url}/wa_official/message/reply"

    with pytest.raises(TimeoutError):
        async with http.post(
            url,
            data={"room_id": "r", "text": "x"},
            headers=key(nusa),
            timeout=aiohttp.ClientTimeout(total=0.1),
        ):
            pass

    assert [r.text for r in nusa.replies] == ["x"]


async def test_nusasms_go_down_refuses_connections_and_come_up_reuses_the_port(
    nusa: FakeNusaSMS, http: aiohttp.ClientSession
) -> None:
    port = nusa.port

    await nusa.go_down()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"{nusa.base_url}/balance", headers=key(nusa)):
            pass
    await nusa.come_up()

    assert nusa.port == port
    async with http.get(f"{nusa.base_url}/balance", headers=key(nusa)) as response:
        assert response.status == 200


async def test_broadcast_templates_and_channels(
    nusa: FakeNusaSMS, http: aiohttp.ClientSession
) -> None:
    template = nusa.templates[0]
    channel = nusa.channels[0]
    payload = {
        "destination": "6281234567890",
        "destination_name": "Budi",
        "template_id": template["id"],
        "channel_id": channel["id"],
        "parameters": {"body": [{"key": "1", "value": "name", "value_text": "Budi"}]},
    }
    url = f"{nusa.base_url}/wa_official/message/broadcast"
    async with http.post(url, json=payload, headers=key(nusa)) as response:
        assert response.status == 201
        assert (await response.json())["message"] == "Send broadcast message"
    async with http.post(url, json={"destination": "x"}, headers=key(nusa)) as response:
        assert response.status == 422
    async with http.get(f"{nusa.base_url}/wa_official/templates", headers=key(nusa)) as r:
        assert (await r.json())["data"] == [template]
    async with http.get(f"{nusa.base_url}/wa_official/channels", headers=key(nusa)) as r:
        assert (await r.json())["data"] == [channel]

    [broadcast] = nusa.broadcasts
    assert (broadcast.destination, broadcast.template_id) == ("6281234567890", template["id"])


async def test_unknown_path_is_404_and_wrong_verb_is_405(
    nusa: FakeNusaSMS, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{nusa.base_url}/nope", headers=key(nusa)) as response:
        assert response.status == 404
    async with http.get(f"{nusa.base_url}/wa_official/message/reply") as response:
        assert response.status == 405


async def test_nusasms_wait_for_sees_replies_posted_concurrently(
    nusa: FakeNusaSMS, http: aiohttp.ClientSession
) -> None:
    url = f"{nusa.base_url}/wa_official/message/reply"

    async def send_later() -> None:
        await asyncio.sleep(0.05)
        async with http.post(url, data={"room_id": "r", "text": "x"}, headers=key(nusa)):
            pass

    task = asyncio.create_task(send_later())
    await nusa.wait_for(lambda: len(nusa.replies) == 1)
    await task
    with pytest.raises(AssertionError, match="replies accepted"):
        await nusa.wait_for(lambda: len(nusa.replies) == 2, timeout=0.05)
