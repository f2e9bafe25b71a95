"""``BedrockStream``: one stream object that yields text deltas with ``for`` and ``async for``.

The stream functions mirror the Vercel AI SDK's ``AWSBedrock*Stream`` helpers: give them what boto3
(or aiobotocore) returned and iterate. Parsing is delegated to a family (I/O-free), so the sync and
async paths share it.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from base64 import b64decode
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

from botocore.eventstream import _PRELUDE_LENGTH, EventStream, EventStreamBuffer

from .callbacks import StreamCallbacks
from .client import get_executor
from .exceptions import BedrockStreamError, BedrockStreamInterrupted, wrap_botocore_error
from .families import (
    AnthropicFamily,
    AnthropicMessagesFamily,
    BedrockFamily,
    CohereFamily,
    ConverseFamily,
    Delta,
    Llama2Family,
    Llama3Family,
    MistralFamily,
    TitanFamily,
)

Parser = Callable[[Mapping[str, Any]], "Delta | None"]

_SURROGATE = re.compile("[\ud800-\udfff]")


class BedrockStream:
    """Iterate once, with ``for`` or ``async for``; afterwards read ``text``, ``stop_reason``, ``usage``.

    ``source`` is the event stream from boto3 (``response["body"]`` / ``response["stream"]``), from
    aiobotocore (async only), or any iterable of event dicts. ``parse`` turns one event into a
    :class:`~django_bedrock_stream.families.Delta`. A sync source is read on a dedicated thread pool
    under ``async for``, so the event loop is never blocked.
    """

    def __init__(
        self,
        source: Any,
        parse: Parser,
        callbacks: StreamCallbacks | None = None,
        *,
        model_id: str | None = None,
    ) -> None:
        self.source = source
        self.parse = parse
        self.callbacks = callbacks or StreamCallbacks()
        self.model_id = model_id
        self.stop_reason: str | None = None
        self.error: BedrockStreamError | None = None
        self.finished = False
        self.first_token_at: float | None = None
        self._parts: list[str] = []
        self._high = ""  # a high surrogate held back until the next text brings its low half
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        self._metrics: Mapping[str, Any] = {}

    # -- results --------------------------------------------------------------------------------
    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @property
    def usage(self) -> dict[str, int]:
        """The family's own counts (what the model reports) first; invocation metrics fill the gaps."""
        inp = self._input_tokens if self._input_tokens is not None else self._metrics.get("inputTokenCount")
        out = self._output_tokens if self._output_tokens is not None else self._metrics.get("outputTokenCount")
        return {"input_tokens": int(inp or 0), "output_tokens": int(out or 0)}

    def apply(self, delta: Delta) -> str:
        """Fold one delta into the totals; return its text ("" when it carries none)."""
        if delta.stop_reason is not None:
            self.stop_reason = delta.stop_reason
        if delta.input_tokens is not None:
            self._input_tokens = delta.input_tokens
        if delta.output_tokens is not None:
            self._output_tokens = delta.output_tokens
        if delta.metrics:
            self._metrics = delta.metrics
        text = delta.text
        if text and (self._high or not text.isascii()):  # isascii() is O(1): ASCII text costs nothing
            text = self._join_surrogates(text)
        if text:
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
            self._parts.append(text)
        return text

    def _join_surrogates(self, text: str) -> str:
        """Text free of lone surrogates, so it can be encoded and stored.

        JSON's ``\\ud83d`` escapes let a model chunk end in the middle of a surrogate pair: hold a
        trailing high surrogate back and prefix it to the next text, so the pair is joined into
        one character. Any surrogate still alone becomes U+FFFD.
        """
        if self._high:
            text, self._high = self._high + text, ""
        if "\ud800" <= text[-1] <= "\udbff":
            text, self._high = text[:-1], text[-1]
        if _SURROGATE.search(text):
            text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return text

    def _end_texts(self) -> list[str]:
        """At the end of the stream, a high surrogate still held back never got its pair: U+FFFD."""
        if not self._high:
            return []
        self._high = ""
        return [self.apply(Delta("\ufffd"))]

    def _fail(self, err: BaseException) -> BedrockStreamError:
        self.error = (
            err
            if isinstance(err, BedrockStreamError)
            else wrap_botocore_error(err, model_id=self.model_id, started=True)
        )
        # A read timeout leaves the HTTP connection open (aiohttp keeps it) and Bedrock would keep
        # generating into it: drop it now. Harmless after an in-stream exception event.
        self.close()
        return self.error

    # -- sync -----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[str]:
        if not hasattr(self.source, "__iter__") or _is_async_only(self.source):
            raise TypeError("This stream reads an async source: iterate it with `async for`.")
        return self._iter()

    def _iter(self) -> Iterator[str]:
        for texts in self.iter_batches():
            yield from texts

    def iter_batches(self, each: Callable[[str], Any] | None = None) -> Iterator[list[str]]:
        """Like ``for``, but yields a list of the text deltas that arrived in one network read.

        A lone delta comes alone, as soon as it is read; deltas that were already buffered together
        come together, so the caller can forward them in one write. Callbacks still run per delta,
        each followed by ``each(text)`` when given (the runner's per-token signal).
        """
        if not hasattr(self.source, "__iter__") or _is_async_only(self.source):
            raise TypeError("This stream reads an async source: iterate it with `async for`.")
        callbacks = self.callbacks
        callbacks.call("on_start")
        on_token = callbacks.on_token is not None
        fold = self._fold
        batches = _sync_event_batches(self.source)
        while True:
            try:
                events = next(batches, None)
                # An event the family cannot parse (bad JSON, a missing key) fails the stream too.
                texts = fold(events) if events is not None else self._end_texts()
            except Exception as err:
                raise self._fail(err) from err
            if texts:
                if on_token or each is not None:
                    for text in texts:
                        if on_token:
                            callbacks.call("on_token", text)
                        if each is not None:
                            each(text)
                yield texts
            if events is None:
                break
        self.finished = True
        callbacks.call("on_completion", self.text)
        callbacks.call("on_final", self.text)

    def _fold(self, events: list[Any]) -> list[str]:
        """Parse and apply a batch of events; return their non-empty texts."""
        parse, apply = self.parse, self.apply
        texts = []
        for event in events:
            delta = parse(event)
            if delta is not None:
                text = apply(delta)
                if text:
                    texts.append(text)
        return texts

    # -- async ----------------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[str]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[str]:
        async for texts in self.aiter_batches():
            for text in texts:
                yield text

    async def aiter_batches(
        self, each: Callable[[str], Awaitable[Any]] | None = None
    ) -> AsyncIterator[list[str]]:
        """``async for`` flavour of :meth:`iter_batches` (``each`` is awaited)."""
        callbacks = self.callbacks
        await callbacks.acall("on_start")
        on_token = callbacks.on_token is not None
        fold = self._fold
        batches = self._aevent_batches()
        while True:
            events: list[Any] | None
            try:
                events = await batches.__anext__()
            except StopAsyncIteration:
                events = None
            except Exception as err:
                raise self._fail(err) from err
            try:
                texts = fold(events) if events is not None else self._end_texts()
            except Exception as err:  # an event the family cannot parse fails the stream too
                raise self._fail(err) from err
            if texts:
                if on_token or each is not None:
                    for text in texts:
                        if on_token:
                            await callbacks.acall("on_token", text)
                        if each is not None:
                            await each(text)
                yield texts
            if events is None:
                break
        self.finished = True
        await callbacks.acall("on_completion", self.text)
        await callbacks.acall("on_final", self.text)

    def _aevent_batches(self) -> AsyncIterator[list[Any]]:
        source = self.source
        if hasattr(source, "__aiter__"):
            return _async_event_batches(source)
        return _threaded_event_batches(source)

    # -- cancellation ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the upstream connection now, so Bedrock stops generating (and billing).

        Shuts the socket down first: a thread blocked reading it wakes up at once (a plain close
        from another thread does not interrupt a blocked ``recv`` on Linux).
        """
        close_upstream(self.source)


# -- reading event streams in batches ---------------------------------------------------------------
# botocore's EventStream decodes one event per ``next()`` and runs the generic response parser on each
# (shape lookups, and under aiobotocore an ``await`` per event). For the hot case, an invoke ``chunk``
# event, the parsed result is just ``{"chunk": {"bytes": base64decode(payload["bytes"])}}``; we build it
# directly, after botocore's own EventStreamBuffer has framed the message and checked both CRCs. Every
# other message (exceptions, Converse events, anything unexpected) goes through the stream's own
# ``_parse_event``, so errors raise exactly the ``EventStreamError`` boto3 would. All messages decoded
# from one network read form one batch.

_SLICE = 8192  # EventStreamBuffer copies its remaining buffer per message: feed it in bounded slices


def _is_botocore_stream(source: Any) -> bool:
    return (
        isinstance(source, EventStream)
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


def _sync_event_batches(source: Any) -> Iterator[list[Any]]:
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


async def _async_event_batches(source: Any) -> AsyncIterator[list[Any]]:
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


async def _threaded_event_batches(source: Any) -> AsyncIterator[list[Any]]:
    """A sync source read on the dedicated pool: one hop per network read, not one per event."""
    loop = asyncio.get_running_loop()
    executor = get_executor()
    batches = _sync_event_batches(source)
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


def _is_async_only(source: Any) -> bool:
    # aiobotocore's AioEventStream inherits __iter__ from botocore but raises NotImplementedError.
    return hasattr(source, "__aiter__") and type(source).__name__.startswith("Aio")


def _source(response: Mapping[str, Any] | Any, key: str) -> Any:
    if isinstance(response, Mapping):
        return response[key]
    return response


def stream_for(
    family: BedrockFamily, response: Mapping[str, Any] | Any, callbacks: StreamCallbacks | None = None
) -> BedrockStream:
    """A stream over ``response`` (a boto3 response dict or the event stream itself) for a family."""
    return BedrockStream(_source(response, family.stream_key), family.parse_event, callbacks)


def anthropic_stream(response: Any, callbacks: StreamCallbacks | None = None) -> BedrockStream:
    """Claude text completions (``invoke_model_with_response_stream``)."""
    return stream_for(AnthropicFamily(), response, callbacks)


def anthropic_messages_stream(response: Any, callbacks: StreamCallbacks | None = None) -> BedrockStream:
    """Claude Messages API (``invoke_model_with_response_stream``)."""
    return stream_for(AnthropicMessagesFamily(), response, callbacks)


def cohere_stream(response: Any, callbacks: StreamCallbacks | None = None) -> BedrockStream:
    return stream_for(CohereFamily(), response, callbacks)


def llama2_stream(response: Any, callbacks: StreamCallbacks | None = None) -> BedrockStream:
    return stream_for(Llama2Family(), response, callbacks)


def llama3_stream(response: Any, callbacks: StreamCallbacks | None = None) -> BedrockStream:
    return stream_for(Llama3Family(), response, callbacks)


def mistral_stream(response: Any, callbacks: StreamCallbacks | None = None) -> BedrockStream:
    return stream_for(MistralFamily(), response, callbacks)


def titan_stream(response: Any, callbacks: StreamCallbacks | None = None) -> BedrockStream:
    return stream_for(TitanFamily(), response, callbacks)


def converse_stream(response: Any, callbacks: StreamCallbacks | None = None) -> BedrockStream:
    """Any model through ``converse_stream`` (text deltas; tool-use and reasoning deltas skipped)."""
    return stream_for(ConverseFamily(), response, callbacks)


def bedrock_stream(
    response: Any,
    extract: Callable[[Mapping[str, Any]], str | Delta | None],
    callbacks: StreamCallbacks | None = None,
) -> BedrockStream:
    """A stream for any invoke model: ``extract`` maps the decoded chunk JSON to text (or a Delta).

    Token usage still comes from ``amazon-bedrock-invocationMetrics`` on the last chunk.
    """

    class _Extracted(BedrockFamily):
        name = "custom"
        default_model_id = ""

        def parse_chunk(self, data: Mapping[str, Any]) -> Delta:
            result = extract(data)
            return result if isinstance(result, Delta) else Delta(result or "")

    return stream_for(_Extracted(), response, callbacks)


__all__ = [
    "BedrockStream",
    "BedrockStreamInterrupted",
    "anthropic_messages_stream",
    "anthropic_stream",
    "bedrock_stream",
    "close_upstream",
    "cohere_stream",
    "converse_stream",
    "llama2_stream",
    "llama3_stream",
    "mistral_stream",
    "stream_for",
    "titan_stream",
]
