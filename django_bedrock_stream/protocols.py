"""Wire encoders: turn one stream's life (start, deltas, finish or error) into text for a browser client.

Each encoder is a small per-response object with no I/O: the response layer calls ``start()``, ``delta()``
for every text delta and ``part()`` for every other typed part (:mod:`~django_bedrock_stream.parts`:
reasoning, citations, files…), then exactly one of ``finish()`` or ``error()``, and ``ping()`` whenever it
wants to keep an idle connection open, writing each returned ``str`` (UTF-8) to the client. An empty string means
"nothing to send". Keeping the wire formats here, apart from Bedrock and Django, lets them be tested byte by
byte and against the AI SDK's own parsers (``tests/js``).

Formats (each one's wire format is in the README, "Output protocols"):

- ``"text"``: the bare text (AI SDK ``TextStreamChatTransport`` / ``streamProtocol: 'text'``).
- ``"data"``: AI SDK data stream v1 (AI SDK 3.x-4.x, ``processDataStream`` in ``@ai-sdk/ui-utils``).
- ``"ui"``: AI SDK UI message stream (AI SDK 5+, ``useChat``'s ``DefaultChatTransport``).
- ``"sse"``: plain server-sent events for a browser ``EventSource``.
"""

from __future__ import annotations

import json
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from . import parts as p

__all__ = [
    "FINISH_REASONS",
    "PROTOCOLS",
    "UNKNOWN_FINISH_REASON",
    "DataStreamProtocol",
    "ServerSentEvent",
    "ServerSentEventsProtocol",
    "StreamProtocol",
    "TextProtocol",
    "UIMessageStreamProtocol",
    "get_protocol",
    "map_finish_reason",
    "negotiate_protocol",
    "ui_message_metadata",
    "ui_source_chunk",
]

# --------------------------------------------------------------------------------------------------------------
# Finish reasons
# --------------------------------------------------------------------------------------------------------------

#: Raw Bedrock stop reasons (every family, case-sensitive as Bedrock sends them) -> AI SDK finish reasons.
#: The AI SDK's own Bedrock provider maps the Converse values the same way; the rest extend it to the
#: InvokeModel families (Llama/Mistral ``stop``/``length``, Cohere ``COMPLETE``/``MAX_TOKENS``/``ERROR*``,
#: Titan ``FINISH``/``LENGTH``/``STOP_CRITERIA_MET``/``CONTENT_FILTERED``).
FINISH_REASONS: Mapping[str, str] = {
    # -> "stop"
    "end_turn": "stop",
    "stop_sequence": "stop",
    "stop": "stop",
    "COMPLETE": "stop",
    "FINISH": "stop",
    "STOP_CRITERIA_MET": "stop",
    # -> "length"
    "max_tokens": "length",
    "length": "length",
    "model_context_window_exceeded": "length",
    "MAX_TOKENS": "length",
    "LENGTH": "length",
    "ERROR_LIMIT": "length",
    # -> "content-filter"
    "content_filtered": "content-filter",
    "guardrail_intervened": "content-filter",
    "CONTENT_FILTERED": "content-filter",
    "ERROR_TOXIC": "content-filter",
    # -> "tool-calls"
    "tool_use": "tool-calls",
    # -> "error" ("error" is what we record for an in-stream exception)
    "error": "error",
    "ERROR": "error",
}

#: What a missing or unrecognised stop reason becomes. Not "unknown": AI SDK 6+ dropped "unknown" from the
#: UI message stream's ``finish`` chunk schema (``ai`` 7 rejects it), while "other" is valid in every version.
UNKNOWN_FINISH_REASON = "other"


