"""Signoff settings: one file, driven by the environment.

Production differs from development only by environment variables; see
docs/operations.md for the full list.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

# Lets typed code write ModelAdmin[Model] and QuerySet[Model] at run time.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.getenv("SIGNOFF_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


# The one set of spellings every switch below accepts, in any case.
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def parse_bool(name: str, value: str) -> bool:
    """true/false, yes/no, on/off or 1/0; anything else is a typo and stops start-up, as in
    healthchecks: `SESSION_COOKIE_SECURE=ture` must not quietly mean False."""
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {value!r}")


def envbool(name: str, default: bool) -> bool:
    """A switch from the environment; unset or empty is the default."""
    value = os.getenv(name, "")
    return default if value == "" else parse_bool(name, value)


def envsecret(name: str) -> str:
    """A secret from the environment, or from the file that `{name}_FILE` names (how Docker,
    Kubernetes and systemd hand secrets over), without its trailing newline. Setting both is an
    error (which one wins would be a guess), and so is a file that cannot be read or is empty."""
    path = os.getenv(f"{name}_FILE", "")
    value = os.getenv(name, "")
    if not path:
        return value
    if value:
        raise ImproperlyConfigured(f"{name} and {name}_FILE are both set: set one of them")
    try:
        secret = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ImproperlyConfigured(f"{name}_FILE: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ImproperlyConfigured(f"{name}_FILE: {path} is not UTF-8 text") from None
    if not secret:
        raise ImproperlyConfigured(f"{name}_FILE: {path} is empty")
    return secret


def envint(name: str, default: int) -> int:
    value = os.getenv(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {value!r}") from None


def envfloat(name: str, default: float) -> float:
    value = os.getenv(name)
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number of seconds, got {value!r}") from None
    if number <= 0:
        raise ImproperlyConfigured(f"{name} must be more than 0, got {value!r}")
    return number


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.getenv(name, default).split(",") if item.strip()]


# The checkpoint saver holds two pooled connections for its writes (see
# workflows.checkpointer.connections.WriteConnections); requests and reads need the rest.
MIN_POOL_SIZE = 4


SUPPORTED_DATABASE_SCHEMES = ("sqlite", "postgres", "postgresql", "pgsql")
# The query parameters of a postgres:// URL that reach the connection; others are ignored.
POSTGRES_URL_OPTIONS = ("sslmode", "application_name")


def database_from_url(url: str) -> dict[str, Any]:
    """Turn DATABASE_URL into a Django DATABASES entry (sqlite:/// or postgres://).
    dj-database-url reads the URL (the quoted user and password, host, port, database name);
    Signoff keeps to SQLite and PostgreSQL and adds its own connection options on top."""
    scheme = urlsplit(url).scheme
    if scheme not in SUPPORTED_DATABASE_SCHEMES:
        raise ImproperlyConfigured(
            f"DATABASE_URL scheme {scheme!r} is not supported: use sqlite:/// or postgres://"
        )
    try:
        parsed = dj_database_url.parse(url)
    except ValueError as exc:
        # Its message never repeats the URL, which may hold a password.
        raise ImproperlyConfigured(f"DATABASE_URL cannot be read: {exc}") from None
    if scheme == "sqlite":
        return _sqlite_database(parsed.get("NAME", ""))
    return _postgres_database(parsed)


def _sqlite_database(path: str) -> dict[str, Any]:
    # sqlite:///relative/path or sqlite:////absolute/path; dj-database-url makes no path
    # ":memory:", which LangGraph's writer threads could not share.
    if path in ("", ":memory:"):
        raise ImproperlyConfigured("DATABASE_URL sqlite:/// needs a file path")
    name = path if os.path.isabs(path) else str(BASE_DIR / path)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": name,
        # A file, not Django's in-memory default: LangGraph writes checkpoints from
        # its own threads, which must see the same test database.
        "TEST": {"NAME": str(Path(name).with_name("test-" + Path(name).name))},
        "OPTIONS": {
            # IMMEDIATE takes the write lock at BEGIN, so two writers queue on the
            # busy timeout instead of failing with "database is locked" mid-transaction.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            # WAL lets readers run beside the writer; NORMAL is the documented safe
            # pairing with WAL (a crash loses no committed transaction).
            "init_command": (
                "PRAGMA journal_mode=WAL;"
                "PRAGMA synchronous=NORMAL;"
                "PRAGMA busy_timeout=20000;"
                "PRAGMA foreign_keys=ON;"
            ),
        },
    }


def _postgres_database(parsed: dj_database_url.DBConfig) -> dict[str, Any]:
    url_options = parsed.get("OPTIONS", {})
    db: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parsed.get("NAME") or "signoff",
        "USER": parsed.get("USER", ""),
        "PASSWORD": parsed.get("PASSWORD", ""),
        "HOST": parsed.get("HOST", ""),
        "PORT": str(parsed.get("PORT", "")),
        "CONN_HEALTH_CHECKS": True,
        # libpq waits forever for an unreachable server by default.
        "OPTIONS": {"connect_timeout": envint("DATABASE_CONNECT_TIMEOUT", 5)},
    }
    pool_size = envint("DATABASE_POOL_SIZE", 10)
    if 0 < pool_size < MIN_POOL_SIZE:
        raise ImproperlyConfigured(
            f"DATABASE_POOL_SIZE must be 0 (no pool) or at least {MIN_POOL_SIZE}, got {pool_size}: "
            "the checkpoint saver keeps 2 connections of its own for writes"
        )
    if pool_size > 0:
        # A pool keeps connections open across requests, tasks and the short-lived
        # threads LangGraph writes checkpoints from; Django requires CONN_MAX_AGE=0
        # with it because the pool, not the wrapper, owns persistence.
        db["CONN_MAX_AGE"] = 0
        # A request waits this long for a free connection, then gets the 503 page
        # (approvals.middleware) instead of hanging: 30 s, psycopg's default, outlasts
        # the patience of a person and of most proxies.
        db["OPTIONS"]["pool"] = {
            "min_size": 2,
            "max_size": pool_size,
            "timeout": envfloat("DATABASE_POOL_TIMEOUT", 5.0),
        }
    else:
        db["CONN_MAX_AGE"] = envint("DATABASE_CONN_MAX_AGE", 600)
    for key in POSTGRES_URL_OPTIONS:
        if key in url_options:
            # dj-database-url reads 1 or true as a number or a boolean; libpq wants the text.
            value = url_options[key]
            db["OPTIONS"][key] = str(value).lower() if isinstance(value, bool) else str(value)
    return db


def encryption_key(value: str) -> bytes | None:
    """SIGNOFF_ENCRYPTION_KEY is base64 (standard or URL-safe) of 16, 24 or 32 bytes."""
    if not value:
        return None
    try:
        key = base64.urlsafe_b64decode(value.replace("+", "-").replace("/", "_") + "==")
    except (binascii.Error, ValueError):
        key = b""
    if len(key) not in (16, 24, 32):
        raise ImproperlyConfigured(
            "SIGNOFF_ENCRYPTION_KEY must be base64 of 16, 24 or 32 random bytes; make one with: "
            'python -c "import base64,secrets;'
            'print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())"'
        )
    return key


AUDIT_KEY_RECIPE = (
    'python -c "import base64,secrets;print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())"'
)


def audit_key(value: str, *, debug: bool, secret_key: str) -> bytes:
    """SIGNOFF_AUDIT_KEY is base64 (standard or URL-safe) of at least 32 bytes: the HMAC key of
    the audit chain. Without it, DEBUG derives a development key from the secret key, and
    production refuses to start: a chain anyone can recompute proves nothing."""
    if not value:
        if not debug:
            raise ImproperlyConfigured(
                "SIGNOFF_AUDIT_KEY must be set when DJANGO_DEBUG is off: it signs the audit trail "
                "(keep it apart from the database and from SIGNOFF_ENCRYPTION_KEY); "
                f"make one with: {AUDIT_KEY_RECIPE}"
            )
        return hashlib.sha256(b"signoff development audit key:" + secret_key.encode()).digest()
    try:
        key = base64.urlsafe_b64decode(value.replace("+", "-").replace("/", "_") + "==")
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < 32:
        raise ImproperlyConfigured(
            f"SIGNOFF_AUDIT_KEY must be base64 of at least 32 random bytes; make one with: {AUDIT_KEY_RECIPE}"
        )
    return key


# `make run` writes this file: DEBUG on and a generated secret key, so that manage.py and celery
# commands run by hand in the same checkout get the development settings `make run` uses.
DEV_ENV_FILE = VAR_DIR / "dev.env"
DEV_ENV_KEYS = ("DJANGO_DEBUG", "DJANGO_SECRET_KEY")


def read_dev_env(path: Path, *, secret_key: str) -> dict[str, str]:
    """The development settings `make run` left in `path`, to use where the environment sets
    nothing. Read only when no DJANGO_SECRET_KEY is given (`secret_key`, from the environment
    or DJANGO_SECRET_KEY_FILE) and DJANGO_DEBUG is not turned off: production must set the key
    (below), so it never reads this file, and an explicit DJANGO_DEBUG=0 means "not
    development". Only DJANGO_DEBUG and DJANGO_SECRET_KEY are taken from it, and only from a
    file of ours that nobody else can write."""
    if secret_key or not envbool("DJANGO_DEBUG", True):
        return {}
    try:
        status = path.stat()
    except FileNotFoundError:
        return {}
    if status.st_uid != os.getuid() or status.st_mode & 0o022:
        raise ImproperlyConfigured(
            f"{path} (written by `make run`) must belong to you and be writable by nobody else; "
            "delete it and run `make run` again"
        )
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key in DEV_ENV_KEYS:
            found[key] = value.strip()
    return {key: value for key, value in found.items() if not os.getenv(key)}


_secret_key = envsecret("DJANGO_SECRET_KEY")
_dev_env = read_dev_env(DEV_ENV_FILE, secret_key=_secret_key)
_dev_debug = _dev_env.get("DJANGO_DEBUG", "")
DEBUG = envbool(
    "DJANGO_DEBUG", _dev_debug != "" and parse_bool(f"DJANGO_DEBUG in {DEV_ENV_FILE}", _dev_debug)
)
SECRET_KEY = _secret_key or _dev_env.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off (in a development checkout, "
            f"`make run` writes {DEV_ENV_FILE} with both)"
        )
    SECRET_KEY = "insecure-development-key-only-used-with-DJANGO_DEBUG"  # noqa: S105
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "axes",
    "corsheaders",
    # For its templates and static files: the API's docs page uses the Swagger UI it ships,
    # served from here (no CDN, and the Content Security Policy allows our origin only).
    "ninja",
    "workflows",
    "approvals",
    "api",
    # On top of approvals and api: it listens to their signals and reuses the API's webhooks.
    "notifications",
]

MIDDLEWARE = [
    # First, so that every response gets their headers, including those that the middleware
    # below answers by itself: the HTTPS redirect, static files, the 413 of an oversized
    # POST, a sign-in lockout.
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    # Next, before anything that can answer or fail: it only sets `request.htmx`, which the
    # 413 and 503 pages below and handler500 ask to send a fragment to htmx.
    "django_htmx.middleware.HtmxMiddleware",
    # Then, for the API only (CORS_URLS_REGEX): it answers a browser's preflight itself, before
    # anything below can redirect or refuse it (a preflight carries no API key), and adds its
    # headers to every other /api/ response, the 413 and 503 ones included.
    "corsheaders.middleware.CorsMiddleware",
    # An /api/ body that is not JSON is a 415 here, before anything below reads it as a form.
    "api.middleware.json_bodies_only",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "approvals.middleware.refuse_oversized_posts",
    "approvals.middleware.DatabaseUnavailable",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # The API's "method not allowed" as JSON like its other errors (ninja answers it in plain text).
    "api.middleware.json_method_not_allowed",
    # Last, as django-axes asks: it turns a refused sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

DATABASE_URL = envsecret("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'signoff.sqlite3'}"
DATABASES = {"default": database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.getenv("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
# State shown to reviewers is written by graphs (often by a model): no script may run but ours.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    # The admin sets a few style attributes; styles cannot run code.
    "style-src": [CSP.SELF, CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:"],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "approvals:queue"
LOGOUT_REDIRECT_URL = "login"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# -- HTTPS and sign-in throttling (deploy) ------------------------------------------------
# On by default in production, off under DEBUG (make run serves plain HTTP). Behind a TLS
# proxy, set SECURE_PROXY_SSL_HEADER to the header it sets (docs/operations.md).


def env_seconds(name: str, default: int) -> int:
    value = envint(name, default)
    if value < 0:
        raise ImproperlyConfigured(f"{name} must be 0 or more seconds, got {value}")
    return value


def proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """`X-Forwarded-Proto` (its value https) or `Header=value` -> Django's (META key, value)."""
    value = os.getenv(name, "").strip()
    if not value:
        return None
    header, _, expected = value.partition("=")
    if not expected and "=" not in value:
        expected = "https"
    if not re.fullmatch(r"[A-Za-z0-9-]+", header) or not re.fullmatch(r"[!-~]+", expected):
        raise ImproperlyConfigured(
            f"{name} must be a header name, optionally with =value (X-Forwarded-Proto, "
            f"X-Forwarded-Ssl=on), got {value!r}"
        )
    return "HTTP_" + header.upper().replace("-", "_"), expected


SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_seconds("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
# Both reach beyond this app (every subdomain; browsers' built-in lists): opt in.
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", False)
SECURE_PROXY_SSL_HEADER = proxy_ssl_header("SECURE_PROXY_SSL_HEADER")

# django-axes: after AXES_FAILURE_LIMIT wrong passwords for one user name from one client,
# that pair is refused (even the right password) until the cool-off has passed. Keyed on
# the pair so that nobody can lock a user out for everyone by guessing at the name.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("SIGNOFF_LOGIN_FAILURE_LIMIT", 5)
if AXES_FAILURE_LIMIT < 1:
    raise ImproperlyConfigured(f"SIGNOFF_LOGIN_FAILURE_LIMIT must be 1 or more, got {AXES_FAILURE_LIMIT}")
AXES_COOLOFF_TIME = timedelta(seconds=envfloat("SIGNOFF_LOGIN_COOLOFF_SECONDS", 900.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "approvals.security.locked_out"
# The client's address: REMOTE_ADDR, or behind N proxies that append to X-Forwarded-For,
# the address the outermost of them saw (approvals.security.client_ip).
SIGNOFF_PROXY_COUNT = envint("SIGNOFF_PROXY_COUNT", 0)
if SIGNOFF_PROXY_COUNT < 0:
    raise ImproperlyConfigured(f"SIGNOFF_PROXY_COUNT must be 0 or more, got {SIGNOFF_PROXY_COUNT}")
AXES_CLIENT_IP_CALLABLE = "approvals.security.client_ip"
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DATA_UPLOAD_MAX_MEMORY_SIZE", 1_000_000)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    # Each 4xx as one line (method, path, status, user id), without the traceback Django
    # attaches to a PermissionDenied; 5xx keep theirs (approvals/errors.py). A failed CSRF
    # check is logged on its own logger.
    "filters": {"one_line_per_refusal": {"()": "approvals.errors.OneLinePerRefusal"}},
    "loggers": {
        "django.request": {"filters": ["one_line_per_refusal"]},
        "django.security.csrf": {"filters": ["one_line_per_refusal"]},
    },
}
# A failed CSRF check gets the app's 403 page, with what to do next.
CSRF_FAILURE_VIEW = "approvals.errors.csrf_failure"

# Checkpoints. With a key set, every checkpoint blob and pending write is encrypted
# (AES-EAX) and rows that are not encrypted are refused when read.
SIGNOFF_ENCRYPTION_KEY = encryption_key(envsecret("SIGNOFF_ENCRYPTION_KEY"))
# Extra (module, name) pairs that checkpoint deserialization may revive, on top of
# LangGraph's safe types and the types in registered state schemas.
SIGNOFF_MSGPACK_ALLOWLIST: list[tuple[str, str]] = []

# The audit chain is HMAC-SHA256 with this key (separate from the encryption key: one signs,
# the other hides). The head (event count, last id and hash, signed) is saved to
# SIGNOFF_AUDIT_HEAD_FILE every SIGNOFF_AUDIT_HEAD_SECONDS and logged; `verify_audit` compares.
SIGNOFF_AUDIT_KEY = audit_key(envsecret("SIGNOFF_AUDIT_KEY"), debug=DEBUG, secret_key=SECRET_KEY)
if SIGNOFF_ENCRYPTION_KEY is not None and SIGNOFF_AUDIT_KEY == SIGNOFF_ENCRYPTION_KEY:
    raise ImproperlyConfigured("SIGNOFF_AUDIT_KEY must not be the same key as SIGNOFF_ENCRYPTION_KEY")
SIGNOFF_AUDIT_HEAD_FILE = Path(os.getenv("SIGNOFF_AUDIT_HEAD_FILE", VAR_DIR / "audit-head.json"))
SIGNOFF_AUDIT_HEAD_SECONDS = envfloat("SIGNOFF_AUDIT_HEAD_SECONDS", 300.0)
# How much a value stored in a checkpoint may hold (reviewer edits, answers, rollback
# corrections, a thread's input; workflows/limits.py): its nesting depth (msgpack gives up past
# 255 levels, and the audit event wraps a value in a few more) and its size as text.
SIGNOFF_MAX_VALUE_DEPTH = envint("SIGNOFF_MAX_VALUE_DEPTH", 64)
if not 1 <= SIGNOFF_MAX_VALUE_DEPTH <= 200:
    raise ImproperlyConfigured(
        f"SIGNOFF_MAX_VALUE_DEPTH must be from 1 to 200 (msgpack stores at most 255 levels), "
        f"got {SIGNOFF_MAX_VALUE_DEPTH}"
    )
SIGNOFF_MAX_VALUE_BYTES = envint("SIGNOFF_MAX_VALUE_BYTES", 1_000_000)
if SIGNOFF_MAX_VALUE_BYTES < 1:
    raise ImproperlyConfigured(f"SIGNOFF_MAX_VALUE_BYTES must be at least 1, got {SIGNOFF_MAX_VALUE_BYTES}")

# Registered workflows come from `graphs.py` in installed apps, plus these modules.
SIGNOFF_GRAPH_MODULES = envlist("SIGNOFF_GRAPH_MODULES", "")
SIGNOFF_RECURSION_LIMIT = envint("SIGNOFF_RECURSION_LIMIT", 100)
# How long POST .../runs/wait and GET .../join block for the run to end before answering with
# the thread's state as it is (the client can join again).
SIGNOFF_API_WAIT_SECONDS = envfloat("SIGNOFF_API_WAIT_SECONDS", 300.0)

# The runtime. A worker holds a run's lease while it runs, renewing it every step and
# every third of its length; a lease that runs out (a dead or frozen worker) lets the
# sweeper hand the run to another worker, up to SIGNOFF_MAX_ATTEMPTS claims.
SIGNOFF_LEASE_SECONDS = envfloat("SIGNOFF_LEASE_SECONDS", 60.0)
SIGNOFF_MAX_ATTEMPTS = envint("SIGNOFF_MAX_ATTEMPTS", 3)
SIGNOFF_SWEEP_SECONDS = envfloat("SIGNOFF_SWEEP_SECONDS", 30.0)
# A queued run whose message has not been taken for this long is published again.
SIGNOFF_QUEUED_GRACE_SECONDS = envfloat("SIGNOFF_QUEUED_GRACE_SECONDS", 60.0)
SIGNOFF_SWEEP_BATCH = envint("SIGNOFF_SWEEP_BATCH", 500)
# After a transient database error a run goes back to the queue and is retried this much later.
SIGNOFF_RETRY_DELAY_SECONDS = envfloat("SIGNOFF_RETRY_DELAY_SECONDS", 5.0)
# How many times a delivery that finds another worker's live lease comes back to look again.
SIGNOFF_BUSY_RETRIES = envint("SIGNOFF_BUSY_RETRIES", 5)

# How long opening a review claims it for; others see "being reviewed by" until then.
SIGNOFF_CLAIM_SECONDS = envfloat("SIGNOFF_CLAIM_SECONDS", 900.0)
# Deadlines (approvals/deadlines.py): how often beat sweeps for reviews past due (escalate,
# decide a default, remind) and follow-ups that have come, and how close to its due time a
# claimed review's holder is told it is due soon.
SIGNOFF_DEADLINE_SWEEP_SECONDS = envfloat("SIGNOFF_DEADLINE_SWEEP_SECONDS", 60.0)
SIGNOFF_DUE_SOON_HOURS = envfloat("SIGNOFF_DUE_SOON_HOURS", 2.0)

# Webhooks (api/webhooks.py): POSTs, signed the Standard Webhooks way, when a run ends or a
# review opens. Only to the hosts and URL prefixes listed: none by default, so webhooks are off
# until an operator lists where they may go.
WEBHOOK_RETRY_DEFAULT = "10,60,300,1800"


def webhook_allow_list(name: str) -> list[str]:
    """SIGNOFF_WEBHOOK_ALLOWED_URLS: comma-separated hosts (`hooks.example.com`, with a port
    `127.0.0.1:8080`, a subdomain wildcard `*.example.com`) or http(s) URL prefixes
    (`https://hooks.example.com/signoff/`). A typo would quietly allow nothing, so each entry
    is read now and a bad one stops start-up."""
    entries = envlist(name, "")
    for entry in entries:
        if "://" in entry:
            try:
                parts = urlsplit(entry)
                parts.port  # noqa: B018 - reading it checks it is a number
            except ValueError as exc:
                raise ImproperlyConfigured(f"{name}: {entry!r} is not a URL: {exc}") from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ImproperlyConfigured(
                    f"{name}: {entry!r} must be an http:// or https:// URL with a host"
                )
            if parts.username is not None or parts.query or parts.fragment:
                raise ImproperlyConfigured(
                    f"{name}: {entry!r} must be a scheme, host and path only (no user, query or fragment)"
                )
        elif not re.fullmatch(r"(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?", entry):
            raise ImproperlyConfigured(
                f"{name}: {entry!r} must be a host (hooks.example.com, *.example.com, 127.0.0.1:8080) "
                "or an http(s) URL prefix (https://hooks.example.com/signoff/)"
            )
    return entries


WEBHOOK_SECRET_RECIPE = (
    "python -c \"import base64,secrets;print('whsec_'+base64.b64encode(secrets.token_bytes(32)).decode())\""  # noqa: S105 - a recipe
)


def webhook_secret(value: str, *, needed: bool, debug: bool, secret_key: str) -> str:
    """SIGNOFF_WEBHOOK_SECRET signs the POSTs to a run's own `webhook` (an admin's endpoints
    have their own secrets): `whsec_` and base64 of 24 to 64 random bytes, as Standard Webhooks
    secrets are. Needed once webhooks are on; under DEBUG a development one is derived from the
    secret key."""
    if not value:
        if not needed:
            return ""
        if not debug:
            raise ImproperlyConfigured(
                "SIGNOFF_WEBHOOK_SECRET must be set when SIGNOFF_WEBHOOK_ALLOWED_URLS is: it signs "
                f"the POSTs to runs' webhooks; make one with: {WEBHOOK_SECRET_RECIPE}"
            )
        digest = hashlib.sha256(b"signoff development webhook secret:" + secret_key.encode()).digest()
        return "whsec_" + base64.b64encode(digest).decode()
    raw = value.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not value.startswith("whsec_") or not 24 <= len(key) <= 64:
        raise ImproperlyConfigured(
            "SIGNOFF_WEBHOOK_SECRET must be whsec_ followed by base64 of 24 to 64 random bytes; "
            f"make one with: {WEBHOOK_SECRET_RECIPE}"
        )
    return value


def webhook_retry_seconds(name: str) -> list[float]:
    value = os.getenv(name) or WEBHOOK_RETRY_DEFAULT
    try:
        delays = [float(item) for item in value.split(",") if item.strip()]
    except ValueError:
        delays = []
    if not delays or any(delay <= 0 for delay in delays):
        raise ImproperlyConfigured(
            f"{name} must be comma-separated numbers of seconds above 0 "
            f"({WEBHOOK_RETRY_DEFAULT}), got {value!r}"
        )
    return delays


SIGNOFF_WEBHOOK_ALLOWED_URLS = webhook_allow_list("SIGNOFF_WEBHOOK_ALLOWED_URLS")
SIGNOFF_WEBHOOK_SECRET = webhook_secret(
    envsecret("SIGNOFF_WEBHOOK_SECRET"),
    needed=bool(SIGNOFF_WEBHOOK_ALLOWED_URLS),
    debug=DEBUG,
    secret_key=SECRET_KEY,
)
# How long one POST may take, and how long to wait before each retry (the last delay repeats)
# of a delivery that got no 2xx, up to SIGNOFF_WEBHOOK_MAX_ATTEMPTS POSTs in all.
SIGNOFF_WEBHOOK_TIMEOUT_SECONDS = envfloat("SIGNOFF_WEBHOOK_TIMEOUT_SECONDS", 5.0)
SIGNOFF_WEBHOOK_RETRY_SECONDS = webhook_retry_seconds("SIGNOFF_WEBHOOK_RETRY_SECONDS")
SIGNOFF_WEBHOOK_MAX_ATTEMPTS = envint("SIGNOFF_WEBHOOK_MAX_ATTEMPTS", 5)
if SIGNOFF_WEBHOOK_MAX_ATTEMPTS < 1:
    raise ImproperlyConfigured(
        f"SIGNOFF_WEBHOOK_MAX_ATTEMPTS must be 1 or more, got {SIGNOFF_WEBHOOK_MAX_ATTEMPTS}"
    )
# Where this app is served (https://signoff.example.com), for the links in webhook payloads;
# unset, a payload carries the review page's path alone.
# The bearer token Prometheus scrapes /prometheus/metrics with (api/prometheus.py); unset, the
# endpoint answers 404.
SIGNOFF_METRICS_TOKEN = envsecret("SIGNOFF_METRICS_TOKEN") or ""
SIGNOFF_BASE_URL = os.getenv("SIGNOFF_BASE_URL", "").rstrip("/")
# How long an emailed one-click link (approve, reject, open) stays valid (approvals.links).
SIGNOFF_LINK_HOURS = envfloat("SIGNOFF_LINK_HOURS", 72.0)

# -- Notifications (notifications/): email through Django's mailers (MAILERS) ---------------
# SMTP once EMAIL_HOST is set, and always without DEBUG (production); under DEBUG with no
# EMAIL_HOST (`make run`) the console backend prints each email in the worker's log. The
# variables keep Django's familiar EMAIL_* names; they fill MAILERS["default"], which Django
# 6.1 reads instead of the EMAIL_* settings it deprecates.
_email_host = os.getenv("EMAIL_HOST", "")
# How long an SMTP server may take to answer before the try counts as failed and is retried.
SIGNOFF_EMAIL_TIMEOUT_SECONDS = envfloat("EMAIL_TIMEOUT", 10.0)
if _email_host or not DEBUG:
    if envbool("EMAIL_USE_TLS", False) and envbool("EMAIL_USE_SSL", False):
        raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are both on: set one of them")
    MAILERS: dict[str, dict[str, Any]] = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": _email_host or "localhost",
                "port": envint("EMAIL_PORT", 25),
                "username": os.getenv("EMAIL_HOST_USER", ""),
                "password": envsecret("EMAIL_HOST_PASSWORD"),
                "use_tls": envbool("EMAIL_USE_TLS", False),
                "use_ssl": envbool("EMAIL_USE_SSL", False),
                "timeout": SIGNOFF_EMAIL_TIMEOUT_SECONDS,
            },
        }
    }
