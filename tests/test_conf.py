"""The settings accessor and the client factory."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from django_bedrock_stream import client as clients
from django_bedrock_stream.conf import DEFAULTS, stream_settings
from django_bedrock_stream.exceptions import MissingExtraError


def test_defaults_and_overrides_are_read_lazily() -> None:
    with override_settings(BEDROCK_STREAM={}):
        assert stream_settings.MAX_TOKENS == DEFAULTS["MAX_TOKENS"]
        assert stream_settings.CLIENT_CONFIG["read_timeout"] == 300  # well above botocore's 60 s
    with override_settings(BEDROCK_STREAM={"MAX_TOKENS": 7, "CLIENT_CONFIG": {"read_timeout": 5}}):
        assert stream_settings.MAX_TOKENS == 7
        # Partial CLIENT_CONFIG is merged over the defaults, not replacing them.
        assert stream_settings.CLIENT_CONFIG["read_timeout"] == 5
        assert stream_settings.CLIENT_CONFIG["max_pool_connections"] == DEFAULTS["CLIENT_CONFIG"]["max_pool_connections"]
    with pytest.raises(AttributeError, match="Invalid BEDROCK_STREAM setting"):
        stream_settings.NOT_A_SETTING  # noqa: B018


def test_client_is_cached_per_configuration_and_reset_on_change(bedrock_emulator: Any) -> None:
    first = clients.get_client()
    assert clients.get_client() is first
    assert first.meta.endpoint_url == bedrock_emulator.url  # from AWS_ENDPOINT_URL_BEDROCK_RUNTIME
    with override_settings(BEDROCK_STREAM={"ENDPOINT_URL": "http://127.0.0.1:9", "REGION": "eu-west-3"}):
        other = clients.get_client()
        assert other is not first
        assert other.meta.endpoint_url == "http://127.0.0.1:9" and other.meta.region_name == "eu-west-3"
        assert other.meta.config.read_timeout == 300


def test_endpoint_url_setting_reaches_the_emulator_without_env(bedrock_emulator: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
    with override_settings(BEDROCK_STREAM={"ENDPOINT_URL": bedrock_emulator.url}):
        response = clients.get_client().converse_stream(
            modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}]
        )
        assert "".join(e["contentBlockDelta"]["delta"]["text"] for e in response["stream"] if "contentBlockDelta" in e)


def test_async_transport_resolution(monkeypatch: Any) -> None:
    with override_settings(BEDROCK_STREAM={"ASYNC_TRANSPORT": "thread"}):
        assert clients.async_transport() == "thread"
    with override_settings(BEDROCK_STREAM={"ASYNC_TRANSPORT": "auto"}):
        assert clients.async_transport() == "aiobotocore"
    monkeypatch.setattr(clients, "aiobotocore_available", lambda: False)
    with override_settings(BEDROCK_STREAM={"ASYNC_TRANSPORT": "auto"}):
        assert clients.async_transport() == "thread"
    with override_settings(BEDROCK_STREAM={"ASYNC_TRANSPORT": "aiobotocore"}):
        with pytest.raises(MissingExtraError, match=r'pip install "django-bedrock-stream\[async\]"'):
            clients.async_transport()
