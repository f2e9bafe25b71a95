"""Queries and thread hops of one plain completion, counted in-process through the real ASGI handler.

Run by ``run.py`` in its own process (``python benchmarks/count.py``, environment as for the proxy:
``benchmarks/settings.py``). It sends the same llama2 request through ``get_asgi_application()`` a few
times (the first warms up: the client, the user's budget row) and prints one JSON object for the last:
every SQL statement the database executed (by its verb; a statement with a data-modifying CTE by its main
one, the writes it folds in listed beside), and every thread hop —
``sync_to_async`` calls and ``loop.run_in_executor`` submissions — with the function that hopped, split
into Django's handler (``request_started`` / ``request_finished``) and the view's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django  # noqa: E402

django.setup()

from asgiref import sync as asgiref_sync  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.db.backends.signals import connection_created  # noqa: E402

from benchmarks.loadgen import build_request  # noqa: E402

queries: list[str] = []
statements: list[str] = []
hops: list[str] = []


_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE)\b")


def record_query(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    """By the statement's own verb: ``WITH r AS (UPDATE …) INSERT …`` is one INSERT, one round trip
    (the write it folds in is listed in ``statements``)."""
    verb = sql.lstrip().split(None, 1)[0].upper()
    if verb == "WITH":
        writes = _WRITES.findall(sql.upper())
        queries.append(writes[-1])
        statements.append(f"{writes[-1]} (with {' + '.join(writes[:-1])})")
    else:
        queries.append(verb)
        statements.append(verb)
    return execute(sql, params, many, context)


def on_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    if record_query not in connection.execute_wrappers:
        connection.execute_wrappers.append(record_query)


connection_created.connect(on_connection)
# With a pool, connections are created before the signal's receiver sees them: wrap at cursor time too.
from django.db.backends.base.base import BaseDatabaseWrapper  # noqa: E402

_cursor = BaseDatabaseWrapper.cursor


def cursor(self: Any) -> Any:
    on_connection(None, self)
    return _cursor(self)


BaseDatabaseWrapper.cursor = cursor  # type: ignore[method-assign]

_s2a_call = asgiref_sync.SyncToAsync.__call__


async def s2a_call(self: Any, *args: Any, **kwargs: Any) -> Any:
    func = getattr(self.func, "__func__", self.func)
    name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"
    hops.append(f"sync_to_async {name}")
    return await _s2a_call(self, *args, **kwargs)


asgiref_sync.SyncToAsync.__call__ = s2a_call  # type: ignore[method-assign]


def patch_executor(loop: asyncio.AbstractEventLoop) -> None:
    original = loop.run_in_executor

    def run_in_executor(executor: Any, func: Any, *args: Any) -> Any:
        inner = getattr(func, "func", func)  # functools.partial
        name = f"{getattr(inner, '__module__', '?')}.{getattr(inner, '__qualname__', repr(inner))}"
        if "asgiref" not in name:  # sync_to_async's own submission is counted above
            hops.append(f"run_in_executor {name}")
        return original(executor, func, *args)

    loop.run_in_executor = run_in_executor  # type: ignore[method-assign]


async def one(app: Any, path: str, index: int) -> int:
    request, _ = build_request({"mode": "proxy", "host": "127.0.0.1", "port": 80, "tokens": 50, "delay_ms": 0,
                                "path": path, "users": 1000}, index)
    head, body = request.split(b"\r\n\r\n", 1)
    headers = [tuple(line.split(b": ", 1)) for line in head.split(b"\r\n")[1:]]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(k.lower(), v) for k, v in headers], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent = [False]

    async def receive() -> dict[str, Any]:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    status = [0]

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    await app(scope, receive, send)
    return status[0]


async def main() -> dict[str, Any]:
    patch_executor(asyncio.get_running_loop())
    app = get_asgi_application()
    out: dict[str, Any] = {}
    for label, path in (("library", "/bedrock/llama2/"), ("handwritten", "/hand/llama2/")):
        for _ in range(3):
            queries.clear()
            statements.clear()
            hops.clear()
            status = await one(app, path, 7)
            assert status == 200, (label, status)
        django_hops = [h for h in hops if "django.dispatch" in h or "HttpResponseBase.close" in h
                       or "close_old_connections" in h or "reset_queries" in h]
        out[label] = {
            "queries": dict(Counter(queries)), "query_count": len(queries), "statements": statements[:],
            "hops": hops[:], "hop_count": len(hops), "django_handler_hops": len(django_hops),
            "view_hops": len(hops) - len(django_hops),
        }
    return out


if __name__ == "__main__":
    result = asyncio.run(main())
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
