"""Reading Bedrock's event streams one network read at a time: the batches under ``BedrockStream``.

botocore's ``EventStream`` decodes one event per ``next()`` and runs the generic response parser on each
(shape lookups, and under aiobotocore an ``await`` per event). For the hot case, an invoke ``chunk``
event, the parsed result is just ``{"chunk": {"bytes": base64decode(payload["bytes"])}}``; we build it
directly, after botocore's own ``EventStreamBuffer`` has framed the message and checked both CRCs.
Every other message (exceptions, Converse events, anything unexpected) goes through the stream's own
``_parse_event``, so errors raise exactly the ``EventStreamError`` boto3 would. All messages decoded
from one network read form one batch.

This leans on botocore internals (``EventStream._raw_stream`` / ``_parse_event``, the buffer's header
parse). Each is checked for once, at import, and on any stream where one is missing the batches fall
back to botocore's public iteration (one event a batch): slower, never wrong.
"""

from __future__ import annotations

import asyncio
import json
import socket
from base64 import b64decode
from collections.abc import AsyncIterator, Iterator
from typing import Any

from botocore.eventstream import EventStream, EventStreamBuffer

from .client import get_executor


def _internals_present() -> bool:
    probe = EventStreamBuffer()
    return callable(getattr(probe, "_parse_headers", None)) and all(
        hasattr(probe, name) for name in ("_data", "_prelude", "_header_parser")
    )


try:  # botocore internals the fast path needs; without them, public iteration
    from botocore.eventstream import _PRELUDE_LENGTH

    _FAST = _internals_present()
except ImportError:  # pragma: no cover - depends on the installed botocore
    _PRELUDE_LENGTH, _FAST = 0, False

_SLICE = 8192  # EventStreamBuffer copies its remaining buffer per message: feed it in bounded slices


def _is_botocore_stream(source: Any) -> bool:
    return (
        _FAST
        and isinstance(source, EventStream)
        and hasattr(source, "_raw_stream")
        and callable(getattr(source, "_parse_event", None))
    )


def _chunk_event(message: Any) -> dict[str, Any] | None:
    headers = message.headers
    if headers.get(":event-type") != "chunk" or headers.get(":message-type") != "event":
        return None
    try:
        return {"chunk": {"bytes": b64decode(json.loads(message.payload)["bytes"])}}
    except (ValueError, KeyError, TypeError):
        return None


class _Buffer(EventStreamBuffer):
    """botocore's buffer (framing, both CRC checks, its errors), with the header block's parse
    memoised by its bytes: a stream repeats the same few header blocks (``:event-type chunk``…) for
    every message, and parsing them is a pure function of those bytes."""

    def _parse_headers(self) -> dict[str, Any]:
        header_bytes = self._data[_PRELUDE_LENGTH : self._prelude.headers_end]
        headers = _HEADERS.get(header_bytes)
        if headers is None:
            headers = self._header_parser.parse(header_bytes)
            if len(_HEADERS) < 64 and len(header_bytes) <= 512:
                _HEADERS[header_bytes] = headers
        return dict(headers)  # a copy: the values are immutable (str, bytes, int, bool)


_HEADERS: dict[bytes, dict[str, Any]] = {}


def _messages(buffer: EventStreamBuffer, data: bytes) -> Iterator[Any]:
    for start in range(0, len(data), _SLICE):
        buffer.add_data(data[start : start + _SLICE])
        yield from buffer


def sync_event_batches(source: Any) -> Iterator[list[Any]]:
    if not _is_botocore_stream(source) or not hasattr(source._raw_stream, "stream"):
        for event in source:
            yield [event]
        return
    buffer = _Buffer()
    parse_event = source._parse_event
    for data in source._raw_stream.stream():
        batch: list[Any] = []
        try:
            for message in _messages(buffer, data):
                event = _chunk_event(message)
                if event is None:
                    event = parse_event(message)
                    if not event:
                        continue
                batch.append(event)
        except Exception as err:
            if batch:  # deliver what arrived before the error, then raise it
                yield batch
            raise err
        if batch:
            yield batch


async def async_event_batches(source: Any) -> AsyncIterator[list[Any]]:
    content: Any = getattr(getattr(source, "_raw_stream", None), "content", None)
    if not _is_botocore_stream(source) or not hasattr(content, "readany"):
        async for event in source:
            yield [event]
        return
    buffer = _Buffer()
    parse_event = source._parse_event
    while True:
        data = await content.readany()  # everything buffered so far, or waits for the next bytes
        if not data:
            return
        batch: list[Any] = []
        try:
            for message in _messages(buffer, data):
                event = _chunk_event(message)
                if event is None:
                    event = await parse_event(message)
                    if not event:
                        continue
                batch.append(event)
        except Exception as err:
            if batch:
                yield batch
            raise err
        if batch:
            yield batch


async def threaded_event_batches(source: Any) -> AsyncIterator[list[Any]]:
    """A sync source read on the dedicated pool: one hop per network read, not one per event."""
    loop = asyncio.get_running_loop()
    executor = get_executor()
    batches = sync_event_batches(source)
    while True:
        batch = await loop.run_in_executor(executor, next, batches, None)
        if batch is None:
            return
        yield batch


def close_upstream(source: Any) -> None:
    raw = getattr(source, "_raw_stream", None)
    connection = getattr(raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    close = getattr(source, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # closing a broken connection must not mask the original outcome
            pass
