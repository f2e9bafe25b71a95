"""Settings for the workers of ``tests/test_resumable.py``: ``tests.server_settings``' logging (stderr) on a
SQLite file all workers share (``BEDROCK_RESUME_SQLITE``), resumable chat streams on Redis at
``BEDROCK_RESUME_REDIS_URL`` (kept ``BEDROCK_RESUME_TTL`` seconds), a short keep-alive, and the test chat
views of ``tests.resumable_urls``.
"""

import os

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
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["BEDROCK_RESUME_SQLITE"],
        "OPTIONS": {"timeout": 20},
    }
}
BEDROCK_STREAM = {
    "ALLOW_ANONYMOUS": True,
    "RESUMABLE": True,
    "REDIS_URL": os.environ["BEDROCK_RESUME_REDIS_URL"],
    "RESUME_TTL": int(os.environ.get("BEDROCK_RESUME_TTL", "60")),
    "KEEPALIVE_SECONDS": float(os.environ.get("BEDROCK_RESUME_KEEPALIVE", "0.5")),
}
