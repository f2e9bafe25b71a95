"""boto3 / aiobotocore client factory: one client per configuration, reused across requests.

boto3 clients are thread-safe, so one sync client serves every thread. aiobotocore clients belong to
the event loop their aiohttp session was created on, so the async ones are cached per loop.

A Bedrock API key (``BEDROCK_STREAM["API_KEY"]``, else ``$AWS_BEARER_TOKEN_BEDROCK``) goes through
botocore's own bearer machinery: a token provider on the session and the ``"bearer"`` signature
version, so the request carries ``Authorization: Bearer <key>`` instead of a SigV4 signature.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.config import Config
from botocore.tokens import FrozenAuthToken
from django.core.exceptions import ImproperlyConfigured

from .conf import stream_settings
from .exceptions import MissingExtraError

SERVICE = "bedrock-runtime"
#: The environment variable AWS defines for Bedrock API keys (read by botocore >= 1.39 too).
API_KEY_ENV = "AWS_BEARER_TOKEN_BEDROCK"
_lock = threading.Lock()
_sync_clients: dict[tuple[Any, ...], Any] = {}
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], Any]] = (
    weakref.WeakKeyDictionary()
)


def _client_kwargs() -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if stream_settings.REGION:
        kwargs["region_name"] = stream_settings.REGION
    elif not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        kwargs["region_name"] = "us-east-1"
    if stream_settings.ENDPOINT_URL:
        kwargs["endpoint_url"] = stream_settings.ENDPOINT_URL
    return kwargs


def _api_key() -> str | None:
    """The Bedrock API key to send: ``BEDROCK_STREAM["API_KEY"]``, else ``$AWS_BEARER_TOKEN_BEDROCK``.

    ``None`` means SigV4 with the usual AWS credentials.
    """
    key = stream_settings.API_KEY
    if key is not None and not isinstance(key, str):
        # Never echo the value: it is a secret even when it has the wrong type.
        raise ImproperlyConfigured("BEDROCK_STREAM['API_KEY'] must be a string (a Bedrock API key) or None.")
    return key or os.environ.get(API_KEY_ENV) or None


class _ApiKeyToken:
    """botocore's token interface over one API key: the session's ``token_provider`` component
    (``load_token``) and the token the ``"bearer"`` signer reads (``get_frozen_token``).

    Handing botocore a ``FrozenAuthToken`` directly would work on recent releases only; older botocore
    and aiobotocore always call ``get_frozen_token()``. The repr never shows the key.
    """

    def __init__(self, key: str) -> None:
        self._frozen = FrozenAuthToken(key)

    def load_token(self, **kwargs: Any) -> _ApiKeyToken:
        return self

    def get_frozen_token(self) -> FrozenAuthToken:
        return self._frozen

    def __repr__(self) -> str:
        return f"<{type(self).__name__} (hidden)>"


class _AioApiKeyToken(_ApiKeyToken):
    """The same for aiobotocore, whose signer awaits ``get_frozen_token()``."""

    async def get_frozen_token(self) -> FrozenAuthToken:
        return self._frozen


def _config_for(session: Any, token_class: type[_ApiKeyToken]) -> dict[str, Any]:
    """The ``Config`` kwargs for a new client of ``session``; with an API key, also installs it there."""
    config = dict(stream_settings.CLIENT_CONFIG)
    key = _api_key()
    if key:
        session.register_component("token_provider", token_class(key))
        config["signature_version"] = "bearer"
    return config


def _cache_key() -> tuple[Any, ...]:
    # boto3 reads these environment variables when a client is created; a change must give a new one.
    env = tuple(os.environ.get(name) for name in (
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_CA_BUNDLE",
    ))
    key = _api_key()
    key_id = hashlib.sha256(key.encode()).hexdigest() if key else None  # the key itself stays out
    return (repr(sorted(_client_kwargs().items())), repr(stream_settings.CLIENT_CONFIG), env, key_id)


def get_client() -> Any:
    """The shared boto3 ``bedrock-runtime`` client for the current settings."""
    key = _cache_key()
    client = _sync_clients.get(key)
    if client is None:
        import boto3
        import botocore.session

        with _lock:
            client = _sync_clients.get(key)
            if client is None:
                session = botocore.session.Session()
                client = boto3.session.Session(botocore_session=session).client(
                    SERVICE, config=Config(**_config_for(session, _ApiKeyToken)), **_client_kwargs()
                )
                _sync_clients[key] = client
    return client


def aiobotocore_available() -> bool:
    try:
        import aiobotocore  # noqa: F401
    except ImportError:
        return False
    return True


def async_transport() -> str:
    """``"aiobotocore"`` or ``"thread"``, resolving ``"auto"``."""
    choice = stream_settings.ASYNC_TRANSPORT
    if choice == "auto":
        return "aiobotocore" if aiobotocore_available() else "thread"
    if choice == "aiobotocore" and not aiobotocore_available():
        raise MissingExtraError("aiobotocore", "async")
    return str(choice)


async def get_async_client() -> Any:
    """The aiobotocore client for the running loop and the current settings."""
    loop = asyncio.get_running_loop()
    per_loop = _async_clients.setdefault(loop, {})
    key = _cache_key()
    client = per_loop.get(key)
    if client is None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        session = get_session()
        config = AioConfig(**_config_for(session, _AioApiKeyToken))
        context = session.create_client(SERVICE, config=config, **_client_kwargs())
        client = await context.__aenter__()
        # Another request on this loop may have created one while we awaited; keep the first.
        client = per_loop.setdefault(key, client)
    return client


class LazyPool:
    """A dedicated, bounded thread pool, made on first use with ``BEDROCK_STREAM[size_setting]``
    threads: work that blocks goes there, never to Django's one thread-sensitive thread (where every
    sync view of an ASGI process takes turns) nor to the event loop."""

    def __init__(self, size_setting: str, thread_name_prefix: str) -> None:
        self.size_setting, self.thread_name_prefix = size_setting, thread_name_prefix
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def get(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    size = getattr(stream_settings, self.size_setting)
                    self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=self.thread_name_prefix)
        return self._pool


_stream_pool = LazyPool("THREAD_POOL_SIZE", "bedrock-stream")


def get_executor() -> ThreadPoolExecutor:
    """The pool of the "thread" transport: each open stream waits for Bedrock's bytes on one of its threads."""
    return _stream_pool.get()


def reset_clients() -> None:
    """Forget cached clients (called when ``BEDROCK_STREAM`` changes)."""
    _sync_clients.clear()
    _async_clients.clear()


async def aclose_clients() -> None:
    """Close the running loop's aiobotocore clients (for an ASGI lifespan shutdown, or tests)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    for client in _async_clients.pop(loop, {}).values():
        await client.__aexit__(None, None, None)
