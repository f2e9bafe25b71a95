"""Meta Llama 2 chat."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..prompts import build_llama2_prompt
from .base import BedrockFamily, Delta, Message, _int

if TYPE_CHECKING:
    from ..options import ConverseOptions


class Llama2Family(BedrockFamily):
    name = "llama2"
    default_model_id = "meta.llama2-13b-chat-v1"
    model_prefixes: ClassVar[tuple[str, ...]] = ("meta.llama2",)

    def build_prompt(self, messages: Sequence[Message]) -> str:
        """May override: the only thing Llama 3 changes."""
        return build_llama2_prompt(messages)

    def build_body(
        self, messages: Sequence[Message], *, max_tokens: int, options: ConverseOptions | None = None
    ) -> dict[str, Any]:
        """A text prompt: the model options have no field here."""
        return {"prompt": self.build_prompt(messages), "max_gen_len": max_tokens}

    def parse_chunk(self, data: Mapping[str, Any]) -> Delta:
        return Delta(
            data.get("generation") or "",
            data.get("stop_reason"),
            _int(data.get("prompt_token_count")),
            _int(data.get("generation_token_count")),
        )
