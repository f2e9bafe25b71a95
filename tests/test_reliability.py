"""Nothing lost: client disconnects through real servers, upstream faults, robust signals (and under
load: ``tests/test_load.py``).

The servers run in threads of the test process (``tests/servers.py``): they share the test database,
the settings, the signal registry and the ``bedrock-stream`` thread pool with the test.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.test import Client, override_settings
from django.urls import reverse

from django_bedrock_stream import client as clients
from django_bedrock_stream import signals
from django_bedrock_stream.models import Completion
from tests.servers import UvicornThread, WSGIThread, raw_request, read_head

#: Django's ASGI handler cancels the response when the client goes away only since 5.0; on 4.2 an
#: ASGI stream runs to its end after a disconnect (documented in the README, "Supported versions").
needs_asgi_cancellation = pytest.mark.skipif(
    django.VERSION < (5, 0), reason="Django < 5.0 does not cancel ASGI responses on client disconnect"
)

FAMILIES = ["anthropic", "anthropic-messages", "cohere", "llama2", "llama3", "mistral", "titan", "converse"]
TERMINAL = {"completed", "failed", "cancelled"}


def chat(text: str, **extra: Any) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": text}], **extra}).encode()


def url(family: str) -> str:
    return reverse(f"django_bedrock_stream:{family}")


class Recorder:
    """Connects a receiver to some signals for the duration of a test; thread-safe."""

    def __init__(self, *names: str) -> None:
        self.names = names
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Recorder:
        for name in self.names:
            getattr(signals, name).connect(self._receiver(name), weak=False, dispatch_uid=f"recorder-{name}")
        return self

    def __exit__(self, *exc: Any) -> None:
        for name in self.names:
            getattr(signals, name).disconnect(dispatch_uid=f"recorder-{name}")

    def _receiver(self, name: str) -> Any:
        def receive(sender: Any, **kwargs: Any) -> None:
            with self._lock:
                self.calls.append((name, kwargs))

        return receive

    def of(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [kwargs for n, kwargs in self.calls if n == name]


def wait_until(predicate: Any, timeout: float = 10.0, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {message or predicate}")
        time.sleep(0.02)


def settled_row() -> Completion:
    """The one Completion row, once the server has settled it."""
    wait_until(lambda: Completion.objects.exclude(status="streaming").exists(), message="the row to settle")
    return Completion.objects.get()


def settled_record(emulator: Any, index: int = -1) -> dict[str, Any]:
    emulator.wait_for(lambda reqs: reqs and reqs[index]["status"] != "streaming", timeout=10)
    return emulator.requests[index]


def dechunk(data: bytes) -> bytes:
    """Decode as much of an HTTP/1.1 chunked body as is complete."""
    out, rest = b"", data
    while b"\r\n" in rest:
        size_line, _, after = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0 or len(after) < size + 2:
            break
        out, rest = out + after[:size], after[size + 2:]
    return out


def read_then_drop(server_url: str, path: str, body: bytes, *, reads: int) -> tuple[int, bytes]:
    """POST, read the headers and then ``reads`` more socket reads of body, then hang up."""
    sock = raw_request(server_url, path, body)
    try:
        status, data = read_head(sock)
        got = 1 if data else 0
        while got < reads:
            more = sock.recv(65536)
            if not more:
                break
            data += more
            got += 1
    finally:
        sock.close()
    return status, data


def assert_pool_idle(timeout: float = 2.0) -> None:
    """Every worker of the ``bedrock-stream`` pool can run a job now: none is blocked on a socket."""
    executor = clients.get_executor()
    workers = executor._max_workers  # noqa: SLF001 - the pool's size is what we must fill
    barrier = threading.Barrier(workers + 1)
    futures = [executor.submit(barrier.wait, timeout) for _ in range(workers)]
    barrier.wait(timeout)  # raises BrokenBarrierError if some worker never picked its job up
    for future in futures:
        future.result(timeout)


# -- servers -----------------------------------------------------------------------------------


def close_server_connections() -> None:
    """Close the DB connection of asgiref's shared thread, where the ASGI server's sync code ran
    (PostgreSQL refuses to drop the test database while it is open)."""
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(10)


@pytest.fixture(scope="module")
def uvicorn_server() -> Iterator[UvicornThread]:
    with UvicornThread() as server:
        yield server
        if hasattr(clients, "aclose_clients") and server.loop is not None:
            asyncio.run_coroutine_threadsafe(clients.aclose_clients(), server.loop).result(10)
    close_server_connections()


@pytest.fixture(scope="module")
def wsgi_server() -> Iterator[WSGIThread]:
    with WSGIThread() as server:
        yield server


# -- (a) ASGI disconnect mid-stream ----------------------------------------------------------


@needs_asgi_cancellation
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transport", ["aiobotocore", "thread"])
def test_asgi_disconnect_closes_upstream_and_cancels(
    bedrock_emulator: Any, uvicorn_server: UvicornThread, transport: str
) -> None:
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "ASYNC_TRANSPORT": transport}), \
            Recorder("stream_cancelled", "stream_finished") as recorder:
        status, data = read_then_drop(
            uvicorn_server.url, url("llama3"), chat("[[emulator tokens=50 delay_ms=50]] drop me"), reads=2
        )
        assert status == 200
        record = settled_record(bedrock_emulator)
        row = settled_row()
        wait_until(lambda: recorder.of("stream_finished"), message="stream_finished")
    # Upstream closed at once: the emulator saw the connection drop long before the 50th token.
    assert record["status"] == "disconnected", record
    assert 1 <= record["chunks_sent"] < 50, record
    assert (row.status, row.error_code) == ("cancelled", "")
    assert row.text == record["text"] and row.text.startswith(dechunk(data).decode())
    assert row.finished_at is not None
    [cancelled] = recorder.of("stream_cancelled")
    assert cancelled["text"] == record["text"] and cancelled["completion"].pk == row.pk
    assert [kw["status"] for kw in recorder.of("stream_finished")] == ["cancelled"]
    if transport == "thread":
        assert_pool_idle()



@pytest.mark.skipif(django.VERSION >= (5, 0), reason="pins the documented Django 4.2 fallback")
@pytest.mark.django_db(transaction=True)
def test_django_42_asgi_disconnect_runs_the_stream_to_its_end(
    bedrock_emulator: Any, uvicorn_server: UvicornThread
) -> None:
    """Django 4.2 never tells the view the client left: nothing is lost, but nothing is saved either."""
    status, _data = read_then_drop(
        uvicorn_server.url, url("llama3"), chat("[[emulator tokens=10 delay_ms=20]] drop me"), reads=2
    )
    assert status == 200
    record = settled_record(bedrock_emulator)
    row = settled_row()
    assert record["status"] == "completed" and record["chunks_sent"] == 10
    assert (row.status, row.text) == ("completed", record["text"])

# -- (b) WSGI disconnect mid-stream ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_wsgi_disconnect_closes_upstream_and_cancels(bedrock_emulator: Any, wsgi_server: WSGIThread) -> None:
    with Recorder("stream_cancelled", "stream_finished") as recorder:
        status, data = read_then_drop(
            wsgi_server.url, url("mistral"), chat("[[emulator tokens=50 delay_ms=50]] drop me"), reads=2
        )
        assert status == 200
        # A WSGI server only learns the client is gone when a write fails: a token or two later.
        record = settled_record(bedrock_emulator)
        row = settled_row()
        wait_until(lambda: recorder.of("stream_finished"), message="stream_finished")
    assert record["status"] == "disconnected", record
    assert 1 <= record["chunks_sent"] < 50, record
    assert (row.status, row.text) == ("cancelled", record["text"])
    assert row.text.startswith(data.decode())
    [cancelled] = recorder.of("stream_cancelled")
    assert cancelled["text"] == record["text"]


@needs_asgi_cancellation
@pytest.mark.django_db(transaction=True)
def test_asgi_disconnect_while_the_end_signals_run_still_stores_the_row(
    bedrock_emulator: Any, uvicorn_server: UvicornThread
) -> None:
    """The client reads the whole text and leaves while a slow ``stream_completed`` receiver runs:
    Django cancels the body there, yet ``stream_finished`` (which stores the row) must still run."""
    entered = threading.Event()

    async def slow_receiver(sender: Any, **kwargs: Any) -> None:
        entered.set()
        await asyncio.sleep(0.5)

    signals.stream_completed.connect(slow_receiver, dispatch_uid="slow-completed")
    try:
        with Recorder("stream_finished") as recorder:
            sock = raw_request(uvicorn_server.url, url("llama2"), chat('[[emulator text="one two three"]] x'))
            status, data = read_head(sock)
            assert status == 200
            assert entered.wait(10), "stream_completed was not sent"
            sock.close()  # the body's tail is not sent yet: the receiver is still sleeping
            row = settled_row()
            wait_until(lambda: recorder.of("stream_finished"), message="stream_finished")
    finally:
        signals.stream_completed.disconnect(dispatch_uid="slow-completed")
    assert (row.status, row.text) == ("completed", "one two three")
    assert [kw["status"] for kw in recorder.of("stream_finished")] == ["completed"]


# -- (c) disconnect before the first token ---------------------------------------------------


@needs_asgi_cancellation
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transport", ["aiobotocore", "thread"])
def test_asgi_disconnect_before_first_token(bedrock_emulator: Any, uvicorn_server: UvicornThread, transport: str) -> None:
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "ASYNC_TRANSPORT": transport}), \
            Recorder("stream_cancelled") as recorder:
        sock = raw_request(uvicorn_server.url, url("converse"), chat("[[emulator ttfb_ms=1000 tokens=50 delay_ms=50]] x"))
        bedrock_emulator.wait_for(lambda reqs: reqs, timeout=5)  # Bedrock was called and is "thinking"
        sock.close()
        record = settled_record(bedrock_emulator)
        row = settled_row()
        wait_until(lambda: recorder.of("stream_cancelled"), message="stream_cancelled")
    assert record["status"] == "disconnected", record
    if transport == "aiobotocore":
        assert record["chunks_sent"] == 0, record  # the pending aiohttp request is dropped at once
    else:
        # A pool thread waiting for Bedrock's first byte cannot be interrupted: the stream it gets
        # is closed as soon as it arrives, after at most what came with the headers.
        assert record["chunks_sent"] <= 1, record
    assert (row.status, row.text) == ("cancelled", "")
    [cancelled] = recorder.of("stream_cancelled")
    assert cancelled["text"] == "" and cancelled["completion"].pk == row.pk
    if transport == "thread":
        assert_pool_idle()


@pytest.mark.django_db(transaction=True)
def test_wsgi_disconnect_before_first_token(bedrock_emulator: Any, wsgi_server: WSGIThread) -> None:
    with Recorder("stream_cancelled") as recorder:
        sock = raw_request(wsgi_server.url, url("titan"), chat("[[emulator ttfb_ms=1000 tokens=50 delay_ms=50]] x"))
        bedrock_emulator.wait_for(lambda reqs: reqs, timeout=5)
        sock.close()
        record = settled_record(bedrock_emulator)
        row = settled_row()
        wait_until(lambda: recorder.of("stream_cancelled"), message="stream_cancelled")
    # WSGI cannot notice before it writes: the first failed write cancels the stream.
    assert record["status"] == "disconnected" and record["chunks_sent"] < 50, record
    assert (row.status, row.text) == ("cancelled", record["text"])


# -- faults before the first byte --------------------------------------------------------------

from django.test import AsyncClient  # noqa: E402

from django_bedrock_stream.emulator.scenarios import HTTP_ERRORS, STREAM_ERRORS  # noqa: E402
from django_bedrock_stream.exceptions import ERROR_STATUS  # noqa: E402

# botocore: "total_max_attempts" counts the first call; "max_attempts" counts only the retries.
NO_RETRY = {"ALLOW_ANONYMOUS": True, "CLIENT_CONFIG": {"retries": {"mode": "standard", "total_max_attempts": 1}}}


def body_text(response: Any) -> str:
    return b"".join(response.streaming_content).decode()


async def abody_text(response: Any) -> str:
    return b"".join([part async for part in response.streaming_content]).decode()


def assert_error_json(response: Any, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == error_type and isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.django_db
def test_throttling_before_the_first_byte_is_retried_by_botocore(bedrock_emulator: Any) -> None:
    # Default CLIENT_CONFIG: standard retries, 3 attempts; the emulator throttles the first two.
    response = Client().post(url("cohere"), chat("[[emulator throttle=2 tokens=4]] retry me"), content_type="application/json")
    assert response.status_code == 200
    text = body_text(response)
    records = bedrock_emulator.requests
    assert [r["http_status"] for r in records] == [429, 429, 200]
    row = Completion.objects.get()
    assert (row.status, row.text) == ("completed", records[-1]["text"]) and text == row.text


@pytest.mark.django_db
def test_throttling_that_outlasts_the_retries_is_429_with_retry_after(bedrock_emulator: Any) -> None:
    with Recorder("stream_failed", "stream_finished") as recorder:
        response = Client().post(url("llama2"), chat("[[emulator fail=ThrottlingException]] no"), content_type="application/json")
    error = assert_error_json(response, 429, "throttled")
    assert error["code"] == "ThrottlingException"
    assert response["Retry-After"].isdigit() and int(response["Retry-After"]) >= 1
    assert len(bedrock_emulator.requests) == 3  # default CLIENT_CONFIG: standard mode, 3 attempts in total
    row = Completion.objects.get()
    assert (row.status, row.error_code, row.text) == ("failed", "ThrottlingException", "")
    assert row.error and row.finished_at
    assert [kw["error"].code for kw in recorder.of("stream_failed")] == ["ThrottlingException"]
    assert [kw["status"] for kw in recorder.of("stream_finished")] == ["failed"]


@pytest.mark.django_db
@override_settings(BEDROCK_STREAM=NO_RETRY)
@pytest.mark.parametrize("code", sorted(HTTP_ERRORS))
def test_each_pre_stream_error_maps_to_its_status_under_wsgi(bedrock_emulator: Any, code: str) -> None:
    status, error_type = ERROR_STATUS[code.lower()]
    response = Client().post(url("mistral"), chat(f"[[emulator fail={code}]] no"), content_type="application/json")
    error = assert_error_json(response, status, error_type)
    assert error["code"] == code
    assert ("Retry-After" in response) == (status in (429, 503))
    assert len(bedrock_emulator.requests) == 1
    row = Completion.objects.get()
    assert (row.status, row.error_code, row.text) == ("failed", code, "")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transport", ["aiobotocore", "thread"])
@pytest.mark.parametrize("code", sorted(HTTP_ERRORS))
async def test_each_pre_stream_error_maps_to_its_status_under_asgi(bedrock_emulator: Any, code: str, transport: str) -> None:
    status, error_type = ERROR_STATUS[code.lower()]
    with override_settings(BEDROCK_STREAM={**NO_RETRY, "ASYNC_TRANSPORT": transport}):
        response = await AsyncClient().post(url("converse"), chat(f"[[emulator fail={code}]] no"), content_type="application/json")
    error = assert_error_json(response, status, error_type)
    assert error["code"] == code
    row = await Completion.objects.aget()
    assert (row.status, row.error_code, row.text) == ("failed", code, "")


# -- faults in the stream ----------------------------------------------------------------------

# ConverseStream's event union has no modelTimeoutException (botocore's model): real Bedrock cannot send
# it there, so that one code is exercised on the invoke families only.
INVOKE_FAMILIES = [f for f in FAMILIES if f != "converse"]

def _family_for(code: str, n: int) -> str:
    families = INVOKE_FAMILIES if code == "modelTimeoutException" else FAMILIES
    return families[n % len(families)]


MID_STREAM = [
    (code, at, _family_for(code, i * 3 + j))
    for i, code in enumerate(STREAM_ERRORS)
    for j, at in enumerate((0, 3, 6))  # before the first token, in the middle, after the last one
]


def check_failed_stream(emulator: Any, recorder: Recorder, text: str, code: str, at: int) -> None:
    record = settled_record(emulator)
    assert record["status"] == "error" and record["chunks_sent"] == at, record
    row = Completion.objects.get()
    assert (row.status, row.error_code) == ("failed", code)
    assert row.text == record["text"] == text  # exactly what was produced, nothing more
    [failed] = recorder.of("stream_failed")
    assert failed["text"] == record["text"] and failed["error"].code == code
    assert [kw["status"] for kw in recorder.of("stream_finished")] == ["failed"]


@pytest.mark.django_db
@pytest.mark.parametrize(("code", "at", "family"), MID_STREAM)
def test_mid_stream_error_under_wsgi(bedrock_emulator: Any, code: str, at: int, family: str) -> None:
    with Recorder("stream_failed", "stream_finished") as recorder:
        response = Client().post(
            url(family), chat(f"[[emulator tokens=6 error_at={at} error={code}]] hi"), content_type="application/json"
        )
        assert response.status_code == 200
        text = body_text(response)  # ends cleanly: no exception while reading
    check_failed_stream(bedrock_emulator, recorder, text, code, at)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transport", ["aiobotocore", "thread"])
@pytest.mark.parametrize(("code", "at", "family"), MID_STREAM)
async def test_mid_stream_error_under_asgi(bedrock_emulator: Any, code: str, at: int, family: str, transport: str) -> None:
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "ASYNC_TRANSPORT": transport}), \
            Recorder("stream_failed", "stream_finished") as recorder:
        response = await AsyncClient().post(
            url(family), chat(f"[[emulator tokens=6 error_at={at} error={code}]] hi"), content_type="application/json"
        )
        assert response.status_code == 200
        text = await abody_text(response)
    from asgiref.sync import sync_to_async

    await sync_to_async(check_failed_stream)(bedrock_emulator, recorder, text, code, at)


@pytest.mark.django_db
def test_mid_stream_error_has_an_error_part_in_the_data_protocol(bedrock_emulator: Any) -> None:
    response = Client().post(
        url("llama3") + "?protocol=data", chat("[[emulator tokens=4 error_at=2]] hi"), content_type="application/json"
    )
    lines = body_text(response).splitlines()
    assert lines[-1].startswith("3:") and json.loads(lines[-1][2:])
    assert [json.loads(line[2:]) for line in lines if line.startswith("0:")] and not any(
        line.startswith(("e:", "d:")) for line in lines
    )


@pytest.mark.django_db
@override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "CLIENT_CONFIG": {"read_timeout": 1}})
def test_read_timeout_is_a_mid_stream_failure_under_wsgi(bedrock_emulator: Any) -> None:
    with Recorder("stream_failed") as recorder:
        response = Client().post(url("titan"), chat("[[emulator tokens=5 delay_ms=3000]] slow"), content_type="application/json")
        assert response.status_code == 200
        text = body_text(response)
    row = Completion.objects.get()
    assert (row.status, row.error_code) == ("failed", "ReadTimeout")
    assert recorder.of("stream_failed")
    # The upstream connection is dropped, so Bedrock stops generating.
    record = settled_record(bedrock_emulator)
    assert record["status"] == "disconnected" and record["chunks_sent"] < 5, record
    assert row.text == text == record["text"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transport", ["aiobotocore", "thread"])
async def test_read_timeout_is_a_mid_stream_failure_under_asgi(bedrock_emulator: Any, transport: str) -> None:
    settings = {"ALLOW_ANONYMOUS": True, "ASYNC_TRANSPORT": transport, "CLIENT_CONFIG": {"read_timeout": 1}}
    with override_settings(BEDROCK_STREAM=settings):
        response = await AsyncClient().post(url("converse"), chat("[[emulator tokens=5 delay_ms=3000]] slow"), content_type="application/json")
        assert response.status_code == 200
        text = await abody_text(response)
    row = await Completion.objects.aget()
    assert (row.status, row.error_code) == ("failed", "ReadTimeout")
    from asgiref.sync import sync_to_async

    record = await sync_to_async(settled_record)(bedrock_emulator)
    assert record["status"] == "disconnected" and record["chunks_sent"] < 5, record
    assert row.text == text == record["text"]


# -- robust signals ----------------------------------------------------------------------------


def _boom(sender: Any, **kwargs: Any) -> None:
    raise RuntimeError("a broken receiver")


@pytest.mark.django_db
def test_a_raising_receiver_breaks_neither_the_stream_nor_the_others_under_wsgi(bedrock_emulator: Any) -> None:
    signals.stream_completed.connect(_boom, dispatch_uid="boom")
    signals.stream_finished.connect(_boom, dispatch_uid="boom-finished")
    try:
        with Recorder("stream_completed", "stream_finished") as recorder:
            response = Client().post(url("anthropic"), chat("[[emulator tokens=4]] hi"), content_type="application/json")
            text = body_text(response)
    finally:
        signals.stream_completed.disconnect(dispatch_uid="boom")
        signals.stream_finished.disconnect(dispatch_uid="boom-finished")
    row = Completion.objects.get()
    assert (row.status, row.text) == ("completed", text) and text
    assert len(recorder.of("stream_completed")) == 1 and len(recorder.of("stream_finished")) == 1


@pytest.mark.django_db(transaction=True)
async def test_a_raising_receiver_breaks_neither_the_stream_nor_the_others_under_asgi(bedrock_emulator: Any) -> None:
    async def aboom(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("a broken async receiver")

    signals.stream_completed.connect(_boom, dispatch_uid="boom")
    signals.stream_completed.connect(aboom, dispatch_uid="aboom")
    signals.stream_started.connect(_boom, dispatch_uid="boom-started")
    try:
        with Recorder("stream_completed", "stream_finished") as recorder:
            response = await AsyncClient().post(url("anthropic-messages"), chat("[[emulator tokens=4]] hi"), content_type="application/json")
            text = await abody_text(response)
    finally:
        signals.stream_completed.disconnect(dispatch_uid="boom")
        signals.stream_completed.disconnect(dispatch_uid="aboom")
        signals.stream_started.disconnect(dispatch_uid="boom-started")
    row = await Completion.objects.aget()
    assert (row.status, row.text) == ("completed", text) and text
    assert len(recorder.of("stream_completed")) == 1 and len(recorder.of("stream_finished")) == 1


# -- text split inside a character -------------------------------------------------------------

#: (reply text, its token events, what the client and the row get): the emulator sends the emoji as
#: two events, one per UTF-16 surrogate (``split_pairs``); a high surrogate never completed is U+FFFD.
SPLIT_PAIRS = [
    pytest.param("Hi \U0001F600 there", 4, "Hi \U0001F600 there", id="split-pair"),
    pytest.param("Hi \ud83d", 2, "Hi \ufffd", id="lone-high-surrogate"),
]


def check_split_pair_stream(emulator: Any, body: bytes, events: int, expected: str) -> None:
    record = settled_record(emulator)
    assert record["chunks_sent"] == events, record  # "Hi", " \ud83d", "\ude00", " there"
    assert body == expected.encode()
    row = Completion.objects.get()
    assert (row.status, row.text) == ("completed", expected)


@pytest.mark.django_db
@pytest.mark.parametrize("family", ["llama3", "converse"])
@pytest.mark.parametrize(("text", "events", "expected"), SPLIT_PAIRS)
def test_a_surrogate_pair_split_across_chunks_is_joined_under_wsgi(
    bedrock_emulator: Any, family: str, text: str, events: int, expected: str
) -> None:
    bedrock_emulator.set_scenario(text=text, split_pairs=1)
    response = Client().post(url(family) + "?protocol=text", chat("hi"), content_type="application/json")
    check_split_pair_stream(bedrock_emulator, b"".join(response.streaming_content), events, expected)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transport", ["aiobotocore", "thread"])
@pytest.mark.parametrize("family", ["llama3", "converse"])
@pytest.mark.parametrize(("text", "events", "expected"), SPLIT_PAIRS)
async def test_a_surrogate_pair_split_across_chunks_is_joined_under_asgi(
    bedrock_emulator: Any, family: str, text: str, events: int, expected: str, transport: str
) -> None:
    bedrock_emulator.set_scenario(text=text, split_pairs=1)
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "ASYNC_TRANSPORT": transport}):
        response = await AsyncClient().post(url(family) + "?protocol=text", chat("hi"), content_type="application/json")
        body = b"".join([part async for part in response.streaming_content])
    from asgiref.sync import sync_to_async

    await sync_to_async(check_split_pair_stream)(bedrock_emulator, body, events, expected)
