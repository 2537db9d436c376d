"""One money formatter per currency: ISO 4217 minor units and symbols from CLDR (via Babel).

Every amount a person reads — digest, alerts, CLI, demo — goes through ``format_money`` so one card
never shows "$8,400.00" beside "8,400.00 USD", nor yen with cents. The rules:

* digits are the currency's minor units (USD 2, JPY 0, BHD 3), always — never "0 decimals when big";
* the symbol when CLDR has one distinct from the code in English ($, €, £, ¥, CA$, ₹), else the
  ISO code and a space ("CHF 1,234.50"); a value that is no ISO code is shown as it is, 2 digits;
* ``signed`` puts "+" before gains and "−" (U+2212) before losses; an amount that rounds to zero has
  no sign;
* ``whole`` drops the minor units (chart axis ticks only, where the digits are noise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache

from babel.numbers import format_decimal, get_currency_precision, get_currency_symbol

LOCALE = "en_US"
MINUS = "\u2212"


@dataclass(frozen=True)
class MoneyFormat:
    """How one currency is written."""

    currency: str
    digits: int
    symbol: str
    symbol_is_code: bool

    def format(self, amount: float, *, signed: bool = False, whole: bool = False) -> str:
        digits = 0 if whole else self.digits
        quantum = Decimal(1).scaleb(-digits)
        value = Decimal(repr(float(amount))).quantize(quantum, rounding=ROUND_HALF_EVEN)
        sign = ""
        if value < 0:
            sign = MINUS
        elif signed and value > 0:
            sign = "+"
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        number = format_decimal(abs(value), format=pattern, locale=LOCALE, decimal_quantization=True)
        if self.symbol_is_code:
            return f"{sign}{self.symbol}\u00a0{number}"
        return f"{sign}{self.symbol}{number}"

    def round(self, amount: float) -> float:
        """``amount`` rounded to the currency's minor unit (what the reader sees)."""
        return float(Decimal(repr(float(amount))).quantize(Decimal(1).scaleb(-self.digits), rounding=ROUND_HALF_EVEN))


@lru_cache(maxsize=64)
def money_format(currency: str) -> MoneyFormat:
    raw = (currency or "").strip()
    code = raw.upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        # Not an ISO 4217 code (bad or hostile data): shown as it is, after the amount's digits, and
        # escaped by whatever renders it (HTML, chat, terminal) like any other string from the bill.
        return MoneyFormat(raw or "XXX", 2, raw or "XXX", symbol_is_code=True)
    digits = int(get_currency_precision(code))
    symbol = get_currency_symbol(code, locale=LOCALE)
    return MoneyFormat(code, digits, symbol, symbol_is_code=symbol.upper() == code)


def format_money(amount: float, currency: str, *, signed: bool = False, whole: bool = False) -> str:
    """``$8,400.00``, ``+¥1,235``, ``−€3.10``, ``CHF 12.50`` — see the module docstring."""
    return money_format(currency).format(amount, signed=signed, whole=whole)


def format_share(share: float) -> str:
    """``96%``; one decimal when whole percents would say 0% or 100% of something that is neither
    (``99.7%`` beside a ``100%`` whose dollars differ reads as a mistake)."""
    whole = f"{share:.0%}"
    if whole in ("0%", "100%", "-0%", "-100%") and share not in (0.0, 1.0, -1.0):
        return f"{share:.1%}"
    return whole