else:
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
DEFAULT_FROM_EMAIL = os.getenv("DEFAULT_FROM_EMAIL", "Signoff <signoff@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# How long to wait before each retry of a notification that could not be sent (the last delay
# repeats), up to SIGNOFF_NOTIFY_MAX_ATTEMPTS tries in all.
SIGNOFF_NOTIFY_RETRY_SECONDS = webhook_retry_seconds("SIGNOFF_NOTIFY_RETRY_SECONDS")
SIGNOFF_NOTIFY_MAX_ATTEMPTS = envint("SIGNOFF_NOTIFY_MAX_ATTEMPTS", 5)
if SIGNOFF_NOTIFY_MAX_ATTEMPTS < 1:
    raise ImproperlyConfigured(
        f"SIGNOFF_NOTIFY_MAX_ATTEMPTS must be 1 or more, got {SIGNOFF_NOTIFY_MAX_ATTEMPTS}"
    )
# The daily digest goes out at the first notification sweep from this hour on (TIME_ZONE),
# once per user and day.
SIGNOFF_DIGEST_HOUR = envint("SIGNOFF_DIGEST_HOUR", 7)
if not 0 <= SIGNOFF_DIGEST_HOUR <= 23:
    raise ImproperlyConfigured(f"SIGNOFF_DIGEST_HOUR must be from 0 to 23, got {SIGNOFF_DIGEST_HOUR}")
SIGNOFF_NOTIFY_SWEEP_SECONDS = envfloat("SIGNOFF_NOTIFY_SWEEP_SECONDS", 300.0)

# Celery: the database is the truth, a message only rings the bell (docs/architecture.md).
# Redis in production (CELERY_BROKER_URL=redis://...); by default an on-disk broker under
# var/ that needs no server (it never redelivers: the sweeper makes up for that).
CELERY_BROKER_URL = os.getenv("CELERY_BROKER_URL", "filesystem://")
BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        # Broadcast (control) messages; kombu's default is ./control in the working directory.
        "control_folder": str(BROKER_DIR / "control"),
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Longer than the longest run plus its wait in the queue, so a healthy slow run
        # is not delivered twice; a dead worker's run is recovered by lease + sweeper.
        "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 7200),
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_ACKS_ON_FAILURE = True
CELERY_TASK_ACKS_ON_TIMEOUT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SOFT_TIME_LIMIT = envint("CELERY_TASK_SOFT_TIME_LIMIT", 3300)
CELERY_TASK_TIME_LIMIT = envint("CELERY_TASK_TIME_LIMIT", 3600)
CELERY_TASK_DEFAULT_RETRY_DELAY = 5
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = 4
# Publishing gives up after a few tries instead of hanging a request: the run is saved
# and the sweeper delivers it.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "sweep": {"task": "workflows.tasks.sweep", "schedule": SIGNOFF_SWEEP_SECONDS},
    "audit-head": {"task": "workflows.tasks.save_audit_head", "schedule": SIGNOFF_AUDIT_HEAD_SECONDS},
    # Publishes again the webhook deliveries whose retry message was lost (api/tasks.py).
    "webhook-sweep": {"task": "api.tasks.sweep_webhooks", "schedule": SIGNOFF_SWEEP_SECONDS},
    # Deadlines that act (approvals/deadlines.py): a task in the workers' queue, unlike the
    # run sweep, since it decides and resumes threads like a reviewer does.
    "deadline-sweep": {"task": "approvals.tasks.sweep_deadlines", "schedule": SIGNOFF_DEADLINE_SWEEP_SECONDS},
    # The daily digests (once per user and day) and the notifications whose message was lost.
    "notifications": {"task": "notifications.tasks.sweep", "schedule": SIGNOFF_NOTIFY_SWEEP_SECONDS},
}
# Beat runs the sweep in its own process rather than queueing it behind the runs it
# recovers (workflows/beat.py), so recovery takes lease + sweep whatever the backlog.
CELERY_BEAT_SCHEDULER = "workflows.beat:SweepingScheduler"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# -- The HTTP API: CORS and rate limits (docs/api.md) --------------------------------------
# An origin as a browser sends it in `Origin`: scheme, lower-case host, optional port; no path.
ORIGIN = re.compile(r"https?://([a-z0-9-]+(\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(:[0-9]{1,5})?")


