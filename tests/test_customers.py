"""One topic per customer: every NusaSMS room of a number is one conversation, old ones too."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bridge.channels.intake import Intake
from bridge.core import store as store_module
from bridge.core.store import Store
from bridge.group.aliases import AliasNotes
from bridge.nusasms import InboxCallback

JAKARTA = timezone(timedelta(hours=7))
NOW = datetime(2026, 11, 27, 5, 0, 0, tzinfo=UTC).timestamp()
NUMBER = "+6281234567890"
CHAT_ID = -1001234567890


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "customers.sqlite3"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(db_path)
    yield opened
    await opened.close()


def inbox(ref_no: str, room_id: str, minute: int, sender: str = "6281234567890") -> InboxCallback:
    return InboxCallback.model_validate(
        {
            "room_id": room_id,
            "ref_no": ref_no,
            "text": f"text of {ref_no}",
            "inbox_date": f"2026-11-27 11:{minute:02d}:00",
            "sender_number": sender,
        }
    )


def intake(store: Store) -> Intake:
    return Intake(store, tz=JAKARTA, on_inbound=lambda: None, clock=lambda: NOW)


def committed(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


class Notes:
    """Stands in for Topics.notify at the Telegram boundary: records each post."""

    def __init__(self) -> None:
        self.posted: list[tuple[int | None, str]] = []

    async def notify(self, topic_id: int | None, html: str) -> Any:
        self.posted.append((topic_id, html))
        return None


async def test_a_new_room_of_the_same_number_lands_in_the_same_conversation(
    store: Store, db_path: Path
) -> None:
    await intake(store).inbox(inbox("r-1", "room-old", 0))
    await store.set_topic("room-old", 501)
    # NusaSMS opens a new room after a template was answered; the number is written otherwise.
    await intake(store).inbox(inbox("r-2", "room-new", 5, sender="+62 812-3456-7890"))

    room = await store.room_by_topic(501)
    assert room is not None
    assert (room.room_id, room.number, room.reply_room) == ("room-old", NUMBER, "room-new")
    assert [m.ref_no for m in await store.waiting("room-old", 10)] == ["r-1", "r-2"]
    assert committed(db_path, "SELECT count(*) FROM rooms") == [(1,)]
    assert [w.wa_room_id for w in await store.wa_rooms("room-old")] == ["room-old", "room-new"]


async def test_replies_go_to_the_latest_room_even_when_an_older_one_writes_late(
    store: Store,
) -> None:
    await intake(store).inbox(inbox("r-1", "room-a", 0))
    await intake(store).inbox(inbox("r-2", "room-b", 10))
    # A late callback of the older room must not take the replies back there.
    await intake(store).inbox(inbox("r-3", "room-a", 5))

    room = await store.customer_by_number(NUMBER)
    assert room is not None
    assert room.reply_room == "room-b"
    assert room.last_inbox_at == datetime(2026, 11, 27, 11, 10, tzinfo=JAKARTA).timestamp()


async def test_another_number_is_another_customer(store: Store) -> None:
    await intake(store).inbox(inbox("r-1", "room-a", 0))
    await intake(store).inbox(inbox("r-2", "room-b", 1, sender="6289900001111"))

    first, second = (
        await store.customer_by_number(NUMBER),
        await store.customer_by_number("+6289900001111"),
    )
    assert first is not None
    assert second is not None
    assert (first.room_id, second.room_id) == ("room-a", "room-b")


async def test_a_customer_added_by_new_is_idempotent_and_their_answer_lands_there(
    store: Store,
) -> None:
    added = await store.add_customer(NUMBER, "Budi", NOW)
    again = await store.add_customer(NUMBER, "Someone else", NOW + 1)
    assert (added.room_id, added.name, added.last_inbox_at, added.reply_room) == (
        "new:" + NUMBER,
        "Budi",
        0,
        None,
    )
    assert again == added
    await store.set_topic(added.room_id, 777)

    await intake(store).inbox(inbox("r-1", "room-fresh", 0))

    room = await store.room_by_topic(777)
    assert room is not None
    assert (room.room_id, room.reply_room, room.name) == ("new:" + NUMBER, "room-fresh", "Budi")
    assert [m.ref_no for m in await store.waiting(room.room_id, 10)] == ["r-1"]


def old_database(path: Path) -> None:
    """A database of the schema before one topic per customer, with two topics for one number."""
    step = next(
        i for i, sql in enumerate(store_module.MIGRATIONS) if "CREATE TABLE wa_rooms" in sql
    )
    before = store_module.MIGRATIONS[:step]
    with sqlite3.connect(path, isolation_level=None) as db:
        for number, step in enumerate(before, start=1):
            for statement in store_module._statements(step):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
        rows = [
            ("o-1", "room-1", "6281234567890", "first visit", 100.0, 100.0),
            ("o-2", "room-2", "6281234567890", "second visit", 900.0, 900.0),
            ("o-3", "room-3", "6289900001111", "someone else", 500.0, 500.0),
        ]
        db.executemany("INSERT INTO intake VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.execute("UPDATE rooms SET topic_id = 11, created_at = 100 WHERE room_id = 'room-1'")
        db.execute("UPDATE rooms SET topic_id = 22, created_at = 900 WHERE room_id = 'room-2'")
        db.execute("UPDATE rooms SET topic_id = 33 WHERE room_id = 'room-3'")
        db.execute("UPDATE inbound SET posted_at = received_at, telegram_message_id = 1")
        db.execute(
            "INSERT INTO outbound (room_id, operator_message_id, kind, text, created_at)"
            " VALUES ('room-1', 4242, 'text', 'old answer', 150)"
        )


async def test_an_old_database_merges_two_topics_of_one_number_into_the_newest(
    db_path: Path,
) -> None:
    old_database(db_path)
    store = await Store.open(db_path)
    try:
        customer = await store.customer_by_number(NUMBER)
        assert customer is not None
        assert (customer.room_id, customer.topic_id, customer.reply_room) == (
            "room-2",
            22,
            "room-2",
        )
        assert customer.last_inbox_at == 900.0
        # A reply written in the older topic reaches the customer's latest room.
        in_old_topic = await store.room_by_topic(11)
        assert in_old_topic == customer
        other = await store.room_by_topic(33)
        assert other is not None
        assert other.room_id == "room-3"
        assert [w.wa_room_id for w in await store.wa_rooms("room-2")] == ["room-1", "room-2"]
        assert committed(db_path, "SELECT room_id FROM outbound") == [("room-2",)]
        # The older NusaSMS room writing again lands in the customer's topic too.
        await intake(store).inbox(inbox("n-1", "room-1", 0))
        assert [m.ref_no for m in await store.waiting("room-2", 10)] == ["n-1"]
    finally:
        await store.close()


async def test_the_older_topic_gets_one_note_pointing_to_the_customers_topic(
    db_path: Path,
) -> None:
    old_database(db_path)
    store = await Store.open(db_path)
    try:
        notes = Notes()
        worker = AliasNotes(store, notes, chat_id=CHAT_ID)
        assert await worker.post_due() == 1
        assert await worker.post_due() == 0
        assert len(notes.posted) == 1
        topic_id, html = notes.posted[0]
        assert topic_id == 11
        assert "https://t.me/c/1234567890/22" in html
        assert "+62 812-3456-7890" in html
    finally:
        await store.close()


async def test_a_crash_between_claiming_and_posting_the_note_never_doubles_it(
    db_path: Path,
) -> None:
    old_database(db_path)
    store = await Store.open(db_path)
    # The worker claimed the note and the process died (kill -9) before or after the post.
    assert await store.claim_alias_note(11)
    await store.close()

    store = await Store.open(db_path)
    try:
        notes = Notes()
        assert await AliasNotes(store, notes, chat_id=CHAT_ID).post_due() == 0
        assert notes.posted == []
    finally:
        await store.close()


async def test_the_customers_answer_after_a_broadcast_lands_in_their_topic_and_gets_the_reply(
    bridge: Any, telegram: Any, nusasms: Any, http: Any
) -> None:
    from bridge.group.render import topic_name
    from tests.conftest import CALLBACK_SECRET
    from tests.fakes.nusasms import DEFAULT_API_KEY
    from tests.test_ops_commands import answer_to, command

    nusasms.callback_url = f"http://127.0.0.1:{bridge.port}/callbacks/{CALLBACK_SECRET}/wa/inbox"
    first = await nusasms.customer_answers(NUMBER, "halo")
    name = topic_name(NUMBER.lstrip("+"))
    await telegram.wait_for(lambda: any(t.name == name for t in telegram.topics.values()))
    topic = next(t.thread_id for t in telegram.topics.values() if t.name == name)

    # A template goes out (as the outbox would send it); NusaSMS opens a new room on the answer.
    async with http.post(
        f"{nusasms.base_url}/wa_official/message/broadcast",
        json={
            "destination": NUMBER.lstrip("+"),
            "destination_name": "Budi",
            "template_id": nusasms.templates[0]["id"],
            "channel_id": nusasms.channels[0]["id"],
            "parameters": {"body": [{"key": "1", "value": "text", "value_text": "Budi"}]},
        },
        headers={"APIKey": DEFAULT_API_KEY},
    ) as response:
        assert response.status == 201
    second = await nusasms.customer_answers(NUMBER, "jawaban saya")
    assert second["room_id"] != first["room_id"]
    await telegram.wait_for(
        lambda: any("jawaban saya" in (m.plain_text or "") for m in telegram.messages_in(topic))
    )
    assert [t.name for t in telegram.topics.values()].count(name) == 1

    telegram.operator_message(thread_id=topic, text="Siap kak", user_id=777)
    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    assert nusasms.replies[0].room_id == second["room_id"]

    asked = command(telegram, "/info", thread_id=topic)
    text = (await answer_to(telegram, asked)).plain_text or ""
    assert first["room_id"] in text
    assert second["room_id"] in text
    assert "Templates sent: 0" in text


async def test_new_creates_the_customers_topic_and_their_answer_lands_in_it(
    bridge: Any, telegram: Any, nusasms: Any
) -> None:
    from bridge.group.render import topic_name
    from tests.conftest import CALLBACK_SECRET
    from tests.test_ops_commands import answer_to, command

    asked = command(telegram, "/new 0812-3456-7890 Budi Santoso")
    answer = await answer_to(telegram, asked)
    title = topic_name(NUMBER, "Budi Santoso")
    [topic] = [t for t in telegram.topics.values() if t.name == title]
    assert answer.thread_id is None
    assert f'/{topic.thread_id}"' in (answer.text or "")
    shown = [m.plain_text or "" for m in telegram.messages_in(topic.thread_id)]
    assert any("No reply window is open yet" in t for t in shown)
    assert any("/template NAME" in t for t in shown)
    # The template list follows, a button each, to choose the first message.
    [listing] = [m for m in telegram.messages_in(topic.thread_id) if m.reply_markup]
    assert "bridge_greeting" in (listing.plain_text or "")

    again = await answer_to(telegram, command(telegram, "/new +62 812 3456 7890"))
    assert "already has a topic" in (again.plain_text or "")
    assert [t.name for t in telegram.topics.values()].count(title) == 1

    nusasms.callback_url = f"http://127.0.0.1:{bridge.port}/callbacks/{CALLBACK_SECRET}/wa/inbox"
    await nusasms.customer_answers(NUMBER, "siapa ini?")
    await telegram.wait_for(
        lambda: any(
            "siapa ini?" in (m.plain_text or "") for m in telegram.messages_in(topic.thread_id)
        )
    )
    assert len(telegram.topics) == 1


async def test_new_with_an_invalid_number_is_refused_with_the_expected_format(
    bridge: Any, telegram: Any
) -> None:
    from bridge.core import phones
    from tests.test_ops_commands import answer_to, command

    answer = await answer_to(telegram, command(telegram, "/new 12ab"))
    assert "is not a phone number" in (answer.plain_text or "")
    assert phones.EXPECTED_FORMAT in (answer.plain_text or "")
    assert not telegram.topics
    assert await bridge.store.customer_by_number("+12") is None
