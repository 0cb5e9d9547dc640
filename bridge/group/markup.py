"""Telegram formatting (message entities) → WhatsApp markup, for operators' replies.

WhatsApp formats with markers around a span: `*bold*`, `_italic_`, `~strikethrough~` and
```` ```monospace``` ````, and `> ` at the start of a quoted line. A marker only works when
it hugs a non-space character, and these inline markers do not reach across a line break.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from telegram import MessageEntity

_BOLD, _ITALIC, _STRIKE = 1, 2, 4
# Outermost first: bold+italic on one span becomes *_x_*.
_INLINE_MARKERS = ((_BOLD, "*"), (_ITALIC, "_"), (_STRIKE, "~"))
_INLINE_TYPES = {"bold": _BOLD, "italic": _ITALIC, "strikethrough": _STRIKE}
_CODE_TYPES = frozenset({"code", "pre"})
_QUOTE_TYPES = frozenset({"blockquote", "expandable_blockquote"})
_FENCE = "```"
_QUOTE_PREFIX = "> "
_FORMATTING_TYPES = frozenset(_INLINE_TYPES) | _CODE_TYPES | _QUOTE_TYPES | {"text_link"}


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    type: str
    url: str | None


def _to_spans(text: str, entities: Sequence[MessageEntity]) -> list[_Span]:
    """Entities with UTF-16 offsets turned into string indices (clamped to the text)."""
    # char_at[u] is the index of the character holding UTF-16 unit u.
    char_at: list[int] = []
    for index, char in enumerate(text):
        char_at.extend((index, index) if ord(char) > 0xFFFF else (index,))
    char_at.append(len(text))
    total = len(char_at) - 1

    def ceil_index(unit: int) -> int:
        # An offset inside a surrogate pair (malformed) takes the whole character.
        if unit == 0 or char_at[unit - 1] != char_at[unit]:
            return char_at[unit]
        return char_at[unit] + 1

    spans = []
    for entity in entities:
        kind = str(entity.type)
        if kind not in _FORMATTING_TYPES:
            continue
        first = min(max(entity.offset, 0), total)
        last = min(max(entity.offset + entity.length, first), total)
        spans.append(_Span(char_at[first], ceil_index(last), kind, entity.url))
    return spans


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """The span without its leading and trailing whitespace (start == end if none is left)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _same_link(shown: str, url: str) -> bool:
    def bare(value: str) -> str:
        value = value.strip().lower()
        for scheme in ("https://", "http://", "mailto:", "tel:"):
            value = value.removeprefix(scheme)
        return value.rstrip("/")

    return bare(shown) == bare(url)