def map_finish_reason(stop_reason: str | None) -> str:
    """Map a raw Bedrock stop reason to the AI SDK vocabulary; None or anything unrecognised -> ``"other"``.

    We store Bedrock's raw value and map only on the way out, so the table can grow without a migration.
    """
    if stop_reason is None:
        return UNKNOWN_FINISH_REASON
    return FINISH_REASONS.get(stop_reason, UNKNOWN_FINISH_REASON)


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def _json(value: Any) -> str:
    """Compact JSON, non-ASCII kept as is (smaller on the wire), always encodable as UTF-8.

    A lone surrogate (half an emoji split across two model chunks) cannot be encoded as UTF-8, so it is
    written as a ``\\uXXXX`` escape instead: JavaScript strings are UTF-16, so the client's concatenation
    of two deltas joins the halves back into the character.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if _SURROGATE.search(text):
        text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def _usage_counts(usage: Mapping[str, int]) -> tuple[int, int]:
    """(input_tokens, output_tokens) as ints; a missing count is 0 and float counts (Titan) are truncated."""
    return int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)


def _cache_counts(usage: Mapping[str, int]) -> tuple[int, int]:
    """(cache_read_tokens, cache_write_tokens) as ints, 0 when absent."""
    return int(usage.get("cache_read_tokens") or 0), int(usage.get("cache_write_tokens") or 0)


_CAMEL = {"cited_text": "citedText", "document_index": "documentIndex"}


def _source_fields(source: p.Source) -> dict[str, Any]:
    """A citation's details for the protocols that carry them as JSON (snake_case, no empty values)."""
    fields = {
        "id": source.id,
        "title": source.title,
        "url": source.url,
        "cited_text": source.cited_text,
        "document_index": source.document_index,
        "location": dict(source.location),
    }
    return {key: value for key, value in fields.items() if value not in ("", None, {})}


def _provider_executed(fields: dict[str, Any], executed: bool, key: str = "providerExecuted") -> dict[str, Any]:
    """``fields`` marked as a tool Bedrock ran itself, when it is one (the mark is left out otherwise)."""
    return {**fields, key: True} if executed else fields


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _check_field(name: str, value: str) -> None:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"SSE {name} must not contain CR, LF or NUL: {value!r}")


@dataclass(frozen=True)
class ServerSentEvent:
    """One server-sent event (WHATWG HTML, "Server-sent events"), encoded by ``encode()``.

    Multi-line ``data`` becomes several ``data:`` lines (the client joins them with ``\\n``); multi-line
    ``comment`` becomes several ``:`` lines. ``event`` and ``id`` cannot hold a line break (it would end the
    field early and let the payload forge fields), so they raise ``ValueError``.
    """

    data: str | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None

    def __post_init__(self) -> None:
        if self.event is not None:
            _check_field("event", self.event)
        if self.id is not None:
            _check_field("id", self.id)
        if self.retry is not None and (isinstance(self.retry, bool) or self.retry < 0):
            raise ValueError(f"SSE retry must be a non-negative int: {self.retry!r}")
        if all(
            v is None
            for v in (self.data, self.event, self.id, self.retry, self.comment)
        ):
            raise ValueError("an SSE event needs at least one field")

    def encode(self) -> str:
        """The event as wire text, ending with the blank line that dispatches it."""
        lines: list[str] = []
        if self.comment is not None:
            lines.extend(
                f": {line}" if line else ":" for line in _LINE_BREAK.split(self.comment)
            )
        if self.event is not None:
            lines.append(f"event: {self.event}")
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.retry is not None:
            lines.append(f"retry: {self.retry}")
        if self.data is not None:
            lines.extend(f"data: {line}" for line in _LINE_BREAK.split(self.data))
        return "\n".join(lines) + "\n\n"


_PING = ServerSentEvent(comment="ping").encode()
_SSE_MARK = "provider_executed"  # the sse protocol's providerExecuted


# --------------------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------------------