def cors_origins(name: str) -> list[str]:
    """Comma-separated origins. Each is checked here because django-cors-headers compares them
    as given: `https://inbox.example.com/` (a trailing slash) or an upper-case host would never
    match what a browser sends, and CORS would fail in the browser with no word on the server."""
    origins = envlist(name, "")
    for origin in origins:
        if not ORIGIN.fullmatch(origin):
            raise ImproperlyConfigured(
                f"{name}: {origin!r} is not an origin: write scheme://host[:port] in lower case, "
                "with no path or trailing slash (https://inbox.example.com, http://localhost:3000); "
                "for a pattern use SIGNOFF_CORS_ALLOWED_ORIGIN_REGEXES"
            )
    return origins


def cors_origin_regexes(name: str) -> list[str]:
    """Comma-separated regular expressions, matched against the whole `Origin`. Each must end
    with `$` (or `\\Z`): django-cors-headers matches from the start only, so an unanchored
    `^https://.*\\.example\\.com` would also let in `https://x.example.com.attacker.net`."""
    patterns = envlist(name, "")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ImproperlyConfigured(f"{name}: {pattern!r} is not a regular expression: {exc}") from None
        if not pattern.endswith(("$", "\\Z")):
            raise ImproperlyConfigured(
                f"{name}: {pattern!r} must match the whole origin: end it with $ "
                r"(^https://[a-z0-9-]+\.example\.com$)"
            )
    return patterns


