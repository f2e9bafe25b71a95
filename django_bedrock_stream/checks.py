"""System checks, one function per concern, with stable ids ``bedrock_stream.<E|W>NNN``.

=====================  =======================================================================
Id                     Meaning
=====================  =======================================================================
``E001``               ``BEDROCK_STREAM`` is not a dict.
``E002``               ``ASYNC_TRANSPORT = "aiobotocore"`` but aiobotocore is not installed.
``E003``               A ``BEDROCK_STREAM`` value is invalid (type, range, a ``CLIENT_CONFIG``
                       that ``botocore.config.Config`` rejects, or a ``PRICES`` /
                       ``PRICE_SURCHARGES`` table of the wrong shape). One error per key.
``W001``               Unknown ``BEDROCK_STREAM`` key (a typo is otherwise silently ignored).
``W002``               No AWS credentials and/or region can be found, and no endpoint override
                       (``ENDPOINT_URL``, ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``, ``AWS_ENDPOINT_URL``)
                       points somewhere else such as the built-in emulator.
``W003``               A Converse view routed by the project (not the package's own URLconf) has
                       neither a pinned ``model_id`` nor any allowed models: it serves only the
                       library's built-in default model, and requests that name a model get a 400.
``W004``               A middleware that holds back streamed output is installed.
``W005``               ``ASYNC_TRANSPORT = "aiobotocore"`` in a WSGI-only project, where the async
                       path (the only user of aiobotocore) never runs.
``W006``               A routed stream view (either flavour) lets anonymous users stream:
                       ``ALLOW_ANONYMOUS`` is true, or its permission classes (e.g. ``AllowAny``)
                       let an anonymous request through.
``W007``               A Bedrock API key is configured (``API_KEY`` or ``AWS_BEARER_TOKEN_BEDROCK``)
                       and the endpoint override is plain ``http://``: botocore 1.44+ refuses to
                       send a bearer token without TLS (and the key would cross the network in
                       clear). Serve the emulator over HTTPS (``--tls-self-signed``).
``W008``               A price table (``PRICES``) is configured and a model the project serves
                       (a routed stream view's model or allowed models, ``ALLOWED_MODELS``) has
                       no price in it: its completions would get no cost.
``W009``               The app writes rows (``PERSIST``, ``BUDGETS``) to a SQLite file whose
                       connections are not in WAL mode or wait less than 20 s for the write
                       lock: concurrent streams fail with "database is locked". A database
                       check: it runs with ``migrate`` and ``check --database <alias>``.
``E004``               A routed stream view offers tools (``tools``) its family cannot call, or
                       its ``tool_choice`` names a tool it does not offer (else every request
                       would be a 500).
=====================  =======================================================================

Silence one with ``SILENCED_SYSTEM_CHECKS = ["bedrock_stream.W003"]``. Every check is tagged
``bedrock_stream`` (``manage.py check --tag bedrock_stream``) besides Django's own tag. Checks
never touch the network: W002 resolves credentials only from environment variables and config
files (see :func:`check_credentials`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning
from django.core.checks import register as register_check
from django.utils.module_loading import import_string

from .conf import DEFAULTS

TAG = "bedrock_stream"
#: The package's own URLconf, ``include("django_bedrock_stream.urls")``.
BUNDLED_URLCONF = "django_bedrock_stream.urls"
ASYNC_TRANSPORTS = ("auto", "aiobotocore", "thread")
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL")

#: Middleware that delays or buffers a ``StreamingHttpResponse``, with the reason shown in W004.
#: Only entries verified against the middleware's source belong here. Deliberately absent:
#: ``ConditionalGetMiddleware`` (returns early for non-GET requests and never computes an ETag of
#: streaming content), ``UpdateCacheMiddleware`` (skips streaming responses), and
#: ``debug_toolbar``/``silk`` (current releases leave ``streaming_content`` alone).
BUFFERING_MIDDLEWARE: dict[str, str] = {
    "django.middleware.gzip.GZipMiddleware": (  # Django <= 5.2 only, see gzip_holds_back_streams()
        "under WSGI it feeds the stream through one zlib compressor that is never flushed between "
        "chunks (django.utils.text.compress_sequence), so clients receive nothing until the "
        "compressor's buffer fills or the reply ends"
    ),
}


GZIP_MIDDLEWARE = "django.middleware.gzip.GZipMiddleware"


def gzip_holds_back_streams() -> bool:
    """Whether this Django's sync gzip path buffers a stream (up to 5.2) or flushes each part (6.0+).

    Probed rather than version-matched: two parts in, anything but "header, then everything at the
    end" means the compressor is flushed per part.
    """
    from django.utils.text import compress_sequence

    return len(list(compress_sequence(iter([b"a" * 64, b"b" * 64])))) <= 2


def _user_settings() -> dict[str, Any] | None:
    user = getattr(settings, "BEDROCK_STREAM", None)
    return user if isinstance(user, dict) else None


# -- E001 / W001 -------------------------------------------------------------------------------


def check_settings_keys(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E001: ``BEDROCK_STREAM`` is not a dict. W001: unknown keys."""
    user = getattr(settings, "BEDROCK_STREAM", None)
    if user is None:
        return []
    if not isinstance(user, dict):
        return [
            Error(
                f"BEDROCK_STREAM must be a dict, not {type(user).__name__}.",
                hint="Set BEDROCK_STREAM = {...} with the keys listed in the README's settings table.",
                id="bedrock_stream.E001",
            )
        ]
    return [
        Warning(
            f"Unknown BEDROCK_STREAM key {key!r}.",
            hint=f"Valid keys: {', '.join(sorted(DEFAULTS))}.",
            id="bedrock_stream.W001",
        )
        for key in sorted(set(user) - set(DEFAULTS), key=str)
    ]


