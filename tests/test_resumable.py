"""Resumable chat streams and stop on Redis (issue 12, items 3-6): the store against the real Redis at
127.0.0.1:6379, then two real uvicorn workers (subprocesses sharing Redis and a SQLite file) serving
the minimal chat endpoints of ``tests/resumable_urls.py``: a resume lands on the other worker, a stop
from the other worker ends the upstream within a second, keep-alives while the model is silent, and
Redis cut mid-stream (through a TCP proxy) does not hurt the connected client.

Keys: the store tests use a prefix of their own; the workers use the package's prefix with chat ids
of this run only, deleted at the end. Redis database :data:`REDIS_DB`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import django
import httpx
import pytest

from django_bedrock_stream import resumable
from django_bedrock_stream.resumable import StreamStore
from tests.postgres import ServerProcess
from tests.resumable_servers import (
    NGINX,
    REDIS_HOST,
    REDIS_PORT,
    Workers,
    message_text,
    redis_unreachable,
    start_nginx,
    start_workers,
    text_of,
    ui_events,
)
from tests.test_clients import JS, NODE, needs_node
from tests.test_protocols import AI_PACKAGES

REDIS_DB = 11
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"

pytestmark = pytest.mark.skipif(bool(redis_unreachable()), reason=redis_unreachable() or "")


# -- the store --------------------------------------------------------------------------------------


@pytest.fixture
async def store() -> AsyncIterator[StreamStore]:
    prefix = f"test-resumable-{uuid.uuid4().hex[:8]}:"
    store = StreamStore(REDIS_URL, prefix=prefix, ttl=30, maxlen=5)
    yield store
    keys = [key async for key in store.client.scan_iter(match=f"{prefix}*")]
    if keys:
        await store.client.delete(*keys)
    await store.aclose()


async def collect(chunks: AsyncIterator[str]) -> list[str]:
    return [chunk async for chunk in chunks]


async def test_append_follow_finish_and_ttl(store: StreamStore) -> None:
    key = await store.start("chat-1")
    assert await store.running("chat-1") == key
    await store.append(key, ["a", "b"], "chat-1")
    await store.append(key, ["c"], "chat-1")
    await store.finish(key, "chat-1", "completed")
    assert await collect(store.follow(key, 1)) == ["ab", "c"]  # one entry per batch, the end marker last
    assert 0 < await store.client.ttl(key) <= 30  # the stream expires after the TTL
    assert await store.running("chat-1") is None  # finished: nothing to resume


async def test_follow_replays_then_blocks_for_live_chunks(store: StreamStore) -> None:
    key = await store.start("chat-2")
    await store.append(key, ["before"])
    follower = asyncio.ensure_future(collect(store.follow(key, 10)))
    await asyncio.sleep(0.3)
    assert not follower.done()  # blocked in XREAD, waiting for more
    await store.append(key, ["after"])
    await store.finish(key, "chat-2")
    assert await asyncio.wait_for(follower, 5) == ["before", "after"]


async def test_follow_yields_keepalive_slots_and_ends_when_the_stream_is_gone(store: StreamStore) -> None:
    key = await store.start("chat-3")
    await store.append(key, ["x"])
    chunks = store.follow(key, 0.2)
    assert await chunks.__anext__() == "x"
    assert await chunks.__anext__() == ""  # 0.2 s without news: the caller's keep-alive
    await store.client.delete(key)  # expired (its runner died and the TTL passed)
    assert await collect(chunks) == []


async def test_maxlen_caps_the_stream(store: StreamStore) -> None:
    key = await store.start("chat-4")
    for i in range(8):
        await store.append(key, [str(i)])
    assert await store.client.xlen(key) == 5
    await store.finish(key)
    assert await collect(store.follow(key, 1)) == ["4", "5", "6", "7"]  # the end marker counts too


async def test_stop_reaches_a_waiting_runner_and_one_that_subscribes_late(store: StreamStore) -> None:
    await store.start("chat-5")
    waiter = asyncio.ensure_future(store.wait_stop("chat-5"))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    assert await store.request_stop("chat-5") == 1  # one runner heard it
    await asyncio.wait_for(waiter, 1)
    await asyncio.wait_for(store.wait_stop("chat-5"), 1)  # the flag: a stop sent before it subscribed
    await store.start("chat-5")  # a new stream of the chat is not stopped by the old flag
    late = asyncio.ensure_future(store.wait_stop("chat-5"))
    await asyncio.sleep(0.3)
    assert not late.done()
    late.cancel()


async def test_reap_clears_streams_whose_runner_is_gone(store: StreamStore) -> None:
    finished = await store.start("done")
    await store.finish(finished, "done")
    alive = await store.start("alive")
    await store.append(alive, ["x"], "alive")
    orphan = await store.start("orphan")
    await store.append(orphan, ["x"], "orphan")
    await store.client.delete(store.running_key("orphan"))  # its runner died and the marker expired
    assert await store.reap() == 1
    assert not await store.client.exists(orphan)
    assert await store.client.exists(finished) and await store.client.exists(alive)


# -- two workers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, bedrock_emulator_server: Any) -> Iterator[Workers]:
    with start_workers(tmp_path_factory.mktemp("resumable"), REDIS_DB) as workers:
        yield workers


@pytest.fixture
def chat_id(workers: Workers, bedrock_emulator: Any) -> Iterator[str]:
    chat = f"resume-{uuid.uuid4().hex[:12]}"
    yield chat
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"*{chat}*"))
    if keys:
        client.delete(*keys)
    client.close()


def chat_body(chat: str, scenario: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": f"[[emulator {scenario}]] {chat}"}]})


def test_resume_on_the_other_worker_gets_the_whole_stream(
    workers: Workers, chat_id: str, bedrock_emulator: Any
) -> None:
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{workers.a.url}/chat/{chat_id}/", content=chat_body(chat_id, "tokens=40 delay_ms=40")
        ) as response,
    ):
        assert response.status_code == 200
        events = ui_events(response.iter_lines())
        first = [next(events) for _ in range(5)]  # the stream is under way on worker A
        resumed = client.get(f"{workers.b.url}/chat/{chat_id}/stream/")  # reads to the end, live
        assert resumed.status_code == 200 and resumed.headers["content-type"] == "text/event-stream"
        original = first + list(events)
    replayed = list(ui_events(iter(resumed.text.splitlines())))
    assert replayed == original  # the same chunks: start (same message id), text, finish
    assert replayed[0]["type"] == "start" and replayed[-1]["type"] == "finish"
    [record] = [r for r in bedrock_emulator.requests if chat_id in json.dumps(r["body"])]
    assert text_of(replayed) == record["text"] == workers.row(chat_id)[1]
    assert client_get(workers.b, f"/chat/{chat_id}/stream/").status_code == 204  # ended: nothing runs


def client_get(server: ServerProcess, path: str) -> httpx.Response:
    return httpx.get(server.url + path, timeout=30)


def test_stop_from_the_other_worker_ends_the_upstream_within_a_second(
    workers: Workers, chat_id: str, bedrock_emulator: Any
) -> None:
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{workers.a.url}/chat/{chat_id}/", content=chat_body(chat_id, "tokens=400 delay_ms=50")
        ) as response,
    ):
        events = ui_events(response.iter_lines())
        seen = [next(events) for _ in range(6)]
        resumer = client.build_request("GET", f"{workers.a.url}/chat/{chat_id}/stream/")
        with httpx.Client(timeout=30) as other:
            resumed = other.send(resumer, stream=True)
            stopped_at = time.time()
            assert client.post(f"{workers.b.url}/chat/{chat_id}/stop/").json() == {"stopped": True}
            rest = list(events)
            resumed_events = list(ui_events(resumed.iter_lines()))
    assert rest[-1] == {"type": "abort"}  # the client and the resumer both learn it was stopped
    assert resumed_events[-1] == {"type": "abort"}
    record = bedrock_emulator.wait_for(
        lambda reqs: [r for r in reqs if chat_id in json.dumps(r["body"]) and r["status"] != "streaming"], 10
    )[-1]
    assert record["status"] == "disconnected"
    assert record["ended_at"] - stopped_at < 1.0, record["ended_at"] - stopped_at
    status, text = workers.row(chat_id)
    assert status == "cancelled" and text == text_of(seen + rest) and text  # the partial answer is stored
    assert len(text.split()) < 400


def test_keepalive_comments_while_the_model_is_silent(workers: Workers, chat_id: str) -> None:
    comments: list[str] = []
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{workers.a.url}/chat/{chat_id}/", content=chat_body(chat_id, "tokens=3 delay_ms=1500")
        ) as response,
    ):
        events = list(ui_events(response.iter_lines(), comments))
    assert len(comments) >= 4, comments  # KEEPALIVE_SECONDS = 0.5: two in each 1.5 s pause
    assert set(comments) == {": ping"}
    assert events[-1]["type"] == "finish" and text_of(events)


def test_keepalive_on_a_plain_sse_view_which_still_cancels_when_the_client_leaves(
    workers: Workers, chat_id: str, bedrock_emulator: Any
) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": f"[[emulator tokens=6 delay_ms=1200]] {chat_id}"}]})
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{workers.a.url}/bedrock/converse/?protocol=sse", content=body) as response,
    ):
        lines = response.iter_lines()
        seen: list[str] = []
        while len([line for line in seen if line.startswith(": ping")]) < 2:
            seen.append(next(lines))
        assert any(line.startswith("event: token") for line in seen)  # pings between tokens, not only before
    # Not a chat: DISCONNECT does not apply, the client leaving closes the upstream (Django >= 5.0
    # under ASGI; 4.2's handler does not cancel a response, see "Supported versions").
    record = bedrock_emulator.wait_for(
        lambda reqs: [r for r in reqs if chat_id in json.dumps(r["body"]) and r["status"] != "streaming"], 10
    )[-1]
    if django.VERSION >= (5, 0):
        assert record["status"] == "disconnected"
        assert workers.row(chat_id)[0] == "cancelled"


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"RESUMABLE": True}, "needs BEDROCK_STREAM['REDIS_URL']"),
        ({"RESUMABLE": "yes", "REDIS_URL": REDIS_URL}, "must be True or False"),
        ({"REDIS_URL": "127.0.0.1:6379"}, "must be a redis://"),
        ({"DISCONNECT": "keep"}, "must be 'cancel', 'continue' or None"),
        ({"KEEPALIVE_SECONDS": -1}, "must be a number of seconds"),
        ({"RESUME_TTL": 0}, "must be a positive integer"),
    ],
)
def test_settings_check_e003(settings: dict[str, Any], problem: str) -> None:
    from django.test import override_settings

    from django_bedrock_stream.checks import check_settings_values

    with override_settings(BEDROCK_STREAM=settings):
        errors = check_settings_values()
    assert [e.id for e in errors] == ["bedrock_stream.E003"] and problem in errors[0].msg, errors
    with override_settings(BEDROCK_STREAM={"RESUMABLE": True, "REDIS_URL": REDIS_URL, "DISCONNECT": "cancel"}):
        assert check_settings_values() == []


def test_abort_in_each_event_stream_protocol() -> None:
    from django_bedrock_stream.protocols import ServerSentEventsProtocol, UIMessageStreamProtocol

    ui = UIMessageStreamProtocol("m1")
    ui.start()
    ui.delta("partial")
    chunks = ui.abort().split("\n\n")
    assert chunks[:2] == ['data: {"type":"text-end","id":"m1-text-1"}', 'data: {"type":"abort"}']  # the block closed
    assert ui.abort() == "" and ui.finish("end_turn", {"input_tokens": 1, "output_tokens": 1}, {}) == ""
    sse = ServerSentEventsProtocol()
    assert "event: abort" in sse.abort()


def test_client_leaving_does_not_cancel_the_model(workers: Workers, chat_id: str, bedrock_emulator: Any) -> None:
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{workers.a.url}/chat/{chat_id}/", content=chat_body(chat_id, "tokens=30 delay_ms=40")
        ) as response,
    ):
        events = ui_events(response.iter_lines())
        [next(events) for _ in range(4)]
    # DISCONNECT defaults to "continue" with RESUMABLE: the answer finishes, stored and resumable.
    resumed = client_get(workers.b, f"/chat/{chat_id}/stream/")
    replayed = list(ui_events(iter(resumed.text.splitlines())))
    assert replayed[-1]["type"] == "finish"
    [record] = [r for r in bedrock_emulator.requests if chat_id in json.dumps(r["body"])]
    assert record["status"] == "completed"
    assert workers.row(chat_id) == ("completed", record["text"]) and text_of(replayed) == record["text"]


def test_redis_cut_mid_stream_the_client_still_completes(workers: Workers, chat_id: str, bedrock_emulator: Any) -> None:
    since = workers.a.log_size()
    try:
        with (
            httpx.Client(timeout=30) as client,
            client.stream(
                "POST", f"{workers.a.url}/chat/{chat_id}/", content=chat_body(chat_id, "tokens=30 delay_ms=30")
            ) as response,
        ):
            events = ui_events(response.iter_lines())
            first = [next(events) for _ in range(4)]
            workers.proxy.cut()
            original = first + list(events)
        assert original[-1]["type"] == "finish"
        [record] = [r for r in bedrock_emulator.requests if chat_id in json.dumps(r["body"])]
        assert text_of(original) == record["text"] and workers.row(chat_id) == ("completed", record["text"])
        assert client_get(workers.b, f"/chat/{chat_id}/stream/").status_code == 204
        assert "Redis unavailable, chat" in workers.a.log(since)
        assert "Redis unavailable, chat" in workers.b.log()
    finally:
        workers.proxy.restore()


def test_after_a_redis_outage_a_stop_from_the_other_worker_still_ends_the_stream(
    workers: Workers, chat_id: str, bedrock_emulator: Any
) -> None:
    """A stream running through a Redis outage listens for stops again once Redis is back (before,
    its listener gave up on the first error and the stop never reached it: seen on a loaded machine,
    where the next stream met a pooled connection the outage had left dead)."""
    since = workers.a.log_size()
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{workers.a.url}/chat/{chat_id}/", content=chat_body(chat_id, "tokens=400 delay_ms=25")
        ) as response,
    ):
        events = ui_events(response.iter_lines())
        seen = [next(events) for _ in range(4)]
        try:
            workers.proxy.cut()
            time.sleep(0.5)
        finally:
            workers.proxy.restore()
        assert "Redis unavailable, chat" in workers.a.log(since)  # the listener did fail
        stopped_at = time.time()
        assert client.post(f"{workers.b.url}/chat/{chat_id}/stop/").json() == {"stopped": True}
        rest = list(events)
    assert rest[-1] == {"type": "abort"}
    record = bedrock_emulator.wait_for(
        lambda reqs: [r for r in reqs if chat_id in json.dumps(r["body"]) and r["status"] != "streaming"], 10
    )[-1]
    assert record["status"] == "disconnected" and record["chunks_sent"] < 400
    assert record["ended_at"] - stopped_at < 6.0  # heard at the listener's next try (every ≤ 5 s)
    assert workers.row(chat_id) == ("cancelled", text_of(seen + rest))  # the partial answer is stored


def test_a_wsgi_stream_resumes_on_asgi_and_stops_from_another_worker(
    workers: Workers, chat_id: str, bedrock_emulator: Any
) -> None:
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{workers.c.url}/chat/{chat_id}/", content=chat_body(chat_id, "tokens=400 delay_ms=50")
        ) as response,
    ):
        events = ui_events(response.iter_lines())
        seen = [next(events) for _ in range(6)]
        with httpx.Client(timeout=30) as other:
            resumed = other.send(other.build_request("GET", f"{workers.a.url}/chat/{chat_id}/stream/"), stream=True)
            stopped_at = time.time()
            assert client.post(f"{workers.b.url}/sync/chat/{chat_id}/stop/").json() == {"stopped": True}
            rest = list(events)
            resumed_events = list(ui_events(resumed.iter_lines()))
    assert rest[-1] == {"type": "abort"} and resumed_events[-1] == {"type": "abort"}
    assert [e for e in resumed_events if e["type"] == "start"] == [seen[0]]  # the same message
    record = bedrock_emulator.wait_for(
        lambda reqs: [r for r in reqs if chat_id in json.dumps(r["body"]) and r["status"] != "streaming"], 10
    )[-1]
    # Under WSGI a stop from another worker is seen at the stream's next read (here every 50 ms).
    assert record["status"] == "disconnected" and record["ended_at"] - stopped_at < 1.0
    assert workers.row(chat_id) == ("cancelled", text_of(seen + rest))


def test_the_sync_resume_view_streams_under_wsgi(workers: Workers, chat_id: str, bedrock_emulator: Any) -> None:
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{workers.a.url}/chat/{chat_id}/", content=chat_body(chat_id, "tokens=40 delay_ms=40")
        ) as response,
    ):
        events = ui_events(response.iter_lines())
        first = [next(events) for _ in range(3)]
        with client.stream("GET", f"{workers.c.url}/sync/chat/{chat_id}/stream/") as resumed:
            lines = resumed.iter_lines()
            live = [next(ui_events(lines))]  # a chunk arrives before the stream ends: not buffered
            assert not workers.row_settled(chat_id)
            replayed = live + list(ui_events(lines))
        original = first + list(events)
    assert replayed == original
    assert text_of(replayed) == workers.row(chat_id)[1]


def test_the_chat_endpoints_across_three_workers(workers: Workers, chat_id: str, bedrock_emulator: Any) -> None:
    """The package's ChatStreamView: started on uvicorn A, resumed on gunicorn C (WSGI), stopped from
    uvicorn B; the stored chat has the partial answer, cancelled."""
    message = {
        "id": "u1",
        "role": "user",
        "parts": [{"type": "text", "text": f"[[emulator tokens=400 delay_ms=50]] {chat_id}"}],
    }
    with httpx.Client(timeout=30) as client:  # one cookie jar: the anonymous visitor's session, on every worker
        with client.stream(
            "POST", f"{workers.a.url}/bedrock/chat/", json={"id": chat_id, "message": message}
        ) as response:
            assert response.status_code == 200
            events = ui_events(response.iter_lines())
            seen = [next(events) for _ in range(5)]
            with client.stream("GET", f"{workers.c.url}/bedrock/chat/{chat_id}/stream/") as resumed:
                assert resumed.status_code == 200
                resumed_events = ui_events(resumed.iter_lines())
                assert next(resumed_events) == seen[0]  # the start part, with the assistant message's id
                stopped_at = time.time()
                assert client.post(f"{workers.b.url}/bedrock/chat/{chat_id}/stop/").json() == {
                    "id": chat_id,
                    "stopped": True,
                }
                rest, resumed_rest = list(events), list(resumed_events)
        assert rest[-1] == {"type": "abort"} and resumed_rest[-1] == {"type": "abort"}
        record = bedrock_emulator.wait_for(
            lambda reqs: [r for r in reqs if chat_id in json.dumps(r["body"]) and r["status"] != "streaming"], 10
        )[-1]
        assert record["status"] == "disconnected" and record["ended_at"] - stopped_at < 1.0
        assert workers.row(chat_id)[0] == "cancelled"
        stored = client.get(f"{workers.b.url}/bedrock/chat/{chat_id}/").json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["id"] == seen[0]["messageId"]
    assert "".join(p.get("text", "") for p in stored[1]["parts"]) == text_of(seen + rest)


def test_a_stop_from_another_worker_before_bedrock_answered_ends_the_stream_when_it_opens(
    workers: Workers, chat_id: str, bedrock_emulator: Any
) -> None:
    """Stop pressed on worker B while worker A's chat turn still waits for Bedrock's first byte: the
    stop flag is this stream's (the turn cleared the earlier one when it began, the stream's start no
    longer does), so the stream ends with an abort as soon as it opens instead of running to its end.
    (No stream runs yet, so B answers ``stopped: false``.)"""

    def message(scenario: str) -> dict[str, Any]:
        return {"id": "u1", "role": "user", "parts": [{"type": "text", "text": f"[[emulator {scenario}]] {chat_id}"}]}

    with httpx.Client(timeout=30) as client:  # the anonymous visitor's session, made by the first turn
        first = client.post(f"{workers.a.url}/bedrock/chat/", json={"id": chat_id, "message": message("tokens=2")})
        assert first.status_code == 200
        client.post(f"{workers.b.url}/bedrock/chat/{chat_id}/stop/")  # an earlier stream's flag: cleared by the turn
        answer: list[httpx.Response] = []
        turn = {"id": chat_id, "message": message("tokens=60 delay_ms=20 ttfb_ms=1500")}
        post = threading.Thread(target=lambda: answer.append(client.post(f"{workers.a.url}/bedrock/chat/", json=turn)))
        post.start()
        bedrock_emulator.wait_for(lambda reqs: len([r for r in reqs if chat_id in json.dumps(r["body"])]) == 2, 10)
        assert client.post(f"{workers.b.url}/bedrock/chat/{chat_id}/stop/").json() == {"id": chat_id, "stopped": False}
        post.join(15)
        assert not post.is_alive()
    events = list(ui_events(iter(answer[0].text.splitlines())))
    assert events[-1] == {"type": "abort"}, events
    record = bedrock_emulator.wait_for(
        lambda reqs: [r for r in reqs if chat_id in json.dumps(r["body"]) and r["status"] != "streaming"][1:], 10
    )[-1]
    assert record["status"] == "disconnected" and record["chunks_sent"] < 60, record


def test_resume_without_a_running_stream_is_204(workers: Workers, chat_id: str) -> None:
    assert client_get(workers.a, f"/chat/{chat_id}/stream/").status_code == 204
    assert client_get(workers.c, f"/sync/chat/{chat_id}/stream/").status_code == 204
    assert resumable.disconnect_policy() == "cancel"  # this process: RESUMABLE off


@pytest.mark.django_db
def test_bedrock_reap_clears_the_redis_streams_whose_runner_is_gone() -> None:
    import io

    import redis
    from django.core.management import call_command
    from django.test import override_settings

    client = redis.Redis.from_url(REDIS_URL)
    chat = uuid.uuid4().hex[:12]
    orphan, finished = f"bedrock-stream:stream:{chat}-a:1", f"bedrock-stream:stream:{chat}-b:2"
    client.xadd(orphan, {"d": "partial"})
    client.xadd(finished, {"d": "all"})
    client.xadd(finished, {"end": "completed"})
    try:
        out = io.StringIO()
        with override_settings(BEDROCK_STREAM={"RESUMABLE": True, "REDIS_URL": REDIS_URL}):
            call_command("bedrock_reap", "--older-than", "1h", stdout=out)
        assert "Redis stream(s) whose runner is gone." in out.getvalue()
        assert not client.exists(orphan) and client.exists(finished)
    finally:
        client.delete(orphan, finished)
        client.close()


# -- behind nginx -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nginx(workers: Workers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's nginx in front of the two uvicorn workers (round robin), as the README's deployment."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    with start_nginx(tmp_path_factory.mktemp("nginx"), [workers.a, workers.b]) as url:
        yield url


def test_behind_nginx_the_resume_lands_on_the_other_worker_and_keepalives_hold(
    nginx: str, chat_id: str, bedrock_emulator: Any
) -> None:
    # Pauses of 1.5 s between tokens: nginx's 1 s read timeout would cut the stream without keep-alives.
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{nginx}/chat/{chat_id}/", content=chat_body(chat_id, "tokens=4 delay_ms=1500")
        ) as response,
    ):
        assert response.status_code == 200
        events = ui_events(response.iter_lines())
        first = [next(events) for _ in range(3)]
        with httpx.Client(timeout=30) as other, other.stream("GET", f"{nginx}/chat/{chat_id}/stream/") as resumed:
            assert resumed.status_code == 200
            assert resumed.headers["x-upstream"] != response.headers["x-upstream"]  # the other worker
            replayed = list(ui_events(resumed.iter_lines()))
        original = first + list(events)
    assert original[-1]["type"] == "finish" and replayed == original
    [record] = [r for r in bedrock_emulator.requests if chat_id in json.dumps(r["body"])]
    assert record["status"] == "completed" and text_of(original) == record["text"]


# -- the npm `ai` client resuming a stream another client started ------------------------------------


def leave_a_chat_running(base: str, chat: str, emulator: Any) -> tuple[str, str, str]:
    """POST a new chat to the package's chat endpoint at ``base``, read its first chunks and leave (the
    answer goes on: ``DISCONNECT`` is ``"continue"``). (The session cookie, the assistant message's
    id, the worker nginx picked, if any.)"""
    message = {
        "id": "u1",
        "role": "user",
        "parts": [{"type": "text", "text": f"[[emulator tokens=80 delay_ms=50]] {chat}"}],
    }
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{base}/bedrock/chat/", json={"id": chat, "message": message}) as response,
    ):
        assert response.status_code == 200
        events = ui_events(response.iter_lines())
        first = [next(events) for _ in range(5)]
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
        return cookie, first[0]["messageId"], response.headers.get("x-upstream", "")


def resume_with_ai_clients(base: str, cookie: str, chat: str) -> dict[str, Any]:
    """``tests/js/resume-chat.mjs``: each AI SDK major's chat (ai 7, 6, 5) loads the chat and resumes its stream, at once."""
    done = subprocess.run(
        [str(NODE), str(JS / "resume-chat.mjs"), base, cookie, chat, *AI_PACKAGES],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=JS,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_resumed_whole(results: dict[str, Any], message_id: str, text: str) -> None:
    """Every client shows the stored user message and the whole answer, under the server's message id."""
    assert set(results) == set(AI_PACKAGES)
    for name, result in results.items():
        assert (result["errors"], result["status"]) == ([], "ready"), name
        user, assistant = result["messages"]
        assert (user["role"], assistant["role"], assistant["id"]) == ("user", "assistant", message_id), name
        assert message_text(assistant) == text, name
        [resume] = [a for a in result["answers"] if a["url"].endswith("/stream/")]
        assert resume["status"] == 200, name  # the stream was running: not the 204 of an ended one


@needs_node
def test_the_ai_client_resumes_a_stream_started_by_another_client_on_another_worker(
    workers: Workers, chat_id: str, bedrock_emulator: Any
) -> None:
    """useChat's ``resume: true`` (``chat.resumeStream()``, the README's transport) on worker B, for a chat
    whose stream a client that has left started on worker A: the whole answer, as the emulator sent it."""
    cookie, message_id, _ = leave_a_chat_running(workers.a.url, chat_id, bedrock_emulator)
    results = resume_with_ai_clients(workers.b.url, cookie, chat_id)
    [record] = bedrock_emulator.wait_for(
        lambda reqs: [r for r in reqs if chat_id in json.dumps(r["body"]) and r["status"] != "streaming"], 10
    )
    assert record["status"] == "completed" and len(record["text"].split()) == 80
    assert_resumed_whole(results, message_id, record["text"])
    stored = httpx.get(f"{workers.b.url}/bedrock/chat/{chat_id}/", headers={"cookie": cookie}).json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"] and message_text(stored[1]) == record["text"]


@needs_node
def test_behind_nginx_the_ai_client_resumes_on_the_other_worker(
    nginx: str, chat_id: str, bedrock_emulator: Any
) -> None:
    cookie, message_id, started_on = leave_a_chat_running(nginx, chat_id, bedrock_emulator)
    results = resume_with_ai_clients(nginx, cookie, chat_id)
    [record] = bedrock_emulator.wait_for(
        lambda reqs: [r for r in reqs if chat_id in json.dumps(r["body"]) and r["status"] != "streaming"], 10
    )
    assert record["status"] == "completed"
    assert_resumed_whole(results, message_id, record["text"])
    # Three resumes at once, round robin: at least one lands on the worker that did not start the stream.
    resumed_on = {a["upstream"] for r in results.values() for a in r["answers"] if a["url"].endswith("/stream/")}
    assert started_on and resumed_on - {started_on}, (started_on, resumed_on)


def test_a_running_marker_that_outlived_its_stream_is_204_not_an_empty_200(workers: Workers, chat_id: str) -> None:
    """The marker names a stream that is gone (it expired RESUME_TTL after its end before its worker
    cleared the marker, or that worker died): nothing to replay, so 204, as for an ended chat. It
    used to be a 200 with an empty body (seen in the 300-chat load test under CI's load)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.set(f"{resumable.PREFIX}running:{chat_id}", f"{resumable.PREFIX}stream:{chat_id}:gone", ex=30)
        assert client_get(workers.a, f"/chat/{chat_id}/stream/").status_code == 204  # ASGI
        assert client_get(workers.c, f"/sync/chat/{chat_id}/stream/").status_code == 204  # WSGI
    finally:
        client.close()
