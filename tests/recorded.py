"""Helpers to read the recorded Bedrock captures in ../shared/fixtures/recorded (never copied here)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from botocore.eventstream import EventStreamBuffer

from django_bedrock_stream.families import (
    AnthropicFamily,
    AnthropicMessagesFamily,
    BedrockFamily,
    CohereFamily,
    ConverseFamily,
    Llama2Family,
    NovaFamily,
    TitanFamily,
)

#: The one place that knows where the captures are (tests/conftest.py's ``recorded_dir`` fixture uses it).
RECORDED_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "recorded"

#: index.json's payload_family -> our family.
FAMILY_OF: dict[str, type[BedrockFamily]] = {
    "converse": ConverseFamily,
    "amazon-nova": NovaFamily,
    "anthropic-messages": AnthropicMessagesFamily,
    "anthropic-text-completions": AnthropicFamily,
    "amazon-titan-text": TitanFamily,
    "meta-llama": Llama2Family,
    "cohere-command": CohereFamily,
}


def load_index() -> list[dict[str, Any]]:
    index = RECORDED_DIR / "index.json"
    if not index.exists():
        return []
    return json.loads(index.read_text())


def boto3_events(path: Path) -> list[dict[str, Any]]:
    """The event dicts boto3 would yield for a recorded body (what the families parse)."""
    buffer = EventStreamBuffer()
    buffer.add_data(path.read_bytes())
    events = []
    for message in buffer:
        event_type = message.headers[":event-type"]
        payload = json.loads(message.payload)
        if event_type == "chunk":
            events.append({"chunk": {"bytes": base64.b64decode(payload["bytes"])}})
        else:
            events.append({event_type: payload})
    return events


def expected_usage(entry: dict[str, Any]) -> dict[str, int]:
    """The usage our rule yields: the family's own counts first, invocation metrics for the gaps;
    cache reads and writes from the model's usage (each API names them its own way), else the metrics."""
    usage = entry.get("usage") or {}
    metrics = entry.get("invocation_metrics") or {}
    pairs = [
        ("inputTokens", "outputTokens"),
        ("input_tokens", "output_tokens"),
        ("prompt_token_count", "generation_token_count"),
        ("inputTextTokenCount", "totalOutputTextTokenCount"),
    ]
    counts = {"input_tokens": metrics.get("inputTokenCount"), "output_tokens": metrics.get("outputTokenCount")}
    for inp, out in pairs:
        if inp in usage:
            counts = {"input_tokens": int(usage[inp]), "output_tokens": int(usage[out])}
            break
    cache = {
        "cache_read_tokens": ("cacheReadInputTokens", "cache_read_input_tokens", "cacheReadInputTokenCount"),
        "cache_write_tokens": ("cacheWriteInputTokens", "cache_creation_input_tokens", "cacheWriteInputTokenCount"),
    }
    for key, names in cache.items():
        found = [usage[name] for name in names if name in usage] or [metrics.get(names[-1]) or 0]
        counts[key] = int(found[0])
    return counts


# -- expected values computed from the raw events, independently of the families' parsers -----------


def wire_events(path: Path) -> list[dict[str, Any]]:
    """Each event's JSON as Bedrock sent it, decoded with botocore's EventStreamBuffer only: a Converse
    event as ``{event_type: payload}``; an invoke chunk as the model's own JSON (its base64 decoded)."""
    buffer = EventStreamBuffer()
    buffer.add_data(path.read_bytes())
    out = []
    for message in buffer:
        payload = json.loads(message.payload)
        if message.headers[":event-type"] == "chunk":
            out.append(json.loads(base64.b64decode(payload["bytes"])))
        else:
            out.append({message.headers[":event-type"]: payload})
    return out


def _blocks(events: list[dict[str, Any]]) -> list[tuple[str, int, dict[str, Any]]]:
    """(kind, block index, body) for the block events of both shapes: Converse / Nova
    (``contentBlockStart|Delta|Stop``) and Anthropic Messages (``content_block_*``)."""
    out: list[tuple[str, int, dict[str, Any]]] = []
    for event in events:
        for kind in ("contentBlockStart", "contentBlockDelta", "contentBlockStop"):
            if kind in event:
                out.append((kind, event[kind].get("contentBlockIndex", 0), event[kind]))
        anthropic = {"content_block_start": "contentBlockStart", "content_block_delta": "contentBlockDelta",
                     "content_block_stop": "contentBlockStop"}
        if event.get("type") in anthropic:
            out.append((anthropic[event["type"]], event.get("index", 0), event))
    return out


