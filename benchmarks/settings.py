"""Django settings for the benchmark proxy (uvicorn and gunicorn processes started by ``run.py``).

Environment: ``BENCH_EMULATOR_URL`` (required), ``BENCH_PERSIST`` ("1" stores a Completion row per stream),
``BENCH_DB`` ("memory" (default), "sqlite": the file ``BENCH_SQLITE`` with the README's WAL / busy timeout /
IMMEDIATE options, "postgres": database ``BENCH_PG_NAME`` on 127.0.0.1:5432 with Django's connection pool
when psycopg_pool is installed, else ``CONN_MAX_AGE=0``), ``BENCH_BUDGETS`` ("1": a ``BUDGETS`` default
large enough never to refuse), ``BENCH_TRANSPORT`` ("aiobotocore" | "thread" | "auto"), ``BENCH_THREADS``
(thread pool). No CSRF middleware (the load generator posts JSON without a token) and no session/auth
middleware: ``X-Bench-User: <n>`` makes ``request.user`` the user ``bench<n>`` without a query
(``benchmarks/middleware.py``), so the figures measure the streaming path, not the middleware stack.
``/hand/llama2/`` is the hand-written baseline view (``benchmarks/handwritten.py``).
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
MIDDLEWARE = ["benchmarks.middleware.HeaderUserMiddleware"]
if os.environ.get("BENCH_MIDDLEWARE") == "common":
    MIDDLEWARE.append("django.middleware.common.CommonMiddleware")
PERSIST = os.environ.get("BENCH_PERSIST", "0") == "1"
BENCH_DB = os.environ.get("BENCH_DB", "sqlite" if os.environ.get("BENCH_SQLITE") else "memory")
if BENCH_DB == "postgres":
    import django

    PG_OPTIONS: dict[str, object] = {}
    try:
        import psycopg_pool  # noqa: F401
    except ImportError:
        pass
    else:
        if django.VERSION >= (5, 1):  # Django's own connection pool (OPTIONS["pool"]) is new in 5.1
            PG_OPTIONS = {"pool": {"min_size": 2, "max_size": 20, "timeout": 30}}
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("BENCH_PG_NAME", "bench"),
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": "5432",
            "CONN_MAX_AGE": 0,
            "OPTIONS": PG_OPTIONS,
        }
    }
else:
    import django

    SQLITE_OPTIONS: dict[str, object] = {"timeout": 20}
    if django.VERSION >= (5, 1):
        SQLITE_OPTIONS.update(init_command="PRAGMA journal_mode=WAL;", transaction_mode="IMMEDIATE")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("BENCH_SQLITE", ":memory:") if BENCH_DB == "sqlite" else ":memory:",
            "OPTIONS": SQLITE_OPTIONS,
        }
    }
REST_FRAMEWORK = {"DEFAULT_AUTHENTICATION_CLASSES": ["benchmarks.middleware.HeaderUserAuthentication"]}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
BEDROCK_STREAM = {
    "ALLOW_ANONYMOUS": True,
    "ENDPOINT_URL": os.environ.get("BENCH_EMULATOR_URL"),
    "REGION": "us-east-1",
    "PERSIST": PERSIST,
    # Large enough never to refuse: the figures measure reserving and settling, not 429s.
    "BUDGETS": {"default": {"tokens": 10**15, "period": "day"}} if os.environ.get("BENCH_BUDGETS") == "1" else None,
    "MAX_TOKENS": 100_000,
    "ASYNC_TRANSPORT": os.environ.get("BENCH_TRANSPORT", "auto"),
    "THREAD_POOL_SIZE": int(os.environ.get("BENCH_THREADS", "64")),
    "CLIENT_CONFIG": {"max_pool_connections": 2048, "retries": {"mode": "standard", "max_attempts": 1}},
}
# Anonymous streaming is the benchmark's own choice (the figures 1-4 load generator sends no user).
SILENCED_SYSTEM_CHECKS = ["bedrock_stream.W006"]
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
