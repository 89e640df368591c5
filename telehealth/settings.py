"""Settings: environment variables only (see .env.example for every name).

With nothing set, the platform runs as an embedded demo: SQLite, the
in-memory channel layer, DEBUG on. ``DATABASE_URL`` switches to PostgreSQL and
``REDIS_URL`` to channels-redis. Bad values raise at import with a message
naming the variable; ``manage.py check --deploy`` refuses unsafe production
combinations (telehealth/checks.py).
"""

from __future__ import annotations

import re
import warnings
import zoneinfo
from datetime import timedelta
from pathlib import Path

from telehealth.env import Env, ImproperlyConfiguredEnv, parse_database_url, parse_ice_servers, parse_redis_url

BASE_DIR = Path(__file__).resolve().parent.parent
env = Env.from_os()

# The demo key is public (it is in this file). checks.py refuses it in deploy checks.
DEMO_SECRET_KEY = "demo-only-insecure-secret-key-do-not-use-in-production-0000000000"
SECRET_KEY = env.str("SECRET_KEY", DEMO_SECRET_KEY)
DEBUG = env.bool("DEBUG", True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",  # first: its runserver replaces Django's so dev serves ASGI too
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "telehealth",
    "accounts",
    "rooms",
    "signaling",
    "media",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "accounts.middleware.UserTimezoneMiddleware",
    "telehealth.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "telehealth.urls"
ASGI_APPLICATION = "telehealth.asgi.application"

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

DATABASES = {
    "default": parse_database_url(env.str("DATABASE_URL", "sqlite:///var/db.sqlite3") or "", base_dir=BASE_DIR)
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL")
# Which channels-redis layer carries the fan-out (docs/performance.md has the measurements):
# "pubsub" publishes a message once per group and each process fans it out to its own
# connections, with no per-member queue and no membership stored in Redis; "core" is
# channels-redis's default layer (a sorted set per member, a capacity limit, group expiry).
CHANNEL_LAYER_KIND = env.choice("CHANNEL_LAYER_KIND", "pubsub", {"pubsub", "core"})
# Each process receives for all its connections on one channel (signaling.hub): the layers that
# bound a channel's queue (in-memory, core; 100 by default) get room for a busy process's burst.
HUB_CAPACITY = 10_000
CHANNEL_LAYER_BACKENDS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": CHANNEL_LAYER_BACKENDS[CHANNEL_LAYER_KIND],
            "CONFIG": {
                "hosts": [parse_redis_url(REDIS_URL)],
                # Prefix keeps several deployments on one Redis apart.
                "prefix": env.str("CHANNEL_LAYER_PREFIX", "telehealth") or "telehealth",
            },
        }
    }
    if CHANNEL_LAYER_KIND == "core":
        CHANNEL_LAYERS["default"]["CONFIG"]["capacity"] = HUB_CAPACITY
else:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": HUB_CAPACITY}}
    }

AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
USE_I18N = True
USE_TZ = True
# Storage is UTC; each request renders in the viewer's zone (accounts.middleware).
TIME_ZONE = "UTC"
CLINIC_TIME_ZONE = env.str("CLINIC_TIME_ZONE", "America/New_York") or "America/New_York"
if CLINIC_TIME_ZONE not in zoneinfo.available_timezones():
    raise ImproperlyConfiguredEnv(f"CLINIC_TIME_ZONE={CLINIC_TIME_ZONE!r} is not an IANA time zone")

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", str(BASE_DIR / "staticfiles")) or "")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Under daphne with DEBUG on, whitenoise serves straight from the finders.
WHITENOISE_USE_FINDERS = DEBUG
if DEBUG and not STATIC_ROOT.is_dir():
    # Nothing is collected in development, and nothing needs to be: without this, whitenoise
    # warns about the missing STATIC_ROOT on every start (and in every test that builds a handler).
    warnings.filterwarnings("ignore", message=re.escape(f"No directory at: {STATIC_ROOT}"))

EMAIL_BACKEND = env.str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", "localhost")
EMAIL_PORT = env.int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", "") or ""
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", "") or ""
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", "telehealth@localhost")

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", 12 * 3600, minimum=300)
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", 0, minimum=0)
if env.bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Scheduling defaults (each can be overridden per track, series or session).
DEFAULT_LOBBY_OPENS_BEFORE = timedelta(minutes=env.int("DEFAULT_LOBBY_MINUTES", 10, minimum=0, maximum=240))
DEFAULT_LATE_JOIN_MINUTES = env.int("DEFAULT_LATE_JOIN_MINUTES", 10, minimum=0, maximum=240)
# How far ahead a series materialises occurrences (rooms.services.generate_occurrences).
SERIES_HORIZON_DAYS = env.int("SERIES_HORIZON_DAYS", 84, minimum=1, maximum=730)

