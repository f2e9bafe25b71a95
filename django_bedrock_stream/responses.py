"""``StreamingTextResponse`` for users who write their own views."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from django.http import StreamingHttpResponse

#: Defaults for every streaming response. Overridable per response through ``headers``.
STREAM_HEADERS = {
    # Browsers and proxies must not cache or hold back a live stream.
    "Cache-Control": "no-cache",
    # nginx buffers proxied responses unless told not to.
    "X-Accel-Buffering": "no",
}


class StreamingTextResponse(StreamingHttpResponse):
    """Streams ``str`` (or bytes) deltas as ``text/plain; charset=utf-8``.

    ``stream`` may be a :class:`~django_bedrock_stream.streams.BedrockStream` or any iterable /
    async iterable. A stream offering both flavours is read with the one that matches how the view
    runs: async inside a running event loop (an async view under ASGI), sync otherwise. Pass
    ``asynchronous=`` to force one.
    """

    def __init__(
        self,
        stream: Iterable[Any] | AsyncIterable[Any],
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        *,
        content_type: str = "text/plain; charset=utf-8",
        asynchronous: bool | None = None,
    ) -> None:
        if asynchronous is None:
            asynchronous = _in_event_loop() if hasattr(stream, "__aiter__") else False
        body: Any = _AsyncOnly(stream) if asynchronous and hasattr(stream, "__aiter__") else stream
        if not asynchronous and hasattr(stream, "__iter__") and hasattr(stream, "__aiter__"):
            body = _SyncOnly(stream)
        super().__init__(body, status=status, headers={**STREAM_HEADERS, **(headers or {})}, content_type=content_type)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _OneFlavour:
    """Hides one iteration flavour from Django, which otherwise always picks the sync one."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None and not getattr(self._stream, "finished", False):
            close()


class _AsyncOnly(_OneFlavour):
    def __aiter__(self) -> AsyncIterator[Any]:
        return self._stream.__aiter__()


class _SyncOnly(_OneFlavour):
    def __iter__(self) -> Iterator[Any]:
        return iter(self._stream)
