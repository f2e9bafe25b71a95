"""The model-agnostic Converse API (``converse_stream``): its own call and event shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..prompts import build_converse_messages, extract_system
from .base import BedrockFamily, Delta, Message


class ConverseFamily(BedrockFamily):
    name = "converse"
    default_model_id = "anthropic.claude-3-haiku-20240307-v1:0"
    operation = "converse_stream"
    stream_key = "stream"

    def build_body(self, messages: Sequence[Message], *, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": build_converse_messages(messages),
            "inferenceConfig": {"maxTokens": max_tokens},
        }
        system = extract_system(messages)
        if system:
            body["system"] = [{"text": system}]
        return body

    def request_kwargs(self, model_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return {"modelId": model_id, **body}

    def parse_event(self, event: Mapping[str, Any]) -> Delta | None:
        if "contentBlockDelta" in event:
            return Delta((event["contentBlockDelta"].get("delta") or {}).get("text") or "")
        if "messageStop" in event:
            return Delta(stop_reason=event["messageStop"].get("stopReason"))
        if "metadata" in event:
            usage = event["metadata"].get("usage") or {}
            return Delta(input_tokens=usage.get("inputTokens"), output_tokens=usage.get("outputTokens"))
        return None
