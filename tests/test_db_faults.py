"""Database faults: PostgreSQL goes away before, during and at the end of streams (issue 9, defects 3-4).

Real servers in subprocesses (uvicorn for ASGI, gunicorn gthread for WSGI; ``tests/postgres.py``)
reach the test database through a proxy the test cuts (``tests/dbproxy.py``); Bedrock is the
emulator, whose request log says what was billed. What must hold, whatever the fault:

* no start row, no Bedrock call: a stream whose row cannot be inserted is refused with 503 JSON;
* no stream holds a database connection (so an outage mid-stream costs nothing by itself);
* a failed final write is retried on a fresh connection; when that fails too, the completion is
  logged at ERROR with the ``bedrock_stream.unsaved_completion`` marker and its row stays
  ``streaming`` for ``bedrock_reap``: 0 requests billed without a row, 0 rows ``streaming`` after
  the reaper, every failure visible as a 503 or a logged ERROR.

PostgreSQL only. The SQLite runs re-run this module on PostgreSQL in a subprocess
(:func:`test_db_faults_on_postgresql`).
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.db import connection

from django_bedrock_stream.models import Completion
from tests.dbproxy import DBProxy
from tests.postgres import (
    PG_HOST,
    PG_PORT,
    ServerProcess,
    on_postgresql,
    run_on_postgresql,
    terminate_other_connections,
)
from tests.test_reliability import chat, url, wait_until

postgresql_only = pytest.mark.skipif(
    not on_postgresql(),
    reason="PostgreSQL only (a proxy in front of it is cut); on SQLite, "
    "test_db_faults_on_postgresql re-runs this module on PostgreSQL",
)

MARKER = "bedrock_stream.unsaved_completion"
#: A line of the server's log (``tests/server_settings.py`` formats records as ``LEVEL logger message``).
MARKER_LINE = re.compile(rf"^ERROR (django_bedrock_stream(?:\.\S+)?) {re.escape(MARKER)} (.*)$", re.MULTILINE)
#: The final write of a stream, as the server sends it to PostgreSQL.
FINAL_UPDATE = b'UPDATE "django_bedrock_stream_completion"'
#: One family per server: both kinds of upstream call are exercised.
FAMILY = {"uvicorn": "converse", "gunicorn": "llama3"}


def test_db_faults_on_postgresql() -> None:
    """On SQLite: run this module on PostgreSQL in a subprocess (skipped when PostgreSQL is unreachable)."""
    if on_postgresql():
        pytest.skip("this run is on PostgreSQL: the tests of this module run in it directly")
    run_on_postgresql("tests/test_db_faults.py", "faults")


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy() -> Iterator[DBProxy]:
    with DBProxy((PG_HOST, PG_PORT)) as db_proxy:
        yield db_proxy


@pytest.fixture(scope="module")
def servers(
    proxy: DBProxy, django_db_setup: Any, django_db_blocker: Any, bedrock_emulator_server: Any, tmp_path_factory: Any
) -> Iterator[dict[str, ServerProcess]]:
    """uvicorn and gunicorn (1 worker x 8 threads) on the test database, through the proxy; the
    emulator's address reaches them through the environment ``bedrock_emulator_server`` set."""
    logs = tmp_path_factory.mktemp("db-fault-servers")
    common = {"db_name": connection.settings_dict["NAME"], "db_port": proxy.port}
    started: dict[str, ServerProcess] = {}
    try:
        started["asgi"] = ServerProcess.uvicorn(log_path=logs / "uvicorn.log", **common).start()
        started["wsgi"] = ServerProcess.gunicorn(workers=1, threads=8, log_path=logs / "gunicorn.log", **common).start()
        yield started
    finally:
        for server in started.values():
            server.stop()
        proxy.close()
        with django_db_blocker.unblock():
            terminate_other_connections()


@pytest.fixture(params=["asgi", "wsgi"])
def server(request: Any, servers: dict[str, ServerProcess], proxy: DBProxy) -> Iterator[ServerProcess]:
    """Each server in turn, with the database reachable when the test starts and ends."""
    proxy.restore()
    yield servers[request.param]
    proxy.restore()


@pytest.fixture
def idle_session_timeout(transactional_db: Any) -> Iterator[None]:
    """PostgreSQL ends any session of the test database idle for more than a second (new sessions
    only: the test's own connection keeps the default)."""
    name = connection.ops.quote_name(connection.settings_dict["NAME"])
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER DATABASE {name} SET idle_session_timeout = '1s'")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {name} RESET idle_session_timeout")


# -- helpers -----------------------------------------------------------------------------------


def new_key() -> str:
    return f"fault-{uuid.uuid4().hex[:12]}"


def path_for(server: ServerProcess) -> str:
    return url(FAMILY[server.name])


@contextmanager
def open_stream(server: ServerProcess, key: str, scenario: str) -> Iterator[Any]:
    """POST a chat whose emulator ``scenario`` is given; yields the httpx response, body unread."""
    body = chat(f"[[emulator {scenario}]] {key}")
    with httpx.Client(timeout=60) as client, client.stream(
        "POST", server.url + path_for(server), content=body, headers={"Content-Type": "application/json"}
    ) as response:
        yield response


