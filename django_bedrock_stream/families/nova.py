"""Amazon Nova's native invoke format (``schemaVersion: messages-v1``): Converse's event shapes, one
per invoke chunk, with the invocation metrics on the last."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..options import ConverseOptions
from ..prompts import build_converse_messages, extract_system
from .base import BedrockFamily, Delta, Message
from .converse import ConverseEvents


class NovaFamily(ConverseEvents, BedrockFamily):
    name = "nova"
    default_model_id = "amazon.nova-micro-v1:0"
    binary_blobs = False
    # Nova's text models (micro, lite, pro, premier; "2-lite"…), not its image, video or speech models.
    model_prefixes = tuple(f"amazon.nova-{g}{size}" for g in ("", "2-") for size in ("micro", "lite", "pro", "premier"))

    def build_body(
        self, messages: Sequence[Message], *, max_tokens: int, options: ConverseOptions | None = None
    ) -> dict[str, Any]:
        """Converse's shapes with base64 files (images only: the native format takes no documents),
        Nova's sampling names, ``reasoningConfig`` at the top; ``additional_fields`` are merged in."""
        options = options or ConverseOptions()
        body: dict[str, Any] = {
            **options.additional_fields,
            "schemaVersion": "messages-v1",
            "messages": build_converse_messages(messages, binary=False, documents=False, cache=options.cache_history),
            "inferenceConfig": options.inference_config(("max_new_tokens", max_tokens), "top_p"),
        }
        system = options.system_blocks(extract_system(messages))
        if system:
            body["system"] = system
        reasoning = options.reasoning_config()
        if reasoning is not None:
            body["reasoningConfig"] = reasoning
        return body

    def parse_chunk(self, data: Mapping[str, Any]) -> Delta:
        return self.converse_event(data) or Delta()
