"""Posting a JSON body to a stream view and reading its AI SDK UI message stream: shared by the tests
of request parts, tools and the tool loop (one helper, not a copy per module)."""

from __future__ import annotations

import http.client
import json
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.test import AsyncClient, Client

from django_bedrock_stream import client as clients


def post(server: str, url: str, body: dict[str, Any], query: str = "", user: Any = None) -> tuple[int, str]:
    """POST ``body`` through Django's Client (``"wsgi"``), AsyncClient (``"asgi"``) or a real server
    (``server`` is then its URL), signed in as ``user`` if given (test clients only); the status and
    the whole response body."""
    raw = json.dumps(body)
    if server == "wsgi":
        client = Client()
        if user is not None:
            client.force_login(user)
        response: Any = client.post(url + query, raw, content_type="application/json")
        text = b"".join(response.streaming_content).decode() if response.streaming else response.content.decode()
        return response.status_code, text
    if server == "asgi":

        async def asgi() -> tuple[int, str]:
            client = AsyncClient()
            if user is not None:
                await sync_to_async(client.force_login)(user)
            response: Any = await client.post(url + query, raw, content_type="application/json")
            if response.streaming:
                text = b"".join([chunk async for chunk in response.streaming_content]).decode()
            else:
                text = response.content.decode()
            await clients.aclose_clients()  # made on this call's own loop
            return response.status_code, text

        return async_to_sync(asgi)()
    assert user is None, "a real server's client signs in through a session cookie, not force_login"
    host, port = server.rsplit("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", url + query, body=raw, headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        return reply.status, reply.read().decode()
    finally:
        conn.close()


def ui_chunks(body: str) -> list[dict[str, Any]]:
    """The chunks of a whole UI message stream, which must end with ``[DONE]``."""
    events = [block.removeprefix("data: ") for block in body.split("\n\n") if block.startswith("data: ")]
    assert events[-1] == "[DONE]", body[-300:]
    return [json.loads(event) for event in events[:-1]]


def of(chunks: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [chunk for chunk in chunks if chunk["type"] == kind]


def texts(chunks: list[dict[str, Any]]) -> str:
    return "".join(chunk["delta"] for chunk in of(chunks, "text-delta"))