def rows_for(key: str) -> list[Completion]:
    return [row for row in Completion.objects.all() if key in json.dumps(row.messages)]


def records_for(emulator: Any, key: str) -> list[dict[str, Any]]:
    return [record for record in emulator.requests if key in json.dumps(record["body"])]


def settled_record(emulator: Any, key: str) -> dict[str, Any]:
    emulator.wait_for(lambda reqs: [r for r in reqs if key in json.dumps(r["body"]) and r["status"] != "streaming"], 20)
    [record] = records_for(emulator, key)
    return record


def settled_row(key: str) -> Completion:
    wait_until(lambda: [r for r in rows_for(key) if r.status != "streaming"], timeout=20, message=f"the row of {key} to settle")
    [row] = rows_for(key)
    return row


def unsaved_completions(server: ServerProcess, since: int) -> list[dict[str, Any]]:
    """The completions the server logged as unsaved (marker lines) since byte ``since`` of its log."""
    return [json.loads(payload) for _logger, payload in MARKER_LINE.findall(server.log(since))]


def wait_for_unsaved(server: ServerProcess, since: int, key: str) -> dict[str, Any]:
    """The marker line for the row of ``key``, once the server has given up writing it."""
    [row] = rows_for(key)  # inserted at the start, before the database went away

    def found() -> list[dict[str, Any]]:
        return [c for c in unsaved_completions(server, since) if c.get("id") == row.pk]

    try:
        wait_until(found, timeout=20, message=f"an ERROR line '{MARKER} {{...}}' for row {row.pk} ({key})")
    except AssertionError as err:
        raise AssertionError(f"{err}; the server's log:\n{server.log(since)[-4000:]}") from None
    [completion] = found()
    return completion


def check_nothing_lost(emulator: Any, server: ServerProcess, since: int, reaped: int = 0) -> None:
    """The issue's global rules, checked at the end of every test with the database back: each
    request billed has exactly one row; each row left ``streaming`` was logged with the marker;
    the reaper leaves none ``streaming``; and no request failed with a 500 (Django logs those)."""
    lost = []
    for record in emulator.requests:
        key = re.search(r"fault-[0-9a-f]{12}", json.dumps(record["body"])).group(0)  # type: ignore[union-attr]
        if len(rows_for(key)) != 1:
            lost.append((key, record["status"], len(rows_for(key))))
    assert not lost, f"requests billed without exactly one row (key, upstream status, rows): {lost}"
    stranded = list(Completion.objects.filter(status="streaming").values_list("pk", flat=True))
    logged = {completion.get("id") for completion in unsaved_completions(server, since)}
    assert set(stranded) <= logged, f"rows left streaming without an ERROR line: {set(stranded) - logged}"
    assert len(stranded) == reaped, f"expected {reaped} row(s) left for the reaper, found {stranded}"
    call_command("bedrock_reap", "--older-than", "0s", stdout=io.StringIO())
    assert not Completion.objects.filter(status="streaming").exists()
    assert "Internal Server Error" not in server.log(since), server.log(since)[-4000:]


