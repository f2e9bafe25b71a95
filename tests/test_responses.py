"""StreamingTextResponse in views users write themselves: the iterator flavour follows the server."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
from django.test import AsyncClient, Client

from django_bedrock_stream.responses import StreamingTextResponse

from . import user_views

BODY = json.dumps({"messages": [{"role": "user", "content": "[[emulator tokens=6]] hi"}]})


@pytest.fixture(autouse=True)
def _reset() -> None:
    user_views.COMPLETIONS.clear()


def test_sync_view_streams_sync_under_wsgi(bedrock_emulator: Any) -> None:
    response = Client().post("/user/sync-llama2/", BODY, content_type="application/json")
    assert response["Content-Type"] == "text/plain; charset=utf-8" and response["X-Accel-Buffering"] == "no"
    assert not response.is_async
    text = b"".join(response.streaming_content).decode()
    assert text == bedrock_emulator.requests[-1]["text"] == user_views.COMPLETIONS[0]


async def test_async_view_streams_async_under_asgi(bedrock_emulator: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        response = await AsyncClient().post("/user/async-llama2/", BODY, content_type="application/json")
        assert response.is_async and response["X-Demo"] == "1" and response["Cache-Control"] == "no-cache"
        text = b"".join([part async for part in response.streaming_content]).decode()
    assert text == bedrock_emulator.requests[-1]["text"] == user_views.COMPLETIONS[0]


def test_flavour_can_be_forced_and_plain_iterables_work() -> None:
    assert not StreamingTextResponse(iter(["a", "b"])).is_async

    async def agen() -> Any:
        yield "a"

    assert StreamingTextResponse(agen()).is_async
    response = StreamingTextResponse(iter([b"x"]), status=201, headers={"Cache-Control": "no-store"})
    assert response.status_code == 201 and response["Cache-Control"] == "no-store"
