"""Mistral instruct models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..prompts import build_mistral_prompt
from .base import BedrockFamily, Delta, Message

if TYPE_CHECKING:
    from ..options import ConverseOptions


class MistralFamily(BedrockFamily):
    name = "mistral"
    default_model_id = "mistral.mistral-7b-instruct-v0:2"
    model_prefixes = ("mistral.",)

    def build_body(
        self, messages: Sequence[Message], *, max_tokens: int, options: ConverseOptions | None = None
    ) -> dict[str, Any]:
        """A text prompt: the model options have no field here."""
        return {"prompt": build_mistral_prompt(messages), "max_tokens": max_tokens}

    def parse_chunk(self, data: Mapping[str, Any]) -> Delta:
        outputs = data.get("outputs") or [{}]
        return Delta(outputs[0].get("text") or "", outputs[0].get("stop_reason"))
