"""One exception root that carries the upstream error, and the table that maps Bedrock errors to HTTP.

Both botocore's ``ClientError`` (before the stream) and ``EventStreamError`` (inside it) are wrapped
with ``raise ... from err`` so the original response stays reachable through ``__cause__`` and
``.upstream``.

What clients see (``message``) is a fixed text per error type; the upstream text (``detail``) only goes
to the server log: botocore's and aiohttp's messages carry endpoint URLs, ``host:port`` and library
reprs, and an AccessDenied message carries the caller's IAM ARN and account id.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ImproperlyConfigured

#: Bedrock error code -> (HTTP status we answer with, error "type" in our JSON body).
#: Codes are matched case-insensitively because in-stream exceptions use lowerCamelCase
#: (``throttlingException``) while HTTP errors use PascalCase (``ThrottlingException``).
ERROR_STATUS: dict[str, tuple[int, str]] = {
    "validationexception": (400, "invalid_request"),
    "throttlingexception": (429, "throttled"),
    "servicequotaexceededexception": (429, "throttled"),
    "accessdeniedexception": (502, "upstream_access_denied"),
    "unrecognizedclientexception": (502, "upstream_access_denied"),  # credentials refused
    "missingauthenticationtokenexception": (502, "upstream_access_denied"),
    "resourcenotfoundexception": (502, "upstream_model_not_found"),
    "modelerrorexception": (502, "upstream_model_error"),
    "modelstreamerrorexception": (502, "upstream_model_error"),
    "internalserverexception": (502, "upstream_error"),
    "serviceunavailableexception": (503, "upstream_unavailable"),
    "modelnotreadyexception": (503, "upstream_unavailable"),
    "modeltimeoutexception": (504, "upstream_timeout"),
    "readtimeout": (504, "upstream_timeout"),
}

#: Error "type" -> the message clients get (the JSON body, the stream's error part, ``Completion.error``).
SAFE_MESSAGES: dict[str, str] = {
    "invalid_request": "The model rejected the request as invalid.",
    "throttled": "Too many requests to the model; try again shortly.",
    "upstream_access_denied": "This server is not allowed to use the model.",
    "upstream_model_not_found": "The model was not found.",
    "upstream_model_error": "The model failed while processing the request.",
    "upstream_error": "The model service failed or could not be reached.",
    "upstream_unavailable": "The model service is unavailable; try again shortly.",
    "upstream_timeout": "The model took too long to answer.",
}


class BedrockStreamError(Exception):
    """Root of every error this app raises about a Bedrock call.

    ``message`` is safe to show to clients, ``detail`` is the full upstream text for the server log
    (defaults to ``message``). ``code`` is Bedrock's error code (or a stable name such as
    ``ReadTimeout`` or a botocore/aiohttp error class name), ``status_code`` the HTTP status the views
    answer with, ``upstream`` the botocore exception (also chained as ``__cause__``).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "InternalServerException",
        model_id: str | None = None,
        upstream: BaseException | None = None,
        retry_after: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = message if detail is None else detail
        self.code = code
        self.model_id = model_id
        self.upstream = upstream
        self.retry_after = retry_after
        self.status_code, self.error_type = ERROR_STATUS.get(code.lower(), (502, "upstream_error"))

    def as_json(self) -> dict[str, Any]:
        """The public error body: the safe ``message``, never ``detail``."""
        return {"error": {"type": self.error_type, "code": self.code, "message": self.message}}


class BedrockRequestError(BedrockStreamError):
    """Bedrock refused the call before the first byte; nothing was streamed."""


class BedrockStreamInterrupted(BedrockStreamError):
    """The stream broke after it started (in-stream exception, read timeout, connection loss)."""


class StorageUnavailable(BedrockStreamError):
    """The start of the stream could not be stored, so Bedrock was not called (nothing billed)."""

    def __init__(self, *, model_id: str | None = None) -> None:
        super().__init__(
            "The conversation cannot be stored right now, so it was not sent to the model. Try again shortly.",
            code="StorageUnavailable",
            model_id=model_id,
            retry_after=1,
        )
        self.status_code, self.error_type = 503, "storage_unavailable"


class ResponseDiscarded(BedrockStreamError):
    """The streaming response was never read: middleware replaced it, or the server did not start
    reading it in time. The upstream stream is closed and the row settles as ``cancelled``."""

    def __init__(self, *, model_id: str | None = None) -> None:
        super().__init__(
            "The response was never sent to the client (replaced by a middleware, or not read in time).",
            code="ResponseDiscarded",
            model_id=model_id,
        )


class MissingExtraError(ImproperlyConfigured):
    """An optional dependency is needed for the configured behaviour."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install \"django-bedrock-stream[{extra}]\""
        )


def wrap_botocore_error(err: BaseException, *, model_id: str | None, started: bool) -> BedrockStreamError:
    """Translate a botocore/urllib3/aiohttp error into our hierarchy (the caller raises ``from err``).

    The upstream text becomes ``detail``; ``message`` is :func:`safe_message`.
    """
    cls = BedrockStreamInterrupted if started else BedrockRequestError
    response = getattr(err, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response.get("Error") or {}
        code = str(error.get("Code") or "")
        code = code if _CODE.match(code) else "UnknownError"
        upstream_message = str(error.get("Message") or response.get("message") or "")
        headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        return cls(
            safe_message(code, upstream_message),
            code=code,
            model_id=model_id,
            upstream=err,
            retry_after=_retry_after(headers.get("retry-after"), code),
            detail=f"{code}: {upstream_message}",
        )
    kind = type(err)
    code = "ReadTimeout" if "timeout" in kind.__name__.lower() else kind.__name__
    return cls(
        safe_message(code, ""),
        code=code,
        model_id=model_id,
        upstream=err,
        detail=f"{kind.__module__}.{kind.__qualname__}: {err}",
    )


#: A Bedrock error code or a class name; anything else (which Bedrock never sends) is not echoed.
_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")
#: What a validation message must not echo: ARNs (account id, user or role), URLs, reprs, account
#: ids, IP addresses and host:port.
_UNSAFE = re.compile(
    r"arn:[^\s\"'`,;()]+|[a-z][a-z0-9+.-]*://[^\s\"']+|<[^<>]*>|\b\d{12}\b"
    r"|\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?|\b[\w.-]+:\d{2,5}\b",
    re.IGNORECASE,
)
_REDACTED = "[redacted]"
_MAX_MESSAGE = 300


def safe_message(code: str, upstream_message: str) -> str:
    """The client-facing text for an upstream error: the fixed text of its type, except that a
    ``ValidationException`` keeps Bedrock's message (it says what to fix in the request) with ARNs,
    account ids, URLs, hosts and reprs redacted, and cut to 300 characters."""
    error_type = ERROR_STATUS.get(code.lower(), (502, "upstream_error"))[1]
    if error_type == "invalid_request" and upstream_message:
        scrubbed = _UNSAFE.sub(_REDACTED, " ".join(upstream_message.split()))
        if scrubbed.strip(" .") != _REDACTED:
            return scrubbed if len(scrubbed) <= _MAX_MESSAGE else scrubbed[: _MAX_MESSAGE - 1] + "…"
    return SAFE_MESSAGES[error_type]


def _retry_after(header: str | None, code: str) -> int | None:
    if header and header.isdigit():
        return int(header)
    return 1 if ERROR_STATUS.get(code.lower(), (0, ""))[0] in (429, 503) else None
