"""Templates, end to end over real HTTP: the catalog from NusaSMS, /templates, /template,
the guided flow, and the send path (a broadcast from the durable outbound queue, its
rendered text shown in the customer's topic with the reactions replies get)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from bridge.app import Bridge
from bridge.channels.templates import TemplateMessage, TemplateValues
from bridge.core.config import Settings
from bridge.group.replies import queue_template
from tests.conftest import NUMBER, ROOM, Callbacks
from tests.fakes.nusasms import FakeNusaSMS
from tests.fakes.telegram import FakeTelegram
from tests.test_replies import (
    db_rows,
    media_fields,
    notices_on,
    open_room,
    press,
    reaction,
    retry_data,
    status_body,
)

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


# --- templates of every shape, as NusaSMS may give them ------------------------------------

ORDER_ID = "11111111-2222-4333-8444-555555555555"
PROMO_ID = "22222222-3333-4444-8555-666666666666"
INVOICE_ID = "33333333-4444-4555-8666-777777777777"
DRAFT_ID = "44444444-5555-4666-8777-888888888888"

ORDER = {  # a dict header with TEXT, a plain body, a URL button with a suffix
    "id": ORDER_ID,
    "name": "order_shipped",
    "header": {"format": "TEXT", "text": "Pesanan {{1}}", "example": {"header_text": ["A1"]}},
    "body": "Halo {{1}}, pesanan Anda dikirim lewat {{2}}.",
    "footer": "Toko Maju",
    "buttons": [
        {"type": "URL", "text": "Lacak", "url": "https://toko.example/lacak/{{1}}"},
        {"type": "QUICK_REPLY", "text": "Terima kasih"},
    ],
    "status": "APPROVED",
    "category": "UTILITY",
    "language": "id",
}
PROMO = {  # Meta-style components with an IMAGE header
    "id": PROMO_ID,
    "name": "promo_photo",
    "components": [
        {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["https://x"]}},
        {"type": "BODY", "text": "Diskon {{1}} untuk Anda!"},
    ],
    "status": "APPROVED",
    "category": "MARKETING",
}
INVOICE = {  # components given as the body list, a DOCUMENT header
    "id": INVOICE_ID,
    "name": "invoice_ready",
    "body": [
        {"type": "HEADER", "format": "DOCUMENT"},
        {"type": "BODY", "text": "Tagihan Anda sudah terbit."},
    ],
    "status": "APPROVED",
    "category": "UTILITY",
}
DRAFT = {
    "id": DRAFT_ID,
    "name": "order_cancelled",
    "header": None,
    "body": "Pesanan {{1}} dibatalkan.",
    "footer": None,
    "status": "REJECTED",
    "category": "UTILITY",
}


@pytest.fixture
def nusasms_templates(nusasms: FakeNusaSMS) -> FakeNusaSMS:
    nusasms.templates.extend([ORDER, PROMO, INVOICE, DRAFT])
    return nusasms


@pytest.fixture
async def bridge(
    make_bridge: Callable[[Settings], Any], settings: Settings, nusasms_templates: FakeNusaSMS
) -> Bridge:
    started: Bridge = await make_bridge(settings)
    return started


def command(telegram: FakeTelegram, thread_id: int | None, text: str, **kwargs: Any) -> int:
    """An operator's command message, with the entity Telegram marks it with."""
    word = text.split()[0]
    return telegram.operator_message(
        thread_id=thread_id,
        text=text,
        entities=[{"type": "bot_command", "offset": 0, "length": len(word)}],
        **kwargs,
    )


def answers_to(telegram: FakeTelegram, message_id: int) -> list[str]:
    return [m.plain_text or m.text or "" for m in notices_on(telegram, message_id)]


async def answer(telegram: FakeTelegram, message_id: int) -> str:
    await telegram.wait_for(lambda: bool(notices_on(telegram, message_id)))
    return answers_to(telegram, message_id)[0]


async def test_templates_lists_approved_ones_with_usage_and_the_others_apart(
    bridge: Bridge, telegram: FakeTelegram
) -> None:
    asked = command(telegram, None, "/templates")

    text = await answer(telegram, asked)
    assert "order_shipped (UTILITY · id)" in text
    assert "Halo {{1}}, pesanan Anda dikirim lewat {{2}}." in text
    assert "/template order_shipped <header {{1}}> | <{{1}}> | <{{2}}> | <button" in text
    assert "promo_photo (MARKETING)" in text
    not_approved = text.split("Not approved")[1]
    assert "order_cancelled: REJECTED" in not_approved
    assert "order_cancelled" not in text.split("Not approved")[0]
    [notice] = notices_on(telegram, asked)
    buttons = retry_data(notice)
    assert buttons == [
        f"tpl:{GREETING_ID}",
        f"tpl:{ORDER_ID}",
        f"tpl:{PROMO_ID}",
        f"tpl:{INVOICE_ID}",
    ]


