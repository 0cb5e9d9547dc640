"""What the bot says in Telegram, in the configured language (`telegram.language`).

gettext-style: `_("English text with {placeholders}")` returns the text in the current
language, and the English text is its own key, so English output is exactly the literal.
Placeholders are filled after translation: `_("closes at {when}").format(when=...)`. A text
defined at import time is marked with `N_` (which returns it unchanged, so the catalog test
finds it) and translated where it is used: `_(HELP)`.

The language is one module-level setting rather than a parameter threaded through every
part: one bridge runs per process and chooses its language once, at start-up (`use`), before
anything is posted. Logs, HTTP answers and `bridge check` stay in English and never pass
through here.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from bridge.core.texts_id import INDONESIAN

Language = Literal["en", "id"]

_CATALOGS: dict[str, dict[str, str]] = {"en": {}, "id": INDONESIAN}
_current: dict[str, str] = _CATALOGS["en"]
_language: Language = "en"


def use(language: Language) -> None:
    """Make `language` the language of every text from now on."""
    global _current, _language
    _current = _CATALOGS[language]
    _language = language


def language() -> Language:
    """The language in use."""
    return _language


def _(text: str) -> str:
    """`text` (an English literal) in the current language; itself when not translated."""
    return _current.get(text, text)


def N_(text: str) -> str:
    """Mark a text for the catalog without translating it now (for module-level constants)."""
    return text


WEEKDAYS = (N_("Mon"), N_("Tue"), N_("Wed"), N_("Thu"), N_("Fri"), N_("Sat"), N_("Sun"))
MONTHS = (
    N_("Jan"),
    N_("Feb"),
    N_("Mar"),
    N_("Apr"),
    N_("May"),
    N_("Jun"),
    N_("Jul"),
    N_("Aug"),
    N_("Sep"),
    N_("Oct"),
    N_("Nov"),
    N_("Dec"),
)


def strftime(moment: date, fmt: str) -> str:
    """`moment.strftime(fmt)` with `%a` and `%b` (weekday, month) in the current language.

    The English names are those of the C locale, which is what `strftime` gives a Python
    process that never calls `setlocale`, so English output stays as it was.
    """
    fmt = fmt.replace("%a", _(WEEKDAYS[moment.weekday()])).replace(
        "%b", _(MONTHS[moment.month - 1])
    )
    return moment.strftime(fmt)
