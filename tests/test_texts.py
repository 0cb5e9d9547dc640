"""Bot texts in English or Bahasa Indonesia (`telegram.language`).

The catalog is checked against the code itself: every `_("...")` / `N_("...")` literal in
bridge/ (found by parsing it) has an Indonesian entry, no entry is left unused, and each
translation keeps the English text's placeholders and HTML tags.
"""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge import texts
from bridge.texts import _
from bridge.texts_id import INDONESIAN

PACKAGE = Path(__file__).parent.parent / "bridge"
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