class StreamProtocol(ABC):
    """Base encoder: one instance per response, holding that response's state.

    The public methods keep the life cycle well formed whatever order the caller uses: ``start()`` is
    emitted once (``delta()``/``finish()`` emit it first if the caller skipped it), empty deltas produce
    nothing, and after ``finish()`` or ``error()`` every method returns ``""``, so a late error cannot
    corrupt a completed stream. Subclasses implement the ``_encode_*`` hooks.
    """

    name: ClassVar[str]
    content_type: ClassVar[str]

    def __init__(self, message_id: str | None = None) -> None:
        self.message_id: str = (
            message_id if message_id is not None else "msg_" + uuid.uuid4().hex
        )
        self._started = False
        self._closed = False
        #: What ``finish()`` was given besides the usage (model id, latency…), None values dropped.
        self.metadata: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(message_id={self.message_id!r})"

    @property
    def closed(self) -> bool:
        """True once ``finish()`` or ``error()`` has been emitted."""
        return self._closed

    def headers(self) -> dict[str, str]:
        """Extra response headers marking the protocol (a fresh dict; Content-Type is ``content_type``)."""
        return {}

    def start(self) -> str:
        """Text to send before the first delta (``""`` if the protocol has none or it was already sent)."""
        if self._started or self._closed:
            return ""
        self._started = True
        return self._encode_start()

    def delta(self, text: str) -> str:
        """One text delta (possibly several model chunks joined)."""
        if self._closed or not text:
            return ""
        return self.start() + self._encode_delta(text)

    def part(self, part: p.Part) -> str:
        """A typed part other than text; ``""`` where the protocol cannot carry it (``text``)."""
        if self._closed:
            return ""
        encoded = self._encode_part(part)
        return self.start() + encoded if encoded else ""

    def finish(
        self, stop_reason: str | None, usage: Mapping[str, int], metadata: Mapping[str, Any] | None = None
    ) -> str:
        """The end of a successful stream; ``stop_reason`` is Bedrock's raw value, ``usage`` holds
        ``input_tokens`` and ``output_tokens`` (and ``cache_read_tokens``/``cache_write_tokens``),
        ``metadata`` what else the client may show: ``model_id``, ``latency_ms``, ``service_tier``,
        ``guardrail`` (the guardrail's action)."""
        if self._closed:
            return ""
        prefix = self.start()
        self._closed = True
        self.metadata = {key: value for key, value in (metadata or {}).items() if value is not None}
        return prefix + self._encode_finish(stop_reason, usage)

    def error(self, message: str) -> str:
        """An in-band error; the stream ends after it."""
        if self._closed:
            return ""
        self._closed = True
        return self._encode_error(message)

    def abort(self) -> str:
        """The end of a stream stopped on purpose (the chat's stop endpoint); ``""`` where the
        protocol has no such thing. The stream ends after it."""
        if self._closed:
            return ""
        self._closed = True
        return self._encode_abort()

    def ping(self) -> str:
        """A keep-alive that clients ignore (``""`` where the protocol has no such thing)."""
        if self._closed:
            return ""
        return self._encode_ping()

    # Hooks ------------------------------------------------------------------------------------------------

    def _encode_start(self) -> str:
        return ""

    @abstractmethod
    def _encode_delta(self, text: str) -> str: ...

    def _encode_part(self, part: p.Part) -> str:
        return ""

    def _encode_finish(self, stop_reason: str | None, usage: Mapping[str, int]) -> str:
        return ""

    def _encode_error(self, message: str) -> str:
        return ""

    def _encode_abort(self) -> str:
        return ""

    def _encode_ping(self) -> str:
        return ""


class TextProtocol(StreamProtocol):
    """The bare text: no start, finish, error or ping framing (an error can only end the body early)."""

    name: ClassVar[str] = "text"
    content_type: ClassVar[str] = "text/plain; charset=utf-8"

    def _encode_delta(self, text: str) -> str:
        # A lone surrogate cannot be written as UTF-8 and plain text has no escape: replace it.
        return _SURROGATE.sub("\ufffd", text)


