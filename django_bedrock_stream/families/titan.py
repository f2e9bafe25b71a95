"""Amazon Titan Text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..prompts import build_titan_prompt
from .base import BedrockFamily, Delta, Message, _int

if TYPE_CHECKING:
    from ..options import ConverseOptions


class TitanFamily(BedrockFamily):
    name = "titan"
    default_model_id = "amazon.titan-text-express-v1"
    model_prefixes = ("amazon.titan-text",)

    def build_body(
        self, messages: Sequence[Message], *, max_tokens: int, options: ConverseOptions | None = None
    ) -> dict[str, Any]:
        """A text prompt: the model options have no field here."""
        return {
            "inputText": build_titan_prompt(messages),
            "textGenerationConfig": {"maxTokenCount": max_tokens},
        }

    def parse_chunk(self, data: Mapping[str, Any]) -> Delta:
        return Delta(
            data.get("outputText") or "",
            data.get("completionReason"),
            _int(data.get("inputTextTokenCount")),
            _int(data.get("totalOutputTextTokenCount")),
        )
