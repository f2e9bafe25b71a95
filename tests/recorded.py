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
    TitanFamily,
)

#: The one place that knows where the captures are (tests/conftest.py's ``recorded_dir`` fixture uses it).
RECORDED_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "recorded"

#: index.json's payload_family -> our family. amazon-nova (native invoke) has no family of its own.
FAMILY_OF: dict[str, type[BedrockFamily]] = {
    "converse": ConverseFamily,
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
