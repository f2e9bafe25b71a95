"""What errors reveal: clients get a stable type and a safe message, the server log gets the detail.

Real failures from the emulator (read timeouts, an unreachable endpoint, a dropped connection, a bad
CRC, AWS errors whose message carries an IAM ARN, an account id and URLs) go through the views under
WSGI and ASGI, before the first byte (JSON error body) and mid-stream (the protocol's error part).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client, override_settings
from django.urls import reverse

from django_bedrock_stream import signals
from django_bedrock_stream.exceptions import (
    SAFE_MESSAGES,
    BedrockRequestError,
    BedrockStreamError,
    BedrockStreamInterrupted,
    safe_message,
    wrap_botocore_error,
)
from django_bedrock_stream.models import Completion

ACCOUNT = "123456789012"
DENIED = (
    f"User: arn:aws:iam::{ACCOUNT}:user/dev-ops is not authorized to perform: "
    f"bedrock:InvokeModelWithResponseStream on resource: arn:aws:bedrock:us-east-1::foundation-model/x "
    "because no identity-based policy allows the bedrock:InvokeModelWithResponseStream action"
)
INVALID = (
    f"Invocation of model ID arn:aws:bedrock:us-east-1:{ACCOUNT}:inference-profile/us.x with on-demand "
    "throughput isn't supported; see https://docs.aws.amazon.com/bedrock/ (from 10.0.0.7:8443)"
)
INVALID_SAFE = (
    "Invocation of model ID [redacted] with on-demand throughput isn't supported; see [redacted] "
    "(from [redacted])"
)
ONE_ATTEMPT = {"retries": {"mode": "standard", "total_max_attempts": 1}}
TIMEOUT = {**ONE_ATTEMPT, "read_timeout": 1}


def assert_safe(text: str, emulator_url: str) -> None:
    """Nothing about the server's network, AWS identity or libraries in ``text``."""
    port = emulator_url.rsplit(":", 1)[1]
    for needle in ("127.0.0.1", "localhost", "http://", "https://", "arn:", f":{port}", ACCOUNT, "10.0.0.7"):
        assert needle not in text, (needle, text)
    assert not re.search(r"\b\d{12}\b", text), text  # an account id
    assert not re.search(r"<\w", text), text  # a repr
    assert not re.search(r"\b(?:botocore|urllib3|aiohttp|aiobotocore|builtins)\.", text), text  # a class path


# -- unit: wrapping botocore errors -------------------------------------------------------------


