"""Request validation with DRF serializers: every bad input becomes a 400 that names the problem.

Validation is bounded: the body's JSON objects and arrays are counted before it is parsed
(``MAX_JSON_CONTAINERS``, :func:`load_json_body`), the messages and parts before any is validated
(``MAX_MESSAGES``, ``MAX_PARTS``), and text is checked at C speed, so no body takes long to refuse or
to accept (issue 9: 195,000 tiny parts used to hold a worker for a second).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.settings import api_settings
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from .conf import stream_settings

ROLES = ("system", "user", "assistant")


class _NamedErrors:
    """Reports an error about a whole object or list under that object's own name (``"request"`` for
    the body), never under DRF's ``non_field_errors``, which means nothing to an API client."""

    parent: Any

    def run_validation(self, data: Any = empty) -> Any:
        try:
            return super().run_validation(data)  # type: ignore[misc]
        except serializers.ValidationError as exc:
            detail = exc.detail
            if isinstance(detail, dict):
                if list(detail) != [api_settings.NON_FIELD_ERRORS_KEY]:
                    raise
                detail = detail[api_settings.NON_FIELD_ERRORS_KEY]
            raise serializers.ValidationError(detail if self.parent is not None else {"request": detail}) from None


class _ListSerializer(_NamedErrors, serializers.ListSerializer):
    pass


class _FastSurrogateValidator:
    """Wraps DRF's surrogate validator, which loops over every character in Python (~45 ms for a
    2.5 MB body): text that encodes as UTF-8, checked at C speed, has no surrogate to report."""

    def __init__(self, validator: ProhibitSurrogateCharactersValidator) -> None:
        self.validator = validator

    def __call__(self, value: str) -> None:
        if not _no_surrogates(value):
            self.validator(value)


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into strings."""

    validators: list[Any]  # DRF's property, for mypy

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators = [
            _FastSurrogateValidator(v) if isinstance(v, ProhibitSurrogateCharactersValidator) else v
            for v in self.validators
        ]

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class TextPartSerializer(_NamedErrors, serializers.Serializer):
    """An AI SDK 5+ message part; only text parts carry prompt text, others are ignored."""

    type = StrictCharField()
    text = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)

    class Meta:
        list_serializer_class = _ListSerializer


class MessageListSerializer(_ListSerializer):
    """The ``messages`` list: its size limits are checked before any message is validated, so a
    huge body is refused in microseconds rather than after validating every message."""

    def to_internal_value(self, data: Any) -> list[dict[str, str]]:
        if isinstance(data, list):
            limit = stream_settings.MAX_MESSAGES
            if len(data) > limit:
                raise serializers.ValidationError(f"At most {limit} messages are allowed, got {len(data)}.")
            parts = sum(len(m["parts"]) for m in data if isinstance(m, Mapping) and isinstance(m.get("parts"), list))
            if parts > stream_settings.MAX_PARTS:
                raise serializers.ValidationError(
                    f"The messages hold {parts} parts; the limit is {stream_settings.MAX_PARTS}."
                )
        result: list[dict[str, str]] = super().to_internal_value(data)
        return result


class MessageSerializer(_NamedErrors, serializers.Serializer):
    """``{"role", "content"}``, or the AI SDK 5+ shape ``{"role", "parts": [{"type": "text", "text"}]}``."""

    role = serializers.ChoiceField(choices=ROLES)
    content = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)
    parts = TextPartSerializer(many=True, required=False)

    class Meta:
        list_serializer_class = MessageListSerializer

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "content" not in attrs:
            if "parts" not in attrs:
                raise serializers.ValidationError({"content": "Each message needs 'content' (a string) or 'parts'."})
            attrs["content"] = "".join(p.get("text", "") for p in attrs["parts"] if p["type"] == "text")
        return {"role": attrs["role"], "content": attrs["content"]}


class ChatRequestSerializer(_NamedErrors, serializers.Serializer):
    """The POST body of every stream view. Unknown keys (``id``, ``createdAt``, ``data``…) are ignored.

    Needs ``context={"allowed_models": [...], "max_tokens_cap": int}``.
    """

    messages = MessageSerializer(many=True, allow_empty=False)
    model = StrictCharField(required=False)
    max_tokens = serializers.IntegerField(required=False, min_value=1)

    def validate_messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
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


class BodyTooComplex(Exception):
    """The body holds more JSON objects and arrays than ``MAX_JSON_CONTAINERS``: a 400, like the other
    request limits."""


def load_json_body(raw: bytes) -> Any:
    """``json.loads(raw)``, after refusing (in a millisecond, with :class:`BodyTooComplex`) a body with
    more than ``MAX_JSON_CONTAINERS`` objects and arrays.

    Parsing holds the GIL, so doing it off the event loop does not help: 2.5 MB of tiny objects takes
    0.1–0.5 s to parse (the garbage collector runs again and again while they are created), freezing
    every stream of the worker. Every ``{`` and ``[`` counts, also inside strings: a bound, never an
    undercount.
    """
    containers = raw.count(b"{") + raw.count(b"[")
    limit = stream_settings.MAX_JSON_CONTAINERS
    if containers > limit:
        raise BodyTooComplex(
            f"The request body holds {containers} JSON objects and arrays ('{{' and '[' characters); "
            f"the limit is {limit}."
        )
    return json.loads(raw)


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
    """No NUL and no surrogate: what DRF's CharField validators require."""
    return "\x00" not in text and _no_surrogates(text)


def _no_surrogates(text: str) -> bool:
    """No code point in U+D800–U+DFFF, checked at C speed (only those fail to encode as UTF-8)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
