"""How customer messages look in Telegram: topic titles, the topic header, and message posts.

Everything here is pure: strings in, strings out, time passed in. Posts use Telegram's HTML
parse mode, and Telegram measures a message's length after parsing (tags gone, entities
unescaped) in UTF-16 code units, so every size check here counts the visible text that way.

A long customer message is split into parts at the same places every time it is rendered
(the split does not depend on the clock), so a caller that crashed after posting part k can
resume at part k + 1 with `first_part`.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

import phonenumbers

from bridge.core.texts import MONTHS, N_, WEEKDAYS, _

TELEGRAM_TEXT_LIMIT = 4096
TOPIC_NAME_LIMIT = 128
# Below this a post cannot hold a continuation line and a useful piece of text.
MIN_POST_LIMIT = 64
# Telegram ignores formatting tags after the 100th in one message.
MAX_ENTITIES_PER_POST = 100

EMPTY_TEXT = N_("(empty message)")
_SEPARATOR = "\n\n"
_UNKNOWN_NUMBER = N_("WhatsApp customer")

# English names; shown through `_` in the configured language.
_WEEKDAYS = WEEKDAYS
_MONTHS = MONTHS

# Spaces a line may wrap at; the no-break ones are meant to hold their neighbours together.
_NO_BREAK_SPACES = frozenset("\u00a0\u2007\u202f")
_ZWJ = "\u200d"


def utf16_len(text: str) -> int:
    """Length of `text` in UTF-16 code units, as Telegram counts it."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _units(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


def _digits(number: str) -> str:
    return "".join(c for c in number if c.isascii() and c.isdigit())


def format_phone(number: str) -> str:
    """Readable international form of a WhatsApp number ("628123456789" → "+62 812-3456-789")."""
    digits = _digits(number)
    try:
        parsed = phonenumbers.parse(f"+{digits}", None)
    except phonenumbers.NumberParseException:
        return f"+{digits}"
    if not phonenumbers.is_possible_number(parsed):
        return f"+{digits}"
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL))


def topic_name(number: str, name: str | None = None, *, channel: str = "", state: str = "") -> str:
    """Forum topic title: the formatted number (and " · name"), never empty, ≤ 128 units.

    `state` (the conversation's state mark) and `channel` (the channel's title mark, e.g.
    "✉️ SMS") come first, in that order, when given.
    """
    title = format_phone(number) if _digits(number) else _(_UNKNOWN_NUMBER)
    clean_name = " ".join(name.split()) if name else ""
    if clean_name:
        title = f"{title} · {clean_name}"
    marks = " ".join(mark for mark in (state, channel) if mark)
    if marks:
        title = f"{marks} {title}"
    if utf16_len(title) <= TOPIC_NAME_LIMIT:
        return title
    return _truncate(title, TOPIC_NAME_LIMIT - 1) + "…"


def _truncate(text: str, limit: int) -> str:
    """The longest prefix within `limit` UTF-16 units, preferring a character boundary."""
    end, units = 0, 0
    while end < len(text) and units + _units(text[end]) <= limit:
        units += _units(text[end])
        end += 1
    cut = end
    while 0 < cut < len(text) and not _is_boundary(text, cut):
        cut -= 1
    return text[: cut or end].rstrip()


def _tz_label(local: datetime, tz: tzinfo) -> str:
    key = getattr(tz, "key", None)
    if isinstance(key, str) and key:
        return key
    return local.tzname() or "UTC"


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def header_html(*, number: str, room_id: str, window_closes_at: datetime, tz: tzinfo) -> str:
    """First post of a new topic: who the customer is, the room, when the reply window closes."""
    _require_aware(window_closes_at, "window_closes_at")
    digits = _digits(number)
    who = f"<b>{html.escape(topic_name(number))}</b>"
    if digits:
        who += f' · <a href="https://wa.me/{digits}">wa.me/{digits}</a>'
    local = window_closes_at.astimezone(tz)
    closes = (
        f"{_(_WEEKDAYS[local.weekday()])} {local.day} {_(_MONTHS[local.month - 1])} "
        f"{local:%H:%M} ({_tz_label(local, tz)})"
    )
    return _("{who}\nRoom: <code>{room}</code>\nReply window closes: {closes}").format(
        who=who, room=html.escape(room_id), closes=html.escape(closes)
    )


# --- splitting ---------------------------------------------------------------------------