async def test_quoted_values_with_spaces_fill_header_body_and_url_button(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    command(telegram, topic, "/template order_shipped A-17 \"Budi Santoso\" 'JNE REG' ORD17")

    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1)
    [sent] = nusasms.broadcasts
    assert sent.template_id == ORDER_ID
    assert sent.parameters == {
        "header": [{"key": "1", "value": "text", "value_text": "A-17"}],
        "body": [
            {"key": "1", "value": "text", "value_text": "Budi Santoso"},
            {"key": "2", "value": "text", "value_text": "JNE REG"},
        ],
        "buttons": [{"key": "0", "value": "url", "value_text": "ORD17"}],
    }


async def test_pipes_separate_values_with_spaces(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    command(telegram, topic, "/template order_shipped A-17 | Budi Santoso | JNE REG | ORD17")

    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1)
    [sent] = nusasms.broadcasts
    assert sent.parameters == {
        "header": [{"key": "1", "value": "text", "value_text": "A-17"}],
        "body": [
            {"key": "1", "value": "text", "value_text": "Budi Santoso"},
            {"key": "2", "value": "text", "value_text": "JNE REG"},
        ],
        "buttons": [{"key": "0", "value": "url", "value_text": "ORD17"}],
    }
    await telegram.wait_for(lambda: bool(posts_with(telegram, topic, "Pesanan A-17")))
    [post] = posts_with(telegram, topic, "Pesanan A-17")
    assert "Halo Budi Santoso, pesanan Anda dikirim lewat JNE REG." in (post.text or "")
    assert "https://toko.example/lacak/ORD17" in (post.text or "")