def wire_reasoning(events: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The reasoning text, and the signature of each reasoning block whose stop event arrived."""
    text: list[str] = []
    pieces: dict[int, list[str]] = {}
    complete: list[str] = []
    for kind, index, body in _blocks(events):
        delta = body.get("delta") or {}
        reasoning = delta.get("reasoningContent") or {}
        if delta.get("type") == "thinking_delta":
            text.append(delta["thinking"])
        text.append(reasoning.get("text", ""))
        signature = reasoning.get("signature") or (delta.get("signature") if delta.get("type") == "signature_delta" else "")
        if signature:
            pieces.setdefault(index, []).append(signature)
        if kind == "contentBlockStop" and index in pieces:
            complete.append("".join(pieces.pop(index)))
    return "".join(text), complete


def wire_sources(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each citation: title, cited text, location (Converse ``citation``; Anthropic ``citations_delta``)."""
    out = []
    for _, _, body in _blocks(events):
        delta = body.get("delta") or {}
        if "citation" in delta and delta.get("type") != "citations_delta":
            citation = delta["citation"]
            out.append({
                "title": citation.get("title", ""),
                "cited_text": "".join(part["text"] for part in citation.get("sourceContent", [])),
                "location": citation.get("location", {}),
            })
        elif delta.get("type") == "citations_delta":
            citation = delta["citation"]
            out.append({
                "title": citation.get("document_title", ""),
                "cited_text": citation.get("cited_text", ""),
                "location": {k: v for k, v in citation.items() if k not in ("cited_text", "document_title", "url")},
            })
    return out


def wire_tool_calls(events: list[dict[str, Any]]) -> tuple[list[tuple[str, str, Any]], str]:
    """The tool calls in order as (id, name, parsed input), and all their raw input pieces joined."""
    started: dict[int, tuple[str, str]] = {}
    pieces: dict[int, list[str]] = {}
    calls, raw = [], []
    for kind, index, body in _blocks(events):
        if kind == "contentBlockStart":
            tool = (body.get("start") or {}).get("toolUse")
            block = body.get("content_block") or {}
            if tool:
                started[index] = (tool["toolUseId"], tool["name"])
            elif block.get("type") == "tool_use":
                started[index] = (block["id"], block["name"])
        elif kind == "contentBlockDelta":
            delta = body.get("delta") or {}
            piece = (delta.get("toolUse") or {}).get("input") or delta.get("partial_json") or ""
            if index in started and piece:
                pieces.setdefault(index, []).append(piece)
                raw.append(piece)
        elif index in started:
            tool_id, name = started.pop(index)
            text = "".join(pieces.pop(index, []))
            calls.append((tool_id, name, json.loads(text) if text else {}))
    return calls, "".join(raw)


def wire_guardrail(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The guardrail trace as Bedrock sent it (unmasked output included), if any."""
    for event in events:
        trace = (event.get("metadata") or {}).get("trace") or event.get("amazon-bedrock-trace") or {}
        if trace.get("guardrail"):
            return trace["guardrail"]
    return None


def wire_latency(entry: dict[str, Any]) -> int | None:
    """Bedrock's reported latency: Converse ``metrics.latencyMs``, else the invocation metrics'."""
    return (entry.get("metrics") or {}).get("latencyMs") or (entry.get("invocation_metrics") or {}).get("invocationLatency")


def unmasked_strings(guardrail: Any) -> set[str]:
    """What a guardrail trace holds that the guardrail masked: ``modelOutput`` and every ``match``."""
    found: set[str] = set()
    if isinstance(guardrail, dict):
        for key, value in guardrail.items():
            if key == "modelOutput":
                found.update(value)
            elif key == "match":
                found.add(value)
            else:
                found |= unmasked_strings(value)
    elif isinstance(guardrail, list):
        for item in guardrail:
            found |= unmasked_strings(item)
    return found


def assert_capture_parts(stream: Any, entry: dict[str, Any]) -> None:
    """A parsed capture equals what its raw events and the index say: text, reasoning (its signature
    only where its block completed), sources, tool calls, stop reason, usage, latency, guardrail."""
    events = wire_events(RECORDED_DIR / entry["file"])
    reasoning, signatures = wire_reasoning(events)
    assert reasoning == entry.get("reasoning_text", "")
    assert stream.text == entry["expected_text"]
    assert stream.reasoning == reasoning
    assert [block["signature"] for block in stream.reasoning_blocks if block["signature"]] == signatures
    sources = [{"title": s.title, "cited_text": s.cited_text, "location": dict(s.location)} for s in stream.sources]
    assert sources == wire_sources(events)
    assert [s.id for s in stream.sources] == [f"source-{n}" for n in range(1, len(sources) + 1)]
    calls, raw_input = wire_tool_calls(events)
    assert raw_input == entry.get("tool_input_json_concatenated", "")
    assert [(c.id, c.name, c.input) for c in stream.tool_calls] == calls
    assert all(not c.error for c in stream.tool_calls)
    assert stream.stop_reason == entry["stop_reason"]
    assert stream.usage == expected_usage(entry)
    assert stream.latency_ms == wire_latency(entry)
    guardrail = wire_guardrail(events)
    if guardrail is None:
        assert stream.guardrail is None
    else:
        hidden = unmasked_strings(guardrail)
        assert hidden and stream.guardrail is not None and stream.guardrail.action == "INTERVENED"
        assert unmasked_strings(stream.guardrail.trace) == set()
        kept = json.dumps(stream.summary())
        assert not [text for text in hidden if text in kept and text not in entry["expected_text"]]
