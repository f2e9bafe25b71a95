"""Helpers for the tests that need PostgreSQL: re-running a module there from the SQLite legs, counting
the database connections servers hold, and real servers (uvicorn, gunicorn gthread) in subprocesses
on the test database (settings: ``tests.server_settings``).
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from tests.servers import _listening_socket

ROOT = Path(__file__).resolve().parent.parent
PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))
PG_USER = os.environ.get("PGUSER", "postgres")


def on_postgresql() -> bool:
    """True when this test run's database is PostgreSQL (``BEDROCK_TEST_DB=postgres``)."""
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def skip_unless_writers_wait(reason: str) -> None:
    """Skip a test of concurrent writers on the in-memory SQLite test database, whose shared cache
    fails a second writer at once ("database table is locked"): PostgreSQL and a SQLite file with a
    busy timeout make it wait, which is what such tests check (the PostgreSQL leg runs them)."""
    from django.db import connection

    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip(f"concurrent writers on in-memory SQLite fail at once (no busy timeout): {reason}")


def _admin_connection() -> Any:
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3, autocommit=True)


def postgresql_unreachable() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it answers."""
    try:
        _admin_connection().close()
    except Exception as err:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        return f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}: {err}"
    return None


def create_database(name: str) -> None:
    """Create an empty database (for servers that migrate it themselves)."""
    from psycopg import sql

    with _admin_connection() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(name: str) -> None:
    """Drop a test database, closing whatever is still connected to it."""
    from psycopg import sql

    with _admin_connection() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run_on_postgresql(test_file: str, tag: str) -> None:
    """From a SQLite run: run ``test_file`` (a path from the repo root) in a pytest subprocess on
    PostgreSQL, in a test database of its own that is dropped afterwards whatever happens; skip
    when PostgreSQL is not reachable. Fails with the subprocess' output when a test there fails."""
    if os.environ.get("BEDROCK_POSTGRES_LEG_FOLLOWS"):  # CI: its PostgreSQL leg runs the module directly
        pytest.skip(f"{test_file} runs in the PostgreSQL leg that follows (BEDROCK_POSTGRES_LEG_FOLLOWS)")
    reason = postgresql_unreachable()
    if reason:
        pytest.skip(f"{test_file} needs PostgreSQL: {reason}")
    name = f"test_bedrock_{tag}_{os.getpid()}"
    env = {**os.environ, "BEDROCK_TEST_DB": "postgres", "BEDROCK_TEST_PG_NAME": name}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", test_file],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )
    finally:
        drop_database(name)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{test_file} on PostgreSQL failed:\n{output[-12000:]}"
    if " passed" not in result.stdout:
        pytest.skip(f"{test_file} on PostgreSQL ran nothing:\n{result.stdout[-2000:]}")


def database_connections(idle_for: float = 0) -> int:
    """Connections to the test database other than the test's own; with ``idle_for``, only those
    idle (in a transaction or not) for longer than that many seconds: connections *held*, as
    opposed to the ones open for a query right now."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    params: list[float] = []
    if idle_for:
        sql += " AND state LIKE 'idle%%' AND clock_timestamp() - state_change > make_interval(secs => %s)"
        params.append(idle_for)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def terminate_other_connections() -> int:
    """Terminate every other connection to the test database (PostgreSQL cannot drop a database
    while one is open); return how many there were."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


if sys.platform == "linux":
    import ctypes
    import signal

    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child must not import

    def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
        """SIGTERM the server when the test process dies, so a killed test run leaves no server."""
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess:
    """A real server in a subprocess serving Django with ``tests.server_settings``; stdout and stderr go
    to ``log_path``. ``with ServerProcess.uvicorn(...) as server: server.url``."""

    def __init__(
        self, name: str, argv: list[str], *, db_name: str, db_port: int, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name  # "uvicorn" or "gunicorn"
        self.env = env or {}  # over the defaults below (e.g. another DJANGO_SETTINGS_MODULE)
        self.argv = argv  # "{fd}" is replaced by the listening socket's file descriptor
        self.db_name = db_name
        self.db_port = db_port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def uvicorn(cls, **kwargs: Any) -> ServerProcess:
        """One uvicorn process (ASGI)."""
        argv = [
            sys.executable, "-m", "uvicorn", "--factory", "django.core.asgi:get_asgi_application", "--fd", "{fd}",
            "--lifespan", "off", "--loop", "asyncio", "--http", "h11", "--log-level", "warning",
            "--timeout-graceful-shutdown", "3",
        ]
        return cls("uvicorn", argv, **kwargs)

    @classmethod
    def gunicorn(cls, *, workers: int, threads: int, **kwargs: Any) -> ServerProcess:
        """gunicorn's ``gthread`` worker (WSGI): ``workers`` processes of ``threads`` threads."""
        argv = [
            sys.executable, "-m", "gunicorn", "--bind", "fd://{fd}", "--worker-class", "gthread",
            "--workers", str(workers), "--threads", str(threads), "--log-level", "warning",
            "--graceful-timeout", "3", "--timeout", "120", "django.core.wsgi:get_wsgi_application()",
        ]
        return cls("gunicorn", argv, **kwargs)

    def start(self, timeout: float = 60) -> ServerProcess:
        sock = _listening_socket()
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.server_settings",
            "BEDROCK_SERVER_DB_NAME": self.db_name,
            "BEDROCK_SERVER_DB_PORT": str(self.db_port),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        argv = [arg.replace("{fd}", str(sock.fileno())) for arg in self.argv]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                pass_fds=(sock.fileno(),), preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        sock.close()  # the server has its own copy
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start; its output:\n{self.log()[-4000:]}")
            time.sleep(0.1)
        return self

    def _answers(self) -> bool:
        """Any HTTP answer (a 404 for this path) means Django is loaded and serving."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/__ready__")
            conn.getresponse().read()
            return True
        except OSError:
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log(self, since: int = 0) -> str:
        """The server's output (from byte offset ``since``)."""
        with open(self.log_path, "rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
