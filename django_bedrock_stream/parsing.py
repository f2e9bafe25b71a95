"""Request parsing: from an ``HttpRequest`` to a validated chat request, or a :class:`RequestRejected`.

I/O-free apart from reading the body Django already has; every refusal is a JSON answer with a
status and a stable ``type``, and nothing is sent upstream.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse

from .serializers import BodyTooComplex, ChatRequestSerializer, fast_validated_data, load_json_body, rejection_for

__all__ = ["PREPARE_ON_LOOP_MAX_BYTES", "RequestRejected", "read_request_data", "request_size", "validate_chat_request"]


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
