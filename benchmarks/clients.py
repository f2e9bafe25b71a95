"""In-process clients for figure 1, run in their own process by ``run.py``:
``python benchmarks/clients.py <raw|ours|langchain> <emulator_url> <tokens> <runs>`` prints JSON
``{"times": [...], "tokens": n}``: seconds per full read of one ``tokens``-chunk stream at full speed.

* ``raw``: a bare boto3 loop that only decodes the chunks (``json.loads`` of each ``chunk.bytes``).
* ``ours``: ``llama2_stream`` over the same boto3 response.
* ``langchain``: langchain-aws ``ChatBedrock(...).stream`` on the same model and emulator.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("AWS_ACCESS_KEY_ID", "benchmark")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.loadgen import MODEL_ID, messages_for  # noqa: E402


def boto3_client(url: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "bedrock-runtime", endpoint_url=url, region_name="us-east-1",
        config=Config(read_timeout=300, retries={"max_attempts": 1}),
    )


def call(client, tokens: int, index: int):
    from django_bedrock_stream.prompts import build_llama2_prompt

    prompt = build_llama2_prompt(messages_for(index, tokens, 0, "fig1-"))
    body = json.dumps({"prompt": prompt, "max_gen_len": tokens})
    return client.invoke_model_with_response_stream(modelId=MODEL_ID, body=body)


def run_raw(url: str, tokens: int, index: int) -> int:
    client = boto3_client(url)
    count = 0
    loads = json.loads
    for event in call(client, tokens, index)["body"]:
        chunk = event.get("chunk")
        if chunk is not None and loads(chunk["bytes"]).get("generation"):
            count += 1
    return count


def run_ours(url: str, tokens: int, index: int) -> int:
    from django_bedrock_stream.streams import llama2_stream

    client = boto3_client(url)
    count = 0
    for _text in llama2_stream(call(client, tokens, index)):
        count += 1
    return count


def run_langchain(url: str, tokens: int, index: int) -> int:
    from langchain_aws import ChatBedrock

    llm = ChatBedrock(
        model_id=MODEL_ID, provider="meta", endpoint_url=url, region_name="us-east-1",
        model_kwargs={"max_gen_len": tokens}, streaming=True,
    )
    count = 0
    prompt = messages_for(index, tokens, 0, "fig1-")[0]["content"]
    for chunk in llm.stream(prompt):
        if chunk.content:
            count += 1
    return count


RUNNERS = {"raw": run_raw, "ours": run_ours, "langchain": run_langchain}


def main(argv: list[str]) -> int:
    kind, url, tokens, runs = argv[1], argv[2], int(argv[3]), int(argv[4])
    runner = RUNNERS[kind]
    runner(url, 50, 10_000)  # warm up: imports, client creation, connection
    times, counts = [], []
    for i in range(runs):
        start = time.perf_counter()
        counts.append(runner(url, tokens, i))
        times.append(time.perf_counter() - start)
    json.dump({"kind": kind, "times": times, "counts": counts, "tokens": tokens}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
