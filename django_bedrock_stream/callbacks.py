"""Per-stream callbacks, the Python twin of the Vercel AI SDK's ``AIStreamCallbacksAndOptions``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync

Callback = Callable[..., None | Awaitable[None]]


@dataclass
class StreamCallbacks:
    """Called in this order: ``on_start()`` once before the first token, ``on_token(token)`` per
    delta, ``on_completion(text)`` with the whole text, ``on_final(text)`` last.

    Each may be a plain or an ``async`` callable. ``on_completion`` and ``on_final`` run only when
    the stream ended normally; failures surface as exceptions (and the ``stream_failed`` signal).
    """

    on_start: Callback | None = None
    on_token: Callback | None = None
    on_completion: Callback | None = None
    on_final: Callback | None = None

    def call(self, name: str, *args: Any) -> None:
        """Run a callback from sync code (an async one is driven to completion)."""
        fn = getattr(self, name)
        if fn is None:
            return
        result = fn(*args)
        if inspect.isawaitable(result):
            async_to_sync(_await)(result)

    async def acall(self, name: str, *args: Any) -> None:
        """Run a callback from async code (a plain one is called inline: keep it quick)."""
        fn = getattr(self, name)
        if fn is None:
            return
        result = fn(*args)
        if inspect.isawaitable(result):
            await result


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