def _is_extender(char: str) -> bool:
    """A character that belongs to the one before it (combining mark, ZWJ, selector, ...)."""
    code = ord(char)
    return (
        char == _ZWJ
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0xE0100 <= code <= 0xE01EF  # variation selectors supplement
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # emoji tag sequences (subdivision flags)
        or 0xDC00 <= code <= 0xDFFF  # a low surrogate left in the string on its own
        or unicodedata.category(char) in ("Mn", "Mc", "Me")
    )


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _is_boundary(text: str, cut: int) -> bool:
    """Whether cutting `text` before index `cut` keeps user-perceived characters whole."""
    if cut <= 0 or cut >= len(text):
        return True
    before, after = text[cut - 1], text[cut]
    if _is_extender(after) or before == _ZWJ or 0xD800 <= ord(before) <= 0xDBFF:
        return False
    if _is_regional_indicator(before) and _is_regional_indicator(after):
        # Flags are pairs of indicators: a cut is fine only after an even number of them.
        run = 0
        while cut - run - 1 >= 0 and _is_regional_indicator(text[cut - run - 1]):
            run += 1
        return run % 2 == 0
    return True


def _is_break_space(char: str) -> bool:
    return char.isspace() and char not in _NO_BREAK_SPACES


def _window_end(text: str, start: int, limit: int) -> tuple[int, int]:
    """The furthest end (and its size in units) such that text[start:end] fits in `limit`."""
    end = min(len(text), start + limit)
    units = utf16_len(text[start:end])
    while units > limit:  # astral characters count twice; give back from the end
        end -= 1
        units -= _units(text[end])
    return end, units


def _cut_point(text: str, start: int, end: int, units: int, limit: int) -> int:
    """Where to end the part that may run from `start` up to `end` (exclusive)."""
    # The earliest acceptable cut: the part must keep at least half the limit.
    half = (limit + 1) // 2
    if units == end - start:  # no astral characters: units are characters
        low = min(end, start + half)
    else:
        low, low_units = end, units
        while low > start and low_units - _units(text[low - 1]) >= half:
            low -= 1
            low_units -= _units(text[low])
    paragraph = text.rfind("\n\n", max(start, low - 2), end)
    if paragraph >= 0:
        return paragraph + 2
    line = text.rfind("\n", max(start, low - 1), end)
    if line >= 0:
        return line + 1
    for index in range(end - 1, max(start, low - 1) - 1, -1):
        if _is_break_space(text[index]) and _is_boundary(text, index + 1):
            return index + 1
    for cut in range(end, max(start + 1, low) - 1, -1):
        if _is_boundary(text, cut):
            return cut
    return end


def split_text(text: str, limit: int) -> list[str]:
    """Split `text` into parts of at most `limit` UTF-16 units that concatenate back to it.

    A part ends after the last paragraph break in its window, else the last newline, else
    the last space, unless that would leave it shorter than half the limit; otherwise it is
    cut hard, though not inside a surrogate pair, a flag, or before a combining mark.
    """
    if limit < 2:
        raise ValueError("limit must be at least 2 UTF-16 code units")
    if not text:
        return [""]
    parts: list[str] = []
    start = 0
    while True:
        end, units = _window_end(text, start, limit)
        if end >= len(text):
            parts.append(text[start:])
            return parts
        cut = _cut_point(text, start, end, units, limit)
        parts.append(text[start:cut])
        start = cut


# --- posts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inbound:
    """A queued customer message: its store id, its text and when NusaSMS received it."""

    id: int
    text: str
    inbox_at: datetime


@dataclass(frozen=True)
class Post:
    """One Telegram message: its HTML, the messages it completes, and which part it is."""

    html: str
    ids: tuple[int, ...]
    part: int
    parts: int


def _time_label(inbox_at: datetime, now: datetime, tz: tzinfo) -> str:
    local = inbox_at.astimezone(tz)
    today = now.astimezone(tz).date()
    clock = f"{local:%H:%M}"
    if local.date() == today:
        return clock
    day = f"{local.day} {_(_MONTHS[local.month - 1])}"
    if local.year != today.year:
        day += f" {local.year}"
    return f"{day} {clock}"


def _time_line(label: str) -> str:
    return f"🕒 {label}\n"


# The longest time line any message can get, reserved in every part of a split message so
# that where it is split never depends on the clock.
_TIME_LINE_MAX = utf16_len(_time_line("31 Dec 9999 23:59"))


def _cont_line(part: int, parts: int) -> str:
    return _("(cont. {part}/{parts})").format(part=part + 1, parts=parts) + "\n"


def _part_one_line(parts: int) -> str:
    return _("(part 1/{parts})").format(parts=parts) + "\n"