CORS_URLS_REGEX = r"^/api/"
CORS_ALLOWED_ORIGINS = cors_origins("SIGNOFF_CORS_ALLOWED_ORIGINS")
CORS_ALLOWED_ORIGIN_REGEXES = cors_origin_regexes("SIGNOFF_CORS_ALLOWED_ORIGIN_REGEXES")
# Keys travel in a header, never in a cookie: no credentials, so a browser never sends the
# reviewer's session cookie along with a cross-origin call.
CORS_ALLOW_CREDENTIALS = False
# What langgraph_sdk's JS client and Agent Inbox send: JSON bodies, the key (x-api-key, or
# Authorization: Bearer), Last-Event-ID when a stream reconnects, and a request id.
CORS_ALLOW_HEADERS = ["accept", "content-type", "x-api-key", "authorization", "last-event-id", "x-request-id"]
CORS_ALLOW_METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"]
# What the SDK reads from a response: the run's URL (Content-Location, Location), the next page
# (X-Pagination-Next), the request id of an error; Retry-After tells a client when to try again.
CORS_EXPOSE_HEADERS = ["Content-Location", "Location", "X-Pagination-Next", "X-Request-Id", "Retry-After"]
# Chrome's private network access: a public origin (a hosted Agent Inbox) calling a Signoff on
# localhost or the LAN needs `Access-Control-Allow-Private-Network: true` on the preflight.
CORS_ALLOW_PRIVATE_NETWORK = envbool("SIGNOFF_CORS_ALLOW_PRIVATE_NETWORK", False)

