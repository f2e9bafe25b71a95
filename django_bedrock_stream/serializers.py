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


def fast_validated_data(data: Any, allowed_models: Any, max_tokens_cap: int) -> dict[str, Any] | None:
    """What ``ChatRequestSerializer(data=data, context=...).validated_data`` would be, for the plain,
    common request only; ``None`` for anything else, and the caller then runs the serializer, which
    stays the one definition of what is valid and the only source of error messages.

    It accepts only exact JSON types (``dict``, ``list``, ``str``, ``int``), messages with ``role``
    and ``content`` and no ``parts``, and values every field and ``validate_*`` method passes as they
    are (no whitespace to trim, no NUL or surrogate characters). ``tests/test_performance_paths.py``
    checks, with generated inputs, that it never accepts what the serializer rejects and that it
    returns equal data of the same types.
    """
    if type(data) is not dict:
        return None
    messages = data.get("messages")
    if type(messages) is not list or not messages or len(messages) > stream_settings.MAX_MESSAGES:
        return None
    validated: list[dict[str, str]] = []
    chars = 0
    has_user_text = False
    for message in messages:
        if type(message) is not dict or "parts" in message:
            return None
        role, content = message.get("role"), message.get("content")
        if type(role) is not str or role not in ROLES or type(content) is not str or not _plain_text(content):
            return None
        chars += len(content)
        if role == "user" and not has_user_text and content.strip():
            has_user_text = True
        validated.append({"role": role, "content": content})
    if chars > stream_settings.MAX_INPUT_CHARS or not has_user_text:
        return None
    result: dict[str, Any] = {"messages": validated}
    if "model" in data:
        model = data["model"]
        if type(model) is not str or not model or model != model.strip() or not _plain_text(model):
            return None
        if model not in allowed_models:
            return None
        result["model"] = model
    if "max_tokens" in data:
        max_tokens = data["max_tokens"]
        if type(max_tokens) is not int or not 1 <= max_tokens <= max_tokens_cap or max_tokens.bit_length() > 62:
            return None
        result["max_tokens"] = max_tokens
    return result


def _plain_text(text: str) -> bool:
    """No NUL and no lone surrogate: what DRF's CharField validators require."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
