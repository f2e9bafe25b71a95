"""Request validation with DRF serializers: every bad input becomes a 400 that names the problem.

Validation is bounded: the body's JSON objects and arrays are counted before it is parsed
(``MAX_JSON_CONTAINERS``, :func:`load_json_body`), the messages and parts before any is validated
(``MAX_MESSAGES``, ``MAX_PARTS``), and text is checked at C speed, so no body takes long to refuse or
to accept (issue 9: 195,000 tiny parts used to hold a worker for a second).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.settings import api_settings
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from .conf import stream_settings
from .media import FileRefused, claimed_kind, read_file
from .modelids import public_model_id
from .options import LATENCIES, REASONING_EFFORTS, SERVICE_TIERS
from .parts import MAX_TOOL_JSON_DEPTH, json_depth

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


class PartSerializer(_NamedErrors, serializers.Serializer):
    """An AI SDK 5+ message part. ``text`` parts carry the prompt text, ``file`` parts (in user
    messages) images and documents, ``reasoning`` parts (in assistant messages) the model's earlier
    reasoning with its signature, tool parts (``tool-<name>`` / ``dynamic-tool``, in assistant
    messages) the model's calls with their outputs or the user's approvals; every other type
    (``step-start``, ``source-*``, ``data-*``…) is ignored. Files and tool parts are checked by
    :meth:`MessageSerializer.validate`, which knows the role."""

    type = StrictCharField()
    text = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)
    #: ``file`` parts: a data URL (``data:<type>;base64,...``) or plain base64 in ``url`` or ``data``.
    mediaType = StrictCharField(required=False)
    url = StrictCharField(required=False, trim_whitespace=False)
    data = StrictCharField(required=False, trim_whitespace=False)
    filename = StrictCharField(required=False, allow_blank=True)
    #: ``reasoning`` parts: ``{"bedrock": {"signature": ...}}`` or ``{"bedrock": {"redactedData": ...}}``.
    providerMetadata = serializers.DictField(required=False)
    #: Tool parts (AI SDK ``UIToolInvocation``); the call's signature is in
    #: ``callProviderMetadata.bedrock.signature``, an approval's id in ``approval.id``.
    #: (Blank and null values are refused by :func:`_tool_call`, as ``invalid_tool_call``.)
    toolCallId = StrictCharField(required=False, allow_blank=True, max_length=256)
    toolName = StrictCharField(required=False, allow_blank=True, max_length=256)
    state = StrictCharField(required=False, allow_blank=True)
    input = serializers.JSONField(required=False, allow_null=True)
    output = serializers.JSONField(required=False, allow_null=True)
    errorText = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)
    approval = serializers.DictField(required=False, allow_null=True)
    callProviderMetadata = serializers.DictField(required=False, allow_null=True)
    #: A tool Bedrock ran itself (Nova's code interpreter): history, not a call of ours.
    providerExecuted = serializers.BooleanField(required=False, allow_null=True)

    class Meta:
        list_serializer_class = _ListSerializer


#: The name this serializer had when parts could only carry text.
TextPartSerializer = PartSerializer


class MessageListSerializer(_ListSerializer):
    """The ``messages`` list: its size limits are checked before any message is validated, so a
    huge body is refused in microseconds rather than after validating every message."""

    def to_internal_value(self, data: Any) -> list[dict[str, str]]:
        if isinstance(data, list):
            limit = stream_settings.MAX_MESSAGES
            if len(data) > limit:
                raise serializers.ValidationError(f"At most {limit} messages are allowed, got {len(data)}.")
            data = [from_ai_sdk_4(message) for message in data]
            parts = sum(len(m["parts"]) for m in data if isinstance(m, Mapping) and isinstance(m.get("parts"), list))
            if parts > stream_settings.MAX_PARTS:
                raise serializers.ValidationError(
                    f"The messages hold {parts} parts; the limit is {stream_settings.MAX_PARTS}."
                )
            _check_file_counts(data)
        result: list[dict[str, Any]] = super().to_internal_value(data)
        # An assistant message with tool calls is one assistant turn per model step (see
        # MessageSerializer.validate): the results of a step's calls go between it and the next.
        return [step for message in result for step in message.pop("steps", None) or (message,)]


#: AI SDK 4's tool invocation states, as the AI SDK 5+ tool part states they stand for.
AI_SDK_4_TOOL_STATES = {"partial-call": "input-streaming", "call": "input-available", "result": "output-available"}


def from_ai_sdk_4(message: Any) -> Any:
    """An AI SDK 4 ``useChat`` message in the AI SDK 5+ shape the rest of this module reads.

    AI SDK 4 keeps a call in ``toolInvocations`` (4.0+) and in ``tool-invocation`` parts (4.2+), its
    reasoning as ``{"reasoning", "details"}`` parts, a generated file's type in ``mimeType`` and a user's
    files in ``experimental_attachments``. Each becomes its 5+ counterpart: a ``dynamic-tool`` part
    whose signature (and ``providerExecuted``) is what the data protocol sent in the call's ``9:``
    part (an ``a:`` result marked ``isError`` is an ``output-error``), ``reasoning`` parts
    with their signatures, ``file`` parts. Anything else is returned as it came, to be validated as
    usual; a message in the 5+ shape is returned unchanged."""
    if not isinstance(message, Mapping):
        return message
    parts, invocations = message.get("parts"), message.get("toolInvocations")
    attachments = message.get("experimental_attachments")
    if invocations is None and attachments is None and not (isinstance(parts, list) and any(map(_is_v4_part, parts))):
        return message
    out = {key: value for key, value in message.items() if key not in ("toolInvocations", "experimental_attachments")}
    if isinstance(parts, list):
        out["parts"] = [converted for part in parts for converted in _from_v4_part(part)]
    elif invocations is not None:  # 4.0 and 4.1 send no parts: the calls by step, then the text
        if not isinstance(invocations, list):
            raise serializers.ValidationError({"toolInvocations": "Expected a list of tool invocations."})
        steps: dict[int, list[dict[str, Any]]] = {}
        for invocation in invocations:
            step = invocation.get("step") if isinstance(invocation, Mapping) else None
            steps.setdefault(step if isinstance(step, int) and not isinstance(step, bool) else 0, []).append(
                _v4_tool_part(invocation))
        out["parts"] = [part for step in sorted(steps) for part in ({"type": "step-start"}, *steps[step])]
        if isinstance(message.get("content"), str) and message["content"]:
            out["parts"] += [{"type": "step-start"}, {"type": "text", "text": message["content"]}]
    if attachments is not None:
        if not isinstance(attachments, list) or not all(isinstance(item, Mapping) for item in attachments):
            raise serializers.ValidationError({"experimental_attachments": "Expected a list of attachments."})
        files = [{"type": "file", "url": item.get("url"), "mediaType": item.get("contentType"),
                  "filename": item.get("name") or ""} for item in attachments]
        text = message.get("content")
        start: list[Any] = out["parts"] if isinstance(out.get("parts"), list) else (
            [{"type": "text", "text": text}] if isinstance(text, str) else [])
        out["parts"] = [*start, *({k: v for k, v in file.items() if v is not None} for file in files)]
    return out


def _is_v4_part(part: Any) -> bool:
    if not isinstance(part, Mapping):
        return False
    kind = part.get("type")
    return kind == "tool-invocation" or (kind == "reasoning" and "reasoning" in part) or (
        kind == "file" and "mimeType" in part)


def _from_v4_part(part: Any) -> list[Any]:
    if not _is_v4_part(part):
        return [part]
    kind = part["type"]
    if kind == "tool-invocation":
        return [_v4_tool_part(part.get("toolInvocation"))]
    if kind == "file":
        return [{**{key: value for key, value in part.items() if key != "mimeType"}, "mediaType": part["mimeType"]}]
    details = part.get("details")
    if not isinstance(details, list) or not details:
        return [{"type": "reasoning", "text": part["reasoning"]}]
    out: list[Any] = []
    for detail in details:  # {"type": "text", "text", "signature"?} or {"type": "redacted", "data"}
        if not isinstance(detail, Mapping):
            raise serializers.ValidationError({"parts": "A reasoning part's details must be objects."})
        if detail.get("type") == "redacted":
            redacted = {"bedrock": {"redactedData": detail.get("data")}}
            out.append({"type": "reasoning", "text": "", "providerMetadata": redacted})
        elif detail.get("signature") is not None:
            out.append({"type": "reasoning", "text": detail.get("text", ""),
                        "providerMetadata": {"bedrock": {"signature": detail["signature"]}}})
        else:
            out.append({"type": "reasoning", "text": detail.get("text", "")})
    return out


def _v4_tool_part(invocation: Any) -> dict[str, Any]:
    """An AI SDK 4 ``ToolInvocation`` as a ``dynamic-tool`` part (checked further by :func:`_tool_call`)."""
    if not isinstance(invocation, Mapping):
        raise _tool_error("a tool invocation must be an object.")
    name, call_id, state = invocation.get("toolName"), invocation.get("toolCallId"), invocation.get("state")
    if not (isinstance(name, str) and name and isinstance(call_id, str) and call_id):
        raise _tool_error("a tool invocation needs 'toolName' and 'toolCallId'.")
    if not isinstance(state, str) or state not in AI_SDK_4_TOOL_STATES:
        raise _tool_error(f"a tool invocation's state must be one of {', '.join(AI_SDK_4_TOOL_STATES)}.")
    part = {"type": "dynamic-tool", "toolName": name, "toolCallId": call_id, "state": AI_SDK_4_TOOL_STATES[state],
            "input": invocation.get("args")}
    result = invocation.get("result")
    if state == "result" and invocation.get("isError") is True:  # a failed run, as the data protocol marks it
        error = result.get("error") if isinstance(result, Mapping) else None
        part.update(state="output-error", errorText=error if isinstance(error, str) else json.dumps(result))
    elif state == "result":
        part["output"] = result
    if "signature" in invocation:
        part["callProviderMetadata"] = {"bedrock": {"signature": invocation["signature"]}}
    if invocation.get("providerExecuted") is True:
        part["providerExecuted"] = True
    return part


def _check_file_counts(messages: list[Any]) -> None:
    """``MAX_IMAGES`` and ``MAX_DOCUMENTS``, counted from what the file parts claim, before any is
    decoded (a claim that is false is refused when its part is checked)."""
    images = documents = 0
    for message in messages:
        if isinstance(message, Mapping) and message.get("role") == "user" and isinstance(message.get("parts"), list):
            for part in message["parts"]:
                if isinstance(part, Mapping) and part.get("type") == "file":
                    if claimed_kind(part.get("url", part.get("data")), part.get("mediaType")) == "image":
                        images += 1
                    else:
                        documents += 1
    for count, limit, kind in (
        (images, stream_settings.MAX_IMAGES, "images"),
        (documents, stream_settings.MAX_DOCUMENTS, "documents"),
    ):
        if count > limit:
            raise serializers.ValidationError(f"At most {limit} {kind} may be sent, got {count}.")


class MessageSerializer(_NamedErrors, serializers.Serializer):
    """``{"role", "content"}``, or the AI SDK 5+ shape ``{"role", "parts": [...]}``.

    The internal form is ``{"role", "content"}`` (the text, a string, as it always was), plus
    ``attachments`` (checked :class:`~django_bedrock_stream.media.Attachment` values) when a user
    message has files and ``reasoning`` (``{"text", "signature"}`` / ``{"redacted"}``) when an
    assistant message has reasoning the model signed. Files in other roles, and reasoning without a
    signature (which no model takes back), are ignored.

    An assistant message with tool parts becomes one assistant message per model step that called
    tools (split at its ``step-start`` parts), each with ``tool_calls``: the parts as sent (``id``,
    ``name``, ``state``, ``input``, and ``signature``, ``output``, ``error``, ``approval`` when
    present), to be verified against the view's tools (:func:`~.parsing.replay_tool_parts`)."""

    role = serializers.ChoiceField(choices=ROLES)
    content = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)
    parts = PartSerializer(many=True, required=False)

    class Meta:
        list_serializer_class = MessageListSerializer

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        role, parts = attrs["role"], attrs.get("parts") or []
        if "content" not in attrs:
            if "parts" not in attrs:
                raise serializers.ValidationError({"content": "Each message needs 'content' (a string) or 'parts'."})
            attrs["content"] = "".join(p.get("text", "") for p in parts if p["type"] == "text")
        message: dict[str, Any] = {"role": role, "content": attrs["content"]}
        if role == "user":
            attachments = [_attachment(part, i) for i, part in enumerate(parts) if part["type"] == "file"]
            if attachments:
                message["attachments"] = attachments
        elif role == "assistant":
            reasoning = [block for part in parts if part["type"] == "reasoning" and (block := _reasoning(part))]
            if reasoning:
                message["reasoning"] = reasoning
            if any(_is_tool_part(part) for part in parts):
                message["steps"] = _tool_steps(parts)
        return message


