from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paymentsite.settings")

application = get_wsgi_application()

from core.checks import raise_if_misconfigured  # noqa: E402  (needs settings loaded)

raise_if_misconfigured()

from health.credentials import shared_credentials  # noqa: E402  (needs settings loaded)
from health.probe import provider_probe  # noqa: E402

# The threads behind /health/ start with the server, so that its first answer already has the
# provider probe's result: runserver loads this module when it starts serving (`make run`);
# gunicorn loads it in each worker after the fork, where post_worker_init starts them too
# (start() does nothing while the thread runs).
provider_probe.start()
shared_credentials.start()
