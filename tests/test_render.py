"""How customer messages look in Telegram: phone numbers, topic titles, headers and posts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.group.render import (
    MAX_ENTITIES_PER_POST,
    TELEGRAM_TEXT_LIMIT,
    Inbound,
    Post,
    format_phone,
    header_html,
    render_posts,
    split_text,
    topic_name,
    utf16_len,
)

JAKARTA = ZoneInfo("Asia/Jakarta")
# Friday 27 November 2026, 12:00 in Jakarta.
NOW = datetime(2026, 11, 27, 5, 0, tzinfo=UTC)

_TAG = re.compile(r"</?(?:b|i|code|a)(?: [^>]*)?>")
_ENTITY = re.compile(r"&(lt|gt|amp|quot);")
_TIME_LINE = re.compile(r"<i>🕒 [^<]*</i>\n")
_PART_LINE = re.compile(r"<i>\((?:cont\.|part) \d+/\d+\)</i>\n")


def visible(html: str) -> str:
    """The text Telegram shows for `html`: tags gone, entities unescaped."""
    assert "<" not in _TAG.sub("", html), f"stray '<' in {html!r}"
    text = _TAG.sub("", html)
    return _ENTITY.sub(lambda m: {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}[m[1]], text)


def without_our_lines(html: str) -> str:
    """Visible text of a post with the time and part lines taken out."""
    return visible(_PART_LINE.sub("", _TIME_LINE.sub("", html)))


def message(id_: int, text: str, ago: timedelta = timedelta(0)) -> Inbound:
    return Inbound(id_, text, NOW - ago)


def render(messages: list[Inbound], **kwargs: object) -> list[Post]:
    return render_posts(messages, now=NOW, tz=JAKARTA, **kwargs)  # type: ignore[arg-type]


# --- phone numbers and titles --------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "shown"),
    [
        ("628123456789", "+62 812-3456-789"),
        ("+14155552671", "+1 415-555-2671"),
        ("442071838750", "+44 20 7183 8750"),
    ],
)
def test_phone_is_shown_in_international_format(number: str, shown: str) -> None:
    assert format_phone(number) == shown


@pytest.mark.parametrize("number", ["123", "999123456789012345", "0000"])
def test_phone_that_cannot_exist_is_shown_as_plus_digits(number: str) -> None:
    assert format_phone(number) == f"+{number}"


def test_topic_name_is_the_formatted_number() -> None:
    assert topic_name("628123456789") == "+62 812-3456-789"


def test_topic_name_adds_the_customer_name_on_one_line() -> None:
    assert topic_name("628123456789", " Budi \n Santoso ") == "+62 812-3456-789 · Budi Santoso"


def test_topic_name_ignores_a_blank_name() -> None:
    assert topic_name("628123456789", "  ") == "+62 812-3456-789"


def test_topic_name_is_never_empty() -> None:
    assert topic_name("") == "WhatsApp customer"
    assert topic_name("", "Budi") == "WhatsApp customer · Budi"


def test_topic_name_is_cut_to_telegrams_limit_without_breaking_an_emoji() -> None:
    name = topic_name("628123456789", "😀" * 100)
    assert utf16_len(name) <= 128
    assert name.endswith("😀…")
    assert name.startswith("+62 812-3456-789 · ")


@given(st.text(max_size=300), st.text(max_size=40))
def test_topic_name_always_fits_telegram(name: str, number: str) -> None:
    title = topic_name(number, name)
    assert title.strip()
    assert 1 <= utf16_len(title) <= 128


# --- header --------------------------------------------------------------------------------


def test_header_shows_number_wa_me_link_room_and_local_window_close() -> None:
    html = header_html(
        number="628123456789",
        room_id="0f8c3a52-fb79",
        window_closes_at=datetime(2026, 11, 27, 7, 5, tzinfo=UTC),
        tz=JAKARTA,
    )
    assert html == (
        "<b>+62 812-3456-789</b> · "
        '<a href="https://wa.me/628123456789">wa.me/628123456789</a>\n'
        "Room: <code>0f8c3a52-fb79</code>\n"
        "Reply window closes: Fri 27 Nov 14:05 (Asia/Jakarta)"
    )


def test_header_escapes_every_dynamic_value() -> None:
    html = header_html(
        number="<62>&81",
        room_id='<script>"&',
        window_closes_at=datetime(2026, 11, 27, 7, 5, tzinfo=UTC),
        tz=timezone(timedelta(hours=7), "<WIB>"),
    )
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "(&lt;WIB&gt;)" in html
    assert 'href="https://wa.me/6281"' in html


def test_header_names_a_fixed_offset_zone_by_its_offset() -> None:
    html = header_html(
        number="628123456789",
        room_id="r",
        window_closes_at=datetime(2026, 11, 27, 7, 5, tzinfo=UTC),
        tz=UTC,
    )
    assert html.endswith("Reply window closes: Fri 27 Nov 07:05 (UTC)")


def test_header_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        header_html(number="1", room_id="r", window_closes_at=datetime(2026, 1, 1), tz=UTC)


# --- utf16 and splitting ---------------------------------------------------------------


def test_utf16_length_counts_astral_characters_twice() -> None:
    assert utf16_len("") == 0
    assert utf16_len("abc") == 3
    assert utf16_len("é") == 1
    assert utf16_len("😀") == 2
    assert utf16_len("👨‍👩‍👧") == 8
    assert utf16_len("\ud83d") == 1  # a lone surrogate (from JSON) does not crash


def test_empty_text_splits_into_one_empty_part() -> None:
    assert split_text("", 10) == [""]


def test_short_text_is_one_part() -> None:
    assert split_text("hello", 5) == ["hello"]


def test_split_prefers_the_last_paragraph_break() -> None:
    text = "first paragraph\n\nsecond line\nthird words here"
    assert split_text(text, 32) == ["first paragraph\n\n", "second line\nthird words here"]
    # Unless the paragraph would be less than half of the part: then the last newline.
    assert split_text(text, 40) == ["first paragraph\n\nsecond line\n", "third words here"]


def test_split_prefers_a_newline_over_a_space() -> None:
    assert split_text("aaaa bbbb\ncccc dddd", 16) == ["aaaa bbbb\n", "cccc dddd"]


def test_split_cuts_after_the_last_space_keeping_it_on_the_earlier_part() -> None:
    assert split_text("one two three four", 10) == ["one two ", "three four"]


def test_split_does_not_make_a_part_shorter_than_half_the_limit() -> None:
    text = "ab\n" + "c" * 30
    parts = split_text(text, 20)
    assert parts[0] == text[:20]
    assert "".join(parts) == text


def test_split_cuts_a_long_word_hard() -> None:
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


def test_split_never_breaks_an_emoji_and_counts_it_twice() -> None:
    parts = split_text("😀" * 7, 5)
    assert parts == ["😀😀", "😀😀", "😀😀", "😀"]


def test_split_keeps_combining_marks_zwj_sequences_and_flags_whole() -> None:
    assert split_text("e\u0301" * 5, 5) == ["e\u0301e\u0301", "e\u0301e\u0301", "e\u0301"]
    family = "👨\u200d👩\u200d👧"
    assert split_text("abcd" + family, 8) == ["abcd", family]
    assert split_text("🇮🇩🇮🇩🇮🇩", 6) == ["🇮🇩", "🇮🇩", "🇮🇩"]
    assert split_text("a👍🏽👍🏽", 6) == ["a👍🏽", "👍🏽"]


def test_split_does_not_break_at_a_no_break_space() -> None:
    assert split_text("aaaaaa 12\u00a0kg", 11) == ["aaaaaa ", "12\u00a0kg"]


def test_split_refuses_a_limit_too_small_for_an_emoji() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_text("abc", 1)


_PIECES = st.one_of(
    st.sampled_from(
        [
            " ",
            "\n",
            "\n\n",
            "<",
            ">",
            "&",
            "&amp;",
            "😀",
            "👍🏽",
            "🇮🇩",
            "👨\u200d👩\u200d👧",
            "e\u0301",
            "\u00a0",
            "\ufe0f",
            "\ud83d\ude00",  # a surrogate pair that arrived as two code points
            "\udc00",
        ]
    ),
    st.text(min_size=1, max_size=20),
    st.text(alphabet="xyz😀", min_size=30, max_size=300),  # long words without spaces
)
TEXTS = st.lists(_PIECES, max_size=60).map("".join)


@given(TEXTS, st.integers(min_value=2, max_value=300))
def test_split_parts_fit_and_join_back_to_the_text(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert "".join(parts) == text
    assert all(utf16_len(part) <= limit for part in parts)
    assert all(part for part in parts) or parts == [""]
    # Every part but the last is at least half full (an astral character may not fit).
    assert all(2 * utf16_len(part) >= limit - 2 for part in parts[:-1])


# --- posts -----------------------------------------------------------------------------------


def test_fresh_message_is_posted_verbatim_and_escaped_without_a_time_line() -> None:
    posts = render([message(1, 'Halo <b>kak</b> & "thanks"\n\n  ok')])
    assert posts == [Post('Halo &lt;b&gt;kak&lt;/b&gt; &amp; "thanks"\n\n  ok', (1,), 0, 1)]


def test_stale_message_from_today_gets_the_local_time() -> None:
    posts = render([message(1, "late", ago=timedelta(minutes=3))])
    assert posts[0].html == "<i>🕒 11:57</i>\nlate"


def test_message_within_the_stale_threshold_has_no_time_line() -> None:
    posts = render([message(1, "now", ago=timedelta(minutes=2))])
    assert posts[0].html == "now"


def test_stale_message_from_another_day_gets_the_date() -> None:
    posts = render([message(1, "yesterday", ago=timedelta(hours=21))])
    assert posts[0].html == "<i>🕒 26 Nov 15:00</i>\nyesterday"


def test_stale_message_from_another_year_gets_the_year() -> None:
    posts = render([message(1, "old", ago=timedelta(days=365))])
    assert posts[0].html == "<i>🕒 27 Nov 2025 12:00</i>\nold"


def test_message_from_the_future_gets_a_time_line() -> None:
    posts = render([message(1, "skewed", ago=-timedelta(minutes=10))])
    assert posts[0].html == "<i>🕒 12:10</i>\nskewed"


def test_consecutive_messages_are_coalesced_with_a_blank_line() -> None:
    posts = render([message(1, "a"), message(2, "b & c"), message(3, "d")])
    assert posts == [Post("a\n\nb &amp; c\n\nd", (1, 2, 3), 0, 1)]


def test_same_time_label_is_not_repeated_within_a_post() -> None:
    ago = timedelta(minutes=30)
    posts = render([message(1, "a", ago), message(2, "b", ago), message(3, "c", ago * 2)])
    assert posts[0].html == "<i>🕒 11:30</i>\na\n\nb\n\n<i>🕒 11:00</i>\nc"


def test_coalescing_stops_before_the_visible_limit() -> None:
    # Escaping makes the HTML longer, but only the visible length counts.
    texts = ["&" * 40, "<" * 40, "x" * 40]
    posts = render([message(i, t) for i, t in enumerate(texts)], limit=82)
    assert [p.ids for p in posts] == [(0, 1), (2,)]
    assert utf16_len(visible(posts[0].html)) == 82


def test_coalescing_counts_emoji_as_two_units() -> None:
    posts = render([message(1, "😀" * 20), message(2, "😀" * 20)], limit=81)
    assert [p.ids for p in posts] == [(1,), (2,)]


def test_coalescing_stops_at_telegrams_entity_cap() -> None:
    ago = timedelta(days=2)
    messages = [message(i, "hi", ago + timedelta(minutes=i)) for i in range(150)]
    posts = render(messages)
    assert [len(p.ids) for p in posts] == [MAX_ENTITIES_PER_POST, 50]


def test_empty_message_renders_a_placeholder() -> None:
    assert render([message(1, "")])[0].html == "<i>(empty message)</i>"
    assert render([message(1, " \n ")])[0].html == "<i>(empty message)</i>"


def test_long_message_is_split_and_never_coalesced() -> None:
    long = "word " * 60  # 300 characters
    posts = render([message(1, "before"), message(2, long), message(3, "after")], limit=100)
    assert posts[0] == Post("before", (1,), 0, 1)
    assert posts[-1] == Post("after", (3,), 0, 1)
    middle = posts[1:-1]
    assert [(p.part, p.parts, p.ids) for p in middle] == [
        (k, len(middle), (2,) if k == len(middle) - 1 else ()) for k in range(len(middle))
    ]
    assert middle[1].html.startswith(f"<i>(cont. 2/{len(middle)})</i>\n")
    assert "".join(without_our_lines(p.html) for p in middle) == long
    assert all(utf16_len(visible(p.html)) <= 100 for p in middle)


def test_time_line_is_only_on_the_first_part() -> None:
    posts = render([message(1, "z" * 250, ago=timedelta(hours=1))], limit=100)
    assert posts[0].html.startswith("<i>🕒 11:00</i>\n")
    assert not any("🕒" in p.html for p in posts[1:])


def test_split_points_do_not_depend_on_the_clock() -> None:
    text = "kalimat panjang " * 40
    fresh = render_posts([message(1, text)], now=NOW, tz=JAKARTA, limit=100)
    later = render_posts([message(1, text)], now=NOW + timedelta(days=3), tz=JAKARTA, limit=100)
    assert [without_our_lines(p.html) for p in fresh] == [without_our_lines(p.html) for p in later]


def test_first_part_resumes_a_split_message_then_continues_normally() -> None:
    messages = [message(1, "y" * 300), message(2, "next"), message(3, "more")]
    whole = render(messages, limit=100)
    resumed = render_posts(
        messages, now=NOW + timedelta(hours=1), tz=JAKARTA, limit=100, first_part=2
    )
    split = [p for p in whole if p.parts > 1]
    assert [(p.part, p.ids) for p in resumed] == [(p.part, p.ids) for p in split[2:]] + [
        (0, (2, 3))
    ]
    assert resumed[0].html == split[2].html


def test_first_part_past_the_end_reposts_the_last_part_so_the_message_completes() -> None:
    posts = render([message(1, "y" * 300)], limit=100, first_part=99)
    assert len(posts) == 1
    assert posts[0].ids == (1,)
    assert posts[0].part == posts[0].parts - 1


def test_first_part_of_a_short_message_posts_it_alone() -> None:
    posts = render([message(1, "short"), message(2, "next")], first_part=1)
    assert posts == [Post("short", (1,), 0, 1), Post("next", (2,), 0, 1)]


def test_blank_first_part_of_a_split_message_gets_a_part_line() -> None:
    text = " " * 80 + "x" * 100
    posts = render([message(1, text)], limit=100)
    assert posts[0].html.startswith(f"<i>(part 1/{len(posts)})</i>\n")
    assert "".join(without_our_lines(p.html) for p in posts) == text


def test_too_small_a_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        render([message(1, "x")], limit=10)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        render_posts([Inbound(1, "x", datetime(2026, 1, 1))], now=NOW, tz=JAKARTA)


def test_nothing_to_post_gives_no_posts() -> None:
    assert render([]) == []


def test_a_megabyte_message_renders_in_linear_time() -> None:
    text = ("kata " * 100 + "\n") * 2000 + "😀" * 100_000
    posts = render([message(1, text)])
    assert "".join(without_our_lines(p.html) for p in posts) == text
    assert all(utf16_len(visible(p.html)) <= TELEGRAM_TEXT_LIMIT for p in posts)


MESSAGES = st.lists(
    st.tuples(TEXTS, st.integers(min_value=-3 * 86_400, max_value=400 * 86_400)),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(MESSAGES, st.integers(min_value=64, max_value=400))
def test_every_post_fits_and_the_posts_give_back_every_text(
    items: list[tuple[str, int]], limit: int
) -> None:
    messages = [message(i, text, timedelta(seconds=ago)) for i, (text, ago) in enumerate(items)]
    posts = render(messages, limit=limit)
    assert all(utf16_len(visible(p.html)) <= limit for p in posts)
    assert [i for p in posts for i in p.ids] == [m.id for m in messages]

    shown = {m.id: m.text if m.text.strip() else "(empty message)" for m in messages}
    split_so_far = ""
    for post in posts:
        body = without_our_lines(post.html)
        if post.parts > 1:
            split_so_far += body
            assert post.ids == () or post.part == post.parts - 1
            if post.ids:
                assert split_so_far == shown[post.ids[0]]
                split_so_far = ""
        else:
            assert body == "\n\n".join(shown[i] for i in post.ids)
    assert split_so_far == ""


@settings(max_examples=100, deadline=None)
@given(TEXTS, st.integers(min_value=64, max_value=300), st.integers(min_value=0, max_value=8))
def test_resuming_at_any_part_gives_the_same_remaining_parts(
    text: str, limit: int, first_part: int
) -> None:
    messages = [message(1, text, timedelta(hours=5))]
    whole = render(messages, limit=limit)
    if whole[0].parts == 1:
        return
    resumed = render_posts(
        messages, now=NOW + timedelta(days=1), tz=JAKARTA, limit=limit, first_part=first_part
    )
    start = min(first_part, whole[0].parts - 1)
    expected = whole[start:]
    assert [(p.part, p.parts, p.ids) for p in resumed] == [
        (p.part, p.parts, p.ids) for p in expected
    ]
    assert [without_our_lines(p.html) for p in resumed] == [
        without_our_lines(p.html) for p in expected
    ]


def test_a_title_puts_the_state_then_the_channel_before_the_number() -> None:
    title = topic_name("+6281234567890", "Budi", channel="✉️ SMS", state="🔴")
    assert title == "🔴 ✉️ SMS +62 812-3456-7890 · Budi"
    assert topic_name("+6281234567890") == "+62 812-3456-7890"
    long = topic_name("+6281234567890", "x" * 300, channel="✉️ SMS", state="🔴")
    assert long.startswith("🔴 ✉️ SMS +62")
    assert utf16_len(long) <= 128