# The units django-ninja's throttles read (ninja.throttling.SimpleRateThrottle._PERIODS).
RATE = re.compile(r"([1-9][0-9]*)/([1-9][0-9]*)?(s|sec|m|min|h|hour|d|day)")


def api_rate_limit(name: str, default: str) -> str | None:
    """`N/period` (600/min, 10/s, 1000/hour, 100/5min), or 0 or off for no limit."""
    value = os.getenv(name, "") or default
    if value.lower() in FALSE_WORDS:
        return None
    if not RATE.fullmatch(value):
        raise ImproperlyConfigured(
            f"{name} must be requests/period (600/min, 10/s, 1000/hour, 100/5min; periods s, sec, m, "
            f"min, h, hour, d, day) or off, got {value!r}"
        )
    return value


# How many requests one API key may make per period; the next is a 429 with Retry-After.
SIGNOFF_API_RATE_LIMIT = api_rate_limit("SIGNOFF_API_RATE_LIMIT", "600/min")
# The counters must be shared by every web process: Redis when the broker is Redis (its own key
# prefix beside Celery's keys), else files under SIGNOFF_VAR_DIR, which the processes of one
# machine share (the embedded setup is one machine; SQLite would add a write per request).
if urlsplit(CELERY_BROKER_URL).scheme in ("redis", "rediss"):
    THROTTLE_CACHE: dict[str, Any] = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CELERY_BROKER_URL,
        "KEY_PREFIX": "signoff-throttle",
    }
