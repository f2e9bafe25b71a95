"""Anthropic Claude Messages API (``anthropic_version: bedrock-2023-05-31``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..prompts import build_anthropic_messages, extract_system
from .base import BedrockFamily, Delta, Message


class AnthropicMessagesFamily(BedrockFamily):
    name = "anthropic-messages"
    default_model_id = "anthropic.claude-3-haiku-20240307-v1:0"

    def build_body(self, messages: Sequence[Message], *, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": max_tokens,
            "messages": build_anthropic_messages(messages),
        }
        system = extract_system(messages)
        if system:
            body["system"] = system
        return body

    def parse_chunk(self, data: Mapping[str, Any]) -> Delta:
        kind = data.get("type")
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            return Delta(delta.get("text", "") if delta.get("type") == "text_delta" else "")
        if kind == "message_start":
            usage = (data.get("message") or {}).get("usage") or {}
            return Delta(input_tokens=usage.get("input_tokens"))
        if kind == "message_delta":
            usage = data.get("usage") or {}
            return Delta(
                stop_reason=(data.get("delta") or {}).get("stop_reason"),
                output_tokens=usage.get("output_tokens"),
            )
        return Delta()
