"""Django settings for the benchmark proxy (uvicorn and gunicorn processes started by ``run.py``).

Environment: ``BENCH_EMULATOR_URL`` (required), ``BENCH_PERSIST`` ("1" stores a Completion row per stream in
``BENCH_SQLITE``), ``BENCH_TRANSPORT`` ("aiobotocore" | "thread" | "auto"), ``BENCH_THREADS`` (thread pool).
No CSRF middleware (the load generator posts JSON without a token) and no session/auth middleware beyond
what ``ALLOW_ANONYMOUS`` needs, so the figures measure the streaming path, not the middleware stack.
"""

import os

SECRET_KEY = "benchmarks-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "benchmarks.urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "rest_framework",
    "django_bedrock_stream",
]
# BENCH_MIDDLEWARE=common adds CommonMiddleware: like every MiddlewareMixin-based middleware under ASGI it
# runs through sync_to_async(thread_sensitive=True), i.e. a thread (created per request) and two hops.
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"] if os.environ.get("BENCH_MIDDLEWARE") == "common" else []
PERSIST = os.environ.get("BENCH_PERSIST", "0") == "1"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_SQLITE", ":memory:"),
        "OPTIONS": {"timeout": 30},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
BEDROCK_STREAM = {
    "ALLOW_ANONYMOUS": True,
    "ENDPOINT_URL": os.environ.get("BENCH_EMULATOR_URL"),
    "REGION": "us-east-1",
    "PERSIST": PERSIST,
    "MAX_TOKENS": 100_000,
    "ASYNC_TRANSPORT": os.environ.get("BENCH_TRANSPORT", "auto"),
    "THREAD_POOL_SIZE": int(os.environ.get("BENCH_THREADS", "64")),
    "CLIENT_CONFIG": {"max_pool_connections": 2048, "retries": {"mode": "standard", "max_attempts": 1}},
}
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
