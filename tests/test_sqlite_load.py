"""SQLite, the demo's default, under concurrent streams (issue 13): 100 streams at once through a real
uvicorn (a subprocess) on a SQLite *file* with the settings the README's "Databases" paragraph documents
— WAL, a 20 s busy timeout, IMMEDIATE transactions (Django >= 5.1 ``OPTIONS``; a ``connection_created``
receiver before): every stream gets its text and its row (an INSERT at the start, an UPDATE at the
end), none fails with "database is locked" — while another connection holds a read transaction open
for longer than Python's default 5 s busy timeout, as a long admin export, ``bedrock_usage`` report or
backup does. Without WAL that reader blocks every commit, and with the default timeout every stream
fails (a 503 with no row); with WAL readers never block the writer. ``tests/test_checks.py`` has W009, the check that asks
for these settings.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from django_bedrock_stream.emulator.scenarios import generated_tokens
from django_bedrock_stream.prompts import build_llama2_prompt
from tests.test_reliability import chat, dechunk

STREAMS = 100
TOKENS, DELAY_MS = 30, 30  # about a second per stream: all 100 are open at once
ROOT = Path(__file__).resolve().parent.parent

SETTINGS = """
import django
from tests.settings import *  # noqa: F403

OPTIONS = {{"timeout": 20}}
if django.VERSION >= (5, 1):
    OPTIONS.update(init_command="PRAGMA journal_mode=WAL;", transaction_mode="IMMEDIATE")
else:
    from django.db.backends.signals import connection_created

    def wal(sender, connection, **kwargs):
        if connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA journal_mode=WAL")

    connection_created.connect(wal)
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {db!r}, "OPTIONS": OPTIONS}}}}
"""


def prompt(i: int) -> str:
    return f"SQLite stream {i}, please. [[emulator tokens={TOKENS} delay_ms={DELAY_MS}]]"


def expected(i: int) -> str:
    return "".join(generated_tokens(build_llama2_prompt([{"role": "user", "content": prompt(i)}]), TOKENS))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def stream(port: int, i: int) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = chat(prompt(i))
    writer.write(b"POST /bedrock/llama2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    data = await asyncio.wait_for(reader.read(-1), 60)
    writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), dechunk(rest).decode("utf-8", "replace")


async def run_all(port: int) -> list[tuple[int, str]]:
    return await asyncio.gather(*(stream(port, i) for i in range(STREAMS)))


def rows(db: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        return conn.execute("SELECT status, text FROM django_bedrock_stream_completion").fetchall()


#: How long the other connection's read transaction stays open: past Python's default busy timeout (5 s).
READ_HELD = 6.5


def hold_a_read(db: Path, started: threading.Event) -> None:
    """A read transaction on another connection, open for :data:`READ_HELD` seconds."""
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM django_bedrock_stream_completion").fetchall()
        started.set()
        time.sleep(READ_HELD)
        conn.execute("COMMIT")


def test_100_concurrent_streams_on_a_sqlite_file_all_get_their_row(bedrock_emulator: Any, tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    (tmp_path / "sqlite_load_settings.py").write_text(SETTINGS.format(db=str(db)))
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "sqlite_load_settings",
           "PYTHONPATH": f"{tmp_path}:{ROOT}", "PYTHONUNBUFFERED": "1"}
    subprocess.run([sys.executable, "-m", "django", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120)
    port = free_port()
    log = (tmp_path / "uvicorn.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "django.core.asgi:get_asgi_application", "--factory", "--port", str(port),
         "--lifespan", "off", "--log-level", "warning", "--backlog", "1024"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "uvicorn.log").read_text()
                time.sleep(0.1)
        started = threading.Event()
        reader = threading.Thread(target=hold_a_read, args=(db, started))
        reader.start()
        started.wait(10)
        try:
            results = asyncio.run(run_all(port))
        finally:
            reader.join()
    finally:
        server.terminate()
        server.wait(10)
        log.close()
    output = (tmp_path / "uvicorn.log").read_text()
    assert "database is locked" not in output, output[-3000:]
    assert [status for status, _ in results] == [200] * STREAMS, output[-3000:]
    assert [text for _, text in results] == [expected(i) for i in range(STREAMS)]
    stored = rows(db)
    assert sorted(stored) == sorted(("completed", expected(i)) for i in range(STREAMS)), output[-3000:]