def _italic(visible: str) -> str:
    """HTML for a visible line of ours, ending with the newline outside the tag."""
    line = html.escape(visible.removesuffix("\n"), quote=False)
    return f"<i>{line}</i>\n"


@dataclass
class _Draft:
    """A coalesced post being filled."""

    html: list[str]
    ids: list[int]
    units: int
    entities: int
    last_label: str | None


def _is_blank(text: str) -> bool:
    # Telegram refuses a message that is empty once whitespace is trimmed.
    return not text.strip()


@dataclass(frozen=True)
class _Body:
    """A message's own text as it appears in a post, measured once."""

    html: str
    units: int
    entities: int

    @classmethod
    def of(cls, text: str) -> _Body:
        if _is_blank(text):
            return cls(f"<i>{_(EMPTY_TEXT)}</i>", utf16_len(_(EMPTY_TEXT)), 1)
        return cls(html.escape(text, quote=False), utf16_len(text), 0)

    def with_time(self, label: str | None) -> tuple[str, int, int]:
        """HTML, visible units and entity count, with a time line above if `label` is set."""
        if label is None:
            return self.html, self.units, self.entities
        line = _time_line(label)
        return _italic(line) + self.html, utf16_len(line) + self.units, self.entities + 1


def _split_message(message: Inbound, label: str | None, limit: int, first_part: int) -> list[Post]:
    """The posts of a message too long for one, from part `first_part` on."""
    if _is_blank(message.text):
        body, _, _ = _Body.of(message.text).with_time(label)
        return [Post(body, (message.id,), 0, 1)]
    digits = 1
    while True:
        reserve = max(_TIME_LINE_MAX, utf16_len(_cont_line(10**digits - 2, 10**digits - 1)))
        chunks = split_text(message.text, limit - reserve)
        if len(str(len(chunks))) <= digits:
            break
        digits = len(str(len(chunks)))
    parts = len(chunks)
    posts: list[Post] = []
    for part in range(min(first_part, parts - 1), parts):
        chunk = chunks[part]
        if part > 0:
            head = _italic(_cont_line(part, parts))
        elif label is not None:
            head = _italic(_time_line(label))
        elif parts > 1 and _is_blank(chunk):
            head = _italic(_part_one_line(parts))
        else:
            head = ""
        ids = (message.id,) if part == parts - 1 else ()
        posts.append(Post(head + html.escape(chunk, quote=False), ids, part, parts))
    return posts


def render_posts(
    messages: Sequence[Inbound],
    *,
    now: datetime,
    tz: tzinfo,
    limit: int = TELEGRAM_TEXT_LIMIT,
    stale_after: timedelta = timedelta(minutes=2),
    first_part: int = 0,
) -> list[Post]:
    """Turn one room's queued messages (in order) into as few Telegram posts as fit.

    Consecutive messages share a post, a blank line apart, while its visible length stays
    within `limit`. A message received more than `stale_after` from `now` gets a time line
    (the same label is not repeated within a post). A message too long for one post is split
    into parts of its own; `first_part` resumes the first message at that part.
    """
    if limit < MIN_POST_LIMIT:
        raise ValueError(f"limit must be at least {MIN_POST_LIMIT}")
    if first_part < 0:
        raise ValueError("first_part must not be negative")
    _require_aware(now, "now")
    posts: list[Post] = []
    draft: _Draft | None = None

    def flush() -> None:
        nonlocal draft
        if draft is not None:
            posts.append(Post("".join(draft.html), tuple(draft.ids), 0, 1))
            draft = None

    for index, message in enumerate(messages):
        _require_aware(message.inbox_at, "inbox_at")
        label = None
        if abs(now - message.inbox_at) > stale_after:
            label = _time_label(message.inbox_at, now, tz)
        resume = first_part if index == 0 else 0
        own = _Body.of(message.text)
        body, units, entities = own.with_time(label)
        if resume > 0 or units > limit:
            flush()
            posts.extend(_split_message(message, label, limit, resume))
            continue
        if draft is not None:
            shown = label if label != draft.last_label else None
            joined, joined_units, joined_entities = own.with_time(shown)
            if (
                draft.units + len(_SEPARATOR) + joined_units <= limit
                and draft.entities + joined_entities <= MAX_ENTITIES_PER_POST
            ):
                draft.html += [_SEPARATOR, joined]
                draft.ids.append(message.id)
                draft.units += len(_SEPARATOR) + joined_units
                draft.entities += joined_entities
                draft.last_label = label
                continue
            flush()
        draft = _Draft([body], [message.id], units, entities, label)
    flush()
    return posts
