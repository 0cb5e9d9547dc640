"""Bot texts in English or Bahasa Indonesia (`telegram.language`).

The catalog is checked against the code itself: every `_("...")` / `N_("...")` literal in
bridge/ (found by parsing it) has an Indonesian entry, no entry is left unused, and each
translation keeps the English text's placeholders and HTML tags.
"""

from __future__ import annotations

import ast
import re
import string
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from bridge.core import texts
from bridge.core.config import load_settings
from bridge.core.texts import _
from bridge.core.texts_id import INDONESIAN
from bridge.group import feedback, render
from tests.conftest import ROOM, Callbacks, inbox_body, write_config
from tests.fakes.telegram import FakeTelegram, SentMessage

PACKAGE = Path(__file__).parent.parent / "bridge"
JAKARTA = ZoneInfo("Asia/Jakarta")
NUMBER = "6281234567890"
_MARKERS = ("_", "N_")


@pytest.fixture(autouse=True)
def english_afterwards() -> Iterator[None]:
    """The language is process-wide: leave it as every other test expects it."""
    yield
    texts.use("en")


def marked_literals() -> dict[str, list[str]]:
    """Every literal passed to `_`/`N_` (or `texts._`) in bridge/, with where it is."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else None
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                name = func.attr if func.value.id == "texts" else None
            if name not in _MARKERS:
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                found.setdefault(arg.value, []).append(where)
    return found


def test_the_scan_finds_the_texts_it_should() -> None:
    found = marked_literals()
    # One from each kind of marking, so a broken scan cannot pass the tests below.
    assert "Dec" in found  # N_ in texts.py
    assert len(found) >= len(INDONESIAN) // 2


def test_every_marked_text_has_an_indonesian_entry() -> None:
    missing = {text: where for text, where in marked_literals().items() if text not in INDONESIAN}
    assert not missing


def test_every_indonesian_entry_is_used() -> None:
    unused = set(INDONESIAN) - set(marked_literals())
    assert not unused


# Calls that put text in front of operators, and which of their arguments is that text.
_SPEAKERS = {
    "notify": (1,),  # Topics.notify(topic_id, html)
    "_notify": (1,),  # WindowReminders._notify(room, html)
    "_notice": (2,),  # Replies._notice(room, message, text)
    "send_message": (1,),
    "episode": (2, 3),  # Alerts.episode(key, active, text, recovered)
    "post": (0,),  # Alerts.post(html_text)
    "create_topic": (0,),
    "answer": (0,),  # CallbackQuery.answer(text)
    "InlineKeyboardButton": (0,),
    "BotCommand": (1,),
}
# Functions whose return value is shown to operators.
_SPEAKING_FUNCTIONS = {"answer", "on_retry", "notice_html", "_expiry_text", "_status"}


def _is_literal_text(node: ast.AST) -> bool:
    if isinstance(node, ast.JoinedStr):
        return True
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and bool(node.value)


def unwrapped_texts() -> list[str]:
    """Literal texts handed straight to Telegram without `_` (they would stay English)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            spoken: list[ast.AST] = []
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                positions = _SPEAKERS.get(name, ())
                spoken = [node.args[i] for i in positions if i < len(node.args)]
            elif (
                isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
                and node.name in _SPEAKING_FUNCTIONS
            ):
                spoken = [r.value for r in ast.walk(node) if isinstance(r, ast.Return) and r.value]
            for arg in spoken:
                if _is_literal_text(arg):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{arg.lineno}")
    return found


def test_no_text_reaches_telegram_without_passing_through_the_catalog() -> None:
    # A new notice written as a plain literal stays English for Indonesian teams: wrap it in
    # `_("...")` (placeholders filled by `.format` afterwards) and add it to texts_id.py.
    assert not unwrapped_texts()


def fields(text: str) -> list[str]:
    return sorted(name for _, name, _, _ in string.Formatter().parse(text) if name is not None)


def tags(text: str) -> list[str]:
    return sorted(re.findall(r"</?[a-z]+[^>]*>", text))


