"""The runner: a streaming response that nobody reads still closes its Bedrock stream and settles its
row, and a stream that ends early records the usage it can (estimated, and marked so)."""

from __future__ import annotations

import gc
import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, override_settings
from django.test.utils import modify_settings

from django_bedrock_stream import signals
from django_bedrock_stream.models import Completion
from django_bedrock_stream.runner import CHARS_PER_TOKEN, estimate_usage
from tests.servers import UvicornThread, WSGIThread, raw_request, read_head
from tests.test_reliability import chat, close_server_connections, url, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

#: A stream that would take 10 s to finish: closing it early is visible in the emulator's log.
LONG = "[[emulator tokens=200 delay_ms=50]] tell me a long story"

#: Responses a "bad" middleware keeps alive (so no finalizer can notice they were dropped).
KEPT: list[Any] = []


def replace_streams(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    """A (sync) middleware that throws away the view's streaming response and answers 500,
    as a middleware that fails after the view (a session save on a dead database) does."""

    def middleware(request: HttpRequest) -> Any:
        response = get_response(request)
        if request.headers.get("X-Replace") and getattr(response, "streaming", False):
            if request.headers["X-Replace"] == "keep":
                KEPT.append(response)
            return HttpResponse("replaced", status=500)
        return response

    return middleware


REPLACING = modify_settings(MIDDLEWARE={"append": "tests.test_runner.replace_streams"})


@pytest.fixture(autouse=True)
def _forget_kept() -> Iterator[None]:
    yield
    KEPT.clear()
    close_server_connections()  # where an abandoned ASGI stream settled its row


def assert_abandoned(emulator: Any, within: float) -> Completion:
    """The emulator saw the client (our app) hang up within ``within`` s, and the row settled."""
    started = time.monotonic()
    emulator.wait_for(lambda reqs: reqs and reqs[-1]["status"] != "streaming", timeout=10)
    elapsed = time.monotonic() - started
    record = emulator.requests[-1]
    assert record["status"] == "disconnected", record
    assert elapsed < within, f"the upstream stayed open {elapsed:.2f} s after the response was discarded"
    wait_until(lambda: Completion.objects.exclude(status="streaming").exists(), timeout=5, message="row settles")
    row = Completion.objects.get()
    assert (row.status, row.error_code) == ("cancelled", "ResponseDiscarded"), (row.status, row.error)
    assert "never sent" in row.error
    return row


@REPLACING
def test_wsgi_response_replaced_by_middleware_closes_upstream_and_settles(bedrock_emulator: Any) -> None:
    response = Client().post(url("llama2"), chat(LONG), content_type="application/json", headers={"X-Replace": "1"})
    assert response.status_code == 500
    assert_abandoned(bedrock_emulator, within=1.0)


@REPLACING
async def test_asgi_response_replaced_by_middleware_closes_upstream_and_settles(bedrock_emulator: Any) -> None:
    response = await AsyncClient().post(url("converse"), chat(LONG), content_type="application/json", headers={"X-Replace": "1"})
    assert response.status_code == 500
    from asgiref.sync import sync_to_async

    await sync_to_async(assert_abandoned)(bedrock_emulator, 1.0)


@REPLACING
@pytest.mark.parametrize("server_class", [UvicornThread, WSGIThread], ids=["uvicorn", "wsgi"])
def test_real_server_response_replaced_by_middleware(bedrock_emulator: Any, server_class: type) -> None:
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler

    app = ASGIHandler() if server_class is UvicornThread else WSGIHandler()  # with this test's middleware
    with server_class(app=app) as server:
        sock = raw_request(server.url, url("anthropic-messages"), chat(LONG), headers={"X-Replace": "1"})
        try:
            status, _ = read_head(sock)
        finally:
            sock.close()
        assert status == 500
        assert_abandoned(bedrock_emulator, within=1.0)
    close_server_connections()


@REPLACING
@override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "RESPONSE_START_TIMEOUT": 0.3})
def test_a_kept_but_unread_response_is_abandoned_at_the_deadline(bedrock_emulator: Any) -> None:
    """The finalizer cannot fire while something keeps the response alive: the deadline does."""
    response = Client().post(url("titan"), chat(LONG), content_type="application/json", headers={"X-Replace": "keep"})
    assert response.status_code == 500 and len(KEPT) == 1
    assert_abandoned(bedrock_emulator, within=2.0)
    assert b"".join(KEPT[0].streaming_content) == b""  # reading it later yields nothing, and no error


