"""Meta Llama 3 instruct: Llama 2's wire format with Llama 3's prompt template."""

from __future__ import annotations

from collections.abc import Sequence

from ..prompts import build_llama3_prompt
from .base import Message
from .llama2 import Llama2Family


class Llama3Family(Llama2Family):
    name = "llama3"
    default_model_id = "meta.llama3-8b-instruct-v1:0"
    model_prefixes = ("meta.llama3", "meta.llama4")

    def build_prompt(self, messages: Sequence[Message]) -> str:
        return build_llama3_prompt(messages)
