"""Typed stream parts: what a model's answer is made of, beyond text.

Families turn Bedrock events into parts (I/O-free); :class:`~django_bedrock_stream.streams.BedrockStream`
folds them into its totals; each output protocol turns a part into wire text. A part is a small frozen
value, so adding one means one class here plus one branch per encoder, tested on values.

``index`` is the model's content-block index: consecutive parts with the same type and index belong to
one block (one reasoning section, one tool call), which the ``ui`` protocol opens and closes as such.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "File",
    "Finish",
    "GuardrailTrace",
    "Part",
    "ReasoningDelta",
    "Source",
    "StepFinish",
    "TextDelta",
    "ToolCall",
    "ToolCallStart",
    "ToolInputDelta",
    "ToolApprovalRequest",
    "ToolDenied",
    "ToolResult",
    "Usage",
]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text."""

    text: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning ("extended thinking"): ``text``; or, once the block is
    complete, its ``signature`` (the model needs it back, unchanged, on the next turn); or
    ``redacted`` reasoning (base64 of encrypted bytes, also to be sent back as is)."""

    text: str = ""
    signature: str = ""
    redacted: str = ""
    index: int = 0


@dataclass(frozen=True, slots=True)
class Source:
    """A citation: the document (``title``, ``document_index``, ``url`` when it is a web page), the
    text it supports and where in the document it is (``location``: Bedrock's location object)."""

    id: str
    title: str = ""
    url: str = ""
    cited_text: str = ""
    document_index: int | None = None
    location: Mapping[str, Any] = field(default_factory=dict)
    index: int = 0


@dataclass(frozen=True, slots=True)
class File:
    """A file the model produced (an image), as base64 ``data`` of ``media_type``."""

    media_type: str
    data: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """The model began a tool call (its input follows as :class:`ToolInputDelta` parts).
    ``provider_executed``: Bedrock runs the tool itself (a system tool such as Nova 2's
    ``nova_code_interpreter``); its :class:`ToolResult` comes in the same stream."""

    id: str
    name: str
    index: int = 0
    provider_executed: bool = False


@dataclass(frozen=True, slots=True)
class ToolInputDelta:
    """A piece of a tool call's JSON input, exactly as it arrived (not valid JSON on its own)."""

    id: str
    delta: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call: its parsed ``input``, or ``error`` when the input was not valid JSON.
    ``signature`` (set by the view for calls the browser answers) binds the call to the user and its
    input, so a result or approval sent back for it can be verified."""

    id: str
    name: str
    input: Any
    error: str = ""
    index: int = 0
    signature: str = ""
    provider_executed: bool = False


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The result of a tool call, as it is sent back to the model; ``provider_executed`` when Bedrock
    ran the tool and streamed its result (nothing to send back)."""

    id: str
    name: str
    output: Any = None
    error: str = ""
    provider_executed: bool = False


@dataclass(frozen=True, slots=True)
class ToolApprovalRequest:
    """A tool call waits for the user's approval (``approval_id`` is signed: it comes back with the
    answer); the stream ends after it."""

    approval_id: str
    call_id: str


@dataclass(frozen=True, slots=True)
class ToolDenied:
    """The user denied a tool call: it did not run, and the model is told so."""

    call_id: str


@dataclass(frozen=True, slots=True)
class GuardrailTrace:
    """A guardrail's verdict: ``action`` (``"INTERVENED"`` or ``"NONE"``) and Bedrock's trace object."""

    action: str
    trace: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts. Cache reads and writes are reported apart from ``input_tokens`` by Bedrock."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
        }


@dataclass(frozen=True, slots=True)
class StepFinish:
    """One model turn ended (a run with tools has several steps)."""

    stop_reason: str | None
    usage: Usage


@dataclass(frozen=True, slots=True)
class Finish:
    """The whole stream ended normally."""

    stop_reason: str | None
    usage: Usage
    latency_ms: int | None = None
    service_tier: str | None = None


Part = (
    TextDelta
    | ReasoningDelta
    | Source
    | File
    | ToolCallStart
    | ToolInputDelta
    | ToolCall
    | ToolResult
    | ToolApprovalRequest
    | ToolDenied
    | GuardrailTrace
    | StepFinish
    | Finish
)


#: How deep a tool call's input or output may nest (the model's, or one a browser sends back): what
#: signs, checks and stores them recurses.
MAX_TOOL_JSON_DEPTH = 64
_NUL_OR_SURROGATE = re.compile("[\x00\ud800-\udfff]")


def json_depth(value: Any) -> int:
    """How deeply ``value`` nests lists and dicts, walked without recursion (so no depth can crash it)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def unstorable(value: Any) -> str | None:
    """Why a tool call's input or a tool's output cannot be streamed to a browser and stored as JSON,
    or None: NaN and infinities (not JSON to a browser or PostgreSQL), NUL and half a UTF-16 surrogate
    pair (refused by PostgreSQL's json; not UTF-8), nesting deeper than :data:`MAX_TOOL_JSON_DEPTH`.
    Walked without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return "a number that is not finite"
        if isinstance(item, str) and _NUL_OR_SURROGATE.search(item):
            return "a NUL character or half a surrogate pair"
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    if json_depth(value) > MAX_TOOL_JSON_DEPTH:
        return f"more than {MAX_TOOL_JSON_DEPTH} levels of nesting"
    return None
