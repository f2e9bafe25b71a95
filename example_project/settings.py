"""Settings for the example site (``python manage.py runserver`` or ``uvicorn example_project.asgi:application``).

Without AWS credentials (and unless ``BEDROCK_STREAM_USE_AWS=1``) the site talks to the built-in Bedrock
emulator at ``$BEDROCK_EMULATOR_URL`` (default ``http://127.0.0.1:8787``); ``make demo`` starts it.
With credentials, or ``BEDROCK_STREAM_USE_AWS=1``, it calls real Amazon Bedrock.

A local demo for one person: do not deploy these settings.
"""

import importlib.util
import os
import socket
from pathlib import Path
from typing import Any

import boto3
import django

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-insecure-key-for-local-demo-only")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_bedrock_stream",
    "example_project",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"
ASGI_APPLICATION = "example_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# SQLite under concurrent streams (uvicorn, or runserver's threads): WAL lets reads run beside the one
# writer, the busy timeout makes a writer wait for the lock (20 s, not Python's 5 s) and IMMEDIATE
# transactions take the write lock up front, so 100 streams at once don't fail with "database is
# locked" (README "Databases"; check bedrock_stream.W009). Django < 5.1 has no init_command /
# transaction_mode: a connection_created receiver sets WAL there (it is stored in the file).
SQLITE_OPTIONS: dict[str, object] = {"timeout": 20}
if django.VERSION >= (5, 1):
    SQLITE_OPTIONS.update(init_command="PRAGMA journal_mode=WAL;", transaction_mode="IMMEDIATE")
else:  # pragma: no cover - Django 4.2 / 5.0
    from django.db.backends.signals import connection_created

    def _sqlite_wal(sender: object, connection: Any, **kwargs: object) -> None:
        if connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA journal_mode=WAL")

    connection_created.connect(_sqlite_wal, dispatch_uid="example_sqlite_wal")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
        "OPTIONS": SQLITE_OPTIONS,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# The chat page sends images and documents inside its JSON requests (base64 data URLs, sent again with
# every turn, as the AI SDK's useChat does): room for a few of them per conversation. The page checks
# this limit before sending; the server answers a larger body with a 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = 32 * 1024 * 1024
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat"
LOGOUT_REDIRECT_URL = "chat"

# --- Bedrock ---------------------------------------------------------------------------------------

#: True when the site streams from the built-in emulator instead of real Bedrock (shown on the page).
#: The marker variable covers runserver's autoreloader: its child process inherits the dummy
#: credentials set below and must not mistake them for real ones.
EXAMPLE_USES_EMULATOR = os.environ.get("BEDROCK_STREAM_USE_AWS") != "1" and (
    os.environ.get("EXAMPLE_DUMMY_AWS_CREDENTIALS") == "1" or boto3.Session().get_credentials() is None
)
#: Where the emulator listens (``make demo`` starts it there).
EXAMPLE_EMULATOR_URL = os.environ.get("BEDROCK_EMULATOR_URL", "http://127.0.0.1:8787").rstrip("/")

BEDROCK_STREAM: dict[str, object] = {
    # A one-person demo on localhost: anyone may stream. History stays per user (or per session).
    "ALLOW_ANONYMOUS": True,
    "MAX_TOKENS": 512,
}

if EXAMPLE_USES_EMULATOR:
    BEDROCK_STREAM["ENDPOINT_URL"] = EXAMPLE_EMULATOR_URL
    # The emulator accepts any SigV4 signature; boto3 only needs something to sign with.
    os.environ["EXAMPLE_DUMMY_AWS_CREDENTIALS"] = "1"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "emulator")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "emulator")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    # Prompt caching after the system prompt: the emulator writes it to its cache on the first request
    # and reads it back on every later one, so the page shows cache hits. (On real Bedrock only models
    # with prompt caching take a cache point, and only a prefix of about 1,024 tokens or more is cached.)
    BEDROCK_STREAM["CONVERSE"] = {"prompt_cache": "system"}


def _redis_url() -> str | None:
    """Where resumable chat streams live: ``$BEDROCK_STREAM_REDIS_URL``, else a Redis answering on
    127.0.0.1:6379 within 0.2 s (a quick probe, so the demo starts at once without one); ``None``
    without redis-py or a Redis. Resuming after a reload needs it; stop works without it."""
    if importlib.util.find_spec("redis") is None:
        return None
    url = os.environ.get("BEDROCK_STREAM_REDIS_URL")
    if url:
        return url
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.2):
            return "redis://127.0.0.1:6379/0"
    except OSError:
        return None


#: The saved chats' answers go on after a reload and are picked up again (shown on the page).
EXAMPLE_REDIS_URL = _redis_url()
if EXAMPLE_REDIS_URL:
    BEDROCK_STREAM.update(RESUMABLE=True, REDIS_URL=EXAMPLE_REDIS_URL)

# Anonymous streaming (W006) is this local demo's choice, made above; nothing else is silenced.
SILENCED_SYSTEM_CHECKS = ["bedrock_stream.W006"]
