"""The persistence receivers when the database fails: the start row is a precondition (503 before
Bedrock is called), the final write reconnects and retries, and what still cannot be written is
logged in full. (End-to-end database outages through a proxy: tests/test_db_faults.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError
from django.test import AsyncClient, Client

from django_bedrock_stream import receivers
from django_bedrock_stream.models import Completion
from tests.test_reliability import chat, url

pytestmark = pytest.mark.django_db(transaction=True)


class FailingSaves:
    """Make ``Completion.save`` raise ``OperationalError`` for the next ``times`` saves of a kind
    (``"insert"`` or ``"update"``), as a database that went away does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.remaining = {"insert": 0, "update": 0}
        self.attempts = {"insert": 0, "update": 0}
        original = Completion.save

        def save(completion: Completion, *args: Any, **kwargs: Any) -> None:
            kind = "insert" if kwargs.get("force_insert") else "update"
            self.attempts[kind] += 1
            if self.remaining[kind]:
                self.remaining[kind] -= 1
                raise OperationalError("server closed the connection unexpectedly")
            original(completion, *args, **kwargs)

        monkeypatch.setattr(Completion, "save", save)
        monkeypatch.setattr(receivers, "FINAL_WRITE_BACKOFF", (0.01, 0.02))

    def fail(self, kind: str, times: int) -> FailingSaves:
        self.remaining[kind] = times
        return self


@pytest.fixture
def saves(monkeypatch: pytest.MonkeyPatch) -> Iterator[FailingSaves]:
    yield FailingSaves(monkeypatch)


def assert_storage_unavailable(response: Any) -> None:
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    error = json.loads(response.content)["error"]
    assert error["type"] == "storage_unavailable"
    assert "not sent to the model" in error["message"]


def test_wsgi_start_row_not_written_is_503_and_bedrock_is_not_called(bedrock_emulator: Any, saves: FailingSaves) -> None:
    saves.fail("insert", 2)  # the first attempt and its retry on a fresh connection
    response = Client().post(url("converse"), chat("hello"), content_type="application/json")
    assert_storage_unavailable(response)
    assert bedrock_emulator.requests == []
    assert Completion.objects.count() == 0


async def test_asgi_start_row_not_written_is_503_and_bedrock_is_not_called(
    bedrock_emulator: Any, saves: FailingSaves
) -> None:
    saves.fail("insert", 2)
    response = await AsyncClient().post(url("llama3"), chat("hello"), content_type="application/json")
    assert_storage_unavailable(response)
    assert bedrock_emulator.requests == []
    assert await sync_to_async(Completion.objects.count)() == 0


def test_a_dead_connection_at_the_start_is_retried_once(bedrock_emulator: Any, saves: FailingSaves) -> None:
    saves.fail("insert", 1)
    response = Client().post(url("titan"), chat("[[emulator tokens=3]] hi"), content_type="application/json")
    assert response.status_code == 200
    b"".join(response.streaming_content)
    assert Completion.objects.get().status == "completed"
    assert saves.attempts["insert"] == 2


@pytest.mark.parametrize("failures", [1, 2])
def test_the_final_write_is_retried_on_a_fresh_connection(bedrock_emulator: Any, saves: FailingSaves, failures: int) -> None:
    saves.fail("update", failures)
    response = Client().post(url("cohere"), chat("[[emulator tokens=4]] hi"), content_type="application/json")
    text = b"".join(response.streaming_content).decode()
    row = Completion.objects.get()
    assert (row.status, row.text) == ("completed", text)
    assert saves.attempts["update"] == failures + 1


async def test_a_final_write_that_keeps_failing_is_logged_in_full(
    bedrock_emulator: Any, saves: FailingSaves, caplog: pytest.LogCaptureFixture
) -> None:
    saves.fail("update", 3)
    response = await AsyncClient().post(url("anthropic-messages"), chat("[[emulator tokens=5]] hi"), content_type="application/json")
    text = b"".join([chunk async for chunk in response.streaming_content]).decode()
    lines = [r for r in caplog.records if r.getMessage().startswith(receivers.UNSAVED_MARKER)]
    assert len(lines) == 1 and lines[0].levelname == "ERROR"
    record = json.loads(lines[0].getMessage()[len(receivers.UNSAVED_MARKER) :])
    row = await sync_to_async(Completion.objects.get)()
    assert record["id"] == row.pk and record["status"] == "completed" and record["text"] == text
    assert record["output_tokens"] == 5 and record["finished_at"]
    assert row.status == "streaming"  # left for bedrock_reap
    assert saves.attempts["update"] == 3