class DataStreamProtocol(StreamProtocol):
    """AI SDK data stream v1 (AI SDK 3.x-4.x ``useChat``): one ``TYPE:JSON`` part per line."""

    name: ClassVar[str] = "data"
    content_type: ClassVar[str] = "text/plain; charset=utf-8"

    def headers(self) -> dict[str, str]:
        return {"x-vercel-ai-data-stream": "v1"}

    def _encode_start(self) -> str:
        # start_step: processChatResponse in @ai-sdk/ui-utils 1.2.11 adopts messageId as the message's id.
        return f"f:{_json({'messageId': self.message_id})}\n"

    def _encode_delta(self, text: str) -> str:
        return f"0:{_json(text)}\n"

    def _encode_part(self, part: p.Part) -> str:
        if isinstance(part, p.ReasoningDelta):
            if part.text:
                return f"g:{_json(part.text)}\n"
            if part.signature:
                return f"j:{_json({'signature': part.signature})}\n"
            if part.redacted:
                return f"i:{_json({'data': part.redacted})}\n"
        elif isinstance(part, p.Source) and part.url:  # v1 sources are URLs only
            source = {"sourceType": "url", "id": part.id, "url": part.url}
            if part.title:
                source["title"] = part.title
            return f"h:{_json(source)}\n"
        elif isinstance(part, p.File):
            return f"k:{_json({'data': part.data, 'mimeType': part.media_type})}\n"
        elif isinstance(part, p.ToolCallStart):
            return f"b:{_json({'toolCallId': part.id, 'toolName': part.name})}\n"
        elif isinstance(part, p.ToolInputDelta):
            return f"c:{_json({'toolCallId': part.id, 'argsTextDelta': part.delta})}\n"
        elif isinstance(part, p.ToolCall) and not part.error:
            # The signature rides in the call itself: AI SDK 4 keeps every field of a ``9:`` part in the
            # message's tool invocation and posts it back with the conversation (serializers.from_ai_sdk_4).
            call = {'toolCallId': part.id, 'toolName': part.name, 'args': part.input}
            if part.signature:
                call["signature"] = part.signature
            if part.provider_executed:  # Bedrock ran it: history, never a call of ours to check or run
                call["providerExecuted"] = True
            return f"9:{_json(call)}\n"
        elif isinstance(part, p.ToolResult):  # v1 has no error channel for tools: the error is the result,
            if part.error:  # marked so that the conversation AI SDK 4 posts back replays it as an error
                return f"a:{_json({'toolCallId': part.id, 'result': {'error': part.error}, 'isError': True})}\n"
            return f"a:{_json({'toolCallId': part.id, 'result': part.output})}\n"
        elif isinstance(part, p.StepFinish):
            step = self._step(part.stop_reason, part.usage.as_dict(), continued=False)
            return f"e:{_json(step)}\nf:{_json({'messageId': self.message_id})}\n"
        return ""

    @staticmethod
    def _step(stop_reason: str | None, usage: Mapping[str, int], *, continued: bool) -> dict[str, Any]:
        input_tokens, output_tokens = _usage_counts(usage)
        counts = {"promptTokens": input_tokens, "completionTokens": output_tokens}
        return {"finishReason": map_finish_reason(stop_reason), "usage": counts, "isContinued": continued}

    def _encode_finish(self, stop_reason: str | None, usage: Mapping[str, int]) -> str:
        step = self._step(stop_reason, usage, continued=False)
        message = {"finishReason": step["finishReason"], "usage": step["usage"]}
        return f"e:{_json(step)}\nd:{_json(message)}\n"

    def _encode_error(self, message: str) -> str:
        return f"3:{_json(message)}\n"


def ui_message_metadata(
    stop_reason: str | None, usage: Mapping[str, int], metadata: Mapping[str, Any]
) -> dict[str, Any]:
    """The ui ``finish`` chunk's ``messageMetadata`` (what lands on the message's ``metadata``):
    ``finishReason``, ``usage`` and what ``metadata`` knows of ``model_id``, ``latency_ms``,
    ``service_tier`` and ``guardrail``."""
    input_tokens, output_tokens = _usage_counts(usage)
    cache_read, cache_write = _cache_counts(usage)
    result: dict[str, Any] = {
        "finishReason": map_finish_reason(stop_reason),
        "usage": {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "cacheReadTokens": cache_read,
            "cacheWriteTokens": cache_write,
        },
    }
    for key, name in (("model_id", "modelId"), ("latency_ms", "latencyMs"), ("service_tier", "serviceTier"),
                      ("guardrail", "guardrail")):
        if metadata.get(key) is not None:
            result[name] = metadata[key]
    return result


def ui_source_chunk(part: p.Source) -> dict[str, Any]:
    """A citation as the ui protocol's ``source-url`` / ``source-document`` chunk, which is also the
    part the AI SDK puts on the message (``chats.py`` stores it so)."""
    # camelCase, as the AI SDK's own provider metadata (signature, redactedData)
    details = {
        _CAMEL.get(key, key): value for key, value in _source_fields(part).items() if key not in ("id", "title", "url")
    }
    source: dict[str, Any]
    if part.url:
        source = {"type": "source-url", "sourceId": part.id, "url": part.url}
        if part.title:
            source["title"] = part.title
    else:
        title = part.title or f"Document {(part.document_index or 0) + 1}"
        source = {"type": "source-document", "sourceId": part.id, "mediaType": "text/plain", "title": title}
    if details:
        source["providerMetadata"] = {"bedrock": details}
    return source