@pytest.mark.parametrize("english", sorted(INDONESIAN))
def test_a_translation_keeps_placeholders_tags_and_emoji(english: str) -> None:
    indonesian = INDONESIAN[english]
    assert indonesian.strip()
    assert fields(indonesian) == fields(english)
    assert tags(indonesian) == tags(english)
    # The leading emoji is how operators scan notices: it stays.
    if english and not english[0].isascii():
        assert indonesian[0] == english[0]


def test_english_is_the_literal_itself_and_indonesian_its_entry() -> None:
    assert _("Dec") == "Dec"
    texts.use("id")
    assert texts.language() == "id"
    assert _("Dec") == "Des"
    assert _("no such text") == "no such text"
    texts.use("en")
    assert _("Dec") == "Dec"


def test_dates_name_weekday_and_month_in_the_language() -> None:
    moment = datetime(2026, 8, 17, 9, 5, tzinfo=UTC)
    assert texts.strftime(moment, "%a %d %b %Y %H:%M") == "Mon 17 Aug 2026 09:05"
    assert texts.strftime(moment, "%a %d %b %Y %H:%M") == moment.strftime("%a %d %b %Y %H:%M")
    texts.use("id")
    assert texts.strftime(moment, "%a %d %b %Y %H:%M") == "Sen 17 Agu 2026 09:05"


# --- render.py ------------------------------------------------------------------------------


def test_indonesian_header_names_room_and_window_close_in_indonesian() -> None:
    closes = datetime(2026, 12, 7, 7, 30, tzinfo=UTC)  # a Monday, 14:30 in Jakarta
    english = render.header_html(number=NUMBER, room_id="r-1", window_closes_at=closes, tz=JAKARTA)
    assert english.endswith(
        "Room: <code>r-1</code>\nReply window closes: Mon 7 Dec 14:30 (Asia/Jakarta)"
    )
    texts.use("id")
    header = render.header_html(number=NUMBER, room_id="r-1", window_closes_at=closes, tz=JAKARTA)
    assert header.startswith("<b>+62 812-3456-7890</b>")
    assert header.endswith(
        "Ruang obrolan: <code>r-1</code>\nJendela balasan ditutup: Sen 7 Des 14:30 (Asia/Jakarta)"
    )
    assert render.topic_name("") == "Pelanggan WhatsApp"


def test_indonesian_posts_split_where_english_ones_do() -> None:
    # A crash mid-message resumes at part k + 1: the parts must not move with the language.
    now = datetime(2026, 12, 7, 7, 30, tzinfo=UTC)
    message = render.Inbound(1, "kata " * 3000, datetime(2025, 12, 31, 16, 59, tzinfo=UTC))
    english = render.render_posts([message], now=now, tz=JAKARTA)
    texts.use("id")
    indonesian = render.render_posts([message], now=now, tz=JAKARTA)
    assert [p.html.split("\n", 1)[1] for p in english] == [
        p.html.split("\n", 1)[1] for p in indonesian
    ]
    assert indonesian[0].html.startswith("<i>🕒 31 Des 2025 23:59</i>\n")
    assert indonesian[1].html.startswith(f"<i>(lanjutan 2/{len(indonesian)})</i>\n")
    assert render.render_posts([render.Inbound(2, " ", now)], now=now, tz=JAKARTA)[0].html == (
        "<i>(pesan kosong)</i>"
    )


@pytest.mark.parametrize("language", ["en", "id"])
def test_every_time_line_fits_the_room_reserved_for_it(language: texts.Language) -> None:
    texts.use(language)
    longest = max(
        render.utf16_len(render._time_line(f"31 {_(month)} 9999 23:59")) for month in texts.MONTHS
    )
    assert longest <= render._TIME_LINE_MAX
    assert render.utf16_len(render._cont_line(998, 999)) <= render._TIME_LINE_MAX


# --- a running bridge -------------------------------------------------------------------------

_ID_WEEKDAYS = ("Sen", "Sel", "Rab", "Kam", "Jum", "Sab", "Min")
_ID_MONTHS = ("Jan", "Feb", "Mar", "Apr", "Mei", "Jun", "Jul", "Agu", "Sep", "Okt", "Nov", "Des")
HOUR = 3600.0