def client_error(code: str, message: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": message}}, "InvokeModelWithResponseStream")


def test_access_denied_with_an_arn_gets_a_fixed_message_and_keeps_the_detail() -> None:
    error = wrap_botocore_error(client_error("AccessDeniedException", DENIED), model_id="m", started=False)
    assert isinstance(error, BedrockRequestError)
    assert (error.code, error.status_code, error.error_type) == ("AccessDeniedException", 502, "upstream_access_denied")
    assert error.message == str(error) == SAFE_MESSAGES["upstream_access_denied"]
    assert error.detail == f"AccessDeniedException: {DENIED}"
    assert error.as_json() == {
        "error": {"type": "upstream_access_denied", "code": "AccessDeniedException", "message": error.message}
    }


@pytest.mark.parametrize("code", ["UnrecognizedClientException", "MissingAuthenticationTokenException"])
def test_refused_credentials_are_access_denied(code: str) -> None:
    error = wrap_botocore_error(client_error(code, "The security token included in the request is invalid."), model_id="m", started=False)
    assert (error.code, error.status_code, error.error_type) == (code, 502, "upstream_access_denied")
    assert error.message == SAFE_MESSAGES["upstream_access_denied"]


def test_a_validation_message_is_kept_with_arns_urls_and_hosts_redacted() -> None:
    error = wrap_botocore_error(client_error("ValidationException", INVALID), model_id="m", started=False)
    assert (error.status_code, error.message) == (400, INVALID_SAFE)
    assert error.detail == f"ValidationException: {INVALID}"
    # In-stream codes are lowerCamelCase; the same policy applies.
    assert safe_message("validationException", "max_tokens: 5000 > 4096, the maximum") == (
        "max_tokens: 5000 > 4096, the maximum"
    )


@pytest.mark.parametrize(
    "upstream",
    [
        f"account {ACCOUNT}",
        "<TransferEncodingError: 400, message='Not enough data'>",
        "AWSHTTPConnectionPool(host=bedrock.internal:8240)",
        "x" * 400,
        "",
    ],
)
def test_a_validation_message_that_is_mostly_unsafe_or_long_is_cut_or_replaced(upstream: str) -> None:
    message = safe_message("ValidationException", upstream)
    assert_safe(message, "http://127.0.0.1:8240")
    assert len(message) <= 300 and message
    if not upstream:
        assert message == SAFE_MESSAGES["invalid_request"]


def test_library_errors_get_a_stable_code_a_fixed_message_and_the_full_detail() -> None:
    url = "http://127.0.0.1:8240/model/meta.llama3/invoke-with-response-stream"
    timeout = wrap_botocore_error(botocore.exceptions.ReadTimeoutError(endpoint_url=url), model_id="m", started=True)
    assert isinstance(timeout, BedrockStreamInterrupted)
    assert (timeout.code, timeout.error_type, timeout.message) == (
        "ReadTimeout", "upstream_timeout", SAFE_MESSAGES["upstream_timeout"]
    )
    assert timeout.detail == f'botocore.exceptions.ReadTimeoutError: Read timeout on endpoint URL: "{url}"'
    other = wrap_botocore_error(ValueError("<object at 0x7f>"), model_id="m", started=True)
    assert (other.code, other.message) == ("ValueError", SAFE_MESSAGES["upstream_error"])
    assert other.detail == "builtins.ValueError: <object at 0x7f>"


def test_a_code_that_is_not_a_plain_name_is_not_echoed() -> None:
    error = wrap_botocore_error(client_error("<script>", "x"), model_id="m", started=False)
    assert (error.code, error.error_type, error.message) == ("UnknownError", "upstream_error", SAFE_MESSAGES["upstream_error"])


def test_an_error_built_by_hand_uses_its_message_as_detail() -> None:
    error = BedrockStreamError("Custom and safe.", code="ThrottlingException")
    assert error.detail == error.message == "Custom and safe." and error.status_code == 429


# -- end to end: real faults through the views --------------------------------------------------


@dataclass(frozen=True)
class Fault:
    family: str
    prompt: str
    error_type: str
    code: str | None  # None: depends on the HTTP library (e.g. ProtocolError / ClientPayloadError)
    message: str
    logged: str = ""  # a piece of the upstream detail the server log must have ("{url}": the emulator's)
    protocol: str = "data"
    client_config: dict[str, Any] = field(default_factory=lambda: ONE_ATTEMPT)
    endpoint_url: str | None = None


BEFORE_FIRST_BYTE = {
    "read-timeout": Fault(
        "llama3", "[[emulator ttfb_ms=2500]] slow", "upstream_timeout", "ReadTimeout",
        SAFE_MESSAGES["upstream_timeout"], logged='Read timeout on endpoint URL: "{url}/model/', client_config=TIMEOUT,
    ),
    "unreachable-endpoint": Fault(
        "converse", "hi", "upstream_error", "EndpointConnectionError", SAFE_MESSAGES["upstream_error"],
        logged="http://127.0.0.1:9/model/", endpoint_url="http://127.0.0.1:9",
    ),
    "access-denied-with-arn": Fault(
        "mistral", f'[[emulator fail=AccessDeniedException message="{DENIED}"]] hi', "upstream_access_denied",
        "AccessDeniedException", SAFE_MESSAGES["upstream_access_denied"], logged=f"arn:aws:iam::{ACCOUNT}:user/dev-ops",
    ),
    "validation-with-arn-url-host": Fault(
        "anthropic-messages", f'[[emulator fail=ValidationException message="{INVALID}"]] hi', "invalid_request",
        "ValidationException", INVALID_SAFE, logged=INVALID,
    ),
}
MID_STREAM = {
    "read-timeout": Fault(
        "titan", "[[emulator tokens=4 delay_ms=2500]] slow", "upstream_timeout", "ReadTimeout",
        SAFE_MESSAGES["upstream_timeout"], protocol="data", client_config=TIMEOUT,
    ),
    "dropped-connection": Fault(
        "llama3", "[[emulator tokens=6 drop_at=2]] hi", "upstream_error", None, SAFE_MESSAGES["upstream_error"],
        protocol="ui",
    ),
    "corrupt-crc": Fault(
        "converse", "[[emulator tokens=6 corrupt_crc_at=3]] hi", "upstream_error", "ChecksumMismatch",
        SAFE_MESSAGES["upstream_error"], logged="Checksum mismatch", protocol="sse",
    ),
    "validation-with-arn": Fault(
        "converse", f'[[emulator tokens=6 error_at=2 error=validationException message="{INVALID}"]] hi',
        "invalid_request", "validationException", INVALID_SAFE, logged=INVALID, protocol="data",
    ),
    "throttling-with-arn": Fault(
        "cohere", f'[[emulator tokens=6 error_at=2 error=throttlingException message="{DENIED}"]] hi',
        "throttled", "throttlingException", SAFE_MESSAGES["throttled"], logged=DENIED, protocol="sse",
    ),
}
TRANSPORTS = ["aiobotocore", "thread"]


def settings_for(fault: Fault, transport: str | None = None) -> dict[str, Any]:
    settings: dict[str, Any] = {"ALLOW_ANONYMOUS": True, "CLIENT_CONFIG": fault.client_config}
    if fault.endpoint_url:
        settings["ENDPOINT_URL"] = fault.endpoint_url
    if transport:
        settings["ASYNC_TRANSPORT"] = transport
    return settings


def request_for(fault: Fault) -> tuple[str, bytes]:
    path = reverse(f"django_bedrock_stream:{fault.family}") + f"?protocol={fault.protocol}"
    return path, json.dumps({"messages": [{"role": "user", "content": fault.prompt}]}).encode()


def stream_error(protocol: str, body: str) -> str:
    """The message of the stream's error part."""
    if protocol == "data":
        last = body.splitlines()[-1]
        assert last.startswith("3:"), body
        return str(json.loads(last[2:]))
    if protocol == "ui":
        chunks = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
        [error] = [chunk for chunk in chunks if chunk["type"] == "error"]
        return str(error["errorText"])
    events = body.split("\n\n")
    [error] = [event for event in events if event.startswith("event: error")]
    return str(json.loads(error.split("data: ", 1)[1])["message"])


class FailedErrors:
    """The ``stream_failed`` errors sent while the block runs."""

    def __enter__(self) -> list[BedrockStreamError]:
        self.errors: list[BedrockStreamError] = []
        signals.stream_failed.connect(self._receive, weak=False, dispatch_uid="test-exceptions")
        return self.errors

    def _receive(self, sender: Any, error: BedrockStreamError, **kwargs: Any) -> None:
        self.errors.append(error)

    def __exit__(self, *exc: Any) -> None:
        signals.stream_failed.disconnect(dispatch_uid="test-exceptions")


def check(
    fault: Fault, started: bool, response: Any, body: str, errors: list[BedrockStreamError],
    caplog: pytest.LogCaptureFixture, emulator_url: str,
) -> None:
    if started:
        assert response.status_code == 200
        message = stream_error(fault.protocol, body)
    else:
        error_json = json.loads(body)["error"]
        assert (response.status_code, error_json["type"]) == (errors[0].status_code, fault.error_type), body
        assert error_json["code"] == errors[0].code
        message = error_json["message"]
    assert message == fault.message
    assert_safe(body, emulator_url)
    row = Completion.objects.get()
    assert (row.status, row.error) == ("failed", fault.message)
    assert row.error_code == (fault.code or errors[0].code) and re.fullmatch(r"[A-Za-z]\w*", row.error_code)
    assert_safe(row.error, emulator_url)
    # The full upstream detail is in the server log, not in the response.
    [error] = errors
    assert error.error_type == fault.error_type and error.detail != error.message
    if fault.logged:
        assert fault.logged.format(url=emulator_url) in error.detail
    logged = [r.getMessage() for r in caplog.records if r.name == "django_bedrock_stream"]
    assert any(error.detail in line for line in logged), logged


def run_wsgi(fault: Fault, started: bool, emulator_url: str, caplog: pytest.LogCaptureFixture) -> None:
    path, data = request_for(fault)
    with override_settings(BEDROCK_STREAM=settings_for(fault)), FailedErrors() as errors, \
            caplog.at_level(logging.WARNING, logger="django_bedrock_stream"):
        response = Client().post(path, data, content_type="application/json")
        body = b"".join(response.streaming_content if response.streaming else [response.content]).decode()
    check(fault, started, response, body, errors, caplog, emulator_url)


async def run_asgi(
    fault: Fault, started: bool, transport: str, emulator_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    path, data = request_for(fault)
    with override_settings(BEDROCK_STREAM=settings_for(fault, transport)), FailedErrors() as errors, \
            caplog.at_level(logging.WARNING, logger="django_bedrock_stream"):
        response = await AsyncClient().post(path, data, content_type="application/json")
        if response.streaming:
            body = b"".join([part async for part in response.streaming_content]).decode()
        else:
            body = response.content.decode()
    await sync_to_async(check)(fault, started, response, body, errors, caplog, emulator_url)


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(BEFORE_FIRST_BYTE))
def test_errors_before_the_first_byte_reveal_nothing_under_wsgi(
    bedrock_emulator: Any, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    run_wsgi(BEFORE_FIRST_BYTE[name], False, bedrock_emulator.url, caplog)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", sorted(BEFORE_FIRST_BYTE))
async def test_errors_before_the_first_byte_reveal_nothing_under_asgi(
    bedrock_emulator: Any, caplog: pytest.LogCaptureFixture, name: str, transport: str
) -> None:
    await run_asgi(BEFORE_FIRST_BYTE[name], False, transport, bedrock_emulator.url, caplog)


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(MID_STREAM))
def test_errors_mid_stream_reveal_nothing_under_wsgi(
    bedrock_emulator: Any, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    run_wsgi(MID_STREAM[name], True, bedrock_emulator.url, caplog)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", sorted(MID_STREAM))
async def test_errors_mid_stream_reveal_nothing_under_asgi(
    bedrock_emulator: Any, caplog: pytest.LogCaptureFixture, name: str, transport: str
) -> None:
    await run_asgi(MID_STREAM[name], True, transport, bedrock_emulator.url, caplog)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("asgi", [False, True])
async def test_the_drf_flavour_reveals_nothing_either(
    bedrock_emulator: Any, caplog: pytest.LogCaptureFixture, asgi: bool
) -> None:
    fault = BEFORE_FIRST_BYTE["access-denied-with-arn"]
    data = json.dumps({"messages": [{"role": "user", "content": fault.prompt}]})
    with override_settings(BEDROCK_STREAM=settings_for(fault)):
        if asgi:
            response = await AsyncClient().post(reverse("api-converse"), data, content_type="application/json")
        else:
            response = await sync_to_async(Client().post)(reverse("api-converse"), data, content_type="application/json")
    assert response.status_code == 502
    body = response.content.decode()
    assert_safe(body, bedrock_emulator.url)
    assert fault.message in body
    row = await Completion.objects.aget()
    assert (row.error, row.error_code) == (fault.message, "AccessDeniedException")
