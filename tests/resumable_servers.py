"""The deployment the resumable-stream tests run on (``tests/test_resumable.py``, ``tests/test_chat_load.py``):
uvicorn workers (and a gunicorn one) in subprocesses sharing Redis and a SQLite file, with settings
``tests.resumable_server_settings``; Debian's nginx in front of two of them; and the readers of what
they stream.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tests.dbproxy import DBProxy
from tests.postgres import PG_HOST, PG_PORT, PG_USER, ROOT, ServerProcess, create_database, drop_database

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def redis_unreachable() -> str | None:
    """Why Redis cannot be used here, or None when it answers."""
    try:
        socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1).close()
    except OSError as err:
        return f"no Redis at {REDIS_HOST}:{REDIS_PORT} ({err}): resumable streams need one"
    return None


def manage(env: dict[str, str], *argv: str) -> str:
    """Run a management command in a subprocess, ``env`` over this process' environment; its output."""
    done = subprocess.run(
        [sys.executable, "-m", "django", *argv], cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True,
    )
    assert done.returncode == 0, f"manage.py {' '.join(argv)} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


class Workers:
    """``a`` and ``b``: uvicorn (ASGI); ``c``: gunicorn's gthread worker (WSGI), when started; ``proxy``:
    the TCP proxy between the workers and Redis (which a test can cut), when started; ``env``: their
    settings' environment; ``postgresql``: their PostgreSQL database's name, or "" for the SQLite file ``db``."""

    def __init__(
        self, a: ServerProcess, b: ServerProcess, c: ServerProcess | None, proxy: DBProxy | None, db: Path,
        env: dict[str, str], postgresql: str = "",
    ) -> None:
        self.a, self.b, self.c, self.proxy, self.db = a, b, c, proxy, db
        self.env, self.postgresql = env, postgresql

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (``%s`` placeholders) in the workers' database, read from outside them."""
        if self.postgresql:
            import psycopg

            with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=self.postgresql) as conn:
                return conn.execute(sql, params).fetchall()
        with sqlite3.connect(self.db, timeout=20) as conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()

    def manage(self, *argv: str) -> str:
        """Run a management command with the workers' settings; its output."""
        return manage(self.env, *argv)

    def rows(self, key: str) -> list[tuple[str, str]]:
        """(status, text) of the completions whose prompt holds ``key``."""
        return self.query(  # type: ignore[return-value]
            "SELECT status, text FROM django_bedrock_stream_completion WHERE messages LIKE %s", (f"%{key}%",)
        )

    def row_settled(self, key: str) -> bool:
        rows = self.rows(key)
        return bool(rows) and rows[0][0] != "streaming"

    def row(self, key: str) -> tuple[str, str]:
        """(status, text) of the completion whose prompt holds ``key``, once settled."""
        deadline = time.monotonic() + 20
        while True:
            rows = self.rows(key)
            if len(rows) == 1 and rows[0][0] != "streaming":
                return rows[0]
            assert time.monotonic() < deadline, f"the row of {key}: {rows}"
            time.sleep(0.1)


@contextmanager
def start_workers(
    tmp: Path,
    redis_db: int,
    *,
    gunicorn: bool = True,
    redis_proxy: bool = True,
    postgresql: str = "",
    env: dict[str, str] | None = None,
) -> Iterator[Workers]:
    """Two uvicorn workers (and, with ``gunicorn``, a gthread one) on a migrated SQLite file in ``tmp``
    (or the PostgreSQL database named ``postgresql``, made here and dropped afterwards), sharing Redis
    database ``redis_db`` (through a :class:`DBProxy` with ``redis_proxy``); ``env`` adds to their
    environment (``BEDROCK_RESUME_TTL``…, see ``tests.resumable_server_settings``)."""
    db = tmp / "db.sqlite3"
    with ExitStack() as stack:
        if postgresql:
            create_database(postgresql)
            stack.callback(drop_database, postgresql)
        proxy = stack.enter_context(DBProxy((REDIS_HOST, REDIS_PORT))) if redis_proxy else None
        port = proxy.port if proxy is not None else REDIS_PORT
        server_env = {
            "DJANGO_SETTINGS_MODULE": "tests.resumable_server_settings",
            "BEDROCK_RESUME_SQLITE": str(db),
            "BEDROCK_RESUME_REDIS_URL": f"redis://{REDIS_HOST}:{port}/{redis_db}",
            "BEDROCK_RESUME_PG_NAME": postgresql,
            **(env or {}),
        }
        manage(server_env, "migrate", "--verbosity", "0")
        common: dict[str, Any] = {"db_name": "", "db_port": 0, "env": server_env}
        a = stack.enter_context(ServerProcess.uvicorn(log_path=tmp / "a.log", **common))
        b = stack.enter_context(ServerProcess.uvicorn(log_path=tmp / "b.log", **common))
        c = (
            stack.enter_context(ServerProcess.gunicorn(workers=1, threads=8, log_path=tmp / "c.log", **common))
            if gunicorn
            else None
        )
        yield Workers(a, b, c, proxy, db, server_env, postgresql)


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
NGINX_CONF = """
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream django {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://django;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_read_timeout 1s;  # the streams' keep-alive (0.5 s) must keep them open
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


@contextmanager
def start_nginx(tmp: Path, upstreams: list[ServerProcess]) -> Iterator[str]:
    """Debian's nginx in front of ``upstreams`` (round robin), as the README's deployment, with a 1 s
    ``proxy_read_timeout`` and each answer's upstream in ``X-Upstream``; yields its URL."""
    assert NGINX is not None
    tmp.chmod(0o755)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = tmp / "nginx.conf"
    servers = "\n".join(f"        server 127.0.0.1:{server.port};" for server in upstreams)
    conf.write_text(NGINX_CONF.format(tmp=tmp, servers=servers, port=port))
    process = subprocess.Popen(
        [NGINX, "-p", str(tmp), "-c", str(conf)], stderr=subprocess.STDOUT, stdout=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, (tmp / "error.log").read_text()
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def ui_events(lines: Iterator[str], comments: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The ``data:`` chunks of a UI message stream (``comments`` collects the keep-alive lines)."""
    for line in lines:
        if line.startswith(":") and comments is not None:
            comments.append(line)
        elif line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[len("data: ") :])


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(event["delta"] for event in events if event["type"] == "text-delta")


def message_text(message: dict[str, Any]) -> str:
    """The text of a ``UIMessage`` (its text parts, joined)."""
    return "".join(part.get("text", "") for part in message["parts"] if part.get("type") == "text")
