"""Bedrock API keys: ``BEDROCK_STREAM["API_KEY"]`` and ``$AWS_BEARER_TOKEN_BEDROCK`` through both
transports (boto3 under WSGI and the "thread" transport, aiobotocore under ASGI), end to end through
the views against an emulator that requires the key.

The keyed emulator serves HTTPS (a self-signed CA, trusted through ``AWS_CA_BUNDLE`` as a user would):
botocore 1.44+ refuses to send a bearer token over plain HTTP."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.auth
import botocore.exceptions
import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.test import AsyncClient, Client, override_settings
from django.urls import reverse

from django_bedrock_stream import checks, signals
from django_bedrock_stream import client as clients
from django_bedrock_stream.emulator import BedrockEmulator
from django_bedrock_stream.exceptions import SAFE_MESSAGES, BedrockStreamError
from django_bedrock_stream.models import Completion

KEY = "bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29tLz9BY3Rpb249Q2FsbFdpdGhCZWFyZXJUb2tlbg"
WRONG = "bedrock-api-key-d3JvbmcgYW5kIG5ldmVyIHRvIGJlIHNob3du"
ENV = "AWS_BEARER_TOKEN_BEDROCK"
NO_RETRY = {"retries": {"mode": "standard", "total_max_attempts": 1}}
#: (BEDROCK_STREAM["API_KEY"], $AWS_BEARER_TOKEN_BEDROCK) that send KEY: the setting wins over the variable.
SENDS_KEY = {"setting": (KEY, None), "env": (None, KEY), "setting over env": (KEY, WRONG)}
SENDS_WRONG = {"setting": (WRONG, None), "env": (None, WRONG), "setting over env": (WRONG, KEY)}
FAMILIES = ["llama3", "converse"]  # an invoke family (invoke_model_with_response_stream) and Converse


@pytest.fixture(autouse=True)
def bearer_needs_https(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore 1.44+ on every release: a bearer token over plain HTTP is refused before it is sent,
    so these tests prove the HTTPS path whichever botocore (and aiobotocore, which signs with
    botocore's ``BearerAuth``) is installed."""
    add_auth = botocore.auth.BearerAuth.add_auth

    def refusing_http(self: Any, request: Any) -> None:
        if not request.url.startswith("https"):
            raise botocore.exceptions.InvalidEndpointConfigurationError(
                msg="Bearer authorization requires an HTTPS endpoint."
            )
        add_auth(self, request)

    monkeypatch.setattr(botocore.auth.BearerAuth, "add_auth", refusing_http)


@pytest.fixture(scope="module")
def keyed_emulator() -> Iterator[BedrockEmulator]:
    with BedrockEmulator(port=0, api_key=KEY, tls=True) as emu:
        yield emu


@pytest.fixture
def emulator(keyed_emulator: BedrockEmulator, bedrock_emulator: BedrockEmulator, monkeypatch: Any) -> BedrockEmulator:
    """The keyed HTTPS emulator, reset, its CA trusted (``AWS_CA_BUNDLE``, read by boto3 and aiobotocore);
    dummy AWS credentials in the environment (from ``bedrock_emulator``)."""
    assert keyed_emulator.url.startswith("https://")
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(keyed_emulator.ca_file))
    keyed_emulator.reset()
    return keyed_emulator


def key_settings(emulator: BedrockEmulator, monkeypatch: Any, setting: str | None, env: str | None, **extra: Any):
    if env is not None:
        monkeypatch.setenv(ENV, env)
    values = {"ENDPOINT_URL": emulator.url, "ALLOW_ANONYMOUS": True, "CLIENT_CONFIG": NO_RETRY, **extra}
    if setting is not None:
        values["API_KEY"] = setting
    return override_settings(BEDROCK_STREAM=values)


def chat(text: str = "Tell me about keys") -> str:
    return json.dumps({"messages": [{"role": "user", "content": text}]})


def settled(emulator: BedrockEmulator) -> dict[str, Any]:
    emulator.wait_for(lambda records: records and records[-1]["status"] != "streaming")
    return emulator.requests[-1]


class FailedErrors:
    """The ``stream_failed`` errors sent while the block runs."""

    def __enter__(self) -> list[BedrockStreamError]:
        self.errors: list[BedrockStreamError] = []
        signals.stream_failed.connect(self._receive, weak=False, dispatch_uid="test-client-api-key")
        return self.errors

    def _receive(self, sender: Any, error: BedrockStreamError, **kwargs: Any) -> None:
        self.errors.append(error)

    def __exit__(self, *exc: Any) -> None:
        signals.stream_failed.disconnect(dispatch_uid="test-client-api-key")


