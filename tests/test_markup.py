"""Operators' Telegram formatting becomes WhatsApp markup."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telegram import MessageEntity

from bridge.group.markup import to_whatsapp


def entity(kind: str, offset: int, length: int, url: str | None = None) -> MessageEntity:
    return MessageEntity(type=kind, offset=offset, length=length, url=url)


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def span(text: str, part: str, kind: str, **kwargs: str) -> MessageEntity:
    """An entity over the first occurrence of `part`, with UTF-16 offsets as Telegram sends."""
    index = text.index(part)
    return entity(kind, units(text[:index]), units(part), **kwargs)


def test_text_without_entities_is_returned_unchanged() -> None:
    text = "Halo *kak*, _pesanan_ ~sudah~ ```dikirim``` 😀\n> ok  "
    assert to_whatsapp(text, []) is text


@pytest.mark.parametrize(
    "kind",
    [
        *("url", "mention", "hashtag", "cashtag", "bot_command", "email", "phone_number"),
        *("underline", "spoiler", "custom_emoji", "text_mention", "date_time", "unknown_kind"),
    ],
)
def test_entities_whatsapp_cannot_show_leave_the_text_alone(kind: str) -> None:
    text = "see @shop #promo https://x.id *literal*"
    assert to_whatsapp(text, [entity(kind, 4, 5)]) == text


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("bold", "pesanan *sudah* dikirim"),
        ("italic", "pesanan _sudah_ dikirim"),
        ("strikethrough", "pesanan ~sudah~ dikirim"),
        ("code", "pesanan ```sudah``` dikirim"),
        ("pre", "pesanan ```sudah``` dikirim"),
    ],
)
def test_each_style_gets_its_whatsapp_marker(kind: str, expected: str) -> None:
    text = "pesanan sudah dikirim"
    assert to_whatsapp(text, [span(text, "sudah", kind)]) == expected


def test_emoji_before_an_entity_does_not_shift_it() -> None:
    text = "😀👍🏽 🇮🇩 terima kasih"
    assert to_whatsapp(text, [span(text, "terima", "bold")]) == "😀👍🏽 🇮🇩 *terima* kasih"


def test_entity_over_emoji_covers_the_whole_emoji() -> None:
    text = "ok 😀😀 ok"
    assert to_whatsapp(text, [span(text, "😀😀", "bold")]) == "ok *😀😀* ok"


def test_bold_and_italic_on_the_same_span_nest() -> None:
    text = "sangat penting"
    entities = [span(text, "penting", "italic"), span(text, "penting", "bold")]
    assert to_whatsapp(text, entities) == "sangat *_penting_*"


def test_all_three_styles_nest_in_a_fixed_order() -> None:
    text = "x"
    entities = [entity("strikethrough", 0, 1), entity("italic", 0, 1), entity("bold", 0, 1)]
    assert to_whatsapp(text, entities) == "*_~x~_*"


def test_a_style_inside_a_longer_one_nests_inside_it() -> None:
    text = "semua barang ready kak"
    entities = [entity("bold", 0, len(text)), span(text, "ready", "italic")]
    assert to_whatsapp(text, entities) == "*semua barang _ready_ kak*"


def test_overlapping_styles_are_closed_and_reopened_so_markers_pair_up() -> None:
    text = "one two three"
    entities = [entity("bold", 0, 7), entity("italic", 4, 9)]
    assert to_whatsapp(text, entities) == "*one _two_* _three_"


def test_whitespace_at_the_edges_of_a_span_moves_outside_the_markers() -> None:
    text = "a bold  word"
    assert to_whatsapp(text, [entity("bold", 1, 6)]) == "a *bold*  word"
    assert to_whatsapp(text, [entity("italic", 2, 5)]) == "a _bold_  word"


def test_whitespace_only_span_is_skipped() -> None:
    text = "a   b\n\nc"
    entities = [entity("bold", 1, 3), entity("code", 5, 2), entity("italic", 0, 0)]
    assert to_whatsapp(text, entities) == text


def test_a_span_over_several_lines_is_marked_on_each_line() -> None:
    text = "first line\n\n  second line \nthird"
    assert to_whatsapp(text, [entity("bold", 0, len(text))]) == (
        "*first line*\n\n  *second line* \n*third*"
    )


def test_pre_block_keeps_its_lines_inside_one_fence() -> None:
    text = "run:\nls -la\ncd /tmp\ndone"
    assert to_whatsapp(text, [span(text, "ls -la\ncd /tmp\n", "pre")]) == (
        "run:\n```ls -la\ncd /tmp```\ndone"
    )


def test_nothing_inside_code_is_formatted() -> None:
    text = "type ls now"
    entities = [entity("bold", 0, len(text)), span(text, "ls", "code")]
    assert to_whatsapp(text, entities) == "*type* ```ls``` *now*"


def test_text_link_keeps_its_text_and_adds_the_address_outside_the_markers() -> None:
    text = "lihat katalog kami"
    entities = [
        entity("bold", 0, len(text)),
        span(text, "katalog", "text_link", url="https://toko.id/a_b"),
    ]
    assert to_whatsapp(text, entities) == "*lihat katalog* (https://toko.id/a_b) *kami*"


def test_text_link_whose_text_is_the_address_adds_nothing() -> None:
    text = "buka toko.id sekarang"
    link = span(text, "toko.id", "text_link", url="https://toko.id/")
    assert to_whatsapp(text, [link]) == text


def test_text_link_at_the_end_puts_the_address_last() -> None:
    text = "klik di sini "
    link = span(text, "di sini ", "text_link", url="https://toko.id")
    assert to_whatsapp(text, [link]) == "klik di sini (https://toko.id) "


def test_blockquote_prefixes_each_quoted_line() -> None:
    text = "kamu bilang:\nbarang rusak\ndan telat\n\nmaaf ya"
    quote = span(text, "barang rusak\ndan telat", "blockquote")
    assert to_whatsapp(text, [quote]) == "kamu bilang:\n> barang rusak\n> dan telat\n\nmaaf ya"


def test_expandable_blockquote_with_bold_inside() -> None:
    text = "catatan penting"
    entities = [entity("expandable_blockquote", 0, len(text)), span(text, "penting", "bold")]
    assert to_whatsapp(text, entities) == "> catatan *penting*"


def test_markers_the_operator_typed_are_not_doubled() -> None:
    text = "ini *promo* dan _diskon_"
    entities = [span(text, "*promo*", "bold"), span(text, "diskon", "italic")]
    assert to_whatsapp(text, entities) == text


def test_literal_markers_elsewhere_are_left_alone() -> None:
    text = "2*3 = 6 and snake_case"
    assert to_whatsapp(text, [span(text, "6", "bold")]) == "2*3 = *6* and snake_case"


def test_entities_past_the_end_are_clamped() -> None:
    assert to_whatsapp("abc", [entity("bold", 1, 50), entity("italic", 10, 2)]) == "a*bc*"


# --- property: valid markup that shows exactly the operator's styles -----------------------

_STYLE_MARKERS = {"*": "bold", "_": "italic", "~": "strikethrough"}
_FENCE = "```"


def parse_whatsapp(out: str) -> list[tuple[str, frozenset[str]]]:
    """Read markup as WhatsApp would, failing on markers that do not pair up or hug text."""
    stack: list[str] = []
    shown: list[tuple[str, frozenset[str]]] = []
    i = 0
    while i < len(out):
        marker = _FENCE if out.startswith(_FENCE, i) else out[i]
        in_code = _FENCE in stack
        if marker == _FENCE or (marker in _STYLE_MARKERS and not in_code):
            if stack and stack[-1] == marker:
                assert i > 0
                assert not out[i - 1].isspace(), f"closing {marker} after a space in {out!r}"
                stack.pop()
            else:
                assert marker not in stack, f"crossed {marker} in {out!r}"
                assert not in_code, f"marker inside code in {out!r}"
                nxt = i + len(marker)
                assert nxt < len(out), f"{marker} at the end of {out!r}"
                assert not out[nxt].isspace(), f"{marker} then space in {out!r}"
                stack.append(marker)
            i += len(marker)
            continue
        if out[i] == "\n":
            assert stack in ([], [_FENCE]), f"inline marker across a line break in {out!r}"
        styles = frozenset("code" if m == _FENCE else _STYLE_MARKERS[m] for m in stack)
        shown.append((out[i], styles))
        i += 1
    assert not stack, f"unclosed {stack} in {out!r}"
    return shown


_ALPHABET = st.sampled_from([*"ab cé\n\t", "😀", "👍🏽", "🇮🇩", "\u00a0"])
_KINDS = st.sampled_from(["bold", "italic", "strikethrough", "code", "pre", "underline", "url"])


@st.composite
def formatted(draw: st.DrawFn) -> tuple[str, list[tuple[str, int, int]]]:
    text = "".join(draw(st.lists(_ALPHABET, max_size=40)))
    spans = []
    for _ in range(draw(st.integers(0, 6))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, len(text)))
        spans.append((draw(_KINDS), start, end))
    return text, spans


@settings(max_examples=500, deadline=None)
@given(formatted())
def test_markup_is_valid_and_shows_exactly_the_operators_styles(
    case: tuple[str, list[tuple[str, int, int]]],
) -> None:
    text, spans = case
    entities = [
        entity(kind, units(text[:start]), units(text[start:end])) for kind, start, end in spans
    ]
    shown = parse_whatsapp(to_whatsapp(text, entities))
    assert "".join(char for char, _ in shown) == text

    for index, (char, styles) in enumerate(shown):
        if char.isspace():
            continue  # spaces between two styled words may share their style
        covering = {kind for kind, start, end in spans if start <= index < end}
        if covering & {"code", "pre"}:
            assert styles == {"code"}, (index, text, spans)
        else:
            assert styles == covering & set(_STYLE_MARKERS.values()), (index, text, spans)


@given(st.text(), st.lists(st.sampled_from(["url", "mention", "underline", "spoiler"])))
def test_text_with_only_unshowable_entities_comes_back_byte_for_byte(
    text: str, kinds: list[str]
) -> None:
    entities = [entity(kind, 0, units(text)) for kind in kinds]
    assert to_whatsapp(text, entities) == text
