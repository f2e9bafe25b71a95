"""boto3 / aiobotocore client factory: one client per configuration, reused across requests.

boto3 clients are thread-safe, so one sync client serves every thread. aiobotocore clients belong to
the event loop their aiohttp session was created on, so the async ones are cached per loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.config import Config

from .conf import stream_settings
from .exceptions import MissingExtraError

SERVICE = "bedrock-runtime"
_lock = threading.Lock()
_sync_clients: dict[tuple[Any, ...], Any] = {}
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], Any]] = (
    weakref.WeakKeyDictionary()
)
_executor: ThreadPoolExecutor | None = None


def _client_kwargs() -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if stream_settings.REGION:
        kwargs["region_name"] = stream_settings.REGION
    elif not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        kwargs["region_name"] = "us-east-1"
    if stream_settings.ENDPOINT_URL:
        kwargs["endpoint_url"] = stream_settings.ENDPOINT_URL
    return kwargs


def _cache_key() -> tuple[Any, ...]:
    # boto3 reads these environment variables when a client is created; a change must give a new one.
    env = tuple(os.environ.get(name) for name in (
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID", "AWS_PROFILE",
    ))
    return (repr(sorted(_client_kwargs().items())), repr(stream_settings.CLIENT_CONFIG), env)


def get_client() -> Any:
    """The shared boto3 ``bedrock-runtime`` client for the current settings."""
    key = _cache_key()
    client = _sync_clients.get(key)
    if client is None:
        import boto3

        with _lock:
            client = _sync_clients.get(key)
            if client is None:
                client = boto3.session.Session().client(
                    SERVICE, config=Config(**stream_settings.CLIENT_CONFIG), **_client_kwargs()
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

        context = get_session().create_client(
            SERVICE, config=AioConfig(**stream_settings.CLIENT_CONFIG), **_client_kwargs()
        )
        client = await context.__aenter__()
        # Another request on this loop may have created one while we awaited; keep the first.
        client = per_loop.setdefault(key, client)
    return client


def get_executor() -> ThreadPoolExecutor:
    """The dedicated, bounded pool for the "thread" transport (never Django's shared thread)."""
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(
                    max_workers=stream_settings.THREAD_POOL_SIZE, thread_name_prefix="bedrock-stream"
                )
    return _executor


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