class UIMessageStreamProtocol(StreamProtocol):
    """AI SDK UI message stream v1 (AI SDK 5+ ``useChat``/``DefaultChatTransport``): SSE of JSON chunks.

    One step (``start-step`` … ``finish-step``) per model turn. Text and reasoning are streamed as
    blocks (``text-start``/``-delta``/``-end``, ``reasoning-start``/``-delta``/``-end``), opened when
    their first piece arrives; a reasoning signature or redacted reasoning rides on a
    ``reasoning-delta``'s ``providerMetadata.bedrock`` (``signature`` / ``redactedData``), where the AI
    SDK keeps it on the message's reasoning part, to be sent back on the next turn. Citations are
    ``source-url`` (web) or ``source-document`` parts with ``providerMetadata.bedrock`` holding the cited
    text and location; model-made files are ``file`` parts with a data URL.

    The ``finish`` chunk carries ``messageMetadata``: ``finishReason``, ``usage`` (``inputTokens``,
    ``outputTokens``, ``cacheReadTokens``, ``cacheWriteTokens``) and, when known, ``modelId``,
    ``latencyMs``, ``serviceTier`` and ``guardrail`` (the guardrail's action). It lands on the assistant
    message's ``metadata``. A top-level ``finishReason`` (what ``useChat``'s ``onFinish`` reports) is read
    by ``ai`` >= 5.0.92, 6.x and 7.x, but ``ai`` 5.0.0-5.0.91 validate chunks strictly and fail the whole
    response on the unknown key, so it is opt-in: subclass with ``top_level_finish_reason = True`` when
    every client is new enough.
    """

    name: ClassVar[str] = "ui"
    content_type: ClassVar[str] = "text/event-stream"
    top_level_finish_reason: ClassVar[bool] = False

    def __init__(self, message_id: str | None = None) -> None:
        super().__init__(message_id)
        self._open: tuple[str, str] | None = None  # (kind, id) of the open text or reasoning block
        self._blocks = 0

    def headers(self) -> dict[str, str]:
        return {"x-vercel-ai-ui-message-stream": "v1"}

    @staticmethod
    def _chunk(chunk: Mapping[str, Any]) -> str:
        return f"data: {_json(chunk)}\n\n"

    def _block(self, kind: str) -> tuple[str, str]:
        """(chunks that close the open block and open a ``kind`` block, or "" if one is open; its id)."""
        if self._open is not None and self._open[0] == kind:
            return "", self._open[1]
        self._blocks += 1
        block_id = f"{self.message_id}-{kind}-{self._blocks}"
        opening = self._close_block() + self._chunk({"type": f"{kind}-start", "id": block_id})
        self._open = (kind, block_id)
        return opening, block_id

    def _close_block(self) -> str:
        if self._open is None:
            return ""
        kind, block_id = self._open
        self._open = None
        return self._chunk({"type": f"{kind}-end", "id": block_id})

    def _encode_start(self) -> str:
        return self._chunk({"type": "start", "messageId": self.message_id}) + self._chunk({"type": "start-step"})

    def _encode_delta(self, text: str) -> str:
        opening, block_id = self._block("text")
        return opening + self._chunk({"type": "text-delta", "id": block_id, "delta": text})

    def _encode_part(self, part: p.Part) -> str:
        if isinstance(part, p.ReasoningDelta):
            if part.redacted:  # a block of its own, with nothing to show
                closing = self._close_block()
                opening, block_id = self._block("reasoning")
                opening = closing + opening
                meta = {"bedrock": {"redactedData": part.redacted}}
                chunk = {"type": "reasoning-delta", "id": block_id, "delta": "", "providerMetadata": meta}
                return opening + self._chunk(chunk) + self._close_block()
            opening, block_id = self._block("reasoning")
            chunk = {"type": "reasoning-delta", "id": block_id, "delta": part.text}
            if part.signature:  # it completes its block: the next reasoning is another block, with its own
                chunk["providerMetadata"] = {"bedrock": {"signature": part.signature}}
                return opening + self._chunk(chunk) + self._close_block()
            return opening + self._chunk(chunk)
        if isinstance(part, p.Source):
            return self._chunk(ui_source_chunk(part))
        if isinstance(part, p.File):
            url = f"data:{part.media_type};base64,{part.data}"
            return self._chunk({"type": "file", "url": url, "mediaType": part.media_type})
        return self._encode_tool_part(part)

    def _encode_tool_part(self, part: p.Part) -> str:
        """Tool calls and their outcomes (AI SDK 5+ tool chunks; approvals are AI SDK 6+), and steps.
        A tool Bedrock runs itself is marked ``providerExecuted``: the AI SDK neither runs it nor
        waits for the browser to answer it."""
        chunk: dict[str, Any]
        if isinstance(part, p.ToolCallStart):
            chunk = {"type": "tool-input-start", "toolCallId": part.id, "toolName": part.name}
            return self._close_block() + self._chunk(_provider_executed(chunk, part.provider_executed))
        if isinstance(part, p.ToolInputDelta):
            return self._chunk({"type": "tool-input-delta", "toolCallId": part.id, "inputTextDelta": part.delta})
        if isinstance(part, p.ToolCall):
            if part.error:
                chunk = {"type": "tool-input-error", "toolCallId": part.id, "toolName": part.name,
                         "input": part.input, "errorText": part.error}
            else:
                chunk = {"type": "tool-input-available", "toolCallId": part.id, "toolName": part.name,
                         "input": part.input}
                if part.signature:
                    chunk["providerMetadata"] = {"bedrock": {"signature": part.signature}}
            return self._close_block() + self._chunk(_provider_executed(chunk, part.provider_executed))
        if isinstance(part, p.ToolResult):
            if part.error:
                chunk = {"type": "tool-output-error", "toolCallId": part.id, "errorText": part.error}
            else:
                chunk = {"type": "tool-output-available", "toolCallId": part.id, "output": part.output}
            return self._chunk(_provider_executed(chunk, part.provider_executed))
        if isinstance(part, p.ToolDenied):
            return self._chunk({"type": "tool-output-denied", "toolCallId": part.call_id})
        if isinstance(part, p.ToolApprovalRequest):
            chunk = {"type": "tool-approval-request", "approvalId": part.approval_id, "toolCallId": part.call_id}
            return self._chunk(chunk)
        if isinstance(part, p.StepFinish):
            return self._close_block() + self._chunk({"type": "finish-step"}) + self._chunk({"type": "start-step"})
        return ""

    def _encode_finish(self, stop_reason: str | None, usage: Mapping[str, int]) -> str:
        metadata = ui_message_metadata(stop_reason, usage, self.metadata)
        finish: dict[str, Any] = {"type": "finish"}
        if self.top_level_finish_reason:
            finish["finishReason"] = metadata["finishReason"]
        finish["messageMetadata"] = metadata
        return (
            self._close_block()
            + self._chunk({"type": "finish-step"})
            + self._chunk(finish)
            + "data: [DONE]\n\n"
        )

    def _encode_error(self, message: str) -> str:
        return self._chunk({"type": "error", "errorText": message}) + "data: [DONE]\n\n"

    def _encode_abort(self) -> str:
        return self._close_block() + self._chunk({"type": "abort"}) + "data: [DONE]\n\n"

    def _encode_ping(self) -> str:
        # An SSE comment: eventsource-parser (what the ai package uses) skips it.
        return _PING