async def test_a_wrong_count_is_refused_before_any_call_naming_what_it_takes(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    asked = command(telegram, topic, "/template order_shipped A-17 Budi")

    text = await answer(telegram, asked)
    assert "takes 4 value(s) (header {{1}}, {{1}}, {{2}}, button “Lacak” URL suffix), got 2" in (
        text
    )
    assert "/template order_shipped" in text
    assert nusasms.calls_to(BROADCAST) == []
    assert db_rows(bridge.settings, "SELECT count(*) FROM outbound") == [(0,)]


async def test_an_unknown_name_gets_close_matches(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    asked = command(telegram, topic, "/template order_shiped A | B | C | D")

    text = await answer(telegram, asked)
    assert "No template is called order_shiped. Did you mean: order_shipped" in text
    assert nusasms.calls_to(BROADCAST) == []


async def test_a_template_not_approved_is_refused_with_its_status(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    asked = command(telegram, topic, "/template order_cancelled A-17")

    text = await answer(telegram, asked)
    assert "order_cancelled is not approved (status REJECTED)" in text
    assert nusasms.calls_to(BROADCAST) == []


async def test_a_new_template_is_found_without_a_restart(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    await answer(telegram, command(telegram, None, "/templates"))  # the catalog is read
    nusasms.templates.append(
        {
            **DRAFT,
            "id": "55555555-1111-4111-8111-111111111111",
            "name": "brand_new",
            "status": "APPROVED",
        }
    )
    bridge.catalog._refreshed_at = -1e9  # a minute has passed: a miss reads again
    command(telegram, topic, "/template brand_new X1")

    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1)
    assert nusasms.broadcasts[0].template_id == "55555555-1111-4111-8111-111111111111"


async def test_media_header_by_url(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    command(telegram, topic, "/template promo_photo https://cdn.example/p.jpg | 20%")

    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1)
    assert nusasms.broadcasts[0].parameters == {
        "header": [{"key": "1", "value": "image", "value_text": "https://cdn.example/p.jpg"}],
        "body": [{"key": "1", "value": "text", "value_text": "20%"}],
    }


async def test_media_header_by_the_file_replied_to_is_served_from_the_bridge(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    photo = telegram.operator_message(
        thread_id=topic,
        extra={**media_fields(telegram, "photo", b"JPEG promo"), "caption": "// header"},
    )
    command(telegram, topic, "/template promo_photo 20%", reply_to_message_id=photo)

    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1)
    header = (nusasms.broadcasts[0].parameters or {})["header"][0]
    assert header["value"] == "image"
    url = header["value_text"]
    assert url.startswith("http://127.0.0.1:8080/media/"), url
    assert telegram.token not in url
    served = f"http://127.0.0.1:{bridge.port}{url.removeprefix('http://127.0.0.1:8080')}"
    assert await nusasms.fetch(served) == b"JPEG promo"
    assert nusasms.replies == []  # the note stayed in Telegram


async def test_the_guided_flow_asks_each_value_then_previews_and_sends(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    listing = command(telegram, topic, "/templates")
    await answer(telegram, listing)
    [menu] = notices_on(telegram, listing)
    press(telegram, menu, f"tpl:{ORDER_ID}")
    for step, value in enumerate(("A-17", "Budi Santoso", "JNE", "ORD17"), start=1):
        await telegram.wait_for(
            lambda s=step: any(f"({s} of 4)" in (m.text or "") for m in telegram.messages)  # type: ignore[misc]
        )
        telegram.operator_message(thread_id=topic, text=value)
    await telegram.wait_for(lambda: any("Preview" in (m.text or "") for m in telegram.messages))
    [preview] = [m for m in telegram.messages if "Preview" in (m.text or "")]
    assert "Halo Budi Santoso, pesanan Anda dikirim lewat JNE." in (preview.text or "")
    assert nusasms.calls_to(BROADCAST) == []  # nothing before Send
    assert nusasms.replies == []  # the answers never reached the customer
    send, _cancel = retry_data(preview)
    press(telegram, preview, send)
    press(telegram, preview, send)  # twice: sent once

    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1)
    assert (nusasms.broadcasts[0].parameters or {})["body"][0]["value_text"] == "Budi Santoso"
    await telegram.wait_for(lambda: bool(posts_with(telegram, topic, "Pesanan A-17")))
    assert len(nusasms.calls_to(BROADCAST)) == 1


async def test_cancel_stops_the_guided_flow(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    listing = command(telegram, topic, "/templates")
    await answer(telegram, listing)
    press(telegram, notices_on(telegram, listing)[0], f"tpl:{ORDER_ID}")
    await telegram.wait_for(lambda: any("(1 of 4)" in (m.text or "") for m in telegram.messages))
    cancel = command(telegram, topic, "/cancel")
    assert await answer(telegram, cancel) == "Cancelled."
    telegram.operator_message(thread_id=topic, text="a normal reply")

    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)
    assert nusasms.replies[0].text == "a normal reply"


async def test_a_broadcast_422_shows_the_reason_verbatim_with_retry(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    reason = {
        "detail": [
            {"loc": ["body", "destination"], "msg": "nomor tidak valid", "type": "value_error"}
        ]
    }
    nusasms.fail_next(BROADCAST, 422, reason)
    await queue(bridge, greeting(), 6001)

    await telegram.wait_for(lambda: bool(posts_with(telegram, topic, "Halo Budi")))
    [post] = posts_with(telegram, topic, "Halo Budi")
    await telegram.wait_for(lambda: reaction(telegram, post.message_id) == "💔")
    await telegram.wait_for(lambda: bool(notices_on(telegram, post.message_id)))
    [notice] = notices_on(telegram, post.message_id)
    assert "nomor tidak valid" in (notice.text or "")
    [retry] = retry_data(notice)
    press(telegram, notice, retry)
    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1)


async def test_the_emulator_refuses_a_wrong_parameter_count_with_a_reason(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    wrong = TemplateMessage(
        template_id=GREETING_ID,
        template_name="bridge_greeting",
        channel_id=CHANNEL_ID,
        values=TemplateValues(body=("Budi", "extra")),
        text="Halo Budi",
    )
    await queue(bridge, wrong, 6002)

    await telegram.wait_for(lambda: bool(posts_with(telegram, topic, "Halo Budi")))
    [post] = posts_with(telegram, topic, "Halo Budi")
    await telegram.wait_for(lambda: bool(notices_on(telegram, post.message_id)))
    text = notices_on(telegram, post.message_id)[0].text or ""
    assert "expects 1 body parameter(s), got 2" in text
    assert nusasms.broadcasts == []


async def test_a_template_goes_out_when_the_reply_window_has_closed(
    bridge: Bridge, callbacks: Callbacks, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    from tests.test_replies import jakarta

    topic = await open_room(callbacks, telegram, inbox_date=jakarta(25 * 3600))
    command(telegram, topic, "/template bridge_greeting Budi")

    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1)
    assert nusasms.broadcasts[0].destination == NUMBER


@pytest.mark.parametrize(
    ("left_as", "broadcasts", "emoji"), [("queued", 1, "🕊"), ("sending", 0, "🤔")]
)
async def test_a_crash_between_storing_and_sending_never_broadcasts_twice(
    make_bridge: Callable[[Settings], Any],
    settings: Settings,
    http: aiohttp.ClientSession,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    left_as: str,
    broadcasts: int,
    emoji: str,
) -> None:
    first: Bridge = await make_bridge(settings)
    topic = await open_room(Callbacks(f"http://127.0.0.1:{first.port}", http), telegram)
    await first.stop()
    # What kill -9 leaves: the row stored (queued), or its request in flight (sending).
    room = await _room_row(settings)
    with sqlite3.connect(settings.storage.path) as db:
        db.execute(
            "INSERT INTO outbound (room_id, operator_message_id, operator_id, kind, text, "
            "template, state, created_at, queued_at) "
            "VALUES (?, 7001, ?, 'template', ?, ?, ?, ?, ?)",
            (
                room,
                OPERATOR,
                greeting().text,
                greeting().to_json(),
                left_as,
                time.time(),
                time.time(),
            ),
        )
    await make_bridge(settings)

    await telegram.wait_for(lambda: bool(posts_with(telegram, topic, "Halo Budi")))
    [post] = posts_with(telegram, topic, "Halo Budi")
    await telegram.wait_for(lambda: reaction(telegram, post.message_id) == emoji)
    assert len(nusasms.calls_to(BROADCAST)) == broadcasts


async def _room_row(settings: Settings) -> str:
    with sqlite3.connect(settings.storage.path) as db:
        return str(db.execute("SELECT room_id FROM rooms").fetchone()[0])


async def test_status_counts_templates_sent_today(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    await queue(bridge, greeting(), 6003)
    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1)
    await telegram.wait_for(
        lambda: bool(db_rows(bridge.settings, "SELECT 1 FROM outbound WHERE sent_at IS NOT NULL"))
    )
    asked = command(telegram, None, "/status")
    assert "Templates sent: 1 today, 0 yesterday" in await answer(telegram, asked)


async def test_kill_9_while_the_broadcast_is_in_flight_never_sends_it_again(
    bridge_process: Callable[[], Any],
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
    http: aiohttp.ClientSession,
) -> None:
    proc = bridge_process()
    proc.start()
    await proc.wait_ready(http)
    topic = await open_room(Callbacks(f"http://127.0.0.1:{proc.port}", http), telegram)
    nusasms.delay_next(BROADCAST, 30)  # NusaSMS takes it, but answers too late
    command(telegram, topic, "/template bridge_greeting Budi")
    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1, timeout=10)
    proc.kill()

    proc.start()
    await proc.wait_ready(http)

    def unknown_shown() -> bool:
        posts = posts_with(telegram, topic, "Halo Budi")
        return bool(posts) and reaction(telegram, posts[-1].message_id) == "🤔"

    await telegram.wait_for(unknown_shown, timeout=15)
    post = posts_with(telegram, topic, "Halo Budi")[-1]
    await telegram.wait_for(lambda: bool(notices_on(telegram, post.message_id)), timeout=10)
    assert "Outcome unknown" in (notices_on(telegram, post.message_id)[0].text or "")
    assert len(nusasms.calls_to(BROADCAST)) == 1
    proc.stop()


# --- reading templates and choosing a channel, without the bridge ---------------------------


def test_every_template_shape_reads_to_the_same_understanding() -> None:
    from bridge.channels.templates import spec_of
    from bridge.nusasms import Template

    order = spec_of(Template.model_validate(ORDER))
    assert (order.header_kind, order.header_text, order.body_values) == ("text", "Pesanan {{1}}", 2)
    assert [b.index for b in order.suffix_buttons] == [0]
    assert order.language == "id"
    promo = spec_of(Template.model_validate(PROMO))
    assert (promo.header_kind, promo.body, promo.category) == (
        "image",
        "Diskon {{1}} untuk Anda!",
        "MARKETING",
    )
    invoice = spec_of(Template.model_validate(INVOICE))
    assert (invoice.header_kind, invoice.slots()) == ("document", ["header document URL"])
    meta = spec_of(
        Template.model_validate(
            {
                "id": "x",
                "name": "meta",
                "status": "approved",
                "category": "UTILITY",
                "language": {"code": "en_US"},
                "components": [
                    {"type": "BODY", "text": "Code {{1}} expires in {{2}} min"},
                    {
                        "type": "BUTTONS",
                        "buttons": [{"type": "URL", "text": "Go", "url": "https://a/{{1}}"}],
                    },
                ],
            }
        )
    )
    assert (meta.approved, meta.language, meta.slots()) == (
        True,
        "en_US",
        ["{{1}}", "{{2}}", "button “Go” URL suffix"],
    )
    assert not spec_of(Template.model_validate(DRAFT)).approved


def test_a_stored_template_message_reads_back_the_same() -> None:
    from bridge.channels.templates import spec_of
    from bridge.nusasms import Template

    order = spec_of(Template.model_validate(ORDER))
    message = order.message(CHANNEL_ID, ["A-17", "Budi", "JNE", "ORD17"])
    assert TemplateMessage.from_json(message.to_json()) == message
    with pytest.raises(ValueError, match="not a stored template message"):
        TemplateMessage.from_json("{}")


@pytest.mark.parametrize(
    ("raw", "values"),
    [
        ("", []),
        ("a | b c | 'd'", ["a", "b c", "d"]),
        ('"Budi Santoso" ORD-1', ["Budi Santoso", "ORD-1"]),
        ("a|", ["a", ""]),
    ],
)
def test_values_split_on_pipes_or_like_a_shell(raw: str, values: list[str]) -> None:
    from bridge.group.picker import split_values

    assert split_values(raw) == values


async def test_several_channels_need_one_configured_or_named(nusasms: FakeNusaSMS) -> None:
    from bridge.channels.templates import Catalog, ChannelError
    from bridge.nusasms import NusaSMSClient

    second = "0c0c0c0c-1111-4222-8333-444444444444"
    nusasms.channels.append({**nusasms.channels[0], "id": second})
    async with NusaSMSClient(nusasms.api_key, base_url=nusasms.base_url) as client:
        with pytest.raises(ChannelError) as refused:
            await Catalog(client).channel()
        assert refused.value.channels == (CHANNEL_ID, second)
        assert await Catalog(client, channel_id=second).channel() == second
        assert await Catalog(client).channel(CHANNEL_ID) == CHANNEL_ID
        with pytest.raises(ChannelError, match="unknown channel nope"):
            await Catalog(client).channel("nope")


async def test_a_guided_flow_left_for_ten_minutes_is_forgotten(
    make_bridge: Callable[..., Any],
    settings: Settings,
    nusasms_templates: FakeNusaSMS,
    http: aiohttp.ClientSession,
    telegram: FakeTelegram,
    nusasms: FakeNusaSMS,
) -> None:
    from tests.test_replies import Clock

    clock = Clock()
    started: Bridge = await make_bridge(settings, clock=clock)
    topic = await open_room(Callbacks(f"http://127.0.0.1:{started.port}", http), telegram)
    listing = command(telegram, topic, "/templates")
    await answer(telegram, listing)
    press(telegram, notices_on(telegram, listing)[0], f"tpl:{GREETING_ID}")
    await telegram.wait_for(lambda: any("(1 of 1)" in (m.text or "") for m in telegram.messages))
    clock.offset = 601.0
    telegram.operator_message(thread_id=topic, text="Budi")

    await nusasms.wait_for(lambda: len(nusasms.replies) == 1)  # an ordinary reply again
    assert nusasms.replies[0].text == "Budi"
    assert nusasms.broadcasts == []


async def test_templates_names_another_channel_and_several_unconfigured_are_refused(
    bridge: Bridge, topic: int, telegram: FakeTelegram, nusasms: FakeNusaSMS
) -> None:
    second = "0c0c0c0c-1111-4222-8333-444444444444"
    nusasms.channels.append({**nusasms.channels[0], "id": second})
    bridge.catalog._refreshed_at = None  # the channels are read again
    bridge.catalog._templates = None

    refused = command(telegram, topic, "/template bridge_greeting Budi")
    text = await answer(telegram, refused)
    assert "several channels; set nusasms.channel_id or name one" in text
    assert CHANNEL_ID in text
    assert second in text
    listing = command(telegram, topic, f"/templates {second}")
    assert f"(channel {second})" in await answer(telegram, listing)
    press(telegram, notices_on(telegram, listing)[0], f"tpl:{GREETING_ID}:1")
    await telegram.wait_for(lambda: any("(1 of 1)" in (m.text or "") for m in telegram.messages))
    telegram.operator_message(thread_id=topic, text="Budi")
    await telegram.wait_for(lambda: any("Preview" in (m.text or "") for m in telegram.messages))
    [preview] = [m for m in telegram.messages if "Preview" in (m.text or "")]
    press(telegram, preview, retry_data(preview)[0])

    await nusasms.wait_for(lambda: len(nusasms.broadcasts) == 1)
    assert nusasms.broadcasts[0].channel_id == second