else:
    THROTTLE_CACHE = {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(VAR_DIR / "throttle"),
        # One entry per key used in the last period; culling drops a third of them past this.
        "OPTIONS": {"MAX_ENTRIES": 10_000},
    }
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": THROTTLE_CACHE,
}


# Streaming (workflows/streams.py): where a run an API client streams publishes its events.
# Redis Streams when the broker is Redis (the same server unless SIGNOFF_STREAM_REDIS_URL says
# otherwise); for the embedded default, one append-only file per run under SIGNOFF_STREAM_DIR,
# which the web process and the workers must share (one host).
_broker_is_redis = CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
SIGNOFF_STREAM_BACKEND = os.getenv("SIGNOFF_STREAM_BACKEND", "") or ("redis" if _broker_is_redis else "file")
if SIGNOFF_STREAM_BACKEND not in ("redis", "file"):
    raise ImproperlyConfigured(
        f"SIGNOFF_STREAM_BACKEND must be redis or file, got {SIGNOFF_STREAM_BACKEND!r}"
    )
SIGNOFF_STREAM_REDIS_URL = envsecret("SIGNOFF_STREAM_REDIS_URL") or (
    CELERY_BROKER_URL if _broker_is_redis else ""
)
if SIGNOFF_STREAM_BACKEND == "redis" and not SIGNOFF_STREAM_REDIS_URL.startswith(("redis://", "rediss://")):
    raise ImproperlyConfigured(
        "SIGNOFF_STREAM_BACKEND=redis needs a redis:// URL: set SIGNOFF_STREAM_REDIS_URL (or a redis:// "
        "CELERY_BROKER_URL)"
    )
SIGNOFF_STREAM_DIR = Path(os.getenv("SIGNOFF_STREAM_DIR", VAR_DIR / "streams"))
# A run's stream is kept this long after its last event (Redis EXPIRE; the file backend's
# clean-up), so a client can join or reconnect to a run that ended a while ago.
SIGNOFF_STREAM_TTL_SECONDS = envfloat("SIGNOFF_STREAM_TTL_SECONDS", 3600.0)
# At most this many events per run in Redis (XADD MAXLEN ~): the oldest go first.
SIGNOFF_STREAM_MAXLEN = envint("SIGNOFF_STREAM_MAXLEN", 10_000)
# How long a reader waits on the backend before it looks at the run in the database (a run that
# ended without its `end` event: published by nobody, or the backend lost it).
SIGNOFF_STREAM_CHECK_SECONDS = envfloat("SIGNOFF_STREAM_CHECK_SECONDS", 5.0)
