import pytest

from bridge.core.phones import InvalidNumberError, e164


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6281234567890", "+6281234567890"),
        ("+62 812-3456-7890", "+6281234567890"),
        ("0812 3456 7890", "+6281234567890"),
        ("00 62 812 3456 7890", "+6281234567890"),
        ("(+44) 20 7946 0958", "+442079460958"),
    ],
)
def test_every_way_of_writing_a_number_gives_one_customer(text: str, expected: str) -> None:
    assert e164(text) == expected


@pytest.mark.parametrize(
    "text", ["", "+", "hello", "+62 812 abc", "+0812345678", "1234", "+" + "1" * 16, "٠٨١٢٣٤٥٦٧٨٩"]
)
def test_what_is_not_a_number_is_refused_with_the_expected_format(text: str) -> None:
    with pytest.raises(InvalidNumberError, match="expected"):
        e164(text)