def capture_all_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Everything the app logs (DEBUG up) and every other library's INFO and up."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="django_bedrock_stream")


# -- streaming with a key ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("source", sorted(SENDS_KEY))
def test_api_key_streams_under_wsgi(emulator: BedrockEmulator, monkeypatch: Any, source: str, family: str) -> None:
    with key_settings(emulator, monkeypatch, *SENDS_KEY[source]):
        response = Client().post(reverse(f"django_bedrock_stream:{family}"), chat(), content_type="application/json")
        assert response.status_code == 200, response.content if not response.streaming else ""
        text = b"".join(response.streaming_content).decode()
    record = settled(emulator)
    assert (record["status"], record["auth"], record["text"]) == ("completed", "bearer", text) and text
    assert Completion.objects.get().status == "completed"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transport", ["aiobotocore", "thread"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("source", sorted(SENDS_KEY))
async def test_api_key_streams_under_asgi(
    emulator: BedrockEmulator, monkeypatch: Any, source: str, family: str, transport: str
) -> None:
    with key_settings(emulator, monkeypatch, *SENDS_KEY[source], ASYNC_TRANSPORT=transport):
        response = await AsyncClient().post(
            reverse(f"django_bedrock_stream:{family}"), chat(), content_type="application/json"
        )
        assert response.status_code == 200
        text = b"".join([part async for part in response.streaming_content]).decode()
    record = settled(emulator)
    assert (record["status"], record["auth"], record["text"]) == ("completed", "bearer", text) and text
    assert (await Completion.objects.aget()).status == "completed"


# -- a wrong key -----------------------------------------------------------------------------------


def assert_denied_without_the_key(
    emulator: BedrockEmulator, status: int, body: str, errors: list[BedrockStreamError], caplog: Any
) -> None:
    error = json.loads(body)["error"]
    assert (status, error["type"], error["code"]) == (502, "upstream_access_denied", "AccessDeniedException")
    assert error["message"] == SAFE_MESSAGES["upstream_access_denied"]
    assert settled(emulator)["error"] == "AccessDeniedException"
    [failure] = errors
    row = Completion.objects.get()
    assert (row.status, row.error_code) == ("failed", "AccessDeniedException")
    # The key in use appears nowhere: not in the answer, the row, the logged detail or any log line.
    assert "Authentication failed" in failure.detail  # the upstream text is logged for the operator ...
    assert any(failure.detail in r.getMessage() for r in caplog.records)
    for key in (KEY, WRONG):  # ... and neither the key sent nor the one configured leaks anywhere
        for text in (body, row.error, failure.detail, repr(failure), repr(failure.upstream), caplog.text):
            assert key not in text


@pytest.mark.django_db
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("source", sorted(SENDS_WRONG))
def test_wrong_api_key_under_wsgi(
    emulator: BedrockEmulator, monkeypatch: Any, caplog: pytest.LogCaptureFixture, source: str, family: str
) -> None:
    capture_all_logs(caplog)
    with key_settings(emulator, monkeypatch, *SENDS_WRONG[source]), FailedErrors() as errors:
        response = Client().post(reverse(f"django_bedrock_stream:{family}"), chat(), content_type="application/json")
        body = b"".join(response.streaming_content if response.streaming else [response.content]).decode()
    assert_denied_without_the_key(emulator, response.status_code, body, errors, caplog)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transport", ["aiobotocore", "thread"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("source", ["setting", "env"])
async def test_wrong_api_key_under_asgi(
    emulator: BedrockEmulator, monkeypatch: Any, caplog: pytest.LogCaptureFixture, source: str, family: str,
    transport: str,
) -> None:
    capture_all_logs(caplog)
    with key_settings(emulator, monkeypatch, *SENDS_WRONG[source], ASYNC_TRANSPORT=transport), \
            FailedErrors() as errors:
        response = await AsyncClient().post(
            reverse(f"django_bedrock_stream:{family}"), chat(), content_type="application/json"
        )
        if response.streaming:
            body = b"".join([part async for part in response.streaming_content]).decode()
        else:
            body = response.content.decode()
    await sync_to_async(assert_denied_without_the_key)(emulator, response.status_code, body, errors, caplog)


# -- no key: SigV4 as before -----------------------------------------------------------------------


