"""Request parsing: from an ``HttpRequest`` to a validated chat request, or a :class:`RequestRejected`.

I/O-free apart from reading the body Django already has; every refusal is a JSON answer with a
status and a stable ``type``, and nothing is sent upstream.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import caches
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse

from .conf import stream_settings
from .parts import ToolCall, ToolDenied, ToolResult
from .serializers import BodyTooComplex, ChatRequestSerializer, fast_validated_data, load_json_body, rejection_for
from .tools import (
    Tool,
    ToolCallRefused,
    ToolOutputError,
    client_tool_result,
    denied_result,
    tools_by_name,
    verify_call,
)

__all__ = [
    "PREPARE_ON_LOOP_MAX_BYTES",
    "RequestRejected",
    "ToolReplay",
    "continued_message_id",
    "read_request_data",
    "replay_tool_parts",
    "request_size",
    "validate_chat_request",
]


class RequestRejected(Exception):
    """Raised by the validation hooks; turned into a JSON error response."""

    def __init__(
        self, status: int, error_type: str, message: str, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message, self.details = status, error_type, message, details
        self.headers = headers or {}

    def response(self) -> JsonResponse:
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return JsonResponse({"error": error}, status=self.status, headers=self.headers)


def read_request_data(request: HttpRequest) -> dict[str, Any]:
    """The JSON body as a dict, or for GET the query string's fields."""
    if request.method == "GET":
        return _query_data(request)
    try:
        raw = request.body
    except RequestDataTooBig:
        raise RequestRejected(413, "payload_too_large", "The request body is too large.") from None
    try:
        data = load_json_body(raw or b"null")
    except BodyTooComplex as err:
        raise RequestRejected(400, "invalid_request", str(err)) from None
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly nested JSON
        raise RequestRejected(400, "invalid_json", "The request body must be JSON.") from None
    if not isinstance(data, dict):
        raise RequestRejected(400, "invalid_request", "The request body must be a JSON object.")
    return data


def validate_chat_request(
    data: Any, allowed_models: Sequence[str], max_tokens_cap: int, request_options: Sequence[str] = ()
) -> dict[str, Any]:
    """The validated request (``messages``, ``model``, ``max_tokens``, the allowlisted
    ``request_options``…), or :class:`RequestRejected` (a refused file: 400 ``unsupported_media`` or
    413 ``payload_too_large``).

    The common request is checked without building DRF's field tree; anything else (and every
    error) goes through the serializer.
    """
    validated = fast_validated_data(data, allowed_models, max_tokens_cap, request_options)
    if validated is not None:
        return validated
    context = {"allowed_models": allowed_models, "max_tokens_cap": max_tokens_cap, "request_options": request_options}
    serializer = ChatRequestSerializer(data=data, context=context)
    if not serializer.is_valid():
        status, error_type = rejection_for(serializer.errors)
        details = serializer.errors if status == 400 else None  # DRF turns details into a 400
        raise RequestRejected(status, error_type, _first_error(serializer.errors), details)
    return dict(serializer.validated_data)


def continued_message_id(data: Mapping[str, Any]) -> str | None:
    """The id of the assistant message a stream continues: the last message's, when it is the
    assistant's. The AI SDK posts the conversation back after the browser answered tool calls and
    appends the new stream to that message only when the ``start`` chunk carries its id (with
    another id it shows a second copy of the message, which would then be posted back too)."""
    messages = data.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if isinstance(last, Mapping) and last.get("role") == "assistant":
        message_id = last.get("id")
        if isinstance(message_id, str) and 0 < len(message_id) <= 256 and message_id.isprintable():
            return message_id
    return None


def _query_data(request: HttpRequest) -> dict[str, Any]:
    """``?prompt=text`` or ``?messages=<json list>``, plus optional ``model`` and ``max_tokens``."""
    query = request.GET
    data: dict[str, Any] = {}
    if "messages" in query:
        try:
            data["messages"] = json.loads(query["messages"])
        except (ValueError, RecursionError):
            raise RequestRejected(400, "invalid_json", "The messages parameter must be JSON.") from None
    elif "prompt" in query:
        data["messages"] = [{"role": "user", "content": query["prompt"]}]
    if "model" in query:
        data["model"] = query["model"]
    if "max_tokens" in query:
        data["max_tokens"] = query["max_tokens"]
    return data


