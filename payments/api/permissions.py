"""Who may use the charge API with a session (the payment page's way in).

Support staff and other staff accounts sign in to the admin with a session; the same
session must not take payments through the API, as /pay/ refuses them too
(payments.roles.can_take_payments). A request signed with an API key is an API client's.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from payments.roles import can_take_payments


class SessionMayTakePayments(BasePermission):
    message = "Staff and support accounts cannot take payments; use an API client's key."

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.auth is not None or not request.user.is_authenticated:
            return True  # an API key, or IsAuthenticated answers 401 first
        return can_take_payments(request.user)
