"""``BedrockStream``: one stream object that yields text deltas with ``for`` and ``async for``.

The stream functions mirror the Vercel AI SDK's ``AWSBedrock*Stream`` helpers: give them what boto3
(or aiobotocore) returned and iterate. Parsing is delegated to a family (I/O-free), so the sync and
async paths share it.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import parts as p
from .batches import async_event_batches, close_upstream, sync_event_batches, threaded_event_batches
from .callbacks import StreamCallbacks
from .exceptions import BedrockStreamError, BedrockStreamInterrupted, wrap_botocore_error
from .families import (
    FAMILIES,
    AnthropicFamily,
    AnthropicMessagesFamily,
    BedrockFamily,
    CohereFamily,
    ConverseFamily,
    Delta,
    Llama2Family,
    Llama3Family,
    MistralFamily,
    NovaFamily,
    TitanFamily,
)

Parser = Callable[[Mapping[str, Any]], "Delta | None"]

_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class Step:
    """What a stream's continuation decided after a model turn: ``parts`` to send (tool results,
    calls handed to the browser, approval requests) and the ``source`` of the next turn, or ``None``
    to end the stream there."""

    parts: list[p.Part] = field(default_factory=list)
    source: Any = None


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
        #: Citations, files the model produced, complete tool calls, in stream order.
        self.sources: list[p.Source] = []
        self.files: list[p.File] = []
        self.tool_calls: list[p.ToolCall] = []
        #: The guardrail's verdict, when a guardrail with tracing ran.
        self.guardrail: p.GuardrailTrace | None = None
        #: Bedrock's reported latency (Converse ``metrics.latencyMs`` / ``invocationLatency``).
        self.latency_ms: int | None = None
        #: The service tier that served the request, when Bedrock says.
        self.service_tier: str | None = None
        self._parts: list[str] = []
        self._reasoning: dict[tuple[int, int], dict[str, str]] = {}  # by (step, content block)
        #: Model turns so far, minus one: a run with tools continues the stream with another turn.
        self.step = 0
        #: Called after each model turn (see :class:`Step`); ``None`` ends the stream after one.
        self.continuation: Callable[[BedrockStream], Step | None] | None = None
        self.acontinuation: Callable[[BedrockStream], Awaitable[Step | None]] | None = None
        #: Parts to send before the first event's (the outcome of tool calls the user answered).
        self.opening: list[p.Part] = []
        #: Applied to each complete tool call as it arrives (the view signs the calls it hands out).
        self.prepare_call: Callable[[p.ToolCall], p.ToolCall] | None = None
        self._banked = p.Usage()  # the usage of the turns before this one
        self._step_text = 0  # where this turn's text starts in the parts
        self._step_calls = 0  # where this turn's tool calls start
        self._high = ""  # a high surrogate held back until the next text brings its low half
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        self._cache_read_tokens: int | None = None
        self._cache_write_tokens: int | None = None
        self._metrics: Mapping[str, Any] = {}

    # -- results --------------------------------------------------------------------------------
    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @property
    def usage(self) -> dict[str, int]:
        """``input_tokens``, ``output_tokens``, ``cache_read_tokens``, ``cache_write_tokens``: the
        family's own counts (what the model reports) first; invocation metrics fill the gaps."""
        return self.usage_detail.as_dict()

    @property
    def usage_detail(self) -> p.Usage:
        metrics = self._metrics

        def count(own: int | None, key: str) -> int:
            return int((own if own is not None else metrics.get(key)) or 0)

        banked = self._banked
        return p.Usage(
            input_tokens=banked.input_tokens + count(self._input_tokens, "inputTokenCount"),
            output_tokens=banked.output_tokens + count(self._output_tokens, "outputTokenCount"),
            cache_read_tokens=banked.cache_read_tokens + count(self._cache_read_tokens, "cacheReadInputTokenCount"),
            cache_write_tokens=banked.cache_write_tokens
            + count(self._cache_write_tokens, "cacheWriteInputTokenCount"),
        )

    # -- steps (a run with tools) ---------------------------------------------------------------
    @property
    def step_text(self) -> str:
        """This model turn's text."""
        return "".join(self._parts[self._step_text :])

    @property
    def step_tool_calls(self) -> list[p.ToolCall]:
        """This model turn's complete tool calls, in order."""
        return self.tool_calls[self._step_calls :]

    @property
    def step_reasoning_blocks(self) -> list[dict[str, str]]:
        """This model turn's reasoning blocks (to send back with its tool calls)."""
        return [dict(block) for (step, _), block in self._reasoning.items() if step == self.step]

    def _next_step(self, source: Any) -> p.StepFinish:
        """Continue with the next model turn: text, parts and usage keep adding up; the stop reason,
        the metrics and the turn's own counts start afresh. Returns the finished turn's part."""
        finished = p.StepFinish(self.stop_reason, self.usage_detail)
        self._banked = finished.usage
        self._input_tokens = self._output_tokens = self._cache_read_tokens = self._cache_write_tokens = None
        self._metrics = {}
        self.stop_reason = None
        self.text  # noqa: B018 - joins the parts, so this turn's text starts at index 1
        self._step_text, self._step_calls = len(self._parts), len(self.tool_calls)
        self.step += 1
        self.source = source
        return finished

    @property
    def reasoning(self) -> str:
        """The model's reasoning text, all blocks joined."""
        return "".join(block["text"] for block in self._reasoning.values())

    @property
    def reasoning_blocks(self) -> list[dict[str, str]]:
        """Each reasoning block: ``text``, and its ``signature`` or ``redacted`` data when complete.
        Send them back unchanged on the next turn: models with extended thinking require it."""
        return [dict(block) for block in self._reasoning.values()]

    def finish_part(self) -> p.Finish:
        """The :class:`~django_bedrock_stream.parts.Finish` part for what was read so far."""
        return p.Finish(self.stop_reason, self.usage_detail, self.latency_ms, self.service_tier)

    def summary(self) -> dict[str, Any]:
        """Everything but the text, JSON-safe: what the ``Completion`` row stores in ``parts``."""
        return {
            "reasoning": self.reasoning_blocks,
            "sources": [_as_dict(source) for source in self.sources],
            "files": [{"media_type": file.media_type, "bytes": len(file.data) * 3 // 4} for file in self.files],
            "tool_calls": [_as_dict(call) for call in self.tool_calls],
            "guardrail": _as_dict(self.guardrail) if self.guardrail is not None else None,
        }

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
            if self.latency_ms is None and delta.metrics.get("invocationLatency") is not None:
                self.latency_ms = int(delta.metrics["invocationLatency"])
        if delta.parts:
            for part in delta.parts:
                self._record(part)
        if delta.cache_read_tokens is not None:
            self._cache_read_tokens = delta.cache_read_tokens
        if delta.cache_write_tokens is not None:
            self._cache_write_tokens = delta.cache_write_tokens
        if delta.latency_ms is not None:
            self.latency_ms = delta.latency_ms
        if delta.service_tier is not None:
            self.service_tier = delta.service_tier
        text = delta.text
        if text and (self._high or not text.isascii()):  # isascii() is O(1): ASCII text costs nothing
            text = self._join_surrogates(text)
        if text:
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
            self._parts.append(text)
        return text

    def _record(self, part: p.Part) -> None:
        kind = type(part)
        if kind is p.ReasoningDelta:
            assert isinstance(part, p.ReasoningDelta)
            block = self._reasoning.setdefault((self.step, part.index), {"text": "", "signature": "", "redacted": ""})
            block["text"] += part.text
            block["signature"] += part.signature
            block["redacted"] += part.redacted
            if part.text and self.first_token_at is None:
                self.first_token_at = time.monotonic()
        elif kind is p.Source:
            self.sources.append(part)  # type: ignore[arg-type]
        elif kind is p.File:
            self.files.append(part)  # type: ignore[arg-type]
        elif kind is p.ToolCall:
            self.tool_calls.append(part)  # type: ignore[arg-type]
        elif kind is p.GuardrailTrace:
            self.guardrail = part  # type: ignore[assignment]

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

    def _end_parts(self) -> list[p.Part]:
        """At the end of the stream, a high surrogate still held back never got its pair: U+FFFD."""
        if not self._high:
            return []
        self._high = ""
        return [p.TextDelta(self.apply(Delta("\ufffd")))]

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
        for parts in self.iter_part_batches(each):
            texts = [part.text for part in parts if type(part) is p.TextDelta]
            if texts:
                yield texts

    def parts(self) -> Iterator[p.Part]:
        """Every part, in order: text, reasoning, citations, files, tool calls…, then a
        :class:`~django_bedrock_stream.parts.Finish` part."""
        for batch in self.iter_part_batches():
            yield from batch
        yield self.finish_part()

    def iter_part_batches(self, each: Callable[[str], Any] | None = None) -> Iterator[list[p.Part]]:
        """The parts that arrived in one network read (see :meth:`iter_batches`); no Finish part."""
        if not hasattr(self.source, "__iter__") or _is_async_only(self.source):
            raise TypeError("This stream reads an async source: iterate it with `async for`.")
        callbacks = self.callbacks
        callbacks.call("on_start")
        if self.opening:
            yield self.opening
        on_token = callbacks.on_token is not None
        fold = self._fold
        batches = sync_event_batches(self.source)
        while True:
            try:
                events = next(batches, None)
                # An event the family cannot parse (bad JSON, a missing key) fails the stream too.
                parts = fold(events) if events is not None else self._end_parts()
                if events is None and self.continuation is not None:
                    step = self.continuation(self)  # runs the turn's tools, opens the next turn
                    if step is not None:
                        parts.extend(step.parts)  # the turn's tool results belong to the turn
                        if step.source is not None:
                            parts.append(self._next_step(step.source))
                            batches = sync_event_batches(self.source)
                            events = []
            except Exception as err:
                raise self._fail(err) from err
            if parts:
                if on_token or each is not None:
                    for part in parts:
                        if type(part) is p.TextDelta:
                            if on_token:
                                callbacks.call("on_token", part.text)
                            if each is not None:
                                each(part.text)
                yield parts
            if events is None:
                break
        self.finished = True
        callbacks.call("on_completion", self.text)
        callbacks.call("on_final", self.text)

    def _fold(self, events: list[Any]) -> list[p.Part]:
        """Parse and apply a batch of events; return their parts (non-empty text as TextDelta)."""
        parse, apply = self.parse, self.apply
        out: list[p.Part] = []
        for event in events:
            delta = parse(event)
            if delta is not None:
                if delta.parts and self.prepare_call is not None:
                    prepare = self.prepare_call
                    delta.parts = tuple(prepare(q) if type(q) is p.ToolCall else q for q in delta.parts)
                text = apply(delta)
                if delta.parts:
                    out.extend(delta.parts)
                if text:
                    out.append(p.TextDelta(text, delta.index))
        return out

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
        async for parts in self.aiter_part_batches(each):
            texts = [part.text for part in parts if type(part) is p.TextDelta]
            if texts:
                yield texts

    async def aparts(self) -> AsyncIterator[p.Part]:
        """``async for`` flavour of :meth:`parts`."""
        async for batch in self.aiter_part_batches():
            for part in batch:
                yield part
        yield self.finish_part()

    async def aiter_part_batches(
        self, each: Callable[[str], Awaitable[Any]] | None = None
    ) -> AsyncIterator[list[p.Part]]:
        """``async for`` flavour of :meth:`iter_part_batches` (``each`` is awaited)."""
        callbacks = self.callbacks
        await callbacks.acall("on_start")
        if self.opening:
            yield self.opening
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
                parts = fold(events) if events is not None else self._end_parts()
                if events is None and self.acontinuation is not None:
                    step = await self.acontinuation(self)  # runs the turn's tools, opens the next turn
                    if step is not None:
                        parts.extend(step.parts)  # the turn's tool results belong to the turn
                        if step.source is not None:
                            parts.append(self._next_step(step.source))
                            batches = self._aevent_batches()
                            events = []
            except Exception as err:  # an event the family cannot parse fails the stream too
                raise self._fail(err) from err
            if parts:
                if on_token or each is not None:
                    for part in parts:
                        if type(part) is p.TextDelta:
                            if on_token:
                                await callbacks.acall("on_token", part.text)
                            if each is not None:
                                await each(part.text)
                yield parts
            if events is None:
                break
        self.finished = True
        await callbacks.acall("on_completion", self.text)
        await callbacks.acall("on_final", self.text)

    def _aevent_batches(self) -> AsyncIterator[list[Any]]:
        source = self.source
        if hasattr(source, "__aiter__"):
            return async_event_batches(source)
        return threaded_event_batches(source)

    # -- cancellation ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the upstream connection now, so Bedrock stops generating (and billing).

        Shuts the socket down first: a thread blocked reading it wakes up at once (a plain close
        from another thread does not interrupt a blocked ``recv`` on Linux).
        """
        close_upstream(self.source)


def _as_dict(part: Any) -> dict[str, Any]:
    return {name: getattr(part, name) for name in part.__dataclass_fields__ if name != "index"}


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


def family_stream(name: str, response: Any, callbacks: StreamCallbacks | None = None) -> BedrockStream:
    """A stream for any registered family by name (``"llama3"``, ``"nova"``…): what the named
    functions below do, for families added later too."""
    return stream_for(FAMILIES[name](), response, callbacks)


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


def nova_stream(response: Any, callbacks: StreamCallbacks | None = None) -> BedrockStream:
    """Amazon Nova's native format (``invoke_model_with_response_stream``)."""
    return stream_for(NovaFamily(), response, callbacks)


def converse_stream(response: Any, callbacks: StreamCallbacks | None = None) -> BedrockStream:
    """Any model through ``converse_stream``: text under ``for``; reasoning, citations, tool calls and
    the guardrail's verdict as parts (:meth:`BedrockStream.parts`)."""
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
    "family_stream",
    "llama2_stream",
    "llama3_stream",
    "mistral_stream",
    "nova_stream",
    "stream_for",
    "titan_stream",
]
