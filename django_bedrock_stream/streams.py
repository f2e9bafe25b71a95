"""``BedrockStream``: one stream object that yields text deltas with ``for`` and ``async for``.

The stream functions mirror the Vercel AI SDK's ``AWSBedrock*Stream`` helpers: give them what boto3
(or aiobotocore) returned and iterate. Parsing is delegated to a family (I/O-free), so the sync and
async paths share it.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

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
_DONE = object()


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
        if delta.text:
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
            self._parts.append(delta.text)
        return delta.text

    def _fail(self, err: BaseException) -> BedrockStreamError:
        self.error = (
            err
            if isinstance(err, BedrockStreamError)
            else wrap_botocore_error(err, model_id=self.model_id, started=True)
        )
        return self.error

    # -- sync -----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[str]:
        if not hasattr(self.source, "__iter__") or _is_async_only(self.source):
            raise TypeError("This stream reads an async source: iterate it with `async for`.")
        return self._iter()

    def _iter(self) -> Iterator[str]:
        callbacks = self.callbacks
        callbacks.call("on_start")
        events = iter(self.source)
        parse = self.parse
        while True:
            try:
                event = next(events, _DONE)
            except Exception as err:
                raise self._fail(err) from err
            if event is _DONE:
                break
            delta = parse(event)
            if delta is None:
                continue
            text = self.apply(delta)
            if text:
                if callbacks.on_token is not None:
                    callbacks.call("on_token", text)
                yield text
        self.finished = True
        callbacks.call("on_completion", self.text)
        callbacks.call("on_final", self.text)

    # -- async ----------------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[str]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[str]:
        callbacks = self.callbacks
        await callbacks.acall("on_start")
        parse = self.parse
        events = self._aevents()
        while True:
            try:
                event = await events.__anext__()
            except StopAsyncIteration:
                break
            except Exception as err:
                raise self._fail(err) from err
            delta = parse(event)
            if delta is None:
                continue
            text = self.apply(delta)
            if text:
                if callbacks.on_token is not None:
                    await callbacks.acall("on_token", text)
                yield text
        self.finished = True
        await callbacks.acall("on_completion", self.text)
        await callbacks.acall("on_final", self.text)

    async def _aevents(self) -> AsyncIterator[Any]:
        if hasattr(self.source, "__aiter__"):
            async for event in self.source:
                yield event
            return
        loop = asyncio.get_running_loop()
        executor = get_executor()
        events = iter(self.source)
        while True:
            event = await loop.run_in_executor(executor, next, events, _DONE)
            if event is _DONE:
                return
            yield event

    # -- cancellation ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the upstream connection now, so Bedrock stops generating (and billing).

        Shuts the socket down first: a thread blocked reading it wakes up at once (a plain close
        from another thread does not interrupt a blocked ``recv`` on Linux).
        """
        close_upstream(self.source)


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
    extract: Callable[[Mapping[str, Any]], "str | Delta | None"],
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
