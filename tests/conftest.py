from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from django_bedrock_stream.client import aclose_clients

from .recorded import RECORDED_DIR

pytest_plugins = ["django_bedrock_stream.testing"]

#: Modules marked ``clients``: real browsers, Node's AI SDK clients, fresh projects and ``make demo``
#: (the clients' view of the wire formats, not the database's or the Python version's).
CLIENT_MODULES = {"test_clients", "test_example_chat", "test_example_project", "test_readme"}
#: Modules marked ``postgres``: load and database-fault tests, which run on PostgreSQL only.
POSTGRES_MODULES = {"test_load", "test_db_faults", "test_chat_load"}
#: Modules marked ``deployment``: several server processes behind nginx, sharing Redis (their own
#: SQLite file: nothing of theirs depends on the test database or on the Python/Django pair much).
DEPLOYMENT_MODULES = {"test_resumable"}
#: Modules marked ``benchmarks``: the benchmark scripts' own tests (tooling: they measure the package, and
#: run once, in the default pair's suite, not again at the ends of the supported range).
BENCHMARK_MODULES = {"test_benchmarks"}
#: Fixtures through which a test reaches the test database (pytest-django refuses every other access).
DATABASE_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback", "live_server"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``-m "not clients"``, ``-m "not postgres"``, ``-m "not deployment"``, ``-m "not nodb"``,
    ``-m "not benchmarks"`` select by what a run is for (CI's legs). ``nodb``: a test pytest-django would not let near the test
    database (no ``django_db`` marker, no database fixture), outside the PostgreSQL-only modules: it
    runs the same on any backend, so the PostgreSQL leg leaves it to the SQLite one."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module in CLIENT_MODULES:
            item.add_marker(pytest.mark.clients)
        if module in POSTGRES_MODULES:
            item.add_marker(pytest.mark.postgres)  # their servers use PostgreSQL without the test fixtures
        elif item.get_closest_marker("django_db") is None and not DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.nodb)
        if module in DEPLOYMENT_MODULES:
            item.add_marker(pytest.mark.deployment)
        if module in BENCHMARK_MODULES:
            item.add_marker(pytest.mark.benchmarks)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Before pytest-django drops the PostgreSQL test database: end the sessions a test left behind
    (a worker thread's connection, a pool's), which would make the DROP fail and leave the database
    on the server."""
    yield
    from django.db import connection

    if connection.vendor == "postgresql":
        from .postgres import terminate_other_connections

        with django_db_blocker.unblock():
            terminate_other_connections()


@pytest.fixture
def recorded_dir() -> Path:
    """The recorded Bedrock captures. Only the test suite knows where they are (the package never
    looks outside itself); a test that needs them is skipped where they are absent."""
    if not RECORDED_DIR.is_dir():
        pytest.skip(f"recorded Bedrock captures not found at {RECORDED_DIR} (../shared/fixtures/recorded beside the repo)")
    return RECORDED_DIR


@pytest.fixture(autouse=True)
async def _close_bedrock_clients() -> AsyncIterator[None]:
    """Each async test runs on its own loop: close the aiobotocore clients made on it."""
    yield
    await aclose_clients()


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    """Django's cache keeps which approvals were acted on: each test starts with none."""
    from django.core.cache import caches

    caches["default"].clear()

