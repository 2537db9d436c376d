"""Hole 6, the smaller ones: math text in a currency, control characters on the terminal, CSV formulas,
a safe example config, a NetworkPolicy that admits only what it must."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from spendwatch.notify.charts import incident_chart, tick_label
from tests.security.records import hostile_incident

MATH = ["$x$", "$\\frac{$", "$\\undefinedcommand$", "$$", "USD$", "$\\$$", "$" * 9]


@pytest.mark.parametrize("currency", MATH)
def test_a_currency_with_math_text_draws_a_chart(currency: str) -> None:
    png = incident_chart(hostile_incident("a").points, currency)
    assert png is not None
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (1200, 400)


@pytest.mark.parametrize("currency", MATH)
def test_a_tick_label_shows_the_dollar_signs_as_text(currency: str) -> None:
    label = tick_label(1234.0, currency)
    # Every $ is escaped, so matplotlib never enters math mode: it shows them as they are.
    assert label.count("$") == label.count("\\$")
