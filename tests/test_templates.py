"""Templates, end to end over real HTTP: the catalog from NusaSMS, /templates, /template,
the guided flow, and the send path (a broadcast from the durable outbound queue, its
rendered text shown in the customer's topic with the reactions replies get)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bridge.app import Bridge
from bridge.replies import queue_template
from bridge.templates import TemplateMessage, TemplateValues
from tests.conftest import NUMBER, ROOM, Callbacks
from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import FakeTelegram
from tests.test_replies import open_room, reaction, status_body

BROADCAST = "/wa_official/message/broadcast"
OPERATOR = 777
GREETING_ID = "3f1c2a9e-5b7d-4c1e-9a2b-6d8e0f1a2b3c"
CHANNEL_ID = "9b2e4f6a-1c3d-4e5f-8a7b-0c1d2e3f4a5b"


@pytest.fixture
async def topic(callbacks: Callbacks, telegram: FakeTelegram) -> int:
    """The topic of a customer (ROOM) who wrote."""
    return await open_room(callbacks, telegram)


def greeting(name: str = "Budi") -> TemplateMessage:
    """The emulator's default template (`Halo {{1}}, ...`) filled in."""
    return TemplateMessage(
        template_id=GREETING_ID,
        template_name="bridge_greeting",
        channel_id=CHANNEL_ID,
        values=TemplateValues(body=(name,)),
        text=f"Halo {name}, ada yang bisa kami bantu?",
    )


async def queue(bridge: Bridge, message: TemplateMessage, request_message_id: int) -> int | None:
    room = await bridge.store.room(ROOM)
    assert room is not None
    queued = await queue_template(
        bridge.store,
        room,
        message,
        request_message_id=request_message_id,
        operator_id=OPERATOR,
        now=time.time(),
    )
    bridge.wake_outbound()
    return queued


def posts_with(telegram: FakeTelegram, thread_id: int, text: str) -> list[Any]:
    return [m for m in telegram.messages_in(thread_id) if text in (m.text or "")]


async def test_a_queued_template_is_broadcast_to_the_number_and_shown_with_its_reactions(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS, callbacks: Callbacks
) -> None:
    assert await queue(bridge, greeting(), 5001) is not None
    assert await queue(bridge, greeting(), 5001) is None  # asked twice: queued once

    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1)
    [sent] = nusasms.broadcasts
    assert sent.destination == NUMBER
    assert sent.template_id == GREETING_ID
    assert sent.channel_id == CHANNEL_ID
    assert sent.parameters == {"body": [{"key": "1", "value": "text", "value_text": "Budi"}]}
    await telegram.wait_for(lambda: len(posts_with(telegram, topic, "Halo Budi")) == 1)
    [post] = posts_with(telegram, topic, "Halo Budi")
    await telegram.wait_for(lambda: reaction(telegram, post.message_id) == "🕊")

    for status, emoji in (("delivered", "👌"), ("read", "👀")):
        assert (await callbacks.status(status_body(sent.ref_no, status))).status == 200
        await telegram.wait_for(lambda e=emoji: reaction(telegram, post.message_id) == e)  # type: ignore[misc]
    assert len(nusasms.calls_to(BROADCAST)) == 1
