"""One exception root that carries the upstream error, and the table that maps Bedrock errors to HTTP.

Both botocore's ``ClientError`` (before the stream) and ``EventStreamError`` (inside it) are wrapped
with ``raise ... from err`` so the original response stays reachable through ``__cause__`` and
``.upstream``.
"""

from __future__ import annotations

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
    "resourcenotfoundexception": (502, "upstream_model_not_found"),
    "modelerrorexception": (502, "upstream_model_error"),
    "modelstreamerrorexception": (502, "upstream_model_error"),
    "internalserverexception": (502, "upstream_error"),
    "serviceunavailableexception": (503, "upstream_unavailable"),
    "modelnotreadyexception": (503, "upstream_unavailable"),
    "modeltimeoutexception": (504, "upstream_timeout"),
    "readtimeout": (504, "upstream_timeout"),
}


class BedrockStreamError(Exception):
    """Root of every error this app raises about a Bedrock call.

    ``code`` is Bedrock's error code (or a botocore error class name), ``status_code`` the HTTP status
    the views answer with, ``upstream`` the botocore exception (also chained as ``__cause__``).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "InternalServerException",
        model_id: str | None = None,
        upstream: BaseException | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.model_id = model_id
        self.upstream = upstream
        self.retry_after = retry_after
        self.status_code, self.error_type = ERROR_STATUS.get(code.lower(), (502, "upstream_error"))

    def as_json(self) -> dict[str, Any]:
        """The public error body: never credentials, never the upstream request."""
        return {"error": {"type": self.error_type, "code": self.code, "message": self.message}}


class BedrockRequestError(BedrockStreamError):
    """Bedrock refused the call before the first byte; nothing was streamed."""


class BedrockStreamInterrupted(BedrockStreamError):
    """The stream broke after it started (in-stream exception, read timeout, connection loss)."""


class MissingExtraError(ImproperlyConfigured):
    """An optional dependency is needed for the configured behaviour."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install \"django-bedrock-stream[{extra}]\""
        )


def wrap_botocore_error(err: BaseException, *, model_id: str | None, started: bool) -> BedrockStreamError:
    """Translate a botocore/urllib3/aiohttp error into our hierarchy (the caller raises ``from err``)."""
    cls = BedrockStreamInterrupted if started else BedrockRequestError
    response = getattr(err, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response.get("Error") or {}
        code = str(error.get("Code") or type(err).__name__)
        message = str(error.get("Message") or response.get("message") or code)
        headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        retry_after = _retry_after(headers.get("retry-after"), code)
        return cls(message, code=code, model_id=model_id, upstream=err, retry_after=retry_after)
    name = type(err).__name__
    code = "ReadTimeout" if "timeout" in name.lower() else name
    return cls(f"{name}: {err}", code=code, model_id=model_id, upstream=err)


def _retry_after(header: str | None, code: str) -> int | None:
    if header and header.isdigit():
        return int(header)
    return 1 if ERROR_STATUS.get(code.lower(), (0, ""))[0] in (429, 503) else None