# -- E003 --------------------------------------------------------------------------------------


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _invalid_value(key: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for ``key``, or ``None`` when it is."""
    if key in ("MAX_TOKENS", "THREAD_POOL_SIZE", "MAX_MESSAGES", "MAX_INPUT_CHARS", "RESUME_TTL", "RESUME_MAXLEN"):
        return None if _positive_int(value) else f"must be a positive integer, not {value!r}"
    if key == "ASYNC_TRANSPORT":
        return None if value in ASYNC_TRANSPORTS else f"must be one of {', '.join(map(repr, ASYNC_TRANSPORTS))}"
    if key in ("REGION", "ENDPOINT_URL", "API_KEY"):
        return None if value is None or (isinstance(value, str) and value) else "must be a non-empty string or None"
    if key in ("PERSIST", "ALLOW_ANONYMOUS"):
        return None if isinstance(value, bool) else f"must be True or False, not {value!r}"
    if key in ("RESUMABLE", "REDIS_URL", "DISCONNECT", "KEEPALIVE_SECONDS"):
        return _invalid_resumable(key, value)
    if key == "ALLOWED_MODELS":
        if isinstance(value, (list, tuple)) and all(isinstance(m, str) and m for m in value):
            return None
        return "must be a list of model id strings"
    if key == "PRICE_CURRENCY":
        return None if isinstance(value, str) and value.strip() else "must be a non-empty string such as 'USD'"
    if key in ("PRICES", "PRICE_SURCHARGES"):
        from .pricing import PriceTable, PriceTableError, parse_surcharges

        try:
            if key == "PRICE_SURCHARGES":
                parse_surcharges(value)
            elif value is not None:
                PriceTable(value)
        except PriceTableError as err:
            return f"is invalid: {err}"
        return None
    if key == "BUDGETS":
        return _invalid_budgets(value)
    if key == "CONVERSE":
        if not isinstance(value, dict):
            return f"must be a dict of model options, not {type(value).__name__}"
        from django.core.exceptions import ImproperlyConfigured

        from .options import ConverseOptions

        try:
            ConverseOptions.from_values({**DEFAULTS["CONVERSE"], **value})
        except ImproperlyConfigured as err:
            return f"is invalid: {err}"
        return None
    if key == "CLIENT_CONFIG":
        if value is None:
            return None
        if not isinstance(value, dict):
            return f"must be a dict of botocore.config.Config arguments, not {type(value).__name__}"
        from botocore.config import Config

        try:
            Config(**{**DEFAULTS["CLIENT_CONFIG"], **value})
        except Exception as err:  # botocore raises TypeError or its own validation errors
            return f"is rejected by botocore.config.Config: {err}"
    return None


def _invalid_resumable(key: str, value: Any) -> str | None:
    """The settings of resumable streams (resumable.py); RESUMABLE needs a REDIS_URL and redis-py."""
    if key == "RESUMABLE":
        if not isinstance(value, bool):
            return f"must be True or False, not {value!r}"
        if value and not (_user_settings() or {}).get("REDIS_URL"):
            return "needs BEDROCK_STREAM['REDIS_URL'] (e.g. 'redis://127.0.0.1:6379/0')"
        if value and not _module_exists("redis"):
            return "needs redis-py: install the [redis] extra"
        return None
    if key == "REDIS_URL":
        ok = value is None or (isinstance(value, str) and urlsplit(value).scheme in ("redis", "rediss", "unix"))
        return None if ok else "must be a redis://, rediss:// or unix:// URL, or None"
    if key == "DISCONNECT":
        return None if value in (None, "cancel", "continue") else "must be 'cancel', 'continue' or None"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if value is None or (number and value >= 0) else "must be a number of seconds (0 or None: never)"


def _invalid_budgets(value: Any) -> str | None:
    """Why a ``BUDGETS`` value is unusable (else a 500 on every request of a user it applies to)."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"default", "groups", "users"}:
        return "must be None or a dict with 'default', 'groups' and/or 'users'"
    from django.core.exceptions import ImproperlyConfigured

    from .budgets import Budget

    try:
        Budget.parse(value.get("default"), "BUDGETS['default']")
        for section in ("groups", "users"):
            entries = value.get(section) or {}
            if not isinstance(entries, dict):
                return f"[{section!r}] must be a dict of names to budgets"
            for name, budget in entries.items():
                Budget.parse(budget, f"BUDGETS[{section!r}][{name!r}]")
    except ImproperlyConfigured as err:
        return f"is invalid: {err}"
    return None


def check_settings_values(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E003: one error per ``BEDROCK_STREAM`` value of the wrong type or range."""
    user = _user_settings()
    if not user:
        return []
    errors: list[CheckMessage] = []
    for key in sorted(set(user) & set(DEFAULTS)):
        problem = _invalid_value(key, user[key])
        if problem:
            errors.append(
                Error(
                    f"BEDROCK_STREAM[{key!r}] {problem}.",
                    hint=f"Default: {DEFAULTS[key]!r}.",
                    obj=key,
                    id="bedrock_stream.E003",
                )
            )
    return errors


# -- W002 --------------------------------------------------------------------------------------

#: botocore credential providers that only read environment variables and local files.
_LOCAL_PROVIDERS = ("env", "shared-credentials-file", "config-file", "ec2-credentials-file", "boto-config")
#: Providers that would run a process or call the network, recognised by their configuration only.
_PROFILE_KEYS = (
    "role_arn",
    "credential_process",
    "sso_start_url",
    "sso_session",
    "web_identity_token_file",
    "login_session",
)
_ENV_SIGNALS = (
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def _endpoint_setting() -> tuple[str, str] | None:
    """The endpoint override and where it comes from (the setting or variable, as the user names it)."""
    user = _user_settings() or {}
    endpoint = user.get("ENDPOINT_URL")
    if endpoint:
        return "BEDROCK_STREAM['ENDPOINT_URL']", str(endpoint)
    for name in ENDPOINT_ENV:
        if os.environ.get(name):
            return name, os.environ[name]
    return None


def _find_credentials(session: Any) -> bool:
    """Whether boto3 will find credentials, without running processes or calling the network.

    Static keys (environment, ``~/.aws/credentials``, ``~/.aws/config``) are loaded for real; a
    profile that assumes a role, runs a ``credential_process`` or uses SSO, and the web-identity and
    container variables, count as configured. EC2 instance roles cannot be detected offline, so the
    warning's hint mentions them.
    """
    if any(os.environ.get(name) for name in _ENV_SIGNALS):
        return True
    scoped = session.get_scoped_config()  # raises ProfileNotFound for a bad AWS_PROFILE
    if any(scoped.get(key) for key in _PROFILE_KEYS):
        return True
    resolver = session.get_component("credential_provider")
    for provider in resolver.providers:
        if getattr(provider, "METHOD", None) in _LOCAL_PROVIDERS and provider.load() is not None:
            return True
    return False


def check_credentials(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W002: no credentials and/or no region, and no endpoint override (emulator) configured."""
    if _endpoint_setting():
        return []
    import botocore.exceptions
    import botocore.session

    session = botocore.session.Session()
    missing: list[str] = []
    user = _user_settings() or {}
    try:
        # A Bedrock API key is credentials enough (it replaces SigV4).
        if not (user.get("API_KEY") or os.environ.get("AWS_BEARER_TOKEN_BEDROCK") or _find_credentials(session)):
            missing.append("credentials")
    except botocore.exceptions.ProfileNotFound as err:
        missing.append(f"credentials ({err})")
    region = user.get("REGION") or os.environ.get("AWS_REGION")
    if not region:
        try:
            region = session.get_config_variable("region")
        except botocore.exceptions.ProfileNotFound:
            region = None
    if not region:
        missing.append("region (requests would go to us-east-1)")
    if not missing:
        return []
    return [
        Warning(
            f"No AWS {' and no '.join(missing)} found for Bedrock, and no endpoint override is set.",
            hint=(
                "Set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE (or a Bedrock API key: "
                "AWS_BEARER_TOKEN_BEDROCK or BEDROCK_STREAM['API_KEY']), and AWS_REGION or "
                "BEDROCK_STREAM['REGION']; on EC2 with an instance role, set the region and silence "
                "this check. For local work run the emulator (manage.py bedrock_emulator) and set "
                "AWS_ENDPOINT_URL_BEDROCK_RUNTIME or BEDROCK_STREAM['ENDPOINT_URL'] to its URL."
            ),
            id="bedrock_stream.W002",
        )
    ]


# -- W007 --------------------------------------------------------------------------------------


def check_api_key_endpoint(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W007: a Bedrock API key with a plain-HTTP endpoint override (typically the emulator without TLS).

    botocore 1.44+ refuses bearer auth over HTTP ("Bearer authorization requires an HTTPS endpoint"),
    so every stream would fail with a 502; older botocore sends the key in clear. Neither value is shown.
    """
    user = _user_settings() or {}
    endpoint = _endpoint_setting()
    if not (user.get("API_KEY") or os.environ.get("AWS_BEARER_TOKEN_BEDROCK")) or not endpoint:
        return []
    endpoint_source, url = endpoint
    if urlsplit(url.strip()).scheme.lower() != "http":
        return []
    key_source = "BEDROCK_STREAM['API_KEY']" if user.get("API_KEY") else "AWS_BEARER_TOKEN_BEDROCK"
    return [
        Warning(
            f"A Bedrock API key is set ({key_source}) but the endpoint ({endpoint_source}) is plain http://: "
            "botocore 1.44 and later refuse to send an API key without TLS, and older releases send it in clear.",
            hint=(
                "Use an https:// endpoint. For the built-in emulator, start it with --tls-self-signed (or "
                "--tls-cert/--tls-key), use the https:// URL it prints and point AWS_CA_BUNDLE at its CA file; "
                "or drop the API key and let the emulator accept dummy SigV4 credentials."
            ),
            id="bedrock_stream.W007",
        )
    ]


# -- routes (W003, W006) -------------------------------------------------------------------------


class Route(NamedTuple):
    """A class-based view found in the URLconf."""

    path: str
    view_class: type
    initkwargs: dict[str, Any]
    #: Dotted name of the URLconf module whose ``urlpatterns`` hold the route.
    urlconf: str


def _routed_views(patterns: Any, prefix: str = "", urlconf: str = "") -> Iterator[Route]:
    """Every class-based view in a URLconf, with the module that routes it."""
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if hasattr(entry, "url_patterns"):
            # include("module") names its module; include([...]) lists belong to the includer.
            module = getattr(entry.urlconf_module, "__name__", urlconf)
            yield from _routed_views(entry.url_patterns, route, module)
            continue
        view_class = getattr(entry.callback, "view_class", None) or getattr(entry.callback, "cls", None)
        if view_class is not None:
            yield Route(route, view_class, dict(getattr(entry.callback, "view_initkwargs", None) or {}), urlconf)


def _routes() -> list[Route]:
    """The project's class-based views; none when the URLconf is broken (Django's own url checks
    report that)."""
    from django.urls import get_resolver

    try:
        return list(_routed_views(get_resolver().url_patterns, urlconf=str(getattr(settings, "ROOT_URLCONF", ""))))
    except Exception:
        return []


# -- W003 --------------------------------------------------------------------------------------


def check_converse_models(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W003: a Converse view the project routed that serves only the built-in default model.

    The Converse view always allows its own model id, so an empty ``ALLOWED_MODELS`` is not an
    error in itself. It is flagged only when the project chose no model at all for a Converse view
    it routed itself (no ``model_id`` on the class or in ``as_view()``, no ``allowed_models``, empty
    ``ALLOWED_MODELS``): clients then get the library's default model and a 400 for any ``model``
    they pick, which is rarely what someone routing the model-agnostic endpoint expects. The
    package's own URLconf is exempt: like its seven other endpoints, its ``converse/`` serves its
    documented default model (README, "Endpoints"), so the documented default setup checks clean.
    """
    from .families import ConverseFamily

    user = _user_settings() or {}
    setting_models = user.get("ALLOWED_MODELS") or []
    warnings: list[CheckMessage] = []
    for route, view_class, initkwargs, urlconf in _routes():
        family = getattr(view_class, "family_class", None)
        if urlconf == BUNDLED_URLCONF or not (isinstance(family, type) and issubclass(family, ConverseFamily)):
            continue
        model_id = initkwargs.get("model_id", getattr(view_class, "model_id", None))
        allowed = initkwargs.get("allowed_models", getattr(view_class, "allowed_models", None))
        if allowed is None:
            allowed = setting_models
        if model_id or allowed:
            continue
        warnings.append(
            Warning(
                f"{view_class.__name__} at '/{route}' serves only the default model "
                f"{family.default_model_id!r}; requests that pick a \"model\" are rejected.",
                hint=(
                    "List the models clients may choose in BEDROCK_STREAM['ALLOWED_MODELS'] (or the view's "
                    "allowed_models), or pin one with as_view(model_id=...)."
                ),
                obj=view_class,
                id="bedrock_stream.W003",
            )
        )
    return warnings


# -- W008 --------------------------------------------------------------------------------------


def served_models() -> dict[str, list[str]]:
    """Every model id the project serves, with where: ``ALLOWED_MODELS``, and each routed stream
    view's own model (its ``model_id``, else its family's default) and allowed models, as the view
    itself lists them (``get_allowed_models()``)."""
    from .conf import stream_settings
    from .views import BedrockStreamMixin

    served: dict[str, list[str]] = {}
    for model in stream_settings.ALLOWED_MODELS or []:
        served.setdefault(model, []).append("BEDROCK_STREAM['ALLOWED_MODELS']")
    for route, view_class, initkwargs, _urlconf in _routes():
        if not (isinstance(view_class, type) and issubclass(view_class, BedrockStreamMixin)):
            continue
        try:
            models = view_class(**initkwargs).get_allowed_models()
        except Exception:
            continue  # no family_class: the view fails on its own, loudly
        for model in models:
            served.setdefault(model, []).append(f"{view_class.__name__} at '/{route}'")
    return served


def check_prices(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W008: a price table is configured and a served model is not in it. Without a table there is
    no cost at all, and nothing to warn about; a table E003 refuses is reported there."""
    from .pricing import PriceTable, PriceTableError

    user = _user_settings() or {}
    if user.get("PRICES") is None:
        return []
    try:
        table = PriceTable(user["PRICES"], user.get("PRICE_SURCHARGES"))
    except PriceTableError:
        return []
    warnings: list[CheckMessage] = []
    for model, places in sorted(served_models().items()):
        if table.price_for(model) is not None:
            continue
        where = ", ".join(places[:3]) + (f" and {len(places) - 3} more" if len(places) > 3 else "")
        warnings.append(
            Warning(
                f"BEDROCK_STREAM['PRICES'] has no price for {model!r}, served by {where}: "
                "its completions will have no cost.",
                hint=(
                    "Add its base model id (profile prefixes such as 'us.' are resolved) with its input and output "
                    "rates per 1,000 tokens; map an application inference profile ARN to the model it runs "
                    "(\"arn:...\": \"<model id>\")."
                ),
                obj=model,
                id="bedrock_stream.W008",
            )
        )
    return warnings


# -- E004 --------------------------------------------------------------------------------------


def check_tools(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E004: a routed view's ``tools`` its family cannot call, or a ``tool_choice`` naming none of them.
    Only the class attributes (and ``as_view()`` arguments) are seen: ``get_tools()`` runs per request."""
    from .tools import TOOL_FORMATS

    errors: list[CheckMessage] = []
    for route, view_class, initkwargs, _ in _routes():
        tools = initkwargs.get("tools", getattr(view_class, "tools", None))
        family_name = getattr(getattr(view_class, "family_class", None), "name", None)
        if not tools or family_name is None:
            continue
        problem = None
        choice = initkwargs.get("tool_choice", getattr(view_class, "tool_choice", "auto"))
        if family_name not in TOOL_FORMATS:
            problem = f"offers tools, but its {family_name!r} family cannot call them"
            hint = f"Use one of these families for views with tools: {', '.join(sorted(TOOL_FORMATS))}."
        elif choice not in ("auto", "any") and choice not in {tool.name for tool in tools}:
            problem = f"has tool_choice={choice!r}, which names none of its tools"
            hint = 'Use "auto", "any" or the name of one of the view\'s tools.'
        if problem:
            errors.append(Error(f"{view_class.__name__} at '/{route}' {problem}.", hint=hint, obj=view_class,
                                id="bedrock_stream.E004"))
    return errors


# -- W009 --------------------------------------------------------------------------------------

#: Seconds a SQLite connection should wait for the write lock (``OPTIONS["timeout"]``; Python's default is 5).
SQLITE_BUSY_TIMEOUT = 20


def check_sqlite_concurrency(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W009: rows written concurrently to a SQLite file that is not ready for it.

    Every server runs streams concurrently — uvicorn on one loop, runserver and gunicorn ``gthread`` on
    threads, gunicorn's sync workers as processes sharing the file — so the condition is only that the
    app writes (``PERSIST``, ``BUDGETS``) to a SQLite database that is a file. What a connection really
    gets (``OPTIONS``, a ``connection_created`` receiver, or WAL stored in the file) is read back from
    the database with ``PRAGMA journal_mode`` / ``PRAGMA busy_timeout``: a database check, run by
    ``migrate`` and ``check --database``, not by a plain ``check``.
    """
    if not databases:
        return []
    from django.db import connections, router
    from django.db.models import Model

    from .conf import stream_settings
    from .models import BudgetUsage, Completion

    written: list[type[Model]] = [Completion] if stream_settings.PERSIST else []
    if stream_settings.BUDGETS is not None:
        written.append(BudgetUsage)
    messages: list[CheckMessage] = []
    for alias in sorted({router.db_for_write(model) for model in written} & set(databases)):
        connection = connections[alias]
        if connection.vendor != "sqlite" or connection.is_in_memory_db():  # type: ignore[attr-defined]
            continue
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            mode = str(cursor.fetchone()[0]).lower()
            cursor.execute("PRAGMA busy_timeout")
            timeout = int(cursor.fetchone()[0]) / 1000
        problems = ([] if mode == "wal" else [f"journal_mode is {mode!r}, not 'wal'"]) + (
            [] if timeout >= SQLITE_BUSY_TIMEOUT else [f"the busy timeout is {timeout:g} s"])
        if problems:
            messages.append(Warning(
                f"DATABASES[{alias!r}] is a SQLite file that django-bedrock-stream writes rows to from concurrent "
                f"streams, and {' and '.join(problems)}: streams will fail with 'database is locked'.",
                hint=(
                    f'Django >= 5.1: "OPTIONS": {{"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": '
                    f'"IMMEDIATE", "timeout": {SQLITE_BUSY_TIMEOUT}}}. Older Django: "timeout": {SQLITE_BUSY_TIMEOUT} '
                    "and a connection_created receiver that runs PRAGMA journal_mode=WAL. See the README, "
                    '"Databases"; or use PostgreSQL.'
                ),
                obj=alias,
                id="bedrock_stream.W009",
            ))
    return messages


# -- W004 --------------------------------------------------------------------------------------


def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W004: a middleware known to hold back streamed output (or a subclass of one) is installed."""
    warnings: list[CheckMessage] = []
    known: list[tuple[type, str, str]] = []
    for path, reason in BUFFERING_MIDDLEWARE.items():
        if path == GZIP_MIDDLEWARE and not gzip_holds_back_streams():
            continue
        try:
            known.append((import_string(path), path, reason))
        except ImportError:
            continue
    for entry in getattr(settings, "MIDDLEWARE", None) or []:
        try:
            cls = import_string(entry)
        except ImportError:
            continue  # Django reports middleware that cannot be imported
        for base, path, reason in known:
            if isinstance(cls, type) and issubclass(cls, base):
                via = "" if entry == path else f" (a subclass of {path})"
                warnings.append(
                    Warning(
                        f"{entry}{via} delays Bedrock streams: {reason}.",
                        hint="Remove it from MIDDLEWARE and let the front proxy (nginx, a CDN) compress instead.",
                        obj=entry,
                        id="bedrock_stream.W004",
                    )
                )
    return warnings


# -- E002 / W005 -------------------------------------------------------------------------------


def _aiobotocore_installed() -> bool:
    try:
        import aiobotocore  # noqa: F401
    except ImportError:
        return False
    return True


def check_aiobotocore_installed(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E002: ``ASYNC_TRANSPORT = "aiobotocore"`` without aiobotocore installed."""
    user = _user_settings() or {}
    if user.get("ASYNC_TRANSPORT") != "aiobotocore" or _aiobotocore_installed():
        return []
    return [
        Error(
            "BEDROCK_STREAM['ASYNC_TRANSPORT'] is 'aiobotocore' but aiobotocore is not installed.",
            hint='pip install "django-bedrock-stream[async]", or set ASYNC_TRANSPORT to "auto" or "thread".',
            id="bedrock_stream.E002",
        )
    ]


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def is_wsgi_only() -> bool:
    """Heuristic: the project cannot be served by an ASGI server.

    True only when every ASGI signal is missing: no ``ASGI_APPLICATION`` setting, no ASGI server app
    (daphne, channels) in ``INSTALLED_APPS``, and no ``asgi`` module beside the ``WSGI_APPLICATION``
    module (``startproject`` creates one, so a project that deleted it is WSGI-only). Conservative
    on purpose: an unknown layout counts as possibly ASGI.
    """
    if getattr(settings, "ASGI_APPLICATION", None):
        return False
    if any(app.split(".")[0] in ("daphne", "channels") for app in settings.INSTALLED_APPS):
        return False
    wsgi = getattr(settings, "WSGI_APPLICATION", None)
    if not wsgi or "." not in wsgi:
        return False
    module = wsgi.rsplit(".", 1)[0]
    package = module.rsplit(".", 1)[0] if "." in module else ""
    sibling = f"{package}.asgi" if package else "asgi"
    return _module_exists(module) and not _module_exists(sibling)


def check_async_transport_deployment(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W005: aiobotocore asked for in a WSGI-only project (see :func:`is_wsgi_only`)."""
    user = _user_settings() or {}
    if user.get("ASYNC_TRANSPORT") != "aiobotocore" or not is_wsgi_only():
        return []
    return [
        Warning(
            "BEDROCK_STREAM['ASYNC_TRANSPORT'] is 'aiobotocore' but this project looks WSGI-only "
            f"(no ASGI_APPLICATION and no asgi module beside {settings.WSGI_APPLICATION!r}).",
            hint=(
                "Under WSGI every stream uses boto3 on the request's thread; aiobotocore is never used. "
                "Serve the project with an ASGI server (uvicorn/daphne) to get async streams, or drop the setting."
            ),
            id="bedrock_stream.W005",
        )
    ]


# -- W006 --------------------------------------------------------------------------------------


def anonymous_methods(view_class: type, initkwargs: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The stream methods (``POST``, and ``GET`` where enabled) an anonymous user may call on a
    routed view, and the names of the permission classes it enforces.

    Asks the view itself, as a request would: ``get_permissions()`` then each ``has_permission()``
    with DRF's unauthenticated user, so ``ALLOW_ANONYMOUS``, the project's defaults, the DRF
    flavour's own ``permission_classes`` and ``as_view()`` arguments all count as they do at run
    time. A permission that cannot answer without a real request (it raises) counts as refusing:
    the check reports only what it can show.
    """
    from django.http import HttpRequest
    from rest_framework.request import Request

    methods: list[str] = []
    names: list[str] = []
    for method in ("POST", "GET"):
        request = HttpRequest()
        request.method = method
        try:
            view = view_class(**initkwargs)
            view.setup(request)
            if method.lower() not in view.http_method_names or not hasattr(view, method.lower()):
                continue
            permissions = view.get_permissions()
            anonymous = Request(request)  # no authenticators: DRF's UNAUTHENTICATED_USER
            if all(permission.has_permission(anonymous, view) for permission in permissions):
                methods.append(method)
                names = [type(permission).__name__ for permission in permissions]
        except Exception:
            continue
    return methods, names


def check_anonymous_access(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W006: a routed stream view, plain or DRF, that lets anonymous users stream (and spend)."""
    from .views import BedrockStreamMixin

    allow_anonymous = (_user_settings() or {}).get("ALLOW_ANONYMOUS") is True
    warnings: list[CheckMessage] = []
    for route, view_class, initkwargs, _urlconf in _routes():
        if not (isinstance(view_class, type) and issubclass(view_class, BedrockStreamMixin)):
            continue
        methods, names = anonymous_methods(view_class, initkwargs)
        if not methods:
            continue
        permissions = f"its permission classes ({', '.join(names) or 'none'}) let them in"
        reason = f"BEDROCK_STREAM['ALLOW_ANONYMOUS'] is true and {permissions}" if allow_anonymous else permissions
        warnings.append(
            Warning(
                f"{view_class.__name__} at '/{route}' lets anonymous users stream ({' and '.join(methods)}): {reason}.",
                hint=(
                    "Anyone who can reach this URL spends your Bedrock quota. Require sign-in: leave "
                    "ALLOW_ANONYMOUS False (the default) and use permission classes that need a user, such as "
                    "IsAuthenticated. For an endpoint that is public on purpose, add throttle_classes and "
                    "silence this check: SILENCED_SYSTEM_CHECKS = ['bedrock_stream.W006']."
                ),
                obj=view_class,
                id="bedrock_stream.W006",
            )
        )
    return warnings


#: Every check, in id order of first appearance. ``register()`` adds them all.
CHECKS = (
    (check_settings_keys, (Tags.compatibility,)),
    (check_settings_values, (Tags.compatibility,)),
    (check_aiobotocore_installed, (Tags.compatibility,)),
    (check_credentials, (Tags.compatibility,)),
    (check_converse_models, (Tags.urls,)),
    (check_tools, (Tags.urls,)),
    (check_middleware, (Tags.compatibility,)),
    (check_async_transport_deployment, (Tags.compatibility,)),
    (check_anonymous_access, (Tags.security, Tags.urls)),
    (check_api_key_endpoint, (Tags.security, Tags.compatibility)),
    (check_prices, (Tags.urls,)),
    (check_sqlite_concurrency, (Tags.database,)),
)


def register() -> None:
    """The single entry point, called from ``AppConfig.ready()``."""
    for check, tags in CHECKS:
        register_check(check, TAG, *tags)