#: Bodies (or GET query strings) larger than this are validated on the request's thread, not on
#: the event loop.
PREPARE_ON_LOOP_MAX_BYTES = 64 * 1024


def request_size(request: HttpRequest) -> int:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return length + len(request.META.get("QUERY_STRING", ""))


def _first_error(errors: Any, path: str = "") -> str:
    if isinstance(errors, dict):
        for key, value in errors.items():
            if value:
                return _first_error(value, f"{path}.{key}" if path else str(key))
    if isinstance(errors, list):
        for index, value in enumerate(errors):
            if value:
                nested = isinstance(value, (dict, list))
                return _first_error(value, f"{path}[{index}]" if nested else path)
    return f"{path}: {errors}" if path else str(errors)


# -- tool parts sent back ------------------------------------------------------------------------------

#: Tool part states without an answer yet: the call is left out of the conversation (a call without
#: a result cannot be sent to the model), as the AI SDK's ``ignoreIncompleteToolCalls`` does.
UNANSWERED = ("input-streaming", "input-available", "approval-requested")


@dataclass
class ToolReplay:
    """The conversation with its tool parts checked and turned into ``tool_calls`` / ``tool_results``
    (see :mod:`~.prompts`), and what this request must do before the model is called."""

    messages: list[dict[str, Any]]
    #: Calls the user just approved: run them now, before the model is called.
    approved: list[ToolCall] = field(default_factory=list)
    #: Their result entries in ``messages`` (``{"id", "name", "approved": True}``, the body built
    #: from them holding an empty result), by call id: the view fills both in once they ran.
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Calls the user just denied: sent first in the stream, so the browser shows them denied.
    denied: list[ToolDenied] = field(default_factory=list)
    #: The cache keys of the approvals this request marked as acted on (see :func:`release_approvals`).
    used_approvals: list[str] = field(default_factory=list)


def replay_tool_parts(
    messages: Sequence[dict[str, Any]], tools: Sequence[Tool], request: HttpRequest | None
) -> ToolReplay:
    """Check every tool call the browser sent back (:class:`RequestRejected` 400 ``invalid_tool_call``
    otherwise) and put each assistant turn's calls before a user turn with their results.

    A call that is used must name a tool of this view and carry the signature this site gave it
    (:func:`~.tools.verify_call`: this user, this tool, this input, this call id); an approval
    answer, its signed approval id. A client-side tool's output must match its ``output_schema``.
    Then: an output or error is the call's result; an approval answer in the conversation's last
    message approves (the call runs before the model is called) or denies (the model is told); an
    earlier denial is history. Left out: calls without an answer, approval answers in earlier
    messages (they were never acted on), unsigned errors (the model's own malformed calls or
    tools it made up, which the view never signs) and tools Bedrock ran itself (``providerExecuted``).
    """
    if not any(message.get("tool_calls") for message in messages):
        return ToolReplay(list(messages))
    offered = tools_by_name(tools)
    replay = ToolReplay([])
    try:
        _replay_into(replay, messages, offered, request)
    except RequestRejected:
        release_approvals(replay)  # another part of the request is refused: nothing ran
        raise
    return replay


def _replay_into(
    replay: ToolReplay, messages: Sequence[dict[str, Any]], offered: Mapping[str, Tool], request: HttpRequest | None
) -> None:
    seen: set[str] = set()
    for position, message in enumerate(messages):
        entries = message.get("tool_calls")
        if not entries:
            replay.messages.append(message)
            continue
        last = position == len(messages) - 1
        calls: list[ToolCall] = []
        results: list[dict[str, Any]] = []
        for entry in entries:
            if entry["id"] in seen:
                raise _refused(f"The tool call {entry['id']!r} appears twice.")
            seen.add(entry["id"])
            state = entry["state"]
            if state in UNANSWERED or (state == "approval-responded" and not last):
                continue
            if (state == "output-error" and "signature" not in entry) or entry.get("provider_executed"):
                continue  # the model's own malformed calls, and tools Bedrock ran itself: not ours to replay
            call, result = _replayed(entry, offered, request, replay)
            calls.append(call)
            results.append(result)
        turn = {key: value for key, value in message.items() if key != "tool_calls"}
        if calls:
            turn["tool_calls"] = [{"id": call.id, "name": call.name, "input": call.input} for call in calls]
        replay.messages.append(turn)
        if results:
            replay.messages.append({"role": "user", "content": "", "tool_results": results})


