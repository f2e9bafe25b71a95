"""The hand-written baseline: a minimal async Django view over aiobotocore, as a skilled user would write
it without this library, that streams the same llama2 text and saves one row.

One aiobotocore client per process (created on first use, with a connection pool as large as the
library's benchmark client), the response streamed as plain text, and one INSERT of the finished
completion (the library's ``Completion`` table, so both write the same row) in one ``sync_to_async``
hop that gives its connection back (returned to the pool, or closed) before the hop ends. No
validation beyond ``json.loads``, no budgets, no cancellation handling, no error mapping: the floor
the library is compared with.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from django_bedrock_stream.models import Completion
from django_bedrock_stream.prompts import build_llama2_prompt

MODEL_ID = "meta.llama2-13b-chat-v1"
_client: Any = None
_client_lock = asyncio.Lock()


async def bedrock() -> Any:
    """The process's one aiobotocore client (entered once, never closed: it lives as long as the worker)."""
    global _client
    async with _client_lock:
        if _client is None:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session

            config = AioConfig(max_pool_connections=2048, retries={"mode": "standard", "max_attempts": 1},
                               read_timeout=300)
            creator = get_session().create_client(
                "bedrock-runtime", region_name="us-east-1", endpoint_url=os.environ["BENCH_EMULATOR_URL"],
                config=config,
            )
            _client = await creator.__aenter__()
    return _client


@sync_to_async
def save_row(user_id: int | None, messages: list[dict[str, Any]], text: str, usage: dict[str, int]) -> None:
    Completion.objects.create(
        user_id=user_id, model_id=MODEL_ID, family="llama2", messages=messages, text=text,
        status=Completion.Status.COMPLETED, input_tokens=usage.get("inputTokenCount"),
        output_tokens=usage.get("outputTokenCount"),
    )
    if connection.settings_dict.get("OPTIONS", {}).get("pool"):
        connection.close()  # back to the pool now, not when the request ends
    else:
        close_old_connections()


async def stream_view(request: HttpRequest) -> HttpResponse:
    data = json.loads(request.body)
    messages = data["messages"]
    body = json.dumps({"prompt": build_llama2_prompt(messages), "max_gen_len": int(data.get("max_tokens", 512))})
    client = await bedrock()
    response = await client.invoke_model_with_response_stream(modelId=MODEL_ID, body=body)
    user = getattr(request, "user", None)
    user_id = user.pk if user is not None and user.is_authenticated else None

    async def chunks() -> AsyncIterator[bytes]:
        parts: list[str] = []
        usage: dict[str, int] = {}
        async for event in response["body"]:
            chunk = event.get("chunk")
            if chunk is None:
                continue
            payload = json.loads(chunk["bytes"])
            text = payload.get("generation") or ""
            if text:
                parts.append(text)
                yield text.encode()
            usage = payload.get("amazon-bedrock-invocationMetrics") or usage
        await save_row(user_id, messages, "".join(parts), usage)

    return StreamingHttpResponse(chunks(), content_type="text/plain; charset=utf-8",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
