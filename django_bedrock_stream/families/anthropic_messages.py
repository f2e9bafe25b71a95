"""Anthropic Claude Messages API (``anthropic_version: bedrock-2023-05-31``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..options import ConverseOptions
from ..parts import ReasoningDelta, Source
from ..prompts import CACHE_CONTROL, _anthropic_reasoning, build_anthropic_messages, extract_system
from .base import BedrockFamily, ContentBlocks, Delta, Message, complete_reasoning


class AnthropicMessagesFamily(BedrockFamily):
    name = "anthropic-messages"
    default_model_id = "anthropic.claude-3-haiku-20240307-v1:0"
    model_prefixes = ("anthropic.claude",)
    body_key = "messages"

    def build_body(
        self, messages: Sequence[Message], *, max_tokens: int, options: ConverseOptions | None = None
    ) -> dict[str, Any]:
        """Claude's sampling names, ``thinking`` for the reasoning budget, ``cache_control`` for prompt
        caching; ``additional_fields`` are merged in (Nova's reasoning effort has no field here)."""
        options = options or ConverseOptions()
        body: dict[str, Any] = {
            **options.additional_fields,
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": options.max_tokens(max_tokens),
            "messages": build_anthropic_messages(messages, cache=options.cache_history),
        }
        system = extract_system(messages)
        if system:
            cached = [{"type": "text", "text": system, "cache_control": dict(CACHE_CONTROL)}]
            body["system"] = cached if options.cache_system else system
        for key, value in (
            ("temperature", options.temperature),
            ("top_p", options.top_p),
            ("stop_sequences", list(options.stop_sequences)),
            ("thinking", options.thinking()),
        ):
            if value or value == 0:
                body[key] = value
        return body

    def __init__(self) -> None:
        self.blocks = ContentBlocks()

    def assistant_blocks(self, text: str, reasoning: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
        blocks = [_anthropic_reasoning(block) for block in complete_reasoning(reasoning)]
        return [*blocks, {"type": "text", "text": text}] if text.strip() else blocks

    def parse_chunk(self, data: Mapping[str, Any]) -> Delta:
        kind = data.get("type")
        index = data.get("index") or 0
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            delta_type = delta.get("type")
            if delta_type == "text_delta":
                return Delta(delta.get("text", ""), index=index)
            if delta_type == "thinking_delta":
                return Delta(parts=(ReasoningDelta(text=delta.get("thinking", ""), index=index),))
            if delta_type == "signature_delta":
                self.blocks.signature(index, delta.get("signature", ""))
            elif delta_type == "input_json_delta":
                piece = self.blocks.tool_input(index, delta.get("partial_json", ""))
                return Delta(parts=(piece,) if piece is not None else ())
            elif delta_type == "citations_delta":
                return Delta(parts=(self._source(delta.get("citation") or {}, index),))
            return Delta()
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                return Delta(parts=(self.blocks.start_tool(index, block.get("id", ""), block.get("name", "")),))
            if block.get("type") == "redacted_thinking":
                return Delta(parts=(ReasoningDelta(redacted=block.get("data", ""), index=index),))
            return Delta()
        if kind == "content_block_stop":
            return Delta(parts=self.blocks.stop(index))
        if kind == "message_start":
            self.blocks = ContentBlocks()
            usage = (data.get("message") or {}).get("usage") or {}
            return Delta(
                input_tokens=usage.get("input_tokens"),
                cache_read_tokens=usage.get("cache_read_input_tokens"),
                cache_write_tokens=usage.get("cache_creation_input_tokens"),
            )
        if kind == "message_delta":
            usage = data.get("usage") or {}
            return Delta(
                stop_reason=(data.get("delta") or {}).get("stop_reason"),
                output_tokens=usage.get("output_tokens"),
            )
        return Delta()

    def _source(self, citation: Mapping[str, Any], index: int) -> Source:
        location = {key: value for key, value in citation.items() if key not in ("cited_text", "document_title", "url")}
        return self.blocks.source(
            title=citation.get("document_title") or citation.get("title") or "",
            url=citation.get("url") or "",
            cited_text=citation.get("cited_text", ""),
            document_index=citation.get("document_index"),
            location=location,
            index=index,
        )
