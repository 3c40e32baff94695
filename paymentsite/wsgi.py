from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paymentsite.settings")

application = get_wsgi_application()

from core.checks import raise_if_misconfigured  # noqa: E402  (needs settings loaded)

raise_if_misconfigured()
