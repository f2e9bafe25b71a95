"""The one base class every model family extends.

A family knows two I/O-free things: how to build the request body from chat messages, and how to turn
one decoded event into a :class:`Delta`. Both the sync (boto3) and async (aiobotocore / thread)
paths share them, so each family is tested on plain dicts and on recorded bytes.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..modelids import base_model_id
from ..parts import GuardrailTrace, Part, ReasoningDelta, Source, ToolCall, ToolCallStart, ToolInputDelta, unstorable

if TYPE_CHECKING:
    from ..options import ConverseOptions

#: A chat message: ``role`` and ``content`` (str), maybe ``attachments`` and ``reasoning`` (see prompts.py).
Message = Mapping[str, Any]
METRICS_KEY = "amazon-bedrock-invocationMetrics"


@dataclass(slots=True)
class Delta:
    """What one event contributes: text, any other typed parts, and possibly a stop reason, token
    counts and metrics. Text stays a plain field (most events carry only text, and the stream's hot
    path reads it directly); everything else arrives as :mod:`~django_bedrock_stream.parts` values."""

    text: str = ""
    stop_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    #: ``amazon-bedrock-invocationMetrics`` from the last invoke chunk: fills counts the family lacks.
    metrics: Mapping[str, Any] | None = None
    #: The event's other parts, in order: reasoning, citations, files, tool calls, guardrail traces.
    parts: tuple[Part, ...] = ()
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    latency_ms: int | None = None
    service_tier: str | None = None
    #: The content block the text belongs to.
    index: int = 0


class BedrockFamily:
    """Base for a model family. Subclasses set ``name`` and ``default_model_id`` and override
    :meth:`build_body` and :meth:`parse_chunk`; the Converse family also overrides the
    "call the API" hooks (:attr:`operation`, :meth:`request_kwargs`, :meth:`parse_event`).
    """

    #: Short identifier used in URLs, settings and the ``Completion.family`` column.
    name: ClassVar[str]
    #: Model id used when the view sets none.
    default_model_id: ClassVar[str]
    #: boto3 client method; must not need overriding except for Converse.
    operation: ClassVar[str] = "invoke_model_with_response_stream"
    #: Key of the event stream in the boto3 response.
    stream_key: ClassVar[str] = "body"
    #: Base model ids (see :func:`base_model_id`) whose invoke format this family speaks; the
    #: emulator routes invoke requests by them.
    model_prefixes: ClassVar[tuple[str, ...]] = ()
    #: A key the request body must have, where one provider has two formats (Claude: "prompt" /
    #: "messages").
    body_key: ClassVar[str | None] = None

    @classmethod
    def serves(cls, model_id: str, body: Any) -> bool:
        """Whether an invoke request for ``model_id`` with ``body`` is in this family's format."""
        return base_model_id(model_id).startswith(cls.model_prefixes) and (
            cls.body_key is None or (isinstance(body, dict) and cls.body_key in body)
        )

    #: Whether :meth:`build_body` takes ``options=`` (families written before it existed do not).
    takes_options: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in ("name", "default_model_id"):
            if not hasattr(cls, attr) and not cls.__name__.startswith("_"):
                raise NotImplementedError(f"{cls.__name__} must define the class attribute {attr!r}")
        parameters = inspect.signature(cls.build_body).parameters
        cls.takes_options = "options" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())

    def body_for(
        self, messages: Sequence[Message], *, max_tokens: int, options: ConverseOptions | None = None
    ) -> dict[str, Any]:
        """Should not need overriding: :meth:`build_body`, passing ``options`` where it takes them."""
        if self.takes_options:
            return self.build_body(messages, max_tokens=max_tokens, options=options)
        return self.build_body(messages, max_tokens=max_tokens)

    # -- request side ------------------------------------------------------------------------
    def build_body(
        self, messages: Sequence[Message], *, max_tokens: int, options: ConverseOptions | None = None
    ) -> dict[str, Any]:
        """Must override: the family's native request body for these chat messages. ``options``: the
        server's model options (:class:`~django_bedrock_stream.options.ConverseOptions`), which the
        text-prompt families have no fields for."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_body()")

    def request_kwargs(self, model_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the boto3 call; should not need overriding for invoke families."""
        return {
            "modelId": model_id,
            "body": json.dumps(body, ensure_ascii=False).encode("utf-8"),
            "contentType": "application/json",
            "accept": "application/json",
        }

    # -- the call ------------------------------------------------------------------------------
    def open(self, model_id: str, body: Mapping[str, Any]) -> Any:
        """Should not need overriding: call Bedrock with boto3 (blocking); return its event stream."""
        from .. import client as clients  # the families themselves need no Django (the emulator uses them)

        response = getattr(clients.get_client(), self.operation)(**self.request_kwargs(model_id, body))
        return response[self.stream_key]

    async def aopen(self, model_id: str, body: Mapping[str, Any]) -> Any:
        """Should not need overriding: :meth:`open` without blocking the event loop (aiobotocore, or
        boto3 on the dedicated pool, never Django's shared thread)."""
        from .. import client as clients

        if clients.async_transport() == "aiobotocore":
            client = await clients.get_async_client()
            response = await getattr(client, self.operation)(**self.request_kwargs(model_id, body))
            return response[self.stream_key]
        future = clients.get_executor().submit(self.open, model_id, body)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # A pool thread waiting for Bedrock's first byte cannot be interrupted: close the event
            # stream it gets as soon as it gets it, so Bedrock stops generating.
            future.add_done_callback(_close_abandoned_stream)
            raise

    def assistant_blocks(self, text: str, reasoning: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
        """A model turn (its reasoning blocks and text) as this family's assistant content blocks, to
        send back with its tool calls. Only the families that can call tools implement it."""
        raise NotImplementedError(f"{type(self).__name__} cannot call tools")

    # -- response side -----------------------------------------------------------------------
    def parse_chunk(self, data: Mapping[str, Any]) -> Delta:
        """Must override: one decoded model JSON chunk -> Delta (ignore unknown keys)."""
        raise NotImplementedError(f"{type(self).__name__} must implement parse_chunk()")

    def parse_event(self, event: Mapping[str, Any]) -> Delta | None:
        """One boto3 event dict -> Delta. Decodes ``chunk.bytes``, reads invocation metrics."""
        chunk = event.get("chunk")
        if chunk is None:
            return None
        data = json.loads(chunk["bytes"])
        delta = self.parse_chunk(data)
        metrics = data.get(METRICS_KEY)
        if metrics is not None:
            delta.metrics = metrics
            if GUARDRAIL_ACTION_KEY in data:  # invoke guardrails: the verdict on every chunk, the trace on the last
                trace = guardrail_trace(data[GUARDRAIL_ACTION_KEY], (data.get(TRACE_KEY) or {}).get("guardrail"))
                delta.parts = (*delta.parts, trace)
        return delta


GUARDRAIL_ACTION_KEY = "amazon-bedrock-guardrailAction"
TRACE_KEY = "amazon-bedrock-trace"


def guardrail_trace(action: str, trace: Mapping[str, Any] | None) -> GuardrailTrace:
    """The guardrail's verdict. Bedrock's trace repeats exactly what a guardrail masked or blocked:
    the model's unfiltered output (``modelOutput``) and, in its assessments, each ``match`` (the PII
    entity, regex or word found); both are dropped here, at any depth."""
    return GuardrailTrace(action=str(action), trace=_masked(trace or {}))


_UNMASKED_KEYS = frozenset({"modelOutput", "match"})


def _masked(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _masked(item) for key, item in value.items() if key not in _UNMASKED_KEYS}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return value


class ContentBlocks:
    """The open content blocks of one stream: a tool call's input arriving in pieces, a reasoning
    signature (kept only once its block is complete), numbered citations. Families whose events
    come per content block (Converse, Nova, Anthropic Messages) share it; one per stream."""

    def __init__(self) -> None:
        self._tools: dict[int, tuple[str, str, list[str]]] = {}
        self._provider_executed: set[int] = set()  # the open tool blocks Bedrock runs itself
        self._signatures: dict[int, list[str]] = {}
        self._sources = 0

    def start_tool(self, index: int, tool_id: str, name: str, *, provider_executed: bool = False) -> ToolCallStart:
        self._tools[index] = (tool_id, name, [])
        if provider_executed:
            self._provider_executed.add(index)
        return ToolCallStart(tool_id, name, index, provider_executed=provider_executed)

    def tool_input(self, index: int, piece: str) -> ToolInputDelta | None:
        tool = self._tools.get(index)
        if tool is None or not piece:
            return None
        tool[2].append(piece)
        return ToolInputDelta(tool[0], piece, index)

    def signature(self, index: int, piece: str) -> None:
        self._signatures.setdefault(index, []).append(piece)

    def source(self, **fields: Any) -> Source:
        self._sources += 1
        return Source(id=f"source-{self._sources}", **fields)

    def stop(self, index: int) -> tuple[Part, ...]:
        """The parts a block yields once complete: its signature, its parsed tool call."""
        parts: list[Part] = []
        signature = self._signatures.pop(index, None)
        if signature:
            parts.append(ReasoningDelta(signature="".join(signature), index=index))
        tool = self._tools.pop(index, None)
        if tool is not None:
            tool_id, name, pieces = tool
            provider_executed = index in self._provider_executed
            self._provider_executed.discard(index)
            raw = "".join(pieces)
            if not raw.isascii():  # a piece may end between the two UTF-16 halves of a character
                raw = raw.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
            try:
                call_input = json.loads(raw) if raw.strip() else {}
                problem = unstorable(call_input)
                if problem:
                    raise ValueError(f"it has {problem}")
                parts.append(ToolCall(tool_id, name, call_input, index=index, provider_executed=provider_executed))
            except (ValueError, RecursionError) as err:  # not JSON, or none a browser takes: the model hears of it
                error = f"The tool input is not valid JSON: {err}"
                raw = raw.replace("\x00", "\ufffd")  # kept as text: storable
                parts.append(
                    ToolCall(tool_id, name, raw, error=error, index=index, provider_executed=provider_executed)
                )
        return tuple(parts)


def _int(value: Any) -> int | None:
    """Token counts arrive as ints, floats (Titan: ``28.0``) or null."""
    return None if value is None else int(value)


def _close_abandoned_stream(future: Any) -> None:
    from ..batches import close_upstream

    if not future.cancelled() and future.exception() is None:
        close_upstream(future.result())


def complete_reasoning(blocks: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The reasoning blocks a model accepts back: signed ones (text and signature) and redacted ones;
    a block cut off before its signature cannot be sent back, and is dropped."""
    out: list[dict[str, str]] = []
    for block in blocks:
        if block.get("redacted"):
            out.append({"redacted": block["redacted"]})
        elif block.get("signature"):
            out.append({"text": block.get("text", ""), "signature": block["signature"]})
    return out
