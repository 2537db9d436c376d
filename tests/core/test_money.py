"""One money format per currency: ISO 4217 minor units, symbol or code, signs."""

from __future__ import annotations

import re

import pytest

from spendwatch.money import MINUS, format_money, format_share, money_format


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (8400, "USD", "$8,400.00"),
        (8400.005, "USD", "$8,400.00"),  # banker's rounding at the minor unit
        (0.5, "USD", "$0.50"),
        (1234.5, "JPY", "¥1,234"),  # yen have no minor unit: never cents
        (1235.5, "jpy", "¥1,236"),
        (1.2346, "BHD", "BHD\u00a01.235"),  # three minor digits; no distinct English symbol
        (12.5, "CHF", "CHF\u00a012.50"),
        (3.1, "EUR", "€3.10"),
        (99, "GBP", "£99.00"),
        (1500, "CAD", "CA$1,500.00"),
        (7, "KRW", "₩7"),
    ],
)
def test_each_currency_is_written_with_its_own_minor_units_and_symbol(
    amount: float, currency: str, expected: str
) -> None:
    assert format_money(amount, currency) == expected


def test_signs_are_plus_and_a_true_minus_and_zero_has_none() -> None:
    assert format_money(16.2, "USD", signed=True) == "+$16.20"
    assert format_money(-16.2, "USD") == f"{MINUS}$16.20"
    assert format_money(-16.2, "USD", signed=True) == f"{MINUS}$16.20"
    assert format_money(0.004, "USD", signed=True) == "$0.00"  # rounds to zero: no sign
    assert format_money(-0.004, "USD", signed=True) == "$0.00"


def test_whole_drops_the_minor_units_for_chart_ticks_only() -> None:
    assert format_money(8400.49, "USD", whole=True) == "$8,400"
    assert format_money(8400.49, "USD") == "$8,400.49"


def test_a_value_that_is_no_iso_code_is_shown_as_it_is() -> None:
    hostile = "<!channel> x"
    assert format_money(900, hostile) == f"{hostile}\u00a0900.00"
    assert money_format("").currency == "XXX"


def test_rounding_matches_what_the_reader_sees() -> None:
    assert money_format("JPY").round(1234.5) == 1234.0
    # The decimal the reader sees, rounded half to even (2.675 is read as written, not as its binary neighbour).
    assert money_format("USD").round(2.675) == 2.68
    assert money_format("USD").round(2.665) == 2.66
    assert re.fullmatch(r"\$\d{1,3}(,\d{3})*\.\d{2}", format_money(123456789.123, "USD"))


@pytest.mark.parametrize(
    ("share", "expected"),
    [(0.96, "96%"), (1.0, "100%"), (0.9967, "99.7%"), (0.0031, "0.3%"), (0.0, "0%"), (0.5, "50%")],
)
def test_shares_near_0_or_100_keep_a_decimal(share: float, expected: str) -> None:
    assert format_share(share) == expected
