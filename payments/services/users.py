"""Setting up the people who use the service: support staff."""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission

from payments.models import Transaction
from payments.roles import SUPPORT_GROUP_NAME, SUPPORT_PERMISSIONS

logger = logging.getLogger("payments.services")  # one logger name for all the services, as before the split

Status = Transaction.Status


def support_user_create(*, username: str, password: str, email: str = "") -> tuple[AbstractBaseUser, bool]:
    """A staff user in the "Payment support" group (which is created if missing)."""
    group, _ = Group.objects.get_or_create(name=SUPPORT_GROUP_NAME)
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label="payments", codename__in=SUPPORT_PERMISSIONS)
    )
    user, created = get_user_model().objects.get_or_create(username=username, defaults={"email": email})
    user.is_staff = True
    user.set_password(password)
    user.save()
    user.groups.add(group)
    return user, created