@pytest.mark.django_db
def test_no_key_keeps_sigv4_under_wsgi(bedrock_emulator: BedrockEmulator, monkeypatch: Any) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True}):
        assert clients.get_client().meta.config.signature_version != "bearer"
        response = Client().post(reverse("django_bedrock_stream:converse"), chat(), content_type="application/json")
        assert response.status_code == 200 and b"".join(response.streaming_content)
    assert settled(bedrock_emulator)["auth"] == "sigv4"


@pytest.mark.django_db(transaction=True)
async def test_no_key_keeps_sigv4_under_asgi(bedrock_emulator: BedrockEmulator, monkeypatch: Any) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "ASYNC_TRANSPORT": "aiobotocore"}):
        response = await AsyncClient().post(
            reverse("django_bedrock_stream:llama3"), chat(), content_type="application/json"
        )
        assert response.status_code == 200 and b"".join([part async for part in response.streaming_content])
    assert settled(bedrock_emulator)["auth"] == "sigv4"


# -- the client factory ----------------------------------------------------------------------------


def test_a_new_key_in_the_environment_gives_a_new_client(emulator: BedrockEmulator, monkeypatch: Any) -> None:
    with key_settings(emulator, monkeypatch, None, WRONG):
        first = clients.get_client()
        assert first.meta.config.signature_version == "bearer"
        monkeypatch.setenv(ENV, KEY)
        second = clients.get_client()
        assert second is not first
        stream = second.converse_stream(modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}])
        assert any("contentBlockDelta" in event for event in stream["stream"])
        # The cached clients are keyed by a digest: the key itself is in no cache key.
        assert KEY not in repr(clients._sync_clients) and WRONG not in repr(clients._sync_clients)


def test_a_new_ca_bundle_in_the_environment_gives_a_new_client(emulator: BedrockEmulator, monkeypatch: Any) -> None:
    """boto3 reads ``AWS_CA_BUNDLE`` when a client is made: a client cached before it was set would
    keep failing certificate checks against the emulator (or trusting a CA no longer wanted)."""
    monkeypatch.delenv("AWS_CA_BUNDLE")
    with key_settings(emulator, monkeypatch, KEY, None):
        untrusting = clients.get_client()
        with pytest.raises(botocore.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}])
        monkeypatch.setenv("AWS_CA_BUNDLE", str(emulator.ca_file))
        trusting = clients.get_client()
        assert trusting is not untrusting
        reply = trusting.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}])
        assert reply["output"]["message"]["content"][0]["text"]
    assert settled(emulator)["auth"] == "bearer"


def test_the_token_never_shows_its_key() -> None:
    token = clients._ApiKeyToken(KEY)
    assert KEY not in repr(token) and KEY not in str(token)
    assert token.load_token(signing_name="bedrock") is token and token.get_frozen_token().token == KEY


@pytest.mark.parametrize("value", [b"bedrock-api-key-bytes-secret", 12345678901234])
def test_an_api_key_of_the_wrong_type_is_improperly_configured_without_its_value(value: object) -> None:
    with override_settings(BEDROCK_STREAM={"API_KEY": value}):
        with pytest.raises(ImproperlyConfigured, match=r"API_KEY.*string") as raised:
            clients.get_client()
    assert "bytes-secret" not in str(raised.value) and "12345678901234" not in str(raised.value)


# -- system checks ---------------------------------------------------------------------------------


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", ENV,
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "BOTO_CONFIG"):
        monkeypatch.setenv(name, str(tmp_path / name))


@pytest.mark.parametrize("source", ["setting", "env"])
def test_w002_counts_an_api_key_as_credentials(no_aws_credentials: None, monkeypatch: Any, source: str) -> None:
    with override_settings(BEDROCK_STREAM={"REGION": "us-east-1"}):
        assert [m.id for m in checks.check_credentials()] == ["bedrock_stream.W002"]
    if source == "env":
        monkeypatch.setenv(ENV, KEY)
    with override_settings(BEDROCK_STREAM={"REGION": "us-east-1", **({"API_KEY": KEY} if source == "setting" else {})}):
        assert checks.check_credentials() == []


@pytest.mark.parametrize("value", ["", 12345678901234, [KEY]])
def test_e003_rejects_an_api_key_of_the_wrong_type_without_showing_it(value: object) -> None:
    with override_settings(BEDROCK_STREAM={"API_KEY": value}):
        [error] = checks.check_settings_values()
    assert (error.id, error.obj) == ("bedrock_stream.E003", "API_KEY")
    assert "12345678901234" not in error.msg + (error.hint or "") and KEY not in error.msg + (error.hint or "")
    with override_settings(BEDROCK_STREAM={"API_KEY": KEY}):
        assert checks.check_settings_values() == []
