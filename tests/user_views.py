"""Views a user writes by hand with the stream functions and StreamingTextResponse (seed-style)."""

from __future__ import annotations

import json
from typing import Any

import boto3
from django.http import HttpRequest

from django_bedrock_stream.callbacks import StreamCallbacks
from django_bedrock_stream.prompts import build_llama2_prompt
from django_bedrock_stream.responses import StreamingTextResponse
from django_bedrock_stream.streams import llama2_stream

COMPLETIONS: list[str] = []


def _body(request: HttpRequest) -> str:
    messages = json.loads(request.body)["messages"]
    return json.dumps({"prompt": build_llama2_prompt(messages), "max_gen_len": 64})


def sync_llama2(request: HttpRequest) -> StreamingTextResponse:
    response = boto3.client("bedrock-runtime").invoke_model_with_response_stream(
        modelId="meta.llama2-13b-chat-v1", body=_body(request)
    )
    return StreamingTextResponse(llama2_stream(response, StreamCallbacks(on_completion=COMPLETIONS.append)))


async def async_llama2(request: HttpRequest) -> StreamingTextResponse:
    from aiobotocore.session import get_session

    context = get_session().create_client("bedrock-runtime")
    client = await context.__aenter__()
    response = await client.invoke_model_with_response_stream(modelId="meta.llama2-13b-chat-v1", body=_body(request))

    async def close_client(text: Any) -> None:
        COMPLETIONS.append(text)
        await context.__aexit__(None, None, None)

    return StreamingTextResponse(llama2_stream(response, StreamCallbacks(on_final=close_client)), headers={"X-Demo": "1"})
