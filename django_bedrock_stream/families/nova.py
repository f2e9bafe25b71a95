"""Amazon Nova's native invoke format (``schemaVersion: messages-v1``): Converse's event shapes, one
per invoke chunk, with the invocation metrics on the last."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..prompts import build_converse_messages, extract_system
from .base import BedrockFamily, Delta, Message
from .converse import ConverseEvents


class NovaFamily(ConverseEvents, BedrockFamily):
    name = "nova"
    default_model_id = "amazon.nova-micro-v1:0"

    def build_body(self, messages: Sequence[Message], *, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schemaVersion": "messages-v1",
            "messages": build_converse_messages(messages),
            "inferenceConfig": {"max_new_tokens": max_tokens},
        }
        system = extract_system(messages)
        if system:
            body["system"] = [{"text": system}]
        return body

    def parse_chunk(self, data: Mapping[str, Any]) -> Delta:
        return self.converse_event(data) or Delta()
