"""Phone numbers as the bridge keys customers by: E.164, `+` and digits only.

NusaSMS gives a sender's number as digits (`6281234567890`); operators type it any way
(`+62 812-3456-7890`, `0812 3456 7890`). Both become `+6281234567890`, so one customer is
one number whichever way it arrived.
"""

from __future__ import annotations

import re

# Indonesia: a national number starts with a trunk `0` that stands for `+62`.
DEFAULT_COUNTRY_CODE = "62"
EXPECTED_FORMAT = "+62812… (country code first), or 0812… for an Indonesian number"

_SEPARATORS = re.compile(r"[\s().\-/]")
_MIN_DIGITS = 8
# E.164 allows at most 15 digits, country code included.
_MAX_DIGITS = 15


class InvalidNumberError(ValueError):
    """Text that is not a phone number a customer could have."""


def e164(text: str, *, country_code: str = DEFAULT_COUNTRY_CODE) -> str:
    """`text` as `+<digits>`, or InvalidNumberError saying what is wrong."""
    compact = _SEPARATORS.sub("", text.strip())
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if compact.startswith("+"):
        digits = compact[1:]
    elif compact.startswith("0"):
        digits = country_code + compact[1:]
    else:
        # NusaSMS's own form: the country code without `+`.
        digits = compact
    if not digits.isascii() or not digits.isdigit():
        raise InvalidNumberError(f"{text!r} is not a phone number; expected {EXPECTED_FORMAT}")
    if digits.startswith("0"):
        raise InvalidNumberError(f"{text!r} has no country code; expected {EXPECTED_FORMAT}")
    if not _MIN_DIGITS <= len(digits) <= _MAX_DIGITS:
        raise InvalidNumberError(
            f"{text!r} has {len(digits)} digits, a phone number has {_MIN_DIGITS} to "
            f"{_MAX_DIGITS}; expected {EXPECTED_FORMAT}"
        )
    return "+" + digits
