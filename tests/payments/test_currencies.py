"""payments.currencies: amounts in minor units shown per currency, without a database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.currencies import MINOR_UNIT_DIGITS, format_minor_units
from payments.models import Transaction


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (1999, "USD", "19.99 USD"),
        (100, "EUR", "1.00 EUR"),
        (5, "USD", "0.05 USD"),
        (0, "USD", "0.00 USD"),
        (123_456_789, "GBP", "1,234,567.89 GBP"),
        (500, "JPY", "500 JPY"),
        (1_234_567, "KRW", "1,234,567 KRW"),
        (0, "CLP", "0 CLP"),
        (1234, "KWD", "1.234 KWD"),
        (5, "BHD", "0.005 BHD"),
        (1_000_000, "TND", "1,000.000 TND"),
    ],
)
def test_an_amount_is_shown_with_its_currencys_minor_unit_digits(
    amount: int, currency: str, shown: str
) -> None:
    assert format_minor_units(amount, currency) == shown


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (-1999, "USD", "-19.99 USD"),
        (-5, "USD", "-0.05 USD"),  # divmod of a negative amount would give "-1.95"
        (-1_234_567, "JPY", "-1,234,567 JPY"),
        (-1, "KWD", "-0.001 KWD"),
    ],
)
def test_a_negative_amount_keeps_its_sign_in_front_of_the_whole_amount(
    amount: int, currency: str, shown: str
) -> None:
    assert format_minor_units(amount, currency) == shown


def test_a_currency_not_in_the_table_is_shown_with_two_digits() -> None:
    assert "XYZ" not in MINOR_UNIT_DIGITS
    assert format_minor_units(1999, "XYZ") == "19.99 XYZ"


def test_the_table_holds_iso_codes_with_zero_two_or_three_digits() -> None:
    assert all(len(code) == 3 and code.isupper() for code in MINOR_UNIT_DIGITS)
    assert set(MINOR_UNIT_DIGITS.values()) == {0, 2, 3}
    assert (MINOR_UNIT_DIGITS["USD"], MINOR_UNIT_DIGITS["JPY"], MINOR_UNIT_DIGITS["KWD"]) == (2, 0, 3)


@given(
    amount=st.integers(min_value=-(10**12), max_value=10**12),
    currency=st.sampled_from(sorted(MINOR_UNIT_DIGITS)),
)
def test_the_shown_amount_reads_back_as_the_same_minor_units(amount: int, currency: str) -> None:
    number, code = format_minor_units(amount, currency).split(" ")

    assert code == currency
    digits = MINOR_UNIT_DIGITS[currency]
    whole, _, minor = number.partition(".")
    assert len(minor) == digits
    assert int(number.replace(",", "").replace(".", "")) == amount
    assert whole.lstrip("-") == f"{abs(amount) // 10**digits:,}"


def test_a_transaction_shows_its_amount_the_same_way() -> None:
    assert Transaction(amount=1999, currency="KWD").amount_display == "1.999 KWD"
    assert Transaction(amount=1999, currency="JPY").amount_display == "1,999 JPY"
