from __future__ import annotations

import re
from typing import Any

from django import forms

from payments.currencies import MINOR_UNIT_DIGITS, format_minor_units
from payments.models import Refund, Transaction


class CancelForm(forms.Form):
    reason = forms.CharField(
        max_length=Transaction._meta.get_field("status_note").max_length,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Stored on each payment and in the admin log, e.g. “Customer paid by bank transfer”.",
    )

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return reason


# Refund.Reason in the support person's words (the model's own labels are its values, capitalised).
REASON_LABELS = {
    Refund.Reason.REQUESTED_BY_CUSTOMER: "Requested by the customer",
    Refund.Reason.DUPLICATE: "Duplicate payment",
    Refund.Reason.FRAUDULENT: "Fraudulent payment",
    Refund.Reason.CHARGED_AFTER_CANCEL: "Charged after cancel",
    Refund.Reason.OTHER: "Other (say why in the note)",
}

# An amount as the currency's format shows it: 5, 5.00, 1,234.56, optionally with its code.
MAJOR_UNITS = re.compile(r"(?P<major>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<minor>\d*))?")
ADMIN_KEY = re.compile(r"admin-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_major_units(text: str, currency: str) -> int:
    """An amount typed as the admin shows it, in minor units: "5.00", "5", "5.00 USD" or
    "1,234.56" in USD -> 500, 500, 500, 123456; raises ValidationError saying why.

    Hand-written rather than Decimal or a locale parser (babel): it reads back exactly the one
    format the admin shows (format_minor_units), refuses exponents, NaN and other locales'
    separators, and never rounds: more decimals than the currency has is an error."""
    digits = MINOR_UNIT_DIGITS.get(currency, 2)
    example = format_minor_units(500 * 10**digits, currency)
    shown = text.strip()
    if shown[-3:].upper() == currency and shown[-4:-3] in ("", " "):
        shown = shown[:-3].strip()
    if shown.startswith("-"):
        raise forms.ValidationError("The amount must be more than zero.")
    match = MAJOR_UNITS.fullmatch(shown)
    if match is None:
        raise forms.ValidationError(
            f"Enter an amount in {currency} as its format shows it, e.g. {example}, "
            "or leave it blank to refund all that is left."
        )
    minor = match["minor"] or ""
    if len(minor) > digits:
        places = "no decimal places" if digits == 0 else f"{digits} decimal place{'s' * (digits > 1)}"
        raise forms.ValidationError(f"{currency} has {places}: e.g. {example}.")
    amount = int(match["major"].replace(",", "")) * 10**digits + int(minor.ljust(digits, "0") or 0)
    if amount < 1:
        raise forms.ValidationError("The amount must be more than zero.")
    return amount


class RefundForm(forms.Form):
    """Refund…: the amount in major units (blank: all that is left), a reason and a note; the
    idempotency key is made when the form is first shown, so sending it twice refunds once."""

    amount = forms.CharField(required=False, max_length=40)
    reason = forms.ChoiceField(choices=[("", "---------"), *REASON_LABELS.items()])
    note = forms.CharField(
        required=False,
        max_length=Refund._meta.get_field("note").max_length,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Stored on the refund, e.g. “Customer returned the order”.",
    )
    key = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, charge: Transaction, left: int | None, **kwargs: Any) -> None:
        """`left`: what is left to refund; None when this form's refund exists (sent again)."""
        super().__init__(*args, **kwargs)
        self.charge, self.left = charge, left
        digits = MINOR_UNIT_DIGITS.get(charge.currency, 2)
        self.fields["amount"].label = f"Amount ({charge.currency})"
        self.fields["amount"].help_text = (
            f"Blank: all that is left, {format_minor_units(left or 0, charge.currency)}. "
            f"In {charge.currency} with {digits} decimal places, e.g. "
            f"{format_minor_units(5 * 10**digits, charge.currency)}."
        )

    def clean_amount(self) -> int:
        """In minor units; all that is left (as the page shows it) when blank."""
        text = self.cleaned_data["amount"].strip()
        if not text and self.left is None:
            raise forms.ValidationError("Enter the amount.")
        amount = self.left if not text else parse_major_units(text, self.charge.currency)
        if self.left is not None and amount > self.left:
            left = format_minor_units(self.left, self.charge.currency)
            raise forms.ValidationError(f"At most {left} is left to refund.")
        return amount

    def clean_key(self) -> str:
        key = self.cleaned_data["key"]
        if not ADMIN_KEY.fullmatch(key):
            raise forms.ValidationError("This form is out of date: open Refund… again.")
        return key

    def clean_note(self) -> str:
        return self.cleaned_data["note"].strip()