# Realtime sessions (rooms.live, signaling/).
# A dropped socket keeps its seat this long: peers see "reconnecting", not a leave and a join.
SEAT_GRACE_SECONDS = env.int("SEAT_GRACE_SECONDS", 30, minimum=0, maximum=600)
# How often an open socket re-checks its login, its seat and the session's end (4401/4403/4410).
SESSION_RECHECK_SECONDS = env.int("SESSION_RECHECK_SECONDS", 30, minimum=1, maximum=60)
# Full garbage collections of the server process on this timer, not on allocation counts
# (telehealth.collector); 0 keeps CPython's own schedule.
GC_FULL_COLLECTION_SECONDS = env.int("GC_FULL_COLLECTION_SECONDS", 300, minimum=0, maximum=3600)
# STUN/TURN servers handed to browsers in the welcome message (JSON list or comma-separated URLs).
ICE_SERVERS = parse_ice_servers(env.str("ICE_SERVERS"))
# Media (media/): Janus SFU nodes and TURN (coturn). Each block below belongs to its feature.
# --- Janus ---
# Janus VideoRoom nodes for rooms of 3 or more (media/janus.py); empty: every room is a P2P mesh.
# Our server is Janus's only API client: the URLs must not be reachable from browsers.
JANUS_URLS = env.list("JANUS_URLS", [])
JANUS_API_SECRET = env.str("JANUS_API_SECRET", "") or ""
JANUS_ADMIN_KEY = env.str("JANUS_ADMIN_KEY", "") or ""
# Each process checks every node this often (an `info` request answered within the timeout); a node
# failing this many checks in a row is marked down: no new sessions, its live rooms move elsewhere.
JANUS_HEALTH_SECONDS = env.int("JANUS_HEALTH_SECONDS", 3, minimum=1, maximum=60)
JANUS_HEALTH_TIMEOUT = env.int("JANUS_HEALTH_TIMEOUT", 2, minimum=1, maximum=30)
JANUS_HEALTH_FAILURES = env.int("JANUS_HEALTH_FAILURES", 2, minimum=1, maximum=10)
if _bad := [url for url in JANUS_URLS if not re.fullmatch(r"wss?://[^\s/?#]+(/[^\s?#]*)?", url)]:
    raise ImproperlyConfiguredEnv(f"JANUS_URLS entry {_bad[0]!r} is not a ws:// or wss:// URL (ws://127.0.0.1:8188)")
if JANUS_URLS and (len(JANUS_API_SECRET) < 24 or len(JANUS_ADMIN_KEY) < 24):
    raise ImproperlyConfiguredEnv("JANUS_URLS is set: JANUS_API_SECRET and JANUS_ADMIN_KEY need 24+ characters each")
# --- TURN ---
# coturn with use-auth-secret: each admitted member gets its own time-limited credential (media/turn.py).
TURN_URLS = env.list("TURN_URLS", [])
TURN_SECRET = env.str("TURN_SECRET", "") or ""
# Seconds a credential outlives the session's end (an ICE restart near the end still needs the relay).
TURN_TTL_MARGIN = env.int("TURN_TTL_MARGIN", 3600, minimum=60, maximum=6 * 3600)
if _bad := [url for url in TURN_URLS if not re.fullmatch(r"turns?:[^\s?]+(\?transport=(udp|tcp))?", url)]:
    raise ImproperlyConfiguredEnv(f"TURN_URLS entry {_bad[0]!r} is not a turn: or turns: URL")
if TURN_URLS and len(TURN_SECRET) < 32:
    raise ImproperlyConfiguredEnv("TURN_URLS is set: TURN_SECRET (or TURN_SECRET_FILE) needs 32+ characters")
if TURN_SECRET and not TURN_URLS:
    raise ImproperlyConfiguredEnv("TURN_SECRET is set but TURN_URLS is empty: say where coturn listens")

# Per-connection token bucket: sustained frames per second and the burst above it.
WS_RATE_PER_SECOND = env.int("WS_RATE_PER_SECOND", 20, minimum=1, maximum=1000)
WS_RATE_BURST = env.int("WS_RATE_BURST", 60, minimum=1, maximum=10000)

LOG_LEVEL = env.choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR"})
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