@pytest.fixture
def connection_probe() -> Iterator[list[bool]]:
    """Whether the request's thread had a database connection open at each token."""
    from django.db import connection, connections

    from django_bedrock_stream import signals

    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip("an in-memory SQLite connection is never closed (it would lose the database)")
    seen: list[bool] = []

    def during_the_stream(sender: Any, **kwargs: Any) -> None:
        seen.append(connections["default"].connection is not None)

    signals.token_received.connect(during_the_stream, dispatch_uid="connection-probe")
    yield seen
    signals.token_received.disconnect(dispatch_uid="connection-probe")


def test_wsgi_holds_no_database_connection_while_streaming(bedrock_emulator: Any, connection_probe: list[bool]) -> None:
    """After the INSERT the request's connection is given back (CONN_MAX_AGE=0 closes it), so
    hundreds of open streams do not hold hundreds of connections (tests/test_load.py does that)."""
    body = chat("[[emulator tokens=3]] hi")
    b"".join(Client().post(url("llama2"), body, content_type="application/json").streaming_content)
    assert connection_probe == [False, False, False]
    assert Completion.objects.get().status == "completed"


async def test_asgi_holds_no_database_connection_while_streaming(
    bedrock_emulator: Any, connection_probe: list[bool]
) -> None:
    response = await AsyncClient().post(url("llama2"), chat("[[emulator tokens=3]] hi"), content_type="application/json")
    [chunk async for chunk in response.streaming_content]
    assert connection_probe == [False, False, False]
    assert (await sync_to_async(Completion.objects.get)()).status == "completed"


@pytest.mark.parametrize("flavour", ["wsgi", "asgi"])
def test_the_drf_flavour_answers_503_too_when_the_start_row_is_not_stored(
    bedrock_emulator: Any, saves: FailingSaves, flavour: str
) -> None:
    """Its error_response raises an APIException: raised inside the flow's try, it became a 502."""
    from asgiref.sync import async_to_sync

    saves.fail("insert", 2)
    if flavour == "wsgi":
        response = Client().post("/api/converse/", chat("hello"), content_type="application/json")
    else:
        response = async_to_sync(AsyncClient().post)("/api/converse/", chat("hello"), content_type="application/json")
    assert response.status_code == 503, response.content
    assert bedrock_emulator.requests == []


def test_the_folded_insert_writes_the_row_save_writes() -> None:
    """On PostgreSQL the budget reservation carries the start row's INSERT (``insert_parts``, its SQL
    built once per database): the row must be the one ``save()`` writes, value for value."""
    from datetime import timedelta
    from decimal import Decimal

    from django.contrib.auth.models import User
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the folded INSERT (typed placeholders in an INSERT … SELECT) is PostgreSQL's")
    user = User.objects.create_user("raw-insert")

    def completion() -> Completion:
        return Completion(
            user=user, model_id="us.anthropic.claude-3-5-haiku-20241022-v1:0", family="converse",
            messages=[{"role": "user", "content": "é 'quoted' \\ %s \u2028 \U0001f600"}], text="partial",
            status=Completion.Status.STREAMING, input_tokens=12, cache_read_tokens=0, parts={"k": [1, None]},
            usage_estimated=True, cost=Decimal("0.0000123456"), time_to_first_token=timedelta(milliseconds=250),
            budget_reservation={"tokens": 100, "reserved": 42},
        )

    saved = completion()
    saved.save()
    ignored = {"id", "created_at"}
    expected = {k: v for k, v in Completion.objects.filter(pk=saved.pk).values().get().items() if k not in ignored}
    for _ in range(2):  # the SQL built, then taken from the cache
        raw = completion()
        head, values, params = receivers.insert_parts(raw, connection.alias)
        with connection.cursor() as cursor:
            cursor.execute(f"{head} SELECT {values} RETURNING id", params)
            pk = cursor.fetchone()[0]
        row = Completion.objects.filter(pk=pk).values().get()
        assert {k: v for k, v in row.items() if k not in ignored} == expected
        assert row["created_at"] is not None