def assert_safe_error(response: Any, status: int, error_type: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == error_type and isinstance(error["message"], str) and error["message"], error
    for detail in ("127.0.0.1", "5432", "psycopg", "Traceback", "OperationalError"):
        assert detail not in response.text, response.text


# -- before the request ----------------------------------------------------------------------


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_database_down_before_the_stream_is_503_and_bedrock_is_not_called(
    server: ServerProcess, proxy: DBProxy, bedrock_emulator: Any
) -> None:
    since, key = server.log_size(), new_key()
    proxy.cut()
    with open_stream(server, key, "tokens=5") as response:
        response.read()
    assert_safe_error(response, 503, "storage_unavailable")
    assert response.headers.get("Retry-After", "").isdigit(), dict(response.headers)
    assert proxy.refused >= 1  # the server did try the database
    assert bedrock_emulator.requests == [], "Bedrock was called although the start row could not be written"
    proxy.restore()
    assert rows_for(key) == []
    check_nothing_lost(bedrock_emulator, server, since)


# -- mid-stream --------------------------------------------------------------------------------


def read_first_then(response: Any, action: Any) -> str:
    """Read the first body chunk, run ``action()``, read the rest; return the whole body."""
    assert response.status_code == 200, response.read()
    chunks = response.iter_bytes()
    first = next(chunks)
    action()
    return (first + b"".join(chunks)).decode()


def assert_no_connection_held(proxy: DBProxy) -> None:
    """The stream's start row is written: the server must have given its connection back."""
    try:
        wait_until(lambda: proxy.live_connections == 0, timeout=1)
    except AssertionError:
        raise AssertionError(f"{proxy.live_connections} database connection(s) held by an open stream") from None


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_database_down_mid_stream_and_back_before_the_end(
    server: ServerProcess, proxy: DBProxy, bedrock_emulator: Any
) -> None:
    since, key = server.log_size(), new_key()

    def outage() -> None:
        assert_no_connection_held(proxy)
        proxy.cut()
        time.sleep(0.5)
        proxy.restore()

    with open_stream(server, key, "tokens=12 delay_ms=100") as response:
        text = read_first_then(response, outage)
    record, row = settled_record(bedrock_emulator, key), settled_row(key)
    assert record["status"] == "completed" and record["chunks_sent"] == 12, record
    assert (row.status, row.text) == ("completed", record["text"]) and text == row.text
    assert row.finished_at is not None and row.output_tokens
    assert unsaved_completions(server, since) == []
    check_nothing_lost(bedrock_emulator, server, since)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_database_down_from_mid_stream_on_logs_the_completion_for_the_reaper(
    server: ServerProcess, proxy: DBProxy, bedrock_emulator: Any
) -> None:
    since, key = server.log_size(), new_key()

    def outage() -> None:
        assert_no_connection_held(proxy)
        proxy.cut()

    with open_stream(server, key, "tokens=8 delay_ms=100") as response:
        text = read_first_then(response, outage)
    assert text  # the client got its whole answer: the outage is the server's problem
    record = settled_record(bedrock_emulator, key)
    unsaved = wait_for_unsaved(server, since, key)  # the retries are over, the database still down
    proxy.restore()
    [row] = rows_for(key)
    assert row.status == "streaming", "the row must be left for the reaper"
    assert unsaved["id"] == row.pk and unsaved["status"] == "completed", unsaved
    assert unsaved["text"] == record["text"] == text
    assert unsaved["input_tokens"] > 0 and unsaved["output_tokens"] > 0 and unsaved["finished_at"], unsaved
    check_nothing_lost(bedrock_emulator, server, since, reaped=1)
    row.refresh_from_db()
    assert (row.status, row.error_code) == ("failed", "Reaped")


# -- at the end: the final write itself fails --------------------------------------------------


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_database_down_at_the_final_write_is_retried(
    server: ServerProcess, proxy: DBProxy, bedrock_emulator: Any
) -> None:
    since, key = server.log_size(), new_key()
    fired: list[bool] = []

    def restore_soon() -> None:
        if proxy.cut_happened.wait(30):
            fired.append(True)
            time.sleep(0.2)  # within the retries' ~2 s
            proxy.restore()

    proxy.cut_on(FINAL_UPDATE)
    restorer = threading.Thread(target=restore_soon)
    restorer.start()
    try:
        with open_stream(server, key, "tokens=6 delay_ms=20") as response:
            assert response.status_code == 200
            text = response.read().decode()
    finally:
        proxy.cut_happened.set()  # end the restorer even if the cut never fired
        restorer.join(35)
    assert fired, "the final UPDATE never reached the proxy"
    record, row = settled_record(bedrock_emulator, key), settled_row(key)
    assert (row.status, row.text) == ("completed", record["text"]) and text == row.text
    assert unsaved_completions(server, since) == []
    check_nothing_lost(bedrock_emulator, server, since)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_database_down_at_the_final_write_of_a_failed_stream_logs_it(
    server: ServerProcess, proxy: DBProxy, bedrock_emulator: Any
) -> None:
    since, key = server.log_size(), new_key()
    proxy.cut_on(FINAL_UPDATE)
    with open_stream(server, key, "tokens=6 delay_ms=20 error_at=3 error=modelStreamErrorException") as response:
        assert response.status_code == 200
        text = response.read().decode()
    assert proxy.cut_happened.is_set(), "the final UPDATE never reached the proxy"
    record = settled_record(bedrock_emulator, key)
    assert record["status"] == "error", record
    unsaved = wait_for_unsaved(server, since, key)
    proxy.restore()
    [row] = rows_for(key)
    assert row.status == "streaming"
    assert unsaved["id"] == row.pk and unsaved["status"] == "failed", unsaved
    assert unsaved["error_code"] == "modelStreamErrorException", unsaved
    assert unsaved["text"] == record["text"] and text.startswith(record["text"])
    check_nothing_lost(bedrock_emulator, server, since, reaped=1)


# -- PostgreSQL ends idle sessions -------------------------------------------------------------


@postgresql_only
def test_idle_session_timeout_shorter_than_the_stream(
    server: ServerProcess, bedrock_emulator: Any, idle_session_timeout: None
) -> None:
    """``idle_session_timeout = 1s`` and streams of 2 s: a connection held across the stream would
    be gone by its final write."""
    since, keys = server.log_size(), [new_key() for _ in range(3)]
    texts: dict[str, str] = {}

    def run(key: str) -> None:
        with open_stream(server, key, "tokens=8 delay_ms=250") as response:
            texts[key] = response.read().decode() if response.status_code == 200 else f"HTTP {response.status_code}"

    clients = [threading.Thread(target=run, args=(key,)) for key in keys]
    for client in clients:
        client.start()
    for client in clients:
        client.join(60)
    rows = {key: settled_row(key) for key in keys}
    for key in keys:
        record = settled_record(bedrock_emulator, key)
        assert (rows[key].status, rows[key].text) == ("completed", record["text"]), (key, rows[key].status)
        assert texts[key] == record["text"]
    check_nothing_lost(bedrock_emulator, server, since)
