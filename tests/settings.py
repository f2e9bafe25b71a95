"""Settings for the test suite. DATABASE_URL-style switch: BEDROCK_TEST_DB=postgres uses the local server."""

import importlib.util
import os
from typing import Any

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "tests.urls"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "django_bedrock_stream",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES: dict[str, dict[str, Any]]
if os.environ.get("BEDROCK_TEST_DB") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("PGDATABASE", "postgres"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            # Parallel runs on one server need distinct test databases.
            "TEST": {"NAME": os.environ.get("BEDROCK_TEST_PG_NAME") or None},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("BEDROCK_TEST_SQLITE", ":memory:"),
            "TEST": {"NAME": os.environ.get("BEDROCK_TEST_SQLITE") or None},
        }
    }
if importlib.util.find_spec("drf_spectacular"):  # the OpenAPI schema test (tests/test_drf.py)
    INSTALLED_APPS.append("drf_spectacular")
    REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
BEDROCK_STREAM = {"ALLOW_ANONYMOUS": True}
LOGGING = {"version": 1, "disable_existing_loggers": False}
