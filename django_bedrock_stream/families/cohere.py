"""Cohere Command (text generation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..prompts import build_cohere_prompt
from .base import BedrockFamily, Delta, Message

if TYPE_CHECKING:
    from ..options import ConverseOptions


class CohereFamily(BedrockFamily):
    name = "cohere"
    default_model_id = "cohere.command-text-v14"
    model_prefixes = ("cohere.command",)

    def build_body(
        self, messages: Sequence[Message], *, max_tokens: int, options: ConverseOptions | None = None
    ) -> dict[str, Any]:
        """A text prompt: the model options have no field here."""
        return {"prompt": build_cohere_prompt(messages), "max_tokens": max_tokens, "stream": True}

    def parse_chunk(self, data: Mapping[str, Any]) -> Delta:
        # The final chunk (is_finished) repeats the whole text under "generations"; skip its text.
        if data.get("is_finished"):
            return Delta(stop_reason=data.get("finish_reason"))
        return Delta(data.get("text") or "")