def test_a_response_read_normally_is_never_abandoned(bedrock_emulator: Any) -> None:
    """The finalizer and the deadline do nothing to a stream that was read to its end."""
    # A deadline a loaded machine cannot miss between the view's return and the first read, then past it.
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "RESPONSE_START_TIMEOUT": 2.0}):
        response = Client().post(url("cohere"), chat("[[emulator tokens=5]] hi"), content_type="application/json")
        text = b"".join(response.streaming_content).decode()
        del response
        gc.collect()
        time.sleep(2.5)  # past the deadline
    row = Completion.objects.get()
    assert (row.status, row.text, row.error_code) == ("completed", text, "")
    assert bedrock_emulator.requests[-1]["status"] == "completed"


def touch_and_delete_session(sender: Any, request: HttpRequest, **kwargs: Any) -> None:
    request.session["last_model"] = kwargs["model_id"]
    Session.objects.filter(session_key=request.session.session_key).delete()


@pytest.fixture
def session_deleted_mid_request() -> Iterator[Any]:
    """The case found by attacking the site: a receiver touches the session, the session is deleted
    meanwhile (a logout elsewhere), and SessionMiddleware answers 400 instead of the stream."""
    signals.stream_started.connect(touch_and_delete_session, dispatch_uid="touch-session")
    with override_settings(BEDROCK_STREAM={}):
        yield get_user_model().objects.create_user("alice", password="pw")
    signals.stream_started.disconnect(dispatch_uid="touch-session")


def test_wsgi_session_interrupted_after_the_view_does_not_leak_the_stream(
    bedrock_emulator: Any, session_deleted_mid_request: Any
) -> None:
    client = Client()
    client.force_login(session_deleted_mid_request)
    response = client.post(url("mistral"), chat(LONG), content_type="application/json")
    assert response.status_code == 400
    assert_abandoned(bedrock_emulator, within=1.0)


async def test_asgi_session_interrupted_after_the_view_does_not_leak_the_stream(
    bedrock_emulator: Any, session_deleted_mid_request: Any
) -> None:
    from asgiref.sync import sync_to_async

    client = AsyncClient()
    await sync_to_async(client.force_login)(session_deleted_mid_request)
    response = await client.post(url("mistral"), chat(LONG), content_type="application/json")
    assert response.status_code == 400
    await sync_to_async(assert_abandoned)(bedrock_emulator, 1.0)


# -- usage of a stream that ended early ---------------------------------------------------------


def test_estimate_usage_keeps_known_counts_and_rounds_up() -> None:
    messages = [{"role": "user", "content": "x" * 10}]
    assert estimate_usage(messages, "y" * 9, {"input_tokens": 0, "output_tokens": 0}) == {
        "input_tokens": 3,
        "output_tokens": 3,
    }
    assert estimate_usage(messages, "y", {"input_tokens": 42, "output_tokens": 0})["input_tokens"] == 42


@pytest.mark.parametrize("family", ["mistral", "converse"])
def test_a_stream_failing_midway_records_estimated_usage(bedrock_emulator: Any, family: str) -> None:
    """These families report usage only at the end: the counts are estimated, and say so."""
    prompt = "[[emulator tokens=12 error_at=6 error=modelStreamErrorException]] count"
    response = Client().post(url(family), chat(prompt), content_type="application/json")
    b"".join(response.streaming_content)
    row = Completion.objects.get()
    assert row.status == "failed" and row.text
    assert row.usage_estimated is True
    assert row.output_tokens == math.ceil(len(row.text) / CHARS_PER_TOKEN)
    assert row.input_tokens == math.ceil(len(prompt) / CHARS_PER_TOKEN)


