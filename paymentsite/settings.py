"""The one settings module, driven by the environment (and `.env` when present, unless
DJANGO_READ_ENV_FILE=false).

Every variable read here is in README.md's "Configuration" table and in
.env.example. A bad value is collected in CONFIG_ERRORS and
reported by the system check `paymentsite.E001`, which stops start-up.
"""

from __future__ import annotations

import zoneinfo
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import environ

from core.logs.config import logging_config
from paymentsite.config import ENCRYPTED_SSL_MODES, PRODUCTION, EnvReader

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
config = EnvReader(env)
# DJANGO_READ_ENV_FILE=false (tests/service.env sets it) ignores a developer's .env, so that the
# test suite and the processes it starts see only the environment they were given.
# Whether a .env was read: without one, the configuration check suggests creating it for a first run.
ENV_FILE_READ = config.bool("DJANGO_READ_ENV_FILE", True) and (BASE_DIR / ".env").is_file()
if ENV_FILE_READ:
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = config.bool("DJANGO_DEBUG", False)
# Production mode (DEBUG off) refuses a missing or development key, SQLite without
# DB_ALLOW_SQLITE=true, and an empty DJANGO_ALLOWED_HOSTS (see paymentsite.config).
SECRET_KEY = config.secret_key("DJANGO_SECRET_KEY", debug=DEBUG)
ALLOWED_HOSTS = config.list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not ALLOWED_HOSTS:
    config.errors.append(
        f"DJANGO_ALLOWED_HOSTS is not set: {PRODUCTION} needs the host names the service answers to, "
        "e.g. DJANGO_ALLOWED_HOSTS=payments.example.com."
    )

# HTTPS behind a TLS-terminating proxy ---------------------------------------

# The header the proxy sets to `https` (e.g. X-Forwarded-Proto); only trust it when the
# proxy always sets it, overwriting what the client sent.
SECURE_PROXY_SSL_HEADER = config.proxy_ssl_header("DJANGO_SECURE_PROXY_SSL_HEADER")
CSRF_TRUSTED_ORIGINS = config.origins("DJANGO_CSRF_TRUSTED_ORIGINS")
SECURE_SSL_REDIRECT = config.bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
# Probes and scrapes inside the cluster speak plain HTTP to the pod.
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = config.bool("DJANGO_SECURE_COOKIES", not DEBUG)
SECURE_HSTS_SECONDS = config.int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = config.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = config.bool("DJANGO_SECURE_HSTS_PRELOAD", False)
if SECURE_SSL_REDIRECT and SECURE_PROXY_SSL_HEADER is None:
    config.errors.append(
        "DJANGO_SECURE_SSL_REDIRECT is on but DJANGO_SECURE_PROXY_SSL_HEADER is not set, so every "
        "request looks like plain HTTP and is redirected forever: set "
        "DJANGO_SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto (the header your TLS-terminating proxy sets), "
        "or DJANGO_SECURE_SSL_REDIRECT=false if the proxy redirects to HTTPS itself."
    )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    # Kept only until tests stop importing its Token model: apikeys' migration 0002 moved its
    # tokens (read with plain SQL, so it does not need this app), and its admin is disabled.
    "rest_framework.authtoken",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "core",
    "apikeys",
    "payments",
    "health",
]