#: The states of an AI SDK tool part (``UIToolInvocation``; the approval states are AI SDK 6+).
TOOL_STATES = (
    "input-streaming",
    "input-available",
    "approval-requested",
    "approval-responded",
    "output-available",
    "output-error",
    "output-denied",
)


def _is_tool_part(part: Mapping[str, Any]) -> bool:
    kind: str = part["type"]
    return kind.startswith("tool-") or kind == "dynamic-tool"


def _tool_steps(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The assistant messages of a UI message with tool parts: a ``step-start`` after a step that
    called tools begins the next one (text-only steps stay joined, as in a message without tools)."""
    steps: list[dict[str, Any]] = []
    step: dict[str, Any] = {"role": "assistant", "content": ""}
    for part in parts:
        kind = part["type"]
        if kind == "step-start" and "tool_calls" in step:
            steps.append(step)
            step = {"role": "assistant", "content": ""}
        elif kind == "text":
            step["content"] += part.get("text", "")
        elif kind == "reasoning" and (block := _reasoning(part)):
            step.setdefault("reasoning", []).append(block)
        elif _is_tool_part(part):
            step.setdefault("tool_calls", []).append(_tool_call(part))
    steps.append(step)
    return steps


def _tool_call(part: Mapping[str, Any]) -> dict[str, Any]:
    """A tool part's fields, shape-checked (what they prove is checked by the view)."""
    kind, state = part["type"], part.get("state")
    name = part.get("toolName") if kind == "dynamic-tool" else kind[len("tool-") :]
    if not name:
        raise _tool_error("a dynamic-tool part needs 'toolName'.")
    if not part.get("toolCallId"):
        raise _tool_error(f"the {name!r} tool part needs 'toolCallId'.")
    if state not in TOOL_STATES:
        raise _tool_error(f"the {name!r} tool part's state must be one of {', '.join(TOOL_STATES)}.")
    for field in ("input", "output"):
        if json_depth(part.get(field)) > MAX_TOOL_JSON_DEPTH:
            limit = MAX_TOOL_JSON_DEPTH
            raise _tool_error(f"the {name!r} tool part's {field} is nested more than {limit} levels deep.")
    call: dict[str, Any] = {"id": part["toolCallId"], "name": name, "state": state, "input": part.get("input")}
    if part.get("providerExecuted") is True:
        call["provider_executed"] = True  # Bedrock ran it (a built-in tool): not a call of ours
    bedrock = (part.get("callProviderMetadata") or {}).get("bedrock")
    signature = bedrock.get("signature") if isinstance(bedrock, Mapping) else None
    if signature is not None:
        if not isinstance(signature, str):
            raise _tool_error("a tool call's signature must be text.")
        call["signature"] = signature
    if state == "output-available":
        call["output"] = part.get("output")  # a tool that returned undefined: no "output" in the JSON
    elif state == "output-error":
        if "errorText" not in part:
            raise _tool_error(f"the {name!r} tool part in state output-error needs 'errorText'.")
        call["error"] = part["errorText"]
    approval = part.get("approval")
    if approval is not None or state in ("approval-requested", "approval-responded", "output-denied"):
        call["approval"] = _approval(approval, state, name)
    return call


def _approval(approval: Any, state: str, name: str) -> dict[str, Any]:
    if not isinstance(approval, Mapping) or not isinstance(approval.get("id"), str) or not approval["id"]:
        raise _tool_error(f"the {name!r} tool part needs 'approval' with an 'id'.")
    approved, reason = approval.get("approved"), approval.get("reason")
    if state in ("approval-responded", "output-denied") and not isinstance(approved, bool):
        raise _tool_error(f"the {name!r} tool part's approval needs 'approved' (true or false).")
    if reason is not None and not (isinstance(reason, str) and _plain_text(reason)):
        raise _tool_error("an approval's reason must be text.")
    return {"id": approval["id"], "approved": approved, "reason": reason or ""}


def _tool_error(message: str) -> serializers.ValidationError:
    return serializers.ValidationError({"parts": f"Invalid tool part: {message}"}, code="invalid_tool_call")


def _attachment(part: Mapping[str, Any], index: int) -> Any:
    source = part.get("url", part.get("data"))
    label = f"part {index}" + (f" ({part['filename']})" if part.get("filename") else "")
    if source is None:
        raise serializers.ValidationError({"parts": f"{label}: a file part needs 'url' (a data URL) or base64 'data'."})
    try:
        return read_file(
            source,
            part.get("mediaType"),
            part.get("filename") or None,
            max_image_bytes=stream_settings.MAX_IMAGE_BYTES,
            max_document_bytes=stream_settings.MAX_DOCUMENT_BYTES,
        )
    except FileRefused as err:
        raise serializers.ValidationError({"parts": f"{label}: {err}"}, code=err.code) from None


def _reasoning(part: Mapping[str, Any]) -> dict[str, str] | None:
    """A reasoning part as the model needs it back, or ``None`` when it has no signature."""
    bedrock = (part.get("providerMetadata") or {}).get("bedrock")
    if not isinstance(bedrock, Mapping):
        return None
    redacted, signature = bedrock.get("redactedData"), bedrock.get("signature")
    for value in (redacted, signature):
        if value is not None and not (isinstance(value, str) and _plain_text(value)):
            raise serializers.ValidationError({"parts": "A reasoning part's signature and redactedData must be text."})
    if redacted:
        return {"redacted": redacted}
    if signature:
        return {"text": part.get("text", ""), "signature": signature}
    return None


def _message_chars(message: Mapping[str, Any]) -> int:
    chars = len(message["content"]) + sum(len(block.get("text", "")) for block in message.get("reasoning", ()))
    for call in message.get("tool_calls", ()):  # what the model reads again: inputs, outputs, errors
        chars += sum(len(json.dumps(call.get(key), ensure_ascii=False)) for key in ("input", "output", "error"))
    return chars


#: The request fields a view may allowlist (``request_options``), and how each is validated.
_OPTION_FIELDS: dict[str, Any] = {
    "temperature": lambda: StrictFloatField(required=False, min_value=0, max_value=1),
    "top_p": lambda: StrictFloatField(required=False, min_value=0, max_value=1),
    "stop_sequences": lambda: serializers.ListField(
        child=StrictCharField(max_length=256, trim_whitespace=False), required=False, max_length=16
    ),
    "reasoning_budget": lambda: serializers.IntegerField(required=False, min_value=1024),
    "reasoning_effort": lambda: serializers.ChoiceField(choices=REASONING_EFFORTS, required=False),
    "latency": lambda: serializers.ChoiceField(choices=LATENCIES, required=False),
    "service_tier": lambda: serializers.ChoiceField(choices=SERVICE_TIERS, required=False),
}


class StrictFloatField(serializers.FloatField):
    """A FloatField that refuses strings and booleans instead of converting them."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        return super().to_internal_value(data)


class ChatRequestSerializer(_NamedErrors, serializers.Serializer):
    """The POST body of every stream view. Unknown keys (``id``, ``createdAt``, ``data``…) are ignored.

    Needs ``context={"allowed_models": [...], "max_tokens_cap": int}``; ``context["request_options"]``
    (the view's allowlist) adds those option fields (``temperature``…), which are otherwise ignored.
    """

    messages = MessageSerializer(many=True, allow_empty=False)
    model = StrictCharField(required=False)
    max_tokens = serializers.IntegerField(required=False, min_value=1)

    def get_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = super().get_fields()
        for name in self.context.get("request_options") or ():
            fields[name] = _OPTION_FIELDS[name]()
        return fields

    def validate_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        chars = sum(_message_chars(m) for m in messages)
        if chars > stream_settings.MAX_INPUT_CHARS:
            raise serializers.ValidationError(
                f"The messages hold {chars} characters; the limit is {stream_settings.MAX_INPUT_CHARS}."
            )
        if not any(m["role"] == "user" and (m["content"].strip() or m.get("attachments")) for m in messages):
            raise serializers.ValidationError("At least one non-empty user message is required.")
        return messages

    def validate_reasoning_budget(self, value: int) -> int:
        cap = self.context["max_tokens_cap"]
        if value > cap:
            raise serializers.ValidationError(f"reasoning_budget may be at most {cap}.")
        return value

    def validate_model(self, model: str) -> str:
        allowed = self.context["allowed_models"]
        if model not in allowed:
            listed = ", ".join(public_model_id(m) for m in allowed)
            raise serializers.ValidationError(f"Model {model!r} is not allowed here. Allowed: {listed}.")
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


#: The answer to a refused file, by :class:`~django_bedrock_stream.media.FileRefused` code: a type
#: Bedrock does not take (or content that is not what it claims) is 400 ``unsupported_media``, a
#: file too large 413 ``payload_too_large``; anything else is 400 ``invalid_request``.
FILE_REJECTIONS: dict[str, tuple[int, str]] = {
    "unsupported_media": (400, "unsupported_media"),
    "file_too_large": (413, "payload_too_large"),
}


def rejection_for(errors: Any) -> tuple[int, str]:
    """The status and error type of a refused request, from its first error's code (a malformed
    tool part is 400 ``invalid_tool_call``, like a tool part the view refuses)."""
    code = _first_code(errors) or ""
    if code == "invalid_tool_call":
        return 400, code
    return FILE_REJECTIONS.get(code, (400, "invalid_request"))


def stored_messages(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The messages as the ``Completion`` row stores them (each file replaced by its metadata: name,
    media type, size, sha256, never its bytes), and the metadata of every file, in order."""
    stored: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    for message in messages:
        message = dict(message)
        if message.get("attachments"):
            message["attachments"] = [attachment.metadata() for attachment in message["attachments"]]
            files += message["attachments"]
        stored.append(message)
    return stored, files


def _first_code(errors: Any) -> str | None:
    """The code of the first error, in the order the view's message names it."""
    if isinstance(errors, dict):
        errors = [value for value in errors.values() if value]
    if isinstance(errors, list):
        for value in errors:
            if value:
                return _first_code(value)
        return None
    return getattr(errors, "code", None)


def fast_validated_data(
    data: Any, allowed_models: Any, max_tokens_cap: int, request_options: Collection[str] = ()
) -> dict[str, Any] | None:
    """What ``ChatRequestSerializer(data=data, context=...).validated_data`` would be, for the plain,
    common request only; ``None`` for anything else, and the caller then runs the serializer, which
    stays the one definition of what is valid and the only source of error messages.

    It accepts only exact JSON types (``dict``, ``list``, ``str``, ``int``), messages with ``role``
    and ``content`` and none of :data:`_FAST_MESSAGE_KEYS`, no field of the view's ``request_options``, and values every
    field and ``validate_*`` method passes as they are (no whitespace to trim, no NUL or surrogate
    characters). ``tests/test_performance_paths.py``
    checks, with generated inputs, that it never accepts what the serializer rejects and that it
    returns equal data of the same types.
    """
    if type(data) is not dict or any(name in data for name in request_options):
        return None
    messages = data.get("messages")
    if type(messages) is not list or not messages or len(messages) > stream_settings.MAX_MESSAGES:
        return None
    validated: list[dict[str, str]] = []
    chars = 0
    has_user_text = False
    for message in messages:
        if type(message) is not dict or not _FAST_MESSAGE_KEYS.isdisjoint(message):
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


#: Message fields that carry more than text (AI SDK 5+ parts, AI SDK 4 tool calls and files): such a
#: message takes the serializer's path.
_FAST_MESSAGE_KEYS = frozenset({"parts", "toolInvocations", "experimental_attachments"})


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