class _Renderer:
    """One conversion: per-character styles, then a single left-to-right pass."""

    def __init__(self, text: str, spans: list[_Span]) -> None:
        self.text = text
        size = len(text)
        self.mask = [0] * size
        is_code = [False] * size
        is_quoted = [False] * size
        inline_diff = {bit: [0] * (size + 1) for bit in _INLINE_TYPES.values()}
        code_diff = [0] * (size + 1)
        quote_diff = [0] * (size + 1)
        for span in spans:
            if span.type in _INLINE_TYPES:
                inline_diff[_INLINE_TYPES[span.type]][span.start] += 1
                inline_diff[_INLINE_TYPES[span.type]][span.end] -= 1
            elif span.type in _CODE_TYPES:
                code_diff[span.start] += 1
                code_diff[span.end] -= 1
            elif span.type in _QUOTE_TYPES:
                quote_diff[span.start] += 1
                quote_diff[span.end] -= 1
        for bit, diff in inline_diff.items():
            depth = 0
            for index in range(size):
                depth += diff[index]
                if depth > 0:
                    self.mask[index] |= bit
        code_depth = quote_depth = 0
        for index in range(size):
            code_depth += code_diff[index]
            quote_depth += quote_diff[index]
            is_code[index] = code_depth > 0
            is_quoted[index] = quote_depth > 0

        # Monospace runs, trimmed; WhatsApp formats nothing inside them.
        self.code_end: dict[int, int] = {}
        index = 0
        while index < size:
            if not is_code[index]:
                index += 1
                continue
            run_end = index
            while run_end < size and is_code[run_end]:
                self.mask[run_end] = 0
                run_end += 1
            start, end = _trim(text, index, run_end)
            if start < end:
                self.code_end[start] = end
            index = run_end

        # " (url)" after a text link, outside any code run it ends in.
        inside_code = [False] * (size + 1)
        for start, end in self.code_end.items():
            for position in range(start + 1, end):
                inside_code[position] = True
        self.suffixes: dict[int, list[str]] = {}
        for span in spans:
            if span.type != "text_link" or not span.url:
                continue
            start, end = _trim(text, span.start, span.end)
            if start == end or _same_link(text[start:end], span.url):
                continue
            if inside_code[end]:
                end = next(e for s, e in self.code_end.items() if s < end < e)
            self.suffixes.setdefault(end, []).append(f" ({span.url})")

        # Lines with quoted visible text get "> ".
        self.quoted_lines: set[int] = set()
        line_start = 0
        for index, char in enumerate(text):
            if char == "\n":
                line_start = index + 1
            elif is_quoted[index] and not char.isspace() and not inside_code[line_start]:
                self.quoted_lines.add(line_start)

        # Inline runs never cross a line break, a code run or an inserted link suffix.
        self.barrier = [False] * (size + 1)
        for index, char in enumerate(text):
            if char == "\n":
                self.barrier[index] = self.barrier[index + 1] = True
        for start, end in self.code_end.items():
            self.barrier[start] = self.barrier[end] = True
        for position in self.suffixes:
            self.barrier[position] = True
        self.barrier[size] = True

    def render(self) -> str:
        text = self.text
        out: list[str] = []
        position = 0
        while position < len(text):
            out.extend(self.suffixes.get(position, ()))
            if position in self.quoted_lines:
                out.append(_QUOTE_PREFIX)
            if position in self.code_end:
                end = self.code_end[position]
                body = text[position:end]
                if self._wrapped(position, end - 1, _FENCE):
                    out.append(body)
                else:
                    out += [_FENCE, body, _FENCE]
                position = end
                continue
            cell_end = position + 1
            while not self.barrier[cell_end]:
                cell_end += 1
            self._cell(position, cell_end, 0, out)
            position = cell_end
        out.extend(self.suffixes.get(len(text), ()))
        return "".join(out)

    def _cell(self, start: int, end: int, open_bits: int, out: list[str]) -> None:
        """Emit text[start:end] (no line break inside) with the styles not open yet."""
        text, mask = self.text, self.mask
        index = start
        while index < end:
            pending = mask[index] & ~open_bits
            if not pending or text[index].isspace():
                out.append(text[index])
                index += 1
                continue
            # Open first the style that lasts longest, so the others nest inside it.
            last, bits = -1, 0
            for bit, _ in _INLINE_MARKERS:
                if pending & bit:
                    run_last = self._run_last(index, end, bit)
                    if run_last > last:
                        last, bits = run_last, bit
                    elif run_last == last:
                        bits |= bit
            markers = [
                marker
                for bit, marker in _INLINE_MARKERS
                if bits & bit and not self._wrapped(index, last, marker)
            ]
            out.extend(markers)
            self._cell(index, last + 1, open_bits | bits, out)
            out.extend(reversed(markers))
            index = last + 1

    def _run_last(self, start: int, end: int, bit: int) -> int:
        """Last non-space index from `start` on whose non-space characters all carry `bit`."""
        text, mask = self.text, self.mask
        last = start
        for index in range(start + 1, end):
            if text[index].isspace():
                continue
            if not mask[index] & bit:
                break
            last = index
        return last

    def _wrapped(self, first: int, last: int, marker: str) -> bool:
        """Whether text[first..last] already stands between `marker`s (typed by the operator)."""
        text, width = self.text, len(marker)
        inner = last - first + 1 >= 2 * width
        if inner and text.startswith(marker, first) and text.startswith(marker, last + 1 - width):
            return True
        before = first >= width and text.startswith(marker, first - width)
        return before and text.startswith(marker, last + 1)


def to_whatsapp(text: str, entities: Sequence[MessageEntity]) -> str:
    """WhatsApp markup for a Telegram message's text and its formatting entities.

    - bold, italic, strikethrough become `*x*`, `_x_`, `~x~`; nested styles nest (`*_x_*`),
      overlapping ones are closed and reopened so markers always pair up; each line of a
      multi-line span gets its own markers, as WhatsApp's do not cross line breaks.
    - code and pre become ```` ```x``` ````; nothing inside them is formatted.
    - text_link keeps its text and adds " (url)" after it (outside any markers), unless the
      text already is the address.
    - blockquote and expandable_blockquote put "> " before each non-blank line they cover.
    - underline, spoiler (WhatsApp cannot hide text, so it is shown), url, email, phone
      number, mention, text_mention, hashtag, cashtag, bot_command, custom_emoji (its text
      is the fallback emoji) and date_time leave the text as it is.

    Markers hug the text: whitespace at a span's edges stays outside, and spans of nothing
    but whitespace are dropped. A span the operator already wrapped in the same marker
    (typing `*x*` and also making it bold) is not wrapped again. Text without formatting
    entities comes back unchanged.
    """
    spans = _to_spans(text, entities)
    if not spans:
        return text
    return _Renderer(text, spans).render()
