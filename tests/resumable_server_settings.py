"""Settings for the workers of ``tests/test_resumable.py``, ``tests/test_chat_load.py`` and the budget
tests over two workers: ``tests.server_settings``' logging (stderr) on a SQLite file all workers share
(``BEDROCK_RESUME_SQLITE``) or, with ``BEDROCK_RESUME_PG_NAME``, that PostgreSQL database; resumable chat
streams on Redis at ``BEDROCK_RESUME_REDIS_URL`` (kept ``BEDROCK_RESUME_TTL`` seconds), a short keep-alive,
budgets from ``BEDROCK_RESUME_BUDGETS`` (JSON, default none), and the test chat views of
``tests.resumable_urls``.
"""

import json
import os

import django

from tests.settings import *  # noqa: F403

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"line": {"format": "%(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line"}},
    "loggers": {
        "django_bedrock_stream": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
    },
}

ROOT_URLCONF = "tests.resumable_urls"
# The README's SQLite for concurrent streams ("Databases"): WAL, and writers queue for the lock at BEGIN
# (Django >= 5.1; the deployment tests run on the newest Django).
SQLITE_OPTIONS: dict[str, object] = {"timeout": 20}
if django.VERSION >= (5, 1):
    SQLITE_OPTIONS.update(init_command="PRAGMA journal_mode=WAL;", transaction_mode="IMMEDIATE")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["BEDROCK_RESUME_SQLITE"],
        "OPTIONS": SQLITE_OPTIONS,
    }
}
if os.environ.get("BEDROCK_RESUME_PG_NAME"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["BEDROCK_RESUME_PG_NAME"],
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            # The README's PostgreSQL for many concurrent streams ("Databases"): a bounded pool per
            # worker, so a burst of starting streams waits for a connection instead of exceeding
            # max_connections (each request's thread would otherwise open its own).
            "OPTIONS": {"pool": {"min_size": 2, "max_size": 20, "timeout": 30}} if django.VERSION >= (5, 1) else {},
        }
    }
# The workers' users are fixtures, and Basic auth checks the password on every request.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
BEDROCK_STREAM = {
    "ALLOW_ANONYMOUS": True,
    "BUDGETS": json.loads(os.environ.get("BEDROCK_RESUME_BUDGETS", "null")),
    "RESUMABLE": True,
    "REDIS_URL": os.environ["BEDROCK_RESUME_REDIS_URL"],
    "RESUME_TTL": int(os.environ.get("BEDROCK_RESUME_TTL", "60")),
    "KEEPALIVE_SECONDS": float(os.environ.get("BEDROCK_RESUME_KEEPALIVE", "0.5")),
}
