"""Anthropic Claude text completions (``prompt`` / ``completion``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..prompts import build_anthropic_prompt
from .base import BedrockFamily, Delta, Message

if TYPE_CHECKING:
    from ..options import ConverseOptions


class AnthropicFamily(BedrockFamily):
    name = "anthropic"
    default_model_id = "anthropic.claude-v2:1"
    model_prefixes = ("anthropic.claude",)
    body_key = "prompt"

    def build_body(
        self, messages: Sequence[Message], *, max_tokens: int, options: ConverseOptions | None = None
    ) -> dict[str, Any]:
        """A text prompt: the model options have no field here."""
        return {
            "prompt": build_anthropic_prompt(messages),
            "max_tokens_to_sample": max_tokens,
            "stop_sequences": ["\n\nHuman:"],
        }

    def parse_chunk(self, data: Mapping[str, Any]) -> Delta:
        return Delta(data.get("completion") or "", data.get("stop_reason"))