class ServerSentEventsProtocol(StreamProtocol):
    """Named server-sent events for a browser ``EventSource``: ``token``, then ``done`` or ``error``.

    Every event carries an increasing ``id`` (from 1) so a client can tell how far it got. ``EventSource``
    reconnects when the body ends, so clients should ``close()`` on ``done`` and ``error``; note a
    connection failure also fires ``error`` (without ``data``).
    """

    name: ClassVar[str] = "sse"
    content_type: ClassVar[str] = "text/event-stream"

    def __init__(self, message_id: str | None = None) -> None:
        super().__init__(message_id)
        self._last_id = 0

    def _event(self, event: str, data: Mapping[str, Any]) -> str:
        self._last_id += 1
        return ServerSentEvent(
            data=_json(data), event=event, id=str(self._last_id)
        ).encode()

    def _encode_delta(self, text: str) -> str:
        return self._event("token", {"text": text})

    def _encode_part(self, part: p.Part) -> str:
        if isinstance(part, p.ReasoningDelta):
            fields = {"text": part.text, "signature": part.signature, "redacted": part.redacted}
            return self._event("reasoning", {key: value for key, value in fields.items() if value})
        if isinstance(part, p.Source):
            return self._event("source", _source_fields(part))
        if isinstance(part, p.File):
            return self._event("file", {"media_type": part.media_type, "data": part.data})
        if isinstance(part, p.GuardrailTrace):
            return self._event("guardrail", {"action": part.action, "trace": dict(part.trace)})
        if isinstance(part, p.ToolCallStart):
            start = {"id": part.id, "name": part.name}
            return self._event("tool-call-start", _provider_executed(start, part.provider_executed, _SSE_MARK))
        if isinstance(part, p.ToolInputDelta):
            return self._event("tool-input", {"id": part.id, "delta": part.delta})
        if isinstance(part, p.ToolCall):
            fields = {"id": part.id, "name": part.name, "input": part.input, "error": part.error,
                      "signature": part.signature}
            call = {key: value for key, value in fields.items() if value != ""}
            return self._event("tool-call", _provider_executed(call, part.provider_executed, _SSE_MARK))
        if isinstance(part, p.ToolResult):
            outcome = {"error": part.error} if part.error else {"output": part.output}
            result = {"id": part.id, "name": part.name, **outcome}
            return self._event("tool-result", _provider_executed(result, part.provider_executed, _SSE_MARK))
        if isinstance(part, p.ToolDenied):
            return self._event("tool-denied", {"id": part.call_id})
        if isinstance(part, p.ToolApprovalRequest):
            return self._event("tool-approval-request", {"approval_id": part.approval_id, "id": part.call_id})
        if isinstance(part, p.StepFinish):
            usage = part.usage.as_dict()
            step = {"finish_reason": map_finish_reason(part.stop_reason), "stop_reason": part.stop_reason}
            return self._event("step", {**step, "usage": usage})
        return ""

    def _encode_finish(self, stop_reason: str | None, usage: Mapping[str, int]) -> str:
        input_tokens, output_tokens = _usage_counts(usage)
        cache_read, cache_write = _cache_counts(usage)
        return self._event(
            "done",
            {
                "finish_reason": map_finish_reason(stop_reason),
                "stop_reason": stop_reason,
                "usage": {
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "cache_read_tokens": cache_read,
                    "cache_write_tokens": cache_write,
                },
                **self.metadata,
            },
        )

    def _encode_error(self, message: str) -> str:
        return self._event("error", {"message": message})

    def _encode_abort(self) -> str:
        return self._event("abort", {})

    def _encode_ping(self) -> str:
        return _PING


