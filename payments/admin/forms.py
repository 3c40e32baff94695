from __future__ import annotations

from django import forms

from payments.models import Transaction


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