MIDDLEWARE = [
    "core.logs.request_id.RequestIdMiddleware",
    "health.middleware.RequestMetricsMiddleware",
    # Before anything that validates the Host header: probes send the pod IP.
    "health.middleware.ProbeMiddleware",
    # Under /api/: a refused Host or a path no pattern matches answers the API's JSON error, not HTML.
    "payments.api.middleware.APIErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "paymentsite.urls"
WSGI_APPLICATION = "paymentsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database ---------------------------------------------------------------

DB_CONNECTION_LIMIT = config.int("DB_CONNECTION_LIMIT", 10, minimum=1, maximum=1000)
DB_MAX_OVERFLOW = config.int("DB_MAX_OVERFLOW", 0, minimum=0, maximum=1000)
DB_ACQUIRE_TIMEOUT_MS = config.int("DB_ACQUIRE_TIMEOUT", 5000, minimum=1, maximum=600_000)
DB_POOL_RECYCLE_S = config.int("DB_POOL_RECYCLE", 900, minimum=1)
DB_LOG_QUERIES = config.bool("DB_LOG_QUERIES", False)

# DATABASE_URL, or DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASSWORD; neither: SQLite.
_database = config.database(f"sqlite:///{BASE_DIR / 'db.sqlite3'}", debug=DEBUG)
DATABASE_IS_POOLED = _database["ENGINE"] == "django.db.backends.mysql"
# Django's MySQL isolation levels. The service runs at Django's default, READ COMMITTED (MariaDB's
# own is REPEATABLE READ), unless DATABASE_URL's isolation_level names another.
_ISOLATION_LEVELS = ("READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE")
if DATABASE_IS_POOLED:
    # The URL's query options merged with DB_SSL_*: dj_db_conn_pool opens each pooled
    # connection through Django's MySQL backend, which passes OPTIONS to MySQLdb.connect.
    _options = config.mysql_options(_database.get("OPTIONS", {}))
    # Every pool checkout is a Django "connect", which would send SET SESSION TRANSACTION
    # ISOLATION LEVEL again on a connection that has it: the driver's init_command sets it once
    # per physical connection instead. mysqlclient runs one init_command, so beside the URL's
    # own Django still sets the level; an unknown one is left to Django to refuse, as before.
    _level = str(_options.get("isolation_level", "read committed")).upper()
    if _level in _ISOLATION_LEVELS and "init_command" not in _options:
        _options.update(
            init_command=f"SET SESSION TRANSACTION ISOLATION LEVEL {_level}", isolation_level=None
        )
    # Opened in the mode Django puts them in (mysqlclient would turn autocommit off, Django on again).
    _options["autocommit"] = True
    _database.update(
        ENGINE="dj_db_conn_pool.backends.mysql",
        # The pool owns connections; Django hands its connection back at the end
        # of every request (and the charge path hands it back earlier).
        CONN_MAX_AGE=0,
        OPTIONS=_options,
        POOL_OPTIONS={
            "POOL_SIZE": DB_CONNECTION_LIMIT,
            "MAX_OVERFLOW": DB_MAX_OVERFLOW,
            "TIMEOUT": DB_ACQUIRE_TIMEOUT_MS / 1000,
            "RECYCLE": DB_POOL_RECYCLE_S,
            "PRE_PING": True,
            "ECHO": False,
        },
    )
    if config.str("DB_TEST_NAME"):
        _database["TEST"] = {"NAME": config.str("DB_TEST_NAME")}
else:
    _tls = [name for name in ("DB_SSL_MODE", "DB_SSL_CA", "DB_SSL_CERT", "DB_SSL_KEY") if config.str(name)]
    if _tls:
        config.errors.append(f"{', '.join(_tls)} set, but TLS applies to a MySQL database only, not SQLite.")
    # IMMEDIATE: a transaction takes SQLite's write lock when it begins, so two
    # processes that read then write a row queue on the busy timeout instead of one
    # failing with "database is locked" (SQLite ignores SELECT … FOR UPDATE).
    _database["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    # A file, not memory, so that live-server and concurrency tests get one
    # connection per thread as they would on MariaDB.
    _database["TEST"] = {"NAME": str(BASE_DIR / f".{config.str('DB_TEST_NAME') or 'test-db'}.sqlite3")}
DATABASES = {"default": _database}
# Checked on every new pooled connection (core.checks): libmariadb's REQUIRED alone
# would fall back to plain text on a server without TLS.
DATABASE_REQUIRES_TLS = _database.get("OPTIONS", {}).get("ssl_mode") in ENCRYPTED_SSL_MODES
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Payment provider ---------------------------------------------------------

# The provider adapter (payments.provider's factory); a second provider is one new module.
PAYMENT_PROVIDER_CLASS = "payments.provider.http.HttpProvider"
PAYMENT_SERVICE_URL = config.provider_url("PAYMENT_SERVICE_URL", required=True)


def _derived_health_url(charge_url: str) -> str:
    if not charge_url:
        return ""
    parts = urlsplit(charge_url)
    return urlunsplit((parts.scheme, parts.netloc, "/health", "", ""))


PAYMENT_HEALTH_URL = config.provider_url(
    "PAYMENT_HEALTH_URL", required=False, default=_derived_health_url(PAYMENT_SERVICE_URL)
)
# How often each process probes PAYMENT_HEALTH_URL in the background; /health/ shows the last result.
PAYMENT_HEALTH_PROBE_S = config.int("PAYMENT_HEALTH_PROBE_S", 5, minimum=1, maximum=300)
PAYMENT_API_KEY = config.required_str("PAYMENT_API_KEY")
PAYMENT_TIMEOUT_MS = config.int("PAYMENT_TIMEOUT_MS", 5000, minimum=1, maximum=120_000)
PAYMENT_CONNECT_TIMEOUT_MS = config.int("PAYMENT_CONNECT_TIMEOUT_MS", 3000, minimum=1, maximum=60_000)
PAYMENT_MAX_RETRIES = config.int("PAYMENT_MAX_RETRIES", 3, minimum=0, maximum=10)
PAYMENT_BACKOFF_MS = config.int("PAYMENT_BACKOFF_MS", 200, minimum=0, maximum=60_000)
PAYMENT_DEADLINE_MS = config.int("PAYMENT_DEADLINE_MS", 10_000, minimum=1, maximum=600_000)
PAYMENT_MAX_ATTEMPTS = config.int("PAYMENT_MAX_ATTEMPTS", 6, minimum=1, maximum=100)
PAYMENT_MAX_AMOUNT = config.int("PAYMENT_MAX_AMOUNT", 99_999_999, minimum=1)
# The slowest a charge call can be: every attempt starts before the deadline and its socket is
# closed connect + read timeout after it began (payments.provider.deadline), whatever the provider
# sends. After it + PAYMENT_RECONCILE_AFTER_S no attempt can be in flight: a
# pending row is abandoned, and a lookup that finds no charge proves none was made.
PAYMENT_SLOWEST_CHARGE_S = (PAYMENT_DEADLINE_MS + PAYMENT_CONNECT_TIMEOUT_MS + PAYMENT_TIMEOUT_MS) / 1000
# How long the provider may go on processing a request after we closed its connection
# (payments.provider.in_flight_window_s: the slowest call + this).
PAYMENT_PROVIDER_ALLOWANCE_S = config.int("PAYMENT_PROVIDER_ALLOWANCE_S", 60, minimum=0, maximum=3600)
PAYMENT_RECONCILE_AFTER_S = config.int(
    "PAYMENT_RECONCILE_AFTER_S",
    int(PAYMENT_SLOWEST_CHARGE_S) + max(1, PAYMENT_PROVIDER_ALLOWANCE_S),
    minimum=1,
    maximum=86_400,
)
if PAYMENT_RECONCILE_AFTER_S <= PAYMENT_SLOWEST_CHARGE_S:
    config.errors.append(
        f"PAYMENT_RECONCILE_AFTER_S={str(PAYMENT_RECONCILE_AFTER_S)!r} is invalid: expected more than the "
        f"slowest possible charge, PAYMENT_DEADLINE_MS + PAYMENT_CONNECT_TIMEOUT_MS + PAYMENT_TIMEOUT_MS "
        f"= {PAYMENT_SLOWEST_CHARGE_S:g} s, or leave it unset for that + 60 s."
    )
# A GET of a charge whose outcome is unknown asks the provider at most once per this many seconds
# per charge (payments.services.lookup); 0: never, only reconcile_payments does.
PAYMENT_LOOKUP_ON_READ_S = config.int("PAYMENT_LOOKUP_ON_READ_S", 5, minimum=0, maximum=3600)
PAYMENT_BREAKER_FAILURES = config.int("PAYMENT_BREAKER_FAILURES", 5, minimum=1, maximum=1000)
PAYMENT_BREAKER_RESET_S = config.int("PAYMENT_BREAKER_RESET_S", 30, minimum=1, maximum=3600)
# Charges one process may have waiting on the provider at once; more get 503 provider_busy.
# Keep it below the threads of a gunicorn worker, so /health/ always finds a free thread.
PAYMENT_MAX_CONCURRENT_CALLS = config.int("PAYMENT_MAX_CONCURRENT_CALLS", 24, minimum=1, maximum=1000)
# How long a call that finds every slot taken waits for one before 503 provider_busy (a spike,
# not a hanging provider: the breaker refuses those at once).
PAYMENT_SLOT_WAIT_MS = config.int("PAYMENT_SLOT_WAIT_MS", 200, minimum=0, maximum=5000)
# How many may wait for a slot at once; more get 503 provider_busy at once. Each waiter holds a
# thread: with the provider hanging, uncapped waiters take the threads kept for /health/.
PAYMENT_SLOT_WAITERS = config.int("PAYMENT_SLOT_WAITERS", 4, minimum=0, maximum=1000)
# Shows the fake provider's test cards on the payment page (set by `make run`).
PAYMENT_FAKE_PROVIDER = config.bool("PAYMENT_FAKE_PROVIDER", False)
# The provider's events (POST /webhooks/provider): the Standard Webhooks secrets they are signed
# with, several while one is rotated. None: the endpoint answers 404 webhooks_not_configured.
PAYMENT_WEBHOOK_SECRET = config.webhook_secrets("PAYMENT_WEBHOOK_SECRET")

# Events out (payments.services.delivery): clients' endpoints, told when a charge or refund settles.
# true: endpoints may be plain http and loopback or private addresses (development, tests only).
EVENTS_ALLOW_PRIVATE_URLS = config.bool("EVENTS_ALLOW_PRIVATE_URLS", False)
# Each delivery request's connect and read timeout.
EVENTS_TIMEOUT_MS = config.int("EVENTS_TIMEOUT_MS", 5000, minimum=1, maximum=60_000)
# The first retry's delay; each next one doubles it, up to an hour, for EVENTS_RETRY_FOR_S.
EVENTS_RETRY_BASE_MS = config.int("EVENTS_RETRY_BASE_MS", 5000, minimum=0, maximum=3_600_000)
EVENTS_RETRY_FOR_S = config.int("EVENTS_RETRY_FOR_S", 3 * 86400, minimum=1, maximum=30 * 86400)
# An endpoint is disabled after this many failed requests in a row (0: only after failing for
# EVENTS_RETRY_FOR_S with no success).
EVENTS_DISABLE_AFTER_FAILURES = config.int("EVENTS_DISABLE_AFTER_FAILURES", 0, minimum=0, maximum=100_000)
# The CA certificates (PEM) an https endpoint's certificate must chain to, instead of the bundle
# requests uses (certifi's); certificates are always verified.
EVENTS_CA_BUNDLE = config.pem_file("EVENTS_CA_BUNDLE")
# After a rotation the old secret signs too, for this long.
EVENTS_SECRET_OVERLAP_S = config.int("EVENTS_SECRET_OVERLAP_S", 86400, minimum=0, maximum=30 * 86400)

# Logging and CloudWatch ---------------------------------------------------

AWS_REGION = config.str("AWS_REGION", aliases=("VUE_APP_AWS_REGION",))
CLOUDWATCH_LOG_GROUP = config.str("CLOUDWATCH_LOG_GROUP", aliases=("VUE_APP_LOG_GROUP_NAME",))
CLOUDWATCH_ENDPOINT_URL = config.str("CLOUDWATCH_ENDPOINT_URL")
LOG_LEVEL = config.choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
LOG_FORMAT = config.choice("LOG_FORMAT", "json", {"json", "console"})

CLOUDWATCH_SEND_INTERVAL_S = config.int("CLOUDWATCH_SEND_INTERVAL_S", 5, minimum=1, maximum=60)

# Bearer token for /metrics and the detail of /health/ (health.access). Unset: open in
# DEBUG only; in production /metrics answers 403 and /health/ gives pass/fail to everyone.
METRICS_TOKEN = config.str("METRICS_TOKEN") or ""
METRICS_TOKEN_MIN_CHARS = 16
if METRICS_TOKEN and len(METRICS_TOKEN) < METRICS_TOKEN_MIN_CHARS:
    config.errors.append(
        f"METRICS_TOKEN=[REDACTED] ({len(METRICS_TOKEN)} characters) is invalid: expected "
        f"at least {METRICS_TOKEN_MIN_CHARS} characters, e.g. from `python -c 'import secrets; "
        "print(secrets.token_urlsafe(32))'`."
    )

LOGGING = logging_config(
    level=LOG_LEVEL,
    log_format=LOG_FORMAT,
    log_queries=DB_LOG_QUERIES,
    cloudwatch_log_group=CLOUDWATCH_LOG_GROUP,
    aws_region=AWS_REGION,
    cloudwatch_endpoint_url=CLOUDWATCH_ENDPOINT_URL,
    cloudwatch_send_interval_s=CLOUDWATCH_SEND_INTERVAL_S,
)

# Django REST framework ------------------------------------------------------

REST_FRAMEWORK = {
    # API keys first, so that a request without credentials gets 401 with
    # `WWW-Authenticate: Token` rather than 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apikeys.authentication.APIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "payments.api.permissions.SessionMayTakePayments",
    ],
    "DEFAULT_PARSER_CLASSES": ["payments.api.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "payments.api.exceptions.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
API_MAX_BODY_BYTES = 64 * 1024

SPECTACULAR_SETTINGS = {
    "TITLE": "Paymentsite API",
    "DESCRIPTION": "Charge payments through the provider, safely and idempotently.",
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.1.0",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "payments.api.schema.add_links",
    ],
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # A charge's and a refund's status are two enums: each named, so neither is renamed by a hash.
    "ENUM_NAME_OVERRIDES": {
        "StatusEnum": "payments.models.Transaction.Status",
        "RefundStatusEnum": "payments.models.Refund.Status",
    },
    # /api/docs/ serves Swagger UI's files from drf-spectacular-sidecar, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Static files, sessions, i18n -------------------------------------------------

STATIC_URL = "static/"
# gunicorn serves the admin's and the payment page's files through WhiteNoise
# after `manage.py collectstatic` (runserver and the tests serve them directly).
STATIC_ROOT = BASE_DIR / "staticfiles"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/pay/"
LANGUAGE_CODE = "en-us"
# The zone every date in the admin is shown in (stored dates are always UTC).
TIME_ZONE = config.str("DJANGO_TIME_ZONE", "UTC")
if TIME_ZONE not in zoneinfo.available_timezones():
    config.errors.append(
        f"DJANGO_TIME_ZONE={TIME_ZONE!r} is invalid: expected an IANA time zone such as UTC or Europe/Berlin."
    )
    TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

CONFIG_ERRORS = config.errors