def _replayed(
    entry: Mapping[str, Any], offered: Mapping[str, Tool], request: HttpRequest | None, replay: ToolReplay
) -> tuple[ToolCall, dict[str, Any]]:
    """One answered call, checked: the call and its result entry."""
    name, call_id, state = entry["name"], entry["id"], entry["state"]
    tool = offered.get(name)
    if tool is None:
        raise _refused(f"The tool {name!r} is not offered here.")
    call = ToolCall(call_id, name, entry["input"])
    approval: Mapping[str, Any] | None = entry.get("approval")
    runs_now = state == "approval-responded" and approval is not None and approval["approved"] is True
    signature: Any = entry.get("signature")  # verify_call refuses a missing one
    try:
        # The signature says who, what and which call; its age matters only when a tool runs now,
        # so a conversation stays usable after TOOL_CALL_MAX_AGE.
        verify_call(signature, name=name, input=call.input, request=request, call_id=call_id, max_age=None)
        if approval is not None:
            extra = {} if runs_now else {"max_age": None}
            verify_call(
                approval["id"], name=name, input=call.input, request=request, purpose="approval",
                call_id=call_id, **extra,
            )
    except ToolCallRefused as err:
        # Refused here rather than raised, so the answer is this API's JSON; logged as Django
        # logs a SuspiciousOperation.
        logging.getLogger(f"django.security.{type(err).__name__}").error(
            str(err), extra={"status_code": 400, "request": request}
        )
        raise _refused(f"{err} (tool {name!r}, call {call_id!r})") from None
    if runs_now:
        if tool.client_side:
            raise _refused(f"The tool {name!r} runs in the browser: it takes an output, not an approval.")
        if not _first_use(approval["id"], replay):  # type: ignore[index]
            raise _refused(f"This approval was already acted on (tool {name!r}, call {call_id!r}).")
        replay.approved.append(call)
        pending = {"id": call_id, "name": name, "approved": True}  # the output once it ran (see ToolReplay)
        replay.pending[call_id] = pending
        return call, pending
    if approval is not None and state in ("approval-responded", "output-denied"):
        if state == "approval-responded":
            replay.denied.append(ToolDenied(call_id))
        return call, result_entry(denied_result(call, approval["reason"]))
    try:
        if state == "output-error":
            result = client_tool_result(tool, call_id, error=entry["error"])
        else:
            result = client_tool_result(tool, call_id, output=entry["output"])
    except ToolOutputError as err:
        raise _refused(str(err)) from None
    return call, result_entry(result)


def _first_use(approval_id: str, replay: ToolReplay) -> bool:
    """Mark an approval as acted on; False if it already was. One approval runs its call once (a double
    submit or a replay would run a side effect again); kept ``TOOL_CALL_MAX_AGE`` seconds in Django's
    default cache, which must be shared by the workers (Redis, Memcached, the database) for this to
    hold across them."""
    key = "bedrock_stream.approval." + hashlib.sha256(approval_id.encode("utf-8", "surrogatepass")).hexdigest()
    if caches["default"].add(key, 1, timeout=stream_settings.TOOL_CALL_MAX_AGE):
        replay.used_approvals.append(key)
        return True
    return False


def release_approvals(replay: ToolReplay) -> None:
    """Give back the approvals this request marked as acted on, when it is refused before their calls
    ran (another bad part, a 429 budget, a 503): the user's approval can be sent again."""
    if replay.used_approvals:
        caches["default"].delete_many(replay.used_approvals)
        replay.used_approvals.clear()


def result_entry(result: ToolResult) -> dict[str, Any]:
    """A result as a message's ``tool_results`` entry (see :mod:`~.prompts`)."""
    if result.error:
        return {"id": result.id, "name": result.name, "error": result.error}
    return {"id": result.id, "name": result.name, "output": result.output}


def _refused(message: str) -> RequestRejected:
    return RequestRejected(400, "invalid_tool_call", message)
