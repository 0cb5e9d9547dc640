"""Operators' replies, end to end over real HTTP: a message in a room's Telegram topic in,
a NusaSMS reply out, and what became of it shown on the operator's message."""

from __future__ import annotations

import asyncio
import calendar
import copy
import functools
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from bridge.app import Bridge
from bridge.core.config import Settings, load_settings
from bridge.group.render import topic_name
from tests.conftest import (
    NUMBER,
    ROOM,
    Callbacks,
    inbox_body,
    write_config,
)
from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import FakeTelegram, SentMessage

REPLY = "/wa_official/message/reply"
OPERATOR = 777
OTHER_ROOM = "7d1e9a40-1111-4a2b-9c3d-0123456789ab"
OTHER_NUMBER = "6285711112222"
HOUR = 3600.0
PUBLIC_URL = "https://wa-bridge.example.test"


class Clock:
    """The bridge's clock: real time, moved by `offset` seconds when a test says so."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def config_data(config_data: dict[str, Any]) -> dict[str, Any]:
    """The shared configuration, with the address NusaSMS reaches the bridge at."""
    config_data["server"]["public_url"] = PUBLIC_URL
    return config_data


def served(bridge: Bridge, url: str | None) -> str:
    """Where a published link lands on the bridge (a reverse proxy's job in production)."""
    assert url is not None
    assert url.startswith(f"{PUBLIC_URL}/media/"), url
    return f"http://127.0.0.1:{bridge.port}{urlsplit(url).path}"


def configure(tmp_path: Path, config_data: dict[str, Any], **sections: dict[str, Any]) -> Settings:
    """Settings from the shared configuration with some keys of some sections changed."""
    data = copy.deepcopy(config_data)
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return load_settings(write_config(tmp_path, data, "replies.yaml"), environ={})


def jakarta(seconds_ago: float = 0.0) -> str:
    """A NusaSMS date (Asia/Jakarta, UTC+7) `seconds_ago` before now."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - seconds_ago + 7 * 3600))


async def open_room(
    callbacks: Callbacks,
    telegram: FakeTelegram,
    *,
    room_id: str = ROOM,
    number: str = NUMBER,
    inbox_date: str | None = None,
) -> int:
    """A customer writes; returns their topic's id once their message is shown in it."""
    name = topic_name(number)
    body = inbox_body(f"in-{room_id}", room_id=room_id, sender_number=number, inbox_date=inbox_date)
    assert (await callbacks.inbox(body)).status == 200

    def shown() -> bool:
        return any(
            t.name == name and len(telegram.messages_in(t.thread_id)) >= 2
            for t in telegram.topics.values()
        )

    await telegram.wait_for(shown)
    return next(t.thread_id for t in telegram.topics.values() if t.name == name)


@pytest.fixture
async def topic(callbacks: Callbacks, telegram: FakeTelegram) -> int:
    """The topic of a customer (ROOM) who just wrote, so the reply window is open."""
    return await open_room(callbacks, telegram)


def notices_on(telegram: FakeTelegram, message_id: int) -> list[SentMessage]:
    """The bridge's messages posted as replies to one (operator's) message."""
    return [m for m in telegram.messages if m.reply_to_message_id == message_id]


def reaction(telegram: FakeTelegram, message_id: int) -> str | None:
    """The bot's current reaction on a message."""
    history = telegram.reactions.get(message_id)
    return history[-1] if history else None


def retry_data(notice: SentMessage) -> list[str]:
    """The callback data of the notice's inline buttons."""
    markup = notice.reply_markup or {}
    return [b.get("callback_data") for row in markup.get("inline_keyboard", []) for b in row]


def press(telegram: FakeTelegram, notice: SentMessage, data: str, user_id: int = OPERATOR) -> None:
    """An operator presses an inline button under one of the bridge's notices."""
    telegram.push_update(
        {
            "callback_query": {
                "id": f"cq-{notice.message_id}-{user_id}",
                "from": {"id": user_id, "is_bot": False, "first_name": "Opa"},
                "chat_instance": "-42",
                "message": telegram.raw_message(notice.message_id),
                "data": data,
            }
        }
    )


def status_body(ref_no: str, status: str) -> dict[str, Any]:
    """A status callback body as NusaSMS sends it."""
    return {"ref_no": ref_no, "status": status, "status_date": jakarta()}


async def lock_database(settings: Settings) -> sqlite3.Connection:
    """Take the database's write lock as another process would, without blocking the loop."""
    blocker = sqlite3.connect(settings.storage.path, timeout=0)
    for _ in range(500):
        try:
            blocker.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            await asyncio.sleep(0.01)  # the bridge is writing; it needs the loop to finish
        else:
            return blocker
    blocker.close()
    raise AssertionError("the bridge never let go of the database")


def db_rows(settings: Settings, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of a query on the bridge's database."""
    with sqlite3.connect(settings.storage.path) as db:
        return db.execute(sql, params).fetchall()


# --- text ---------------------------------------------------------------------------------


async def test_text_reply_reaches_the_room_byte_for_byte(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    text = "Baik kak 🙏 *bukan tebal* <b>&amp; 5 < 6 & 7 > 3\n\nbaris   ketiga\tTab 👨‍👩‍👧 _x_ ~y~"
    telegram.operator_message(thread_id=topic, text=text)

    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    [reply] = nusasms.replies
    assert reply.room_id == ROOM
    assert reply.type == "text"
    assert reply.text == text
    assert reply.file_url is None
    assert reply.file is None


async def test_telegram_formatting_becomes_whatsapp_markup(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    # Offsets count UTF-16 units, as Telegram's do: the emoji takes two.
    telegram.operator_message(
        thread_id=topic,
        text="🙂 tebal miring coret kode\nprint(1)",
        entities=[
            {"type": "bold", "offset": 3, "length": 5},
            {"type": "italic", "offset": 9, "length": 6},
            {"type": "strikethrough", "offset": 16, "length": 5},
            {"type": "code", "offset": 22, "length": 4},
            {"type": "pre", "offset": 27, "length": 8},
        ],
    )

    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    assert nusasms.replies[0].text == "🙂 *tebal* _miring_ ~coret~ ```kode```\n```print(1)```"


# --- what is not a reply -------------------------------------------------------------------


async def test_messages_that_are_not_replies_never_reach_whatsapp(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    telegram.operator_message(thread_id=None, text="in General")
    telegram.operator_message(thread_id=topic, text="from another group", chat_id=-1009999999999)
    telegram.operator_message(thread_id=topic, text="from a bot", user_id=4242, is_bot=True)
    telegram.operator_message(
        thread_id=topic,
        text="on behalf of the group",
        extra={"sender_chat": {"id": telegram.chat_id, "type": "supergroup", "title": "G"}},
    )
    telegram.operator_message(thread_id=99_999, text="in a topic of no room")
    telegram.operator_message(
        thread_id=topic, text="/start", entities=[{"type": "bot_command", "offset": 0, "length": 6}]
    )
    telegram.operator_message(thread_id=topic, text="/help@bridge_test_bot")
    telegram.operator_message(thread_id=topic, text="// customer sounds upset, be kind")
    # Updates are handled in order: once this one is out, the ones above were decided.
    telegram.operator_message(thread_id=topic, text="the real reply")

    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    assert [r.text for r in nusasms.replies] == ["the real reply"]
    assert len(nusasms.calls_to(REPLY)) == 1


async def test_only_listed_operators_may_reply_or_retry(
    make_bridge: Any,
    tmp_path: Path,
    config_data: dict[str, Any],
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    settings = configure(tmp_path, config_data, telegram={"operator_ids": [OPERATOR]})
    bridge = await make_bridge(settings)
    topic = await open_room(Callbacks.of(bridge, http), telegram)
    telegram.operator_message(thread_id=topic, text="from a stranger", user_id=888)
    nusasms.fail_next(REPLY, 422, {"detail": [{"loc": ["body"], "msg": "nope", "type": "x"}]})
    mine = telegram.operator_message(thread_id=topic, text="from the operator")
    await telegram.wait_for(lambda: len(notices_on(telegram, mine)) == 1)
    [notice] = notices_on(telegram, mine)
    [data] = retry_data(notice)

    press(telegram, notice, data, user_id=888)
    await telegram.wait_for(lambda: len(telegram.calls_of("answerCallbackQuery")) == 1)
    assert telegram.calls_of("answerCallbackQuery")[0].params["text"] == "Only operators can retry."
    press(telegram, notice, data)

    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    assert [r.text for r in nusasms.replies] == ["from the operator"]
    assert len(nusasms.calls_to(REPLY)) == 2  # the refused one, then the operator's retry


async def test_photo_with_a_note_caption_stays_in_telegram(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    extra = {**media_fields(telegram, "photo", b"screenshot"), "caption": "// dari sistem gudang"}
    telegram.operator_message(thread_id=topic, extra=extra)
    telegram.operator_message(thread_id=topic, text="the real reply")

    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    assert [r.text for r in nusasms.replies] == ["the real reply"]
    assert len(nusasms.calls_to(REPLY)) == 1


# --- the 24-hour window --------------------------------------------------------------------


async def test_reply_after_window_is_refused_and_operator_told(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    clock = Clock()
    bridge = await make_bridge(settings, clock=clock)
    topic = await open_room(Callbacks.of(bridge, http), telegram)
    room = await bridge.store.room(ROOM)
    assert room is not None

    clock.offset = 23 * HOUR
    telegram.operator_message(thread_id=topic, text="masih sempat")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)

    clock.offset = 25 * HOUR
    late = telegram.operator_message(thread_id=topic, text="terlambat")
    await telegram.wait_for(lambda: len(notices_on(telegram, late)) == 1)

    [notice] = notices_on(telegram, late)
    closed = time.gmtime(room.last_inbox_at + 24 * HOUR + 7 * HOUR)  # Asia/Jakarta
    assert "Not sent" in (notice.plain_text or "")
    assert f"closed at {time.strftime('%d %b %H:%M', closed)}" in (notice.plain_text or "")
    assert notice.thread_id == topic
    assert [r.text for r in nusasms.replies] == ["masih sempat"]
    assert len(nusasms.calls_to(REPLY)) == 1
    assert db_rows(settings, "SELECT count(*) FROM outbound") == [(1,)]


async def test_reply_to_a_customer_who_wrote_long_ago_is_refused(
    callbacks: Callbacks, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    written = jakarta(25 * HOUR)
    topic = await open_room(callbacks, telegram, inbox_date=written)
    late = telegram.operator_message(thread_id=topic, text="maaf baru balas")
    await telegram.wait_for(lambda: len(notices_on(telegram, late)) == 1)

    closes = time.gmtime(calendar.timegm(time.strptime(written, "%Y-%m-%d %H:%M:%S")) + 24 * HOUR)
    text = notices_on(telegram, late)[0].plain_text or ""
    assert f"closed at {time.strftime('%d %b %H:%M', closes)}" in text
    assert nusasms.calls_to(REPLY) == []


async def test_reply_held_until_the_window_closed_is_not_sent_and_operator_told(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    clock = Clock()
    bridge = await make_bridge(settings, clock=clock)
    topic = await open_room(Callbacks.of(bridge, http), telegram)
    await nusasms.go_down()
    mid = telegram.operator_message(thread_id=topic, text="tertahan")
    await telegram.wait_for(
        lambda: db_rows(settings, "SELECT count(*) FROM outbound WHERE error IS NOT NULL") == [(1,)]
    )
    clock.offset = 25 * HOUR
    await nusasms.come_up()

    def texts() -> list[str]:
        return [n.plain_text or "" for n in notices_on(telegram, mid)]

    await telegram.wait_for(lambda: any("reply window closed" in t for t in texts()), timeout=10)
    # By the bridge's clock it waited 25 hours, so a waiting notice may have come first.
    closed = [t for t in texts() if "reply window closed" in t]
    others = [t for t in texts() if t not in closed]
    assert len(closed) == 1
    assert len(others) <= 1
    assert all("Not sent yet" in t for t in others)
    await telegram.wait_for(lambda: reaction(telegram, mid) == "💔")
    assert nusasms.calls_to(REPLY) == []


# --- media ---------------------------------------------------------------------------------


def content_for(kind: str) -> bytes:
    """File bytes that are not text and differ per kind."""
    return bytes(range(256)) * 40 + kind.encode()


def media_fields(telegram: FakeTelegram, kind: str, content: bytes) -> dict[str, Any]:
    """The fields of an operator's message holding `content` as `kind`, as Telegram sends it."""
    file_id, unique_id = telegram.add_file(content)
    base = {"file_id": file_id, "file_unique_id": unique_id, "file_size": len(content)}
    if kind == "photo":
        thumb_id, thumb_unique = telegram.add_file(b"a small preview")
        thumb = {"file_id": thumb_id, "file_unique_id": thumb_unique, "file_size": 15}
        return {
            "photo": [{**thumb, "width": 90, "height": 60}, {**base, "width": 1280, "height": 853}]
        }
    if kind == "document":
        return {"document": {**base, "file_name": "invoice 7.pdf", "mime_type": "application/pdf"}}
    if kind == "video":
        video = {**base, "width": 640, "height": 360, "duration": 3}
        return {"video": {**video, "file_name": "clip.mp4", "mime_type": "video/mp4"}}
    if kind == "animation":
        # A GIF arrives as an animation and, for old clients, as a document too.
        named = {**base, "file_name": "party.gif.mp4", "mime_type": "video/mp4"}
        return {
            "animation": {**named, "width": 320, "height": 240, "duration": 2},
            "document": named,
        }
    if kind == "audio":
        return {
            "audio": {**base, "duration": 5, "file_name": "lagu.mp3", "mime_type": "audio/mpeg"}
        }
    if kind == "voice":
        return {"voice": {**base, "duration": 2, "mime_type": "audio/ogg"}}
    raise AssertionError(kind)


MEDIA_KINDS = [
    ("photo", "image", "image/jpeg"),
    ("document", "document", "application/pdf"),
    ("video", "video", "video/mp4"),
    ("animation", "video", "video/mp4"),
    ("audio", "audio", "audio/mpeg"),
    ("voice", "voice", "audio/ogg"),
]


@pytest.mark.parametrize(("kind", "reply_type", "content_type"), MEDIA_KINDS)
async def test_media_goes_out_by_a_link_to_our_own_copy(
    bridge: Bridge,
    topic: int,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    settings: Settings,
    http: aiohttp.ClientSession,
    kind: str,
    reply_type: str,
    content_type: str,
) -> None:
    content = content_for(kind)
    caption = "Ini filenya 📎 <5 & *tanpa format*"
    extra = {**media_fields(telegram, kind, content), "caption": caption}
    telegram.operator_message(thread_id=topic, extra=extra)

    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    [reply] = nusasms.replies
    assert reply.room_id == ROOM
    assert reply.type == reply_type
    assert reply.text == caption
    assert reply.file is None
    url = reply.file_url or ""
    assert url.startswith(f"{settings.server.public_url}/media/")
    assert len(url) > len(f"{PUBLIC_URL}/media/") + 40  # an unguessable token
    assert telegram.token not in url
    assert telegram.token.split(":")[1] not in url
    assert "api.telegram.org" not in url
    assert f":{telegram.port}/" not in url
    async with http.get(served(bridge, url)) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == content_type
        assert await response.read() == content


async def test_media_link_expires_and_unknown_links_are_404(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    clock = Clock()
    bridge = await make_bridge(settings, clock=clock)
    topic = await open_room(Callbacks.of(bridge, http), telegram)
    content = content_for("photo")
    telegram.operator_message(thread_id=topic, extra=media_fields(telegram, "photo", content))
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    url = served(bridge, nusasms.replies[0].file_url)
    assert await nusasms.fetch(url) == content
    base = url.rsplit("/", 1)[0]

    for unknown in ("A" * 43, "..%2F..%2Fbridge.sqlite3", "x"):
        async with http.get(f"{base}/{unknown}") as response:
            assert response.status == 404, unknown

    clock.offset = settings.nusasms.media_ttl_hours * HOUR - 60
    assert await nusasms.fetch(url) == content
    clock.offset = settings.nusasms.media_ttl_hours * HOUR + 1
    async with http.get(url) as response:
        assert response.status == 404


async def test_upload_mode_sends_the_file_bytes_as_multipart(
    make_bridge: Any,
    tmp_path: Path,
    config_data: dict[str, Any],
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    settings = configure(tmp_path, config_data, nusasms={"media_mode": "upload"})
    bridge = await make_bridge(settings)
    topic = await open_room(Callbacks.of(bridge, http), telegram)
    content = content_for("document")
    extra = {**media_fields(telegram, "document", content), "caption": "tagihan"}
    telegram.operator_message(thread_id=topic, extra=extra)

    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    [reply] = nusasms.replies
    assert reply.type == "document"
    assert reply.file == content
    assert reply.filename == "invoice 7.pdf"
    assert reply.content_type == "application/pdf"
    assert reply.file_url is None
    assert reply.text == "tagihan"
    [call] = nusasms.calls_to(REPLY)
    assert call.headers["Content-Type"].startswith("multipart/form-data")
    assert call.body["file"]["size"] == len(content)


async def test_album_items_go_out_one_by_one_in_order(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    contents = [content_for(f"album {i}") for i in range(4)]
    for i, content in enumerate(contents):
        extra = {**media_fields(telegram, "photo", content), "media_group_id": "1300001"}
        if i == 0:
            extra["caption"] = "Pilihan warnanya"
        telegram.operator_message(thread_id=topic, extra=extra)

    await nusasms.wait_for(lambda: len(nusasms.replies) == 4)
    assert [r.type for r in nusasms.replies] == ["image"] * 4
    assert [r.text for r in nusasms.replies] == ["Pilihan warnanya", None, None, None]
    assert [await nusasms.fetch(served(bridge, r.file_url)) for r in nusasms.replies] == contents
    assert len(nusasms.calls_to(REPLY)) == 4


# --- what WhatsApp cannot carry ------------------------------------------------------------

UNSUPPORTED: dict[str, dict[str, Any]] = {
    "stickers": {
        "sticker": {
            "file_id": "CAACAgIAAxkBAAE",
            "file_unique_id": "AgADsticker",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": "😀",
        }
    },
    "locations": {"location": {"latitude": -6.2, "longitude": 106.816}},
    "contacts": {"contact": {"phone_number": "+6281234567890", "first_name": "Budi"}},
    "polls": {
        "poll": {
            "id": "5000000001",
            "question": "Warna?",
            "options": [
                {"persistent_id": "0", "text": "merah", "voter_count": 0},
                {"persistent_id": "1", "text": "biru", "voter_count": 0},
            ],
            "total_voter_count": 0,
            "is_closed": False,
            "is_anonymous": True,
            "type": "regular",
            "allows_multiple_answers": False,
            "allows_revoting": True,
            "members_only": False,
        }
    },
}


@pytest.mark.parametrize("what", sorted(UNSUPPORTED))
async def test_kinds_whatsapp_cannot_carry_are_refused_with_a_notice(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS, what: str
) -> None:
    mid = telegram.operator_message(thread_id=topic, extra=UNSUPPORTED[what])
    await telegram.wait_for(lambda: len(notices_on(telegram, mid)) == 1)
    telegram.operator_message(thread_id=topic, text="sesudahnya")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)

    text = notices_on(telegram, mid)[0].plain_text or ""
    assert "Not sent" in text
    assert what in text
    assert [r.text for r in nusasms.replies] == ["sesudahnya"]
    assert len(nusasms.calls_to(REPLY)) == 1


async def test_file_over_20_mb_is_refused_with_a_clear_notice(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    big = {"file_id": "BQACAgbig", "file_unique_id": "AgADbig", "file_size": 25 * 1024 * 1024}
    extra = {"document": {**big, "file_name": "katalog.pdf", "mime_type": "application/pdf"}}
    mid = telegram.operator_message(thread_id=topic, extra=extra)
    await telegram.wait_for(lambda: len(notices_on(telegram, mid)) == 1)
    telegram.operator_message(thread_id=topic, text="sesudahnya")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)

    text = notices_on(telegram, mid)[0].plain_text or ""
    assert "Not sent" in text
    assert "25.0 MB" in text
    assert "20 MB" in text
    assert [r.text for r in nusasms.replies] == ["sesudahnya"]
    assert telegram.calls_of("getFile") == []


async def test_file_telegram_will_not_hand_over_is_refused_with_a_notice(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    # No file_size in the update: only getFile finds out the file is too big for a bot.
    file_id, unique_id = telegram.add_file(b"\0" * (20 * 1024 * 1024 + 1))
    extra = {"document": {"file_id": file_id, "file_unique_id": unique_id, "file_name": "x.zip"}}
    mid = telegram.operator_message(thread_id=topic, extra=extra)

    await telegram.wait_for(lambda: len(notices_on(telegram, mid)) == 1)
    text = notices_on(telegram, mid)[0].plain_text or ""
    assert "Not delivered" in text
    assert "20 MB" in text
    await telegram.wait_for(lambda: reaction(telegram, mid) == "💔")
    assert nusasms.calls_to(REPLY) == []


async def test_edit_does_not_reach_whatsapp_and_operator_is_told(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    mid = telegram.operator_message(thread_id=topic, text="harga 10.000")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    edited = {**telegram.raw_message(mid), "text": "harga 12.000", "edit_date": int(time.time())}
    telegram.push_update({"edited_message": edited})

    await telegram.wait_for(
        lambda: any(
            "Edits do not reach WhatsApp" in (m.plain_text or "") for m in notices_on(telegram, mid)
        )
    )
    assert [r.text for r in nusasms.replies] == ["harga 10.000"]
    assert len(nusasms.calls_to(REPLY)) == 1


async def test_editing_a_note_gets_no_notice(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    note = telegram.operator_message(thread_id=topic, text="// pelanggan lama")
    telegram.push_update({"edited_message": {**telegram.raw_message(note), "text": "// baru"}})
    mid = telegram.operator_message(thread_id=topic, text="halo")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    telegram.push_update({"edited_message": {**telegram.raw_message(mid), "text": "halo kak"}})

    await telegram.wait_for(lambda: len(notices_on(telegram, mid)) == 1)
    assert notices_on(telegram, note) == []


# --- what became of a reply ----------------------------------------------------------------


async def sent_reply(
    telegram: FakeTelegram, nusasms: FakeNusaSMS, topic: int, text: str
) -> tuple[int, str]:
    """An operator replies and NusaSMS accepts it: (the operator's message id, the ref_no)."""
    mid = telegram.operator_message(thread_id=topic, text=text)
    await telegram.wait_for(lambda: reaction(telegram, mid) == "🕊")
    [ref_no] = [r.ref_no for r in nusasms.replies if r.text == text]
    return mid, ref_no


async def test_reactions_follow_the_reply_from_accepted_to_delivered_to_read(
    topic: int, callbacks: Callbacks, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    mid, ref_no = await sent_reply(telegram, nusasms, topic, "Pesanan dikirim besok")

    assert (await callbacks.status(status_body(ref_no, "delivered"))).status == 200
    await telegram.wait_for(lambda: reaction(telegram, mid) == "👌")
    assert (await callbacks.status(status_body(ref_no, "read"))).status == 200
    await telegram.wait_for(lambda: reaction(telegram, mid) == "👀")

    assert telegram.reactions[mid] == ["🕊", "👌", "👀"]
    assert notices_on(telegram, mid) == []


async def test_one_letter_status_codes_are_understood(
    topic: int, callbacks: Callbacks, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    mid, ref_no = await sent_reply(telegram, nusasms, topic, "Terima kasih")

    await callbacks.status(status_body(ref_no, "D"))
    await telegram.wait_for(lambda: reaction(telegram, mid) == "👌")
    await callbacks.status(status_body(ref_no, "R"))
    await telegram.wait_for(lambda: reaction(telegram, mid) == "👀")


async def test_a_late_delivered_never_replaces_read(
    topic: int,
    callbacks: Callbacks,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    settings: Settings,
) -> None:
    mid, ref_no = await sent_reply(telegram, nusasms, topic, "satu")
    await callbacks.status(status_body(ref_no, "read"))
    await telegram.wait_for(lambda: reaction(telegram, mid) == "👀")
    await callbacks.status(status_body(ref_no, "delivered"))
    # A later reply's status, applied after the late one, marks the moment it was handled.
    marker, marker_ref = await sent_reply(telegram, nusasms, topic, "dua")
    await callbacks.status(status_body(marker_ref, "delivered"))
    await telegram.wait_for(lambda: reaction(telegram, marker) == "👌")

    assert db_rows(settings, "SELECT count(*) FROM status_events WHERE applied = 0") == [(0,)]
    assert telegram.reactions[mid] == ["🕊", "👀"]
    assert db_rows(settings, "SELECT status FROM outbound WHERE ref_no = ?", ref_no) == [("read",)]


async def test_status_that_arrives_before_the_ref_no_is_applied_once_it_is_known(
    topic: int,
    callbacks: Callbacks,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    settings: Settings,
) -> None:
    # NusaSMS takes the reply (and reports it delivered) before its 201 reaches the bridge.
    nusasms.delay_next(REPLY, 1.0)
    mid = telegram.operator_message(thread_id=topic, text="cepat sekali")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    ref_no = nusasms.replies[0].ref_no
    assert (await callbacks.status(status_body(ref_no, "delivered"))).status == 200
    assert db_rows(settings, "SELECT state, ref_no FROM outbound") == [("sending", None)]

    await telegram.wait_for(lambda: reaction(telegram, mid) == "👌")
    assert db_rows(settings, "SELECT ref_no, status FROM outbound") == [(ref_no, "delivered")]
    assert len(nusasms.calls_to(REPLY)) == 1


async def test_failed_status_breaks_the_heart_and_explains_with_a_retry_button(
    topic: int,
    callbacks: Callbacks,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    settings: Settings,
) -> None:
    mid, ref_no = await sent_reply(telegram, nusasms, topic, "tidak sampai")
    await callbacks.status(status_body(ref_no, "failed"))

    await telegram.wait_for(lambda: reaction(telegram, mid) == "💔")
    await telegram.wait_for(lambda: len(notices_on(telegram, mid)) == 1)
    [notice] = notices_on(telegram, mid)
    assert "Not delivered to WhatsApp" in (notice.plain_text or "")
    assert "failed" in (notice.plain_text or "")
    [(reply_id,)] = db_rows(settings, "SELECT id FROM outbound")
    assert retry_data(notice) == [f"retry:{reply_id}"]


# --- when NusaSMS fails --------------------------------------------------------------------


async def test_503_is_retried_and_the_reply_goes_out_once(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    nusasms.fail_next(REPLY, 503)
    mid = telegram.operator_message(thread_id=topic, text="coba lagi")
    await telegram.wait_for(lambda: reaction(telegram, mid) == "🕊", timeout=10)
    # A later reply of the room goes out after it: nothing is left to resend the first.
    telegram.operator_message(thread_id=topic, text="berikutnya")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 2)

    assert [r.text for r in nusasms.replies] == ["coba lagi", "berikutnya"]
    assert len(nusasms.calls_to(REPLY)) == 3
    assert notices_on(telegram, mid) == []


async def test_429_waits_as_long_as_nusasms_asks(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    # The bridge's own first backoff is 1-2 s; NusaSMS asks for 3.
    nusasms.fail_next(REPLY, 429, headers={"Retry-After": "3"})
    telegram.operator_message(thread_id=topic, text="pelan-pelan")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1, timeout=10)
    first, second = nusasms.calls_to(REPLY)
    assert second.at - first.at >= 3.0


async def test_422_is_shown_with_the_apis_reason_and_retry_sends_it(
    topic: int,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    settings: Settings,
) -> None:
    detail = [
        {"loc": ["body", "text"], "msg": "text contains a blocked word", "type": "value_error"}
    ]
    nusasms.fail_next(REPLY, 422, {"detail": detail})
    mid = telegram.operator_message(thread_id=topic, text="kata <terlarang> & lain")

    await telegram.wait_for(lambda: len(notices_on(telegram, mid)) == 1)
    [notice] = notices_on(telegram, mid)
    assert "Not delivered to WhatsApp" in (notice.plain_text or "")
    assert "text contains a blocked word" in (notice.plain_text or "")
    [(reply_id,)] = db_rows(settings, "SELECT id FROM outbound")
    assert retry_data(notice) == [f"retry:{reply_id}"]
    await telegram.wait_for(lambda: reaction(telegram, mid) == "💔")
    assert nusasms.replies == []

    press(telegram, notice, f"retry:{reply_id}")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    assert nusasms.replies[0].text == "kata <terlarang> & lain"
    await telegram.wait_for(lambda: reaction(telegram, mid) == "🕊")
    [answer] = telegram.calls_of("answerCallbackQuery")
    assert answer.params["text"] == "Sending again."
    await telegram.wait_for(lambda: notice.reply_markup is None)  # the button is gone


async def test_read_timeout_is_not_resent_and_the_operator_decides(
    make_bridge: Any,
    tmp_path: Path,
    config_data: dict[str, Any],
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    settings = configure(tmp_path, config_data, nusasms={"request_timeout_seconds": 0.5})
    bridge = await make_bridge(settings)
    topic = await open_room(Callbacks.of(bridge, http), telegram)
    nusasms.delay_next(REPLY, 2.0)
    mid = telegram.operator_message(thread_id=topic, text="apakah terkirim?")

    await telegram.wait_for(lambda: len(notices_on(telegram, mid)) == 1)
    [notice] = notices_on(telegram, mid)
    assert "Outcome unknown" in (notice.plain_text or "")
    [(reply_id,)] = db_rows(settings, "SELECT id FROM outbound")
    assert retry_data(notice) == [f"retry:{reply_id}"]
    await telegram.wait_for(lambda: reaction(telegram, mid) == "🤔")
    # The room goes on; the first reply is not sent again behind the operator's back.
    telegram.operator_message(thread_id=topic, text="pesan lain")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 2)
    assert len(nusasms.calls_to(REPLY)) == 2

    press(telegram, notice, f"retry:{reply_id}")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 3)
    assert [r.text for r in nusasms.replies] == [
        "apakah terkirim?",
        "pesan lain",
        "apakah terkirim?",
    ]
    await telegram.wait_for(lambda: reaction(telegram, mid) == "🕊")


# --- durability ----------------------------------------------------------------------------


async def test_replies_wait_out_a_nusasms_outage_and_go_in_order_per_room(
    callbacks: Callbacks,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    settings: Settings,
) -> None:
    first = await open_room(callbacks, telegram)
    second = await open_room(callbacks, telegram, room_id=OTHER_ROOM, number=OTHER_NUMBER)
    await nusasms.go_down()
    for i in range(3):
        telegram.operator_message(thread_id=first, text=f"A{i}")
        telegram.operator_message(thread_id=second, text=f"B{i}")
    # All six are queued and each room's first has failed once: NusaSMS was really away.
    queue = "SELECT count(*), count(error) FROM outbound"
    await telegram.wait_for(lambda: db_rows(settings, queue) == [(6, 2)])
    await nusasms.come_up()

    await nusasms.wait_for(lambda: len(nusasms.replies) == 6, timeout=10)
    assert [r.text for r in nusasms.replies if r.room_id == ROOM] == ["A0", "A1", "A2"]
    assert [r.text for r in nusasms.replies if r.room_id == OTHER_ROOM] == ["B0", "B1", "B2"]
    assert len(nusasms.calls_to(REPLY)) == 6


async def test_kill_9_mid_request_is_not_resent_and_the_operator_is_told(
    bridge_process: Any,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    proc = bridge_process()
    proc.start()
    await proc.wait_ready(http)
    callbacks = proc.callbacks(http)
    topic = await open_room(callbacks, telegram)
    # NusaSMS takes the reply but answers only long after the bridge is gone.
    nusasms.delay_next(REPLY, 30.0)
    mid = telegram.operator_message(thread_id=topic, text="di tengah jalan")
    await nusasms.wait_for(lambda: len(nusasms.calls_to(REPLY)) == 1)
    proc.kill()

    proc.start()
    await proc.wait_ready(http)
    await telegram.wait_for(lambda: len(notices_on(telegram, mid)) == 1, timeout=10)
    [notice] = notices_on(telegram, mid)
    assert "Outcome unknown" in (notice.plain_text or "")
    assert "stopped while sending" in (notice.plain_text or "")
    assert retry_data(notice) == ["retry:1"]
    await telegram.wait_for(lambda: reaction(telegram, mid) == "🤔")
    # The room goes on; the interrupted reply is not sent again behind the operator's back.
    telegram.operator_message(thread_id=topic, text="sesudah restart")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 2)
    assert [r.text for r in nusasms.replies] == ["di tengah jalan", "sesudah restart"]
    assert len(nusasms.calls_to(REPLY)) == 2


@pytest.mark.parametrize("held_by", ["a reply in flight", "a reply in backoff"])
async def test_outbox_rests_while_replies_wait_their_turn(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS, held_by: str
) -> None:
    # Replies queued behind one in flight, or behind one in backoff, must not make the
    # worker spin: it has nothing to do until that one is answered or its backoff ends.
    looks = 0
    look = bridge.store.due_replies

    async def counted(*args: Any) -> Any:
        nonlocal looks
        looks += 1
        return await look(*args)

    bridge.store.due_replies = counted  # type: ignore[method-assign,assignment]
    if held_by == "a reply in flight":
        nusasms.delay_next(REPLY, 1.0)
    else:
        nusasms.fail_next(REPLY, 503)
    for i in range(3):
        telegram.operator_message(thread_id=topic, text=f"antre {i}")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 3, timeout=10)

    assert [r.text for r in nusasms.replies] == ["antre 0", "antre 1", "antre 2"]
    assert looks < 30


async def test_a_notice_that_cannot_be_posted_does_not_hold_up_other_rooms(
    callbacks: Callbacks, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    gone = await open_room(callbacks, telegram)
    other = await open_room(callbacks, telegram, room_id=OTHER_ROOM, number=OTHER_NUMBER)
    nusasms.fail_next(REPLY, 422)
    refused = telegram.operator_message(thread_id=gone, text="ditolak")
    telegram.delete_topic(gone)  # an operator deletes the topic: its notice has nowhere to go
    await nusasms.wait_for(lambda: len(nusasms.calls_to(REPLY)) == 1)

    mid = telegram.operator_message(thread_id=other, text="diterima")
    await telegram.wait_for(lambda: reaction(telegram, mid) == "🕊")
    assert notices_on(telegram, refused) == []


async def test_reply_accepted_while_the_database_is_locked_is_recorded_later_and_sent_once(
    topic: int,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nusasms.delay_next(REPLY, 0.3)
    mid = telegram.operator_message(thread_id=topic, text="sekali saja")
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    # NusaSMS has the reply; the bridge cannot write down that it was accepted.
    blocker = await lock_database(settings)
    try:
        await telegram.wait_for(lambda: "kept in memory" in caplog.text, 15)
    finally:
        blocker.rollback()
        blocker.close()

    # Once the database takes writes again, the outcome it remembered is recorded.
    [accepted] = nusasms.replies
    row = "SELECT state, ref_no, display FROM outbound"
    await telegram.wait_for(
        lambda: db_rows(settings, row) == [("sent", accepted.ref_no, "accepted")], 10
    )
    await telegram.wait_for(lambda: reaction(telegram, mid) == "🕊")
    assert len(nusasms.calls_to(REPLY)) == 1
    assert notices_on(telegram, mid) == []


def head_waits(settings: Settings, attempts: int) -> bool:
    """The first reply is queued again after this many attempts."""
    head = db_rows(settings, "SELECT state, attempts FROM outbound ORDER BY id LIMIT 1")
    return head == [("queued", attempts)]


async def clocked_room(
    make_bridge: Any, settings: Settings, telegram: FakeTelegram, http: aiohttp.ClientSession
) -> tuple[Bridge, Clock, Callbacks, int]:
    """A bridge on a clock the test moves, and one room's topic."""
    clock = Clock()
    bridge = await make_bridge(settings, clock=clock)
    callbacks = Callbacks.of(bridge, http)
    return bridge, clock, callbacks, await open_room(callbacks, telegram)


async def ride_out(
    refusals: int, settings: Settings, telegram: FakeTelegram, clock: Clock, callbacks: Callbacks
) -> None:
    """Let the head reply be refused `refusals` times, moving the clock past each backoff."""
    for attempt in range(1, refusals + 1):
        await telegram.wait_for(functools.partial(head_waits, settings, attempt))
        clock.offset += 2 * 60  # beyond any backoff
        # Any callback wakes the worker, which then finds the reply due by its clock.
        await callbacks.status(status_body(f"wake-{attempt}", "sent"))


async def test_a_long_nusasms_outage_delays_replies_but_loses_none_and_keeps_order(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    _, clock, callbacks, topic = await clocked_room(make_bridge, settings, telegram, http)
    outage = 12  # 24 minutes of outage in all
    nusasms.fail_next(REPLY, 503, times=outage)
    first = telegram.operator_message(thread_id=topic, text="sabar ya")
    telegram.operator_message(thread_id=topic, text="sebentar lagi")

    await ride_out(outage, settings, telegram, clock, callbacks)

    await nusasms.wait_for(lambda: len(nusasms.replies) == 2)
    assert [r.text for r in nusasms.replies] == ["sabar ya", "sebentar lagi"]
    await telegram.wait_for(lambda: reaction(telegram, first) == "🕊")
    # Told once that it waits (not once per refusal), with nothing to press: it is retried.
    [notice] = notices_on(telegram, first)
    assert "Not sent yet" in (notice.plain_text or "")
    assert retry_data(notice) == []
    assert telegram.reactions[first] == ["😴", "🕊"]


async def test_reply_the_database_cannot_take_stays_at_telegram_and_goes_out_later(
    topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS, settings: Settings
) -> None:
    # The update is stored before Telegram is told it arrived: while the database takes no
    # writes it stays unconfirmed at Telegram, and it is sent once the database is back.
    blocker = await lock_database(settings)
    try:
        telegram.operator_message(thread_id=topic, text="tersimpan?")
        await telegram.wait_for(lambda: len(telegram.calls_of("getUpdates")) >= 3, timeout=10)
        assert telegram.pending_updates() == 1
        assert nusasms.calls_to(REPLY) == []
    finally:
        blocker.rollback()
        blocker.close()

    await nusasms.wait_for(lambda: len(nusasms.replies) == 1, timeout=15)
    assert [r.text for r in nusasms.replies] == ["tersimpan?"]
    await telegram.wait_for(lambda: telegram.pending_updates() == 0, timeout=15)


async def test_retrying_a_file_through_an_outage_keeps_one_copy_on_disk(
    make_bridge: Any,
    settings: Settings,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    bridge, clock, callbacks, topic = await clocked_room(make_bridge, settings, telegram, http)
    refusals = 4
    nusasms.fail_next(REPLY, 503, times=refusals)
    content = content_for("video")
    telegram.operator_message(thread_id=topic, extra=media_fields(telegram, "video", content))
    await ride_out(refusals, settings, telegram, clock, callbacks)
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)

    [reply] = nusasms.replies
    accepted = served(bridge, reply.file_url)
    assert await nusasms.fetch(accepted) == content
    refused = [served(bridge, c.body["file_url"]) for c in nusasms.calls_to(REPLY)[:refusals]]
    assert len(set(refused)) == refusals
    for url in refused:
        async with http.get(url) as response:
            assert response.status == 404  # NusaSMS never took it, so nobody may fetch it
    token = accepted.rsplit("/", 1)[-1]
    assert [p.name for p in settings.storage.media_path.iterdir()] == [token]


@pytest.mark.parametrize(
    ("status", "body", "shown"),
    [
        # NusaSMS may have sent it before failing, or took it but answered in a shape the
        # bridge cannot read.
        (500, None, "Outcome unknown"),
        (201, {"error": False, "data": {"refNo": "NSWA-RENAMED"}}, "Outcome unknown"),
        (200, "<html>ok</html>", "Outcome unknown"),
        # NusaSMS says in so many words that it did not send it.
        (200, {"error": True, "message": "Room is closed"}, "Room is closed"),
    ],
)
async def test_answers_that_may_hide_an_acceptance_are_unknown_outcomes_not_failures(
    topic: int,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    status: int,
    body: Any,
    shown: str,
) -> None:
    nusasms.fail_next(REPLY, status, body)
    mid = telegram.operator_message(thread_id=topic, text="terkirim atau tidak?")

    await telegram.wait_for(lambda: len(notices_on(telegram, mid)) == 1)
    assert shown in (notices_on(telegram, mid)[0].plain_text or "")
    await telegram.wait_for(lambda: reaction(telegram, mid) in ("🤔", "💔"))
    assert reaction(telegram, mid) == ("💔" if shown == "Room is closed" else "🤔")
    assert len(nusasms.calls_to(REPLY)) == 1