# What each language says, with {header_date} and {notice_date} filled in by the test.
SAYS = {
    "en": {
        "header": "Reply window closes: {header_date} (Asia/Jakarta)",
        "notice": "⏰ Not sent: the reply window closed at {notice_date} (Asia/Jakarta). "
        "Free-form replies are only possible within 24 hours",
        "help": "WhatsApp bridge\nEvery WhatsApp customer has a topic here.",
        "help_line": "/balance — NusaSMS balances and expiry dates",
        "balance": "NusaSMS balances and expiry dates",
        "button": "🔁 Retry",
    },
    "id": {
        "header": "Jendela balasan ditutup: {header_date} (Asia/Jakarta)",
        "notice": "⏰ Tidak terkirim: jendela balasan sudah ditutup pada {notice_date} "
        "(Asia/Jakarta). Balasan bebas hanya dapat dikirim dalam 24 jam",
        "help": "Bridge WhatsApp\nSetiap pelanggan WhatsApp punya topik sendiri di sini.",
        "help_line": "/balance — Saldo NusaSMS dan tanggal kedaluwarsanya",
        "balance": "Saldo NusaSMS dan tanggal kedaluwarsanya",
        "button": "🔁 Coba lagi",
    },
}


class Clock:
    """Real time, moved by `offset` seconds when a test says so."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def dates(moment: float, language: str) -> dict[str, str]:
    """A moment as the header ("Mon 7 Dec 14:30") and a notice ("07 Dec 14:30") show it."""
    local = datetime.fromtimestamp(moment, JAKARTA)
    weekday, month = f"{local:%a}", f"{local:%b}"
    if language == "id":
        weekday, month = _ID_WEEKDAYS[local.weekday()], _ID_MONTHS[local.month - 1]
    return {
        "header_date": f"{weekday} {local.day} {month} {local:%H:%M}",
        "notice_date": f"{local:%d} {month} {local:%H:%M}",
    }


@pytest.mark.parametrize("language", ["en", "id"])
async def test_a_bridge_speaks_the_configured_language_in_the_group(
    language: str,
    make_bridge: Any,
    tmp_path: Path,
    config_data: dict[str, Any],
    telegram: FakeTelegram,
    http: aiohttp.ClientSession,
) -> None:
    data = {**config_data, "telegram": {**config_data["telegram"], "language": language}}
    settings = load_settings(write_config(tmp_path, data), environ={})
    clock = Clock()
    bridge = await make_bridge(settings, clock=clock)
    callbacks = Callbacks.of(bridge, http)
    says = SAYS[language]

    # The topic header.
    assert (await callbacks.inbox(inbox_body("in-1"))).status == 200
    await telegram.wait_for(lambda: any(len(telegram.messages_in(t)) >= 2 for t in telegram.topics))
    [topic] = telegram.topics
    room = await bridge.store.room(ROOM)
    assert room is not None
    filled = dates(room.last_inbox_at + 24 * HOUR, language)
    header = telegram.messages_in(topic)[0].plain_text or ""
    assert header.endswith(says["header"].format(**filled))

    # A window notice: an operator answers after the window closed.
    clock.offset = 25 * HOUR
    late = telegram.operator_message(thread_id=topic, text="maaf baru balas", user_id=777)
    await telegram.wait_for(lambda: len(replies_to(telegram, late)) == 1)
    notice = replies_to(telegram, late)[0].plain_text or ""
    assert notice.startswith(says["notice"].format(**filled))

    # /help, and the command descriptions Telegram shows.
    asked = telegram.operator_message(
        thread_id=None,
        text="/help",
        user_id=777,
        entities=[{"type": "bot_command", "offset": 0, "length": 5}],
    )
    await telegram.wait_for(lambda: len(replies_to(telegram, asked)) == 1)
    help_text = replies_to(telegram, asked)[0].plain_text or ""
    assert help_text.startswith(says["help"])
    assert says["help_line"] in help_text
    described = {c["command"]: c["description"] for c in telegram.commands[("chat", "")]}
    assert described["balance"] == says["balance"]

    # The Retry button under a failure notice.
    button = feedback.retry_markup(1).inline_keyboard[0][0]
    assert button.text == says["button"]


def replies_to(telegram: FakeTelegram, message_id: int) -> list[SentMessage]:
    """The bridge's messages posted as replies to one message."""
    return [m for m in telegram.messages if m.reply_to_message_id == message_id]