def test_a_completed_stream_reports_real_usage_not_an_estimate(bedrock_emulator: Any) -> None:
    response = Client().post(url("llama2"), chat("[[emulator tokens=7]] hi"), content_type="application/json")
    b"".join(response.streaming_content)
    row = Completion.objects.get()
    record = bedrock_emulator.requests[-1]
    assert row.usage_estimated is False
    assert row.output_tokens == 7, json.dumps(record)[:300]


def test_a_stream_failing_midway_keeps_the_counts_the_model_did_report(bedrock_emulator: Any) -> None:
    """Llama reports its counts on every chunk: what it said so far is kept, not estimated."""
    prompt = "[[emulator tokens=12 error_at=6 error=modelStreamErrorException]] count"
    response = Client().post(url("llama2"), chat(prompt), content_type="application/json")
    b"".join(response.streaming_content)
    row = Completion.objects.get()
    assert (row.status, row.usage_estimated) == ("failed", False)
    assert row.output_tokens == 6 and row.input_tokens


def test_the_runner_outcomes_are_the_row_statuses() -> None:
    from django_bedrock_stream.runner import CANCELLED, COMPLETED, FAILED

    assert {COMPLETED, FAILED, CANCELLED} == set(Completion.Status.values) - {Completion.Status.STREAMING}


def test_the_persistence_receivers_are_connected_only_while_persist_is_on() -> None:
    """A signal nobody listens to is not sent at all: with PERSIST off, no thread hop for it."""
    assert signals.stream_started.has_listeners() and signals.stream_finished.has_listeners()
    with override_settings(BEDROCK_STREAM={"PERSIST": False}):
        assert not signals.stream_started.has_listeners()
        assert not signals.stream_finished.has_listeners()
    assert signals.stream_started.has_listeners()


@pytest.mark.django_db(transaction=True)
async def test_a_stop_arriving_after_the_model_finished_leaves_the_stream_its_finish(
    bedrock_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop (from any worker) landing after the model's last chunk but before the end ran: the stream
    is complete, so it must end as completed *with* its finish part. Seen under load in
    tests/test_chat_load.py: the row said completed, the stream stopped after its last text delta."""
    import asyncio

    from asgiref.sync import sync_to_async

    from django_bedrock_stream.runner import StreamRunner
    from django_bedrock_stream.streams import BedrockStream

    pumps: list[tuple[StreamRunner, asyncio.Task[Any]]] = []
    original_pump, original_batches = StreamRunner._pump, BedrockStream.aiter_part_batches

    async def pump(self: StreamRunner, queue: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        pumps.append((self, task))
        await original_pump(self, queue)

    async def batches(self: BedrockStream, *args: Any, **kwargs: Any) -> Any:
        async for batch in original_batches(self, *args, **kwargs):
            yield batch
        runner, task = pumps[-1]
        asyncio.get_running_loop().call_soon(runner.stop, task)  # runs before anything the end schedules

    monkeypatch.setattr(StreamRunner, "_pump", pump)
    monkeypatch.setattr(BedrockStream, "aiter_part_batches", batches)
    response = await AsyncClient().post(
        url("converse") + "?protocol=ui", chat("[[emulator tokens=3]] hi"), content_type="application/json"
    )
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    assert pumps, "the body was not relayed through the pump (keep-alive off?)"
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    assert events[-1]["type"] == "finish" and events[-1]["messageMetadata"]["finishReason"] == "stop", events[-3:]
    completion = await sync_to_async(Completion.objects.get)()
    assert completion.status == "completed" and completion.text == "Cloud python echo"