# --------------------------------------------------------------------------------------------------------------
# Registry and negotiation
# --------------------------------------------------------------------------------------------------------------

PROTOCOLS: dict[str, type[StreamProtocol]] = {
    cls.name: cls
    for cls in (
        TextProtocol,
        DataStreamProtocol,
        UIMessageStreamProtocol,
        ServerSentEventsProtocol,
    )
}


def get_protocol(name: str) -> type[StreamProtocol]:
    """The encoder class for ``name``; ``ValueError`` names the valid choices (for a 400 or a settings check)."""
    try:
        return PROTOCOLS[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(key) for key in PROTOCOLS)
        raise ValueError(
            f"unknown stream protocol {name!r}; expected one of {valid}"
        ) from None


def _accepts_event_stream(accept_header: str) -> bool:
    for media_range in accept_header.split(","):
        media_type, *params = (part.strip() for part in media_range.split(";"))
        if media_type.lower() != "text/event-stream":
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return True
    return False


def negotiate_protocol(
    request_query_value: str | None, accept_header: str | None, default: str
) -> str:
    """Pick the protocol name for a request.

    An explicit query value wins (stripped, case-insensitive; an unknown name raises ``ValueError`` rather
    than silently answering in a format the client did not ask for). Otherwise ``Accept: text/event-stream``
    (with q > 0), which is what ``EventSource`` sends, selects ``"sse"`` unless the default is ``"ui"``
    (already an event stream). Otherwise the default, which must itself be valid.
    """
    get_protocol(default)
    if request_query_value is not None and request_query_value.strip():
        name = request_query_value.strip().lower()
        get_protocol(name)
        return name
    if default != "ui" and accept_header and _accepts_event_stream(accept_header):
        return "sse"
    return default
