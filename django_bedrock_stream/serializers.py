"""Request validation with DRF serializers: every bad input becomes a 400 that names the problem."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from .conf import stream_settings

ROLES = ("system", "user", "assistant")


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into strings."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class TextPartSerializer(serializers.Serializer):
    """An AI SDK 5+ message part; only text parts carry prompt text, others are ignored."""

    type = StrictCharField()
    text = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)


class MessageSerializer(serializers.Serializer):
    """``{"role", "content"}``, or the AI SDK 5+ shape ``{"role", "parts": [{"type": "text", "text"}]}``."""

    role = serializers.ChoiceField(choices=ROLES)
    content = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)
    parts = TextPartSerializer(many=True, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "content" not in attrs:
            if "parts" not in attrs:
                raise serializers.ValidationError("Each message needs 'content' (a string) or 'parts'.")
            attrs["content"] = "".join(p.get("text", "") for p in attrs["parts"] if p["type"] == "text")
        return {"role": attrs["role"], "content": attrs["content"]}


class ChatRequestSerializer(serializers.Serializer):
    """The POST body of every stream view. Unknown keys (``id``, ``createdAt``, ``data``…) are ignored.

    Needs ``context={"allowed_models": [...], "max_tokens_cap": int}``.
    """

    messages = MessageSerializer(many=True, allow_empty=False)
    model = StrictCharField(required=False)
    max_tokens = serializers.IntegerField(required=False, min_value=1)

    def validate_messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        limit = stream_settings.MAX_MESSAGES
        if len(messages) > limit:
            raise serializers.ValidationError(f"At most {limit} messages are allowed, got {len(messages)}.")
        chars = sum(len(m["content"]) for m in messages)
        if chars > stream_settings.MAX_INPUT_CHARS:
            raise serializers.ValidationError(
                f"The messages hold {chars} characters; the limit is {stream_settings.MAX_INPUT_CHARS}."
            )
        if not any(m["role"] == "user" and m["content"].strip() for m in messages):
            raise serializers.ValidationError("At least one non-empty user message is required.")
        return messages

    def validate_model(self, model: str) -> str:
        allowed = self.context["allowed_models"]
        if model not in allowed:
            raise serializers.ValidationError(f"Model {model!r} is not allowed here. Allowed: {', '.join(allowed)}.")
        return model

    def validate_max_tokens(self, value: int) -> int:
        cap = self.context["max_tokens_cap"]
        if value > cap:
            raise serializers.ValidationError(f"max_tokens may be at most {cap}.")
        return value
