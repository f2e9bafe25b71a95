"""Settings for the servers the tests start as subprocesses (uvicorn, gunicorn): ``tests.settings`` on
the PostgreSQL test database the test process created, reached at ``BEDROCK_SERVER_DB_PORT`` (the
database's own port, or a proxy the test can cut: ``tests/dbproxy.py``).

Environment: ``BEDROCK_SERVER_DB_NAME`` (required), ``BEDROCK_SERVER_DB_PORT`` (default 5432),
``PGHOST``, ``PGUSER``. Everything the package logs goes to stderr, one line per record, as
``LEVEL logger message``, where the tests read it.
"""

import os
from typing import Any, cast

from tests.settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["BEDROCK_SERVER_DB_NAME"],
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("BEDROCK_SERVER_DB_PORT", "5432"),
        # CONN_MAX_AGE stays at Django's default (0): connections are closed when given back.
        "OPTIONS": {"connect_timeout": 5},
    }
}
LOGGING = cast(Any, {  # tests.settings' LOGGING has no handlers, so mypy types it dict[str, int]
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"line": {"format": "%(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line"}},
    "loggers": {
        "django_bedrock_stream": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
    },
})
