"""Floors for figure 5: what a 50-chunk stream costs before any Bedrock call or database row.

``/floor/django/`` is an async Django view that streams the emulator's words for the request's marker
(paced like the emulator) with no upstream: Django's ASGI handler, its two handler hops and one
``send()`` per chunk. ``/floor/asgi/`` (``benchmarks/asgi.py``) is the same stream as a bare ASGI app
under uvicorn: the server's floor. The proxy CPU of a view minus these is what the view itself adds.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

_MARKER = re.compile(r"\[\[emulator tokens=(\d+) delay_ms=([\d.]+)\]\]")


def words(body: bytes) -> tuple[list[str], float]:
    """The words to stream and the delay between them (seconds), from the loadgen's request body."""
    data = json.loads(body)
    content = data["messages"][-1]["content"]
    match = _MARKER.search(content)
    tokens, delay_ms = (int(match.group(1)), float(match.group(2))) if match else (50, 50.0)
    return ["word" if i == 0 else " word" for i in range(tokens)], delay_ms / 1000


async def paced(items: list[str], delay: float) -> AsyncIterator[bytes]:
    for i, item in enumerate(items):
        if i and delay:
            await asyncio.sleep(delay)
        yield item.encode()


async def floor_view(request: HttpRequest) -> HttpResponse:
    items, delay = words(request.body)
    return StreamingHttpResponse(paced(items, delay), content_type="text/plain; charset=utf-8")


async def asgi_floor(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    items, delay = words(body)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    async for chunk in paced(items, delay):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
