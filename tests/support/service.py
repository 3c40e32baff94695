"""The test run's service settings: its provider key, its database for subprocesses, its pool."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings
from django.db import connection, connections

from core.db import reset_pool

TEST_API_KEY = "sk_test_fake_for_tests"

requires_pooled_mysql = pytest.mark.skipif(
    not django_settings.DATABASE_IS_POOLED,
    reason="needs DATABASE_URL=mysql://… (the pooled backend); CI runs it on MariaDB",
)


def database_url_for_subprocess() -> str:
    """The test database, as a URL that gunicorn and manage.py subprocesses can open."""
    db = connection.settings_dict
    if not django_settings.DATABASE_IS_POOLED:
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"mysql://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}/{db['NAME']}"


@contextlib.contextmanager
def pool_options(**options: int | float) -> Iterator[None]:
    """Rebuild the default alias's pool with other POOL_OPTIONS for a block."""
    settings_dict = connections["default"].settings_dict
    saved = dict(settings_dict.get("POOL_OPTIONS", {}))
    settings_dict["POOL_OPTIONS"] = {**saved, **options}
    reset_pool()
    try:
        yield
    finally:
        settings_dict["POOL_OPTIONS"] = saved
        reset_pool()
