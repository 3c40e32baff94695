"""The admin index's "waiting for support" counts (templates/admin/index.html)."""

from __future__ import annotations

from typing import Any

from django import template
from django.contrib.auth.models import AbstractBaseUser

register = template.Library()


@register.simple_tag
def attention_counts(user: AbstractBaseUser) -> list[dict[str, Any]]:
    """Each "needs attention" group with its count and list link; none for users who cannot see payments."""
    if not user.has_perm("payments.view_transaction"):
        return []
    from payments.admin.filters import attention_counts as counts  # the admin's one definition of the groups

    return counts()
