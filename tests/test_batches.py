"""The botocore fast path (``batches.py``) yields exactly what botocore's public iteration yields,
and the stream still works when the botocore internals it leans on are missing."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from django_bedrock_stream import batches, streams

from .recorded import RECORDED_DIR, load_index

INVOKE = [e for e in load_index() if e["operation"] != "converse-stream" and e["payload_family"] == "meta-llama"]


def invoke(emulator: Any, entry: dict[str, Any]) -> Any:
    emulator.set_scenario(replay=str(RECORDED_DIR / entry["file"]))
    client = boto3.client("bedrock-runtime", endpoint_url=emulator.url)
    return client.invoke_model_with_response_stream(modelId=entry["model_id"], body=json.dumps(entry["request_body"]))


@pytest.mark.skipif(not INVOKE, reason=f"recorded Bedrock captures not found at {RECORDED_DIR}")
@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "public-iteration"])
def test_both_paths_decode_a_real_capture_identically(bedrock_emulator: Any, monkeypatch: Any, fast: bool) -> None:
    entry = INVOKE[0]
    monkeypatch.setattr(batches, "_FAST", fast)
    body = invoke(bedrock_emulator, entry)["body"]
    sizes = [len(batch) for batch in batches.sync_event_batches(body)]
    assert sum(sizes) == entry["events"]["chunk"]
    if not fast:
        assert set(sizes) == {1}  # one event a batch: botocore's own iteration
    stream = streams.llama2_stream(invoke(bedrock_emulator, entry))
    assert "".join(stream) == entry["expected_text"]


def test_the_fast_path_is_on_with_the_installed_botocore() -> None:
    assert batches._FAST, "botocore's internals changed: the fast path is off (still correct, but slower)"
