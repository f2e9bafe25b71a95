"""The built-in Bedrock emulator, driven by real, unmodified boto3 over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import uuid
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import botocore.eventstream
import botocore.session
import pytest
import trustme
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from django_bedrock_stream.emulator import BedrockEmulator, Scenario
from django_bedrock_stream.emulator.scenarios import parse_markers, signature_for, split_text
from django_bedrock_stream.emulator.server import default_replay_dir

from .recorded import load_index

REPO_ROOT = Path(__file__).resolve().parent.parent


def make_client(attempts: int = 1, pool: int = 32):
    # No endpoint_url: boto3 must find the emulator through AWS_ENDPOINT_URL_BEDROCK_RUNTIME.
    return boto3.client(
        "bedrock-runtime",
        config=Config(
            retries={"mode": "standard", "total_max_attempts": attempts},
            max_pool_connections=pool,
            read_timeout=30,
            connect_timeout=5,
        ),
    )


@pytest.fixture
def client(bedrock_emulator):
    return make_client()


def decode_invoke_text(payload: dict) -> str | None:
    """Text of one decoded invoke chunk, per the fixtures README's definition of expected_text."""
    if payload.get("type") == "content_block_delta":
        d = payload["delta"]
        return d["text"] if d.get("type") == "text_delta" else None
    if "type" in payload:
        return None
    for key in ("completion", "outputText", "generation", "text"):
        if isinstance(payload.get(key), str):
            return payload[key]
    if "outputs" in payload:
        return payload["outputs"][0]["text"]
    if "contentBlockDelta" in payload:
        return payload["contentBlockDelta"]["delta"].get("text")
    return None


def invoke_events(client, model_id, body):
    resp = client.invoke_model_with_response_stream(modelId=model_id, body=json.dumps(body))
    out = []
    for event in resp["body"]:
        assert set(event) == {"chunk"}
        out.append(json.loads(event["chunk"]["bytes"]))
    return resp, out


FAMILIES = [
    (
        "anthropic.claude-3-haiku-20240307-v1:0",
        {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 200, "messages": [{"role": "user", "content": "Hi"}]},
        "end_turn",
    ),
    ("anthropic.claude-v2:1", {"prompt": "\n\nHuman: Hi\n\nAssistant:", "max_tokens_to_sample": 200}, "stop_sequence"),
    ("cohere.command-text-v14", {"prompt": "Hi", "max_tokens": 200}, "COMPLETE"),
    ("meta.llama3-8b-instruct-v1:0", {"prompt": "Hi", "max_gen_len": 200}, "stop"),
    ("mistral.mistral-7b-instruct-v0:2", {"prompt": "<s>[INST] Hi [/INST]", "max_tokens": 200}, "stop"),
    ("amazon.titan-text-express-v1", {"inputText": "Hi", "textGenerationConfig": {"maxTokenCount": 200}}, "FINISH"),
    ("us.meta.llama3-2-1b-instruct-v1:0", {"prompt": "Hi"}, "stop"),
]


def stop_reason_of(events):
    last = events[-1]
    for ev in events:
        if ev.get("type") == "message_delta":
            return ev["delta"]["stop_reason"]
    for key in ("stop_reason", "finish_reason", "completionReason"):
        if key in last:
            return last[key]
    return last["outputs"][0]["stop_reason"]


@pytest.mark.parametrize("model_id,body,stop", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_invoke_stream_every_family(bedrock_emulator, client, model_id, body, stop):
    resp, events = invoke_events(client, model_id, body)
    assert resp["contentType"] == "application/json"
    assert resp["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/vnd.amazon.eventstream"
    text = "".join(t for t in map(decode_invoke_text, events) if t)
    [rec] = bedrock_emulator.requests
    assert rec["status"] == "completed"
    assert rec["operation"] == "invoke-with-response-stream"
    assert rec["model_id"] == model_id
    assert rec["body"] == body
    assert rec["chunks_sent"] == 12
    assert text == rec["text"]
    assert len(split_text(text)) == 12
    assert not text.startswith(" ") and text.count(" ") == 11
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    assert set(metrics) == {"inputTokenCount", "outputTokenCount", "invocationLatency", "firstByteLatency"}
    assert metrics["outputTokenCount"] == 12 and all(isinstance(v, int) for v in metrics.values())
    assert all("amazon-bedrock-invocationMetrics" not in e for e in events[:-1])
    assert stop_reason_of(events) == stop
    assert rec["ended_at"] >= rec["started_at"]


def test_padding_field_present_on_the_wire(bedrock_emulator):
    import urllib.request

    body = json.dumps({"prompt": "Hi"}).encode()
    req = urllib.request.Request(
        bedrock_emulator.url + "/model/meta.llama3-8b-instruct-v1%3A0/invoke-with-response-stream",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": "AWS4-HMAC-SHA256 whatever"},
    )
    with urllib.request.urlopen(req) as r:
        assert r.headers["Content-Type"] == "application/vnd.amazon.eventstream"
        assert r.headers["x-amzn-bedrock-content-type"] == "application/json"
        assert r.headers["x-amzn-requestid"]
        assert r.headers["Transfer-Encoding"] == "chunked"
        data = r.read()
    buf = botocore.eventstream.EventStreamBuffer()
    buf.add_data(data)
    msgs = list(buf)
    assert len(msgs) == 12
    for m in msgs:
        assert m.headers == {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
        payload = json.loads(m.payload)
        assert set(payload) == {"bytes", "p"} and payload["p"].isalnum()
    assert bedrock_emulator.requests[0]["model_id"] == "meta.llama3-8b-instruct-v1:0"


def test_deterministic_reply(bedrock_emulator, client):
    body = {"prompt": "same prompt"}
    a = invoke_events(client, "mistral.mistral-large-2402-v1:0", body)[1]
    b = invoke_events(client, "mistral.mistral-large-2402-v1:0", body)[1]
    assert [decode_invoke_text(e) for e in a] == [decode_invoke_text(e) for e in b]
    other = invoke_events(client, "mistral.mistral-large-2402-v1:0", {"prompt": "another prompt"})[1]
    assert [decode_invoke_text(e) for e in other] != [decode_invoke_text(e) for e in a]


def test_anthropic_messages_shape(bedrock_emulator, client):
    _, events = invoke_events(
        client,
        "us.anthropic.claude-3-5-sonnet-20240620-v1:0",
        {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 3, "messages": [{"role": "user", "content": [{"type": "text", "text": "one two three four"}]}]},
    )
    types = [e["type"] for e in events]
    assert types == ["message_start", "content_block_start"] + ["content_block_delta"] * 3 + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["usage"]["input_tokens"] == 4
    assert events[-2] == {"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": None}, "usage": {"output_tokens": 3}}
    assert events[-1]["amazon-bedrock-invocationMetrics"]["inputTokenCount"] == 4


@pytest.mark.parametrize(
    "model_id,body,length_reason",
    [
        ("anthropic.claude-v2", {"prompt": "\n\nHuman: x\n\nAssistant:", "max_tokens_to_sample": 5}, "max_tokens"),
        ("cohere.command-light-text-v14", {"prompt": "x", "max_tokens": 5}, "MAX_TOKENS"),
        ("meta.llama2-13b-chat-v1", {"prompt": "x", "max_gen_len": 5}, "length"),
        ("mistral.mixtral-8x7b-instruct-v0:1", {"prompt": "x", "max_tokens": 5}, "length"),
        ("amazon.titan-text-lite-v1", {"inputText": "x", "textGenerationConfig": {"maxTokenCount": 5}}, "LENGTH"),
    ],
)
def test_max_tokens_cut(bedrock_emulator, client, model_id, body, length_reason):
    _, events = invoke_events(client, model_id, body)
    assert stop_reason_of(events) == length_reason
    assert bedrock_emulator.requests[0]["chunks_sent"] == 5
    assert events[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 5


def test_converse_stream(bedrock_emulator, client):
    resp = client.converse_stream(
        modelId="us.anthropic.claude-sonnet-4-20250514-v1:0",
        messages=[{"role": "user", "content": [{"text": "Tell me [[emulator tokens=7]] a joke"}]}],
        inferenceConfig={"maxTokens": 100},
    )
    events = list(resp["stream"])
    names = [next(iter(e)) for e in events]
    assert names == ["messageStart"] + ["contentBlockDelta"] * 7 + ["contentBlockStop", "messageStop", "metadata"]
    assert events[0]["messageStart"] == {"role": "assistant"}
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    [rec] = bedrock_emulator.requests
    assert rec["text"] == text and rec["operation"] == "converse-stream" and rec["status"] == "completed"
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    usage = events[-1]["metadata"]["usage"]
    assert usage["outputTokens"] == 7 and usage["totalTokens"] == usage["inputTokens"] + 7
    assert "latencyMs" in events[-1]["metadata"]["metrics"]


def test_converse_stream_max_tokens(bedrock_emulator, client):
    resp = client.converse_stream(
        modelId="amazon.nova-micro-v1:0",
        messages=[{"role": "user", "content": [{"text": "hello"}]}],
        inferenceConfig={"maxTokens": 4},
    )
    events = list(resp["stream"])
    assert sum("contentBlockDelta" in e for e in events) == 4
    assert events[-2]["messageStop"]["stopReason"] == "max_tokens"


def test_non_streaming_invoke_and_converse(bedrock_emulator, client):
    r = client.invoke_model(
        modelId="anthropic.claude-3-haiku-20240307-v1:0",
        body=json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "messages": [{"role": "user", "content": "hi [[emulator text=\"Hello there, friend.\"]]"}]}),
    )
    out = json.loads(r["body"].read())
    assert out["content"] == [{"type": "text", "text": "Hello there, friend."}]
    assert out["stop_reason"] == "end_turn" and out["usage"]["output_tokens"] == 3
    assert r["contentType"] == "application/json"
    c = client.converse(modelId="meta.llama3-70b-instruct-v1:0", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert c["stopReason"] == "end_turn"
    assert c["usage"]["outputTokens"] == 12
    assert c["output"]["message"]["role"] == "assistant"
    recs = bedrock_emulator.requests
    assert [r["operation"] for r in recs] == ["invoke", "converse"]
    assert recs[0]["text"] == "Hello there, friend."
    assert recs[1]["text"] == c["output"]["message"]["content"][0]["text"]


def test_titan_non_streaming_shape(bedrock_emulator, client):
    r = client.invoke_model(modelId="amazon.titan-text-express-v1", body=json.dumps({"inputText": "a b c"}))
    out = json.loads(r["body"].read())
    assert out["inputTextTokenCount"] == 3
    assert out["results"][0]["completionReason"] == "FINISH" and out["results"][0]["tokenCount"] == 12


def test_invalid_model_id(bedrock_emulator, client):
    with pytest.raises(ClientError) as e:
        client.invoke_model_with_response_stream(modelId="amazon.nova-unknown", body=b'{"prompt":"x"}')
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert e.value.response["Error"]["Message"] == "The provided model identifier is invalid."
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert bedrock_emulator.requests[0]["status"] == "failed"


def test_text_marker_and_json_escaping(bedrock_emulator, client):
    text = 'He said "hi"\n  then  left. Ünïcode ✓'
    prompt = f'[[emulator text={json.dumps(text)} delay_ms=0]]'
    _, events = invoke_events(client, "cohere.command-r-v1:0", {"message": prompt})
    got = "".join(t for t in map(decode_invoke_text, events) if t)
    assert got == text
    assert bedrock_emulator.requests[0]["text"] == text


def test_parse_markers_unit():
    raw = json.dumps({"prompt": 'x [[emulator tokens=5 text="a b" error=throttlingException]] y [[emulator tokens=7]]'})
    assert parse_markers(raw) == {"tokens": "7", "text": "a b", "error": "throttlingException"}
    sc = Scenario().merged(parse_markers(raw))
    assert sc.tokens == 7 and sc.text == "a b"
    with pytest.raises(ValueError):
        Scenario().merged({"bogus": 1})
    with pytest.raises(ValueError):
        Scenario().merged({"fail": "NoSuchException"})
    assert split_text("Hello  big world ") == ["Hello", "  big", " world", " "]


def test_bad_marker_is_a_validation_error(bedrock_emulator, client):
    with pytest.raises(ClientError) as e:
        invoke_events(client, "meta.llama3-8b-instruct-v1:0", {"prompt": "[[emulator tokenz=3]]"})
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "tokenz" in e.value.response["Error"]["Message"]


# -- recorded captures -------------------------------------------------------------------------


@pytest.mark.parametrize("case", load_index(), ids=lambda c: c["file"])
def test_replay_recorded_capture(bedrock_emulator, client, recorded_dir, case):
    marker = f"[[emulator replay={recorded_dir / case['file']}]]"
    if case["operation"] == "converse-stream":
        resp = client.converse_stream(modelId=case["model_id"], messages=[{"role": "user", "content": [{"text": marker}]}])
        events = list(resp["stream"])
        text = "".join(
            e["contentBlockDelta"]["delta"].get("text", "") for e in events if "contentBlockDelta" in e
        )
        assert events[-2]["messageStop"]["stopReason"] == case["stop_reason"]
    else:
        resp, payloads = invoke_events(client, case["model_id"], {"prompt": marker})
        text = "".join(t for t in map(decode_invoke_text, payloads) if t)
    assert text == case["expected_text"]
    [rec] = bedrock_emulator.requests
    assert rec["status"] == "completed"
    assert rec["text"] == case["expected_text"]


def post_replay(port: int, name: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": f"[[emulator replay={name}]]"}]}]})
    try:
        conn.request("POST", "/model/x.y/converse-stream", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_replay_by_name_is_byte_for_byte(recorded_dir):
    name = "converse_llama32_1b_text.eventstream"
    with BedrockEmulator(port=0, replay_dir=recorded_dir) as emu:
        assert post_replay(emu.port, name) == (200, (recorded_dir / name).read_bytes())
        assert post_replay(emu.port, name.removesuffix(".eventstream"))[0] == 200


def test_replay_dir_comes_only_from_the_argument_or_the_environment(recorded_dir, monkeypatch):
    """The installed package never looks outside itself (it used to find ../shared beside the checkout)."""
    monkeypatch.delenv("BEDROCK_EMULATOR_REPLAY_DIR", raising=False)
    assert default_replay_dir() is None and BedrockEmulator().replay_dir is None
    with BedrockEmulator(port=0) as emu:
        status, body = post_replay(emu.port, "converse_llama32_1b_text.eventstream")
    assert status == 400 and b"replay file not found" in body
    monkeypatch.setenv("BEDROCK_EMULATOR_REPLAY_DIR", str(recorded_dir))
    assert BedrockEmulator().replay_dir == recorded_dir
    assert BedrockEmulator(replay_dir="/elsewhere").replay_dir == Path("/elsewhere")


@pytest.mark.parametrize(
    ("command", "env"),
    [
        (["-m", "django_bedrock_stream.emulator"], {"BEDROCK_EMULATOR_REPLAY_DIR": "{dir}"}),
        (["-m", "django", "bedrock_emulator", "--replay-dir", "{dir}"], {}),
    ],
    ids=["python -m with the variable", "manage.py with the option"],
)
def test_command_line_replay_dir(recorded_dir, command, env):
    environ = dict(os.environ, PYTHONPATH=str(REPO_ROOT), DJANGO_SETTINGS_MODULE="tests.settings")
    environ.pop("BEDROCK_EMULATOR_REPLAY_DIR", None)
    environ.update({key: value.format(dir=recorded_dir) for key, value in env.items()})
    proc = subprocess.Popen(
        [sys.executable, *(arg.format(dir=recorded_dir) for arg in command), "--port", "0"],
        cwd=REPO_ROOT, env=environ, stdout=subprocess.PIPE, text=True,
    )
    try:
        banner = [proc.stdout.readline() for _ in range(3)]
        assert banner[2].strip() == f"replay dir: {recorded_dir}", banner
        port = int(banner[0].strip().rsplit(":", 1)[-1])
        name = "converse_llama32_1b_text.eventstream"
        assert post_replay(port, name) == (200, (recorded_dir / name).read_bytes())
    finally:
        proc.terminate()
        proc.wait(5)


def test_package_source_names_no_path_outside_itself():
    package = REPO_ROOT / "django_bedrock_stream"
    for path in package.rglob("*.py"):
        source = path.read_text()
        for needle in ("fixtures/recorded", '"shared"', "/work/", "parent.parent", "parents["):
            assert needle not in source, f"{path.relative_to(REPO_ROOT)} mentions {needle!r}"


def test_replay_with_delay_and_absolute_path(bedrock_emulator, client, recorded_dir):
    path = recorded_dir / "invoke_cohere_command_light_text.eventstream"
    resp = client.invoke_model_with_response_stream(
        modelId="cohere.command-light-text-v14",
        body=json.dumps({"prompt": f"[[emulator replay={path} delay_ms=20]]"}),
    )
    arrivals = []
    for _ in resp["body"]:
        arrivals.append(time.monotonic())
    assert len(arrivals) == 11
    assert arrivals[-1] - arrivals[0] > 0.4 * 10 * 0.020


# -- errors ------------------------------------------------------------------------------------


def test_corrupt_crc_rejected_by_botocore(bedrock_emulator, client):
    resp = client.invoke_model_with_response_stream(
        modelId="meta.llama3-8b-instruct-v1:0", body=json.dumps({"prompt": "[[emulator corrupt_crc_at=3]]"})
    )
    got = []
    with pytest.raises(botocore.eventstream.ChecksumMismatch):
        for event in resp["body"]:
            got.append(event)
    assert len(got) == 3


@pytest.mark.parametrize(
    "code", ["modelStreamErrorException", "throttlingException", "internalServerException", "validationException"]
)
def test_mid_stream_exception(bedrock_emulator, client, code):
    resp = client.invoke_model_with_response_stream(
        modelId="anthropic.claude-v2", body=json.dumps({"prompt": f"[[emulator tokens=10 error_at=4 error={code}]]"})
    )
    chunks = []
    with pytest.raises(EventStreamError) as e:
        for event in resp["body"]:
            chunks.append(json.loads(event["chunk"]["bytes"]))
    assert e.value.response["Error"]["Code"] == code
    assert e.value.response["Error"]["Message"]
    assert len(chunks) == 4
    [rec] = bedrock_emulator.requests
    assert rec["status"] == "error" and rec["chunks_sent"] == 4
    assert rec["text"] == "".join(c["completion"] for c in chunks)


def test_mid_stream_exception_default_code_converse(bedrock_emulator, client):
    bedrock_emulator.set_scenario(error_at=2)
    resp = client.converse_stream(modelId="mistral.mistral-large-2402-v1:0", messages=[{"role": "user", "content": [{"text": "x"}]}])
    deltas = 0
    with pytest.raises(EventStreamError) as e:
        for event in resp["stream"]:
            deltas += "contentBlockDelta" in event
    assert e.value.response["Error"]["Code"] == "modelStreamErrorException"
    assert deltas == 2


@pytest.mark.parametrize(
    "name,status",
    [
        ("ThrottlingException", 429),
        ("AccessDeniedException", 403),
        ("ValidationException", 400),
        ("ResourceNotFoundException", 404),
        ("ModelTimeoutException", 408),
        ("ModelErrorException", 424),
        ("InternalServerException", 500),
        ("ServiceUnavailableException", 503),
        ("ModelNotReadyException", 429),
    ],
)
def test_pre_stream_failures(bedrock_emulator, client, name, status):
    with pytest.raises(ClientError) as e:
        client.invoke_model_with_response_stream(
            modelId="meta.llama3-8b-instruct-v1:0", body=json.dumps({"prompt": f"[[emulator fail={name}]]"})
        )
    assert e.value.response["Error"]["Code"] == name
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e2:
        client.converse_stream(
            modelId="meta.llama3-8b-instruct-v1:0", messages=[{"role": "user", "content": [{"text": f"[[emulator fail={name}]]"}]}]
        )
    assert e2.value.response["Error"]["Code"] == name
    assert [r["status"] for r in bedrock_emulator.requests] == ["failed", "failed"]
    assert bedrock_emulator.requests[0]["http_status"] == status


def test_throttle_then_success_with_standard_retries(bedrock_emulator, monkeypatch):
    # Keep boto3's jittered backoff short; everything else is standard retry mode as shipped.
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.01)
    client = make_client(attempts=3)
    resp = client.invoke_model_with_response_stream(
        modelId="meta.llama3-8b-instruct-v1:0", body=json.dumps({"prompt": "[[emulator throttle=2 tokens=3]]"})
    )
    assert resp["ResponseMetadata"]["RetryAttempts"] == 2
    assert len(list(resp["body"])) == 3
    assert [r["status"] for r in bedrock_emulator.requests] == ["failed", "failed", "completed"]
    # A fresh client with no retries: the counter for this body is spent, so it succeeds at once.
    resp = make_client(attempts=1).invoke_model_with_response_stream(
        modelId="meta.llama3-8b-instruct-v1:0", body=json.dumps({"prompt": "[[emulator throttle=2 tokens=3]]"})
    )
    assert len(list(resp["body"])) == 3


def test_throttle_exhausts_retries(bedrock_emulator):
    with pytest.raises(ClientError) as e:
        make_client(attempts=1).converse(
            modelId="meta.llama3-8b-instruct-v1:0", messages=[{"role": "user", "content": [{"text": "[[emulator throttle=5]]"}]}]
        )
    assert e.value.response["Error"]["Code"] == "ThrottlingException"


# -- timing, disconnects, concurrency ----------------------------------------------------------


def test_pacing(bedrock_emulator, client):
    resp = client.converse_stream(
        modelId="amazon.titan-text-express-v1",
        messages=[{"role": "user", "content": [{"text": "[[emulator tokens=10 delay_ms=50]]"}]}],
    )
    arrivals = [time.monotonic() for e in resp["stream"] if "contentBlockDelta" in e]
    assert len(arrivals) == 10
    assert arrivals[-1] - arrivals[0] > 0.4 * 9 * 0.050


def test_ttfb(bedrock_emulator, client):
    t = time.monotonic()
    resp = client.invoke_model_with_response_stream(
        modelId="meta.llama3-8b-instruct-v1:0", body=json.dumps({"prompt": "[[emulator ttfb_ms=200 tokens=2]]"})
    )
    assert time.monotonic() - t > 0.15
    assert len(list(resp["body"])) == 2


def test_disconnect_mid_stream(bedrock_emulator, client):
    resp = client.invoke_model_with_response_stream(
        modelId="anthropic.claude-3-haiku-20240307-v1:0",
        body=json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 500, "messages": [{"role": "user", "content": "[[emulator tokens=200 delay_ms=100]]"}]}),
    )
    it = iter(resp["body"])
    for _ in range(5):  # message_start, content_block_start, 3 deltas
        next(it)
    t = time.monotonic()
    resp["body"].close()
    [rec] = bedrock_emulator.wait_for(lambda reqs: reqs and reqs[0]["status"] != "streaming", timeout=5)
    assert time.monotonic() - t < 2  # noticed while sleeping between tokens, not at the next write
    assert rec["status"] == "disconnected"
    assert 3 <= rec["chunks_sent"] < 200
    assert rec["ended_at"] is not None
    assert len(split_text(rec["text"])) == rec["chunks_sent"]


def test_disconnect_during_ttfb(bedrock_emulator):
    conn = http.client.HTTPConnection("127.0.0.1", bedrock_emulator.port)
    conn.request("POST", "/model/meta.llama3-8b-instruct-v1%3A0/invoke-with-response-stream", body=b'{"prompt":"[[emulator ttfb_ms=3000]]"}')
    bedrock_emulator.wait_for(lambda reqs: len(reqs) == 1)
    conn.sock.close()
    [rec] = bedrock_emulator.wait_for(lambda reqs: reqs[0]["status"] == "disconnected", timeout=2)
    assert rec["chunks_sent"] == 0


def test_200_concurrent_streams(bedrock_emulator):
    client = make_client(pool=256)
    n = 200

    def one(i):
        resp = client.invoke_model_with_response_stream(
            modelId="meta.llama3-8b-instruct-v1:0",
            body=json.dumps({"prompt": f"request {i} [[emulator tokens=20 delay_ms=5]]"}),
        )
        return i, "".join(json.loads(e["chunk"]["bytes"])["generation"] for e in resp["body"])

    with ThreadPoolExecutor(n) as pool:
        results = dict(pool.map(one, range(n)))
    recs = bedrock_emulator.requests
    assert len(recs) == n
    by_prompt = {r["body"]["prompt"]: r for r in recs}
    for i, text in results.items():
        rec = by_prompt[f"request {i} [[emulator tokens=20 delay_ms=5]]"]
        assert rec["status"] == "completed" and rec["chunks_sent"] == 20
        assert rec["text"] == text


def test_large_stream_full_speed(bedrock_emulator, client):
    t = time.monotonic()
    resp = client.invoke_model_with_response_stream(
        modelId="mistral.mistral-7b-instruct-v0:2", body=json.dumps({"prompt": "[[emulator tokens=20000]]"})
    )
    count = sum(1 for _ in resp["body"])
    assert count == 20000
    rec = bedrock_emulator.requests[0]
    assert rec["chunks_sent"] == 20000 and rec["status"] == "completed"
    assert time.monotonic() - t < 15  # botocore's decoding dominates; the emulator side is ~0.2 s


# -- control API, lifecycle ---------------------------------------------------------------------


def _connection(port, ca_file=None):
    """HTTP, or HTTPS trusting only ``ca_file`` (an emulator's self-signed CA)."""
    if ca_file is None:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ssl.create_default_context(cafile=ca_file))


def _http(emu, method, path, body=None):
    conn = _connection(emu.port, emu.ca_file)
    conn.request(method, path, body=json.dumps(body).encode() if body is not None else None)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), json.loads(data) if data else None


def test_control_api(bedrock_emulator, client):
    status, _, health = _http(bedrock_emulator, "GET", "/_emulator/health")
    assert status == 200 and health["status"] == "ok"
    status, _, sc = _http(bedrock_emulator, "POST", "/_emulator/scenario", {"tokens": 3})
    assert status == 200 and sc["tokens"] == 3
    assert bedrock_emulator.scenario.tokens == 3
    _, events = invoke_events(client, "meta.llama3-8b-instruct-v1:0", {"prompt": "x"})
    assert len(events) == 3
    status, _, reqs = _http(bedrock_emulator, "GET", "/_emulator/requests")
    assert status == 200 and len(reqs) == 1 and reqs[0]["chunks_sent"] == 3
    status, _, _ = _http(bedrock_emulator, "POST", "/_emulator/scenario", {"nope": 1})
    assert status == 400
    status, _, _ = _http(bedrock_emulator, "POST", "/_emulator/reset")
    assert status == 200
    assert bedrock_emulator.requests == [] and bedrock_emulator.scenario == Scenario()


def test_unknown_path_404(bedrock_emulator):
    status, headers, body = _http(bedrock_emulator, "GET", "/foo")
    assert status == 404
    assert headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert bedrock_emulator.requests == []


def test_keep_alive_reuses_connection(bedrock_emulator):
    conn = http.client.HTTPConnection("127.0.0.1", bedrock_emulator.port)
    for _ in range(3):
        conn.request("POST", "/model/cohere.command-text-v14/invoke-with-response-stream", body=b'{"prompt":"x"}')
        r = conn.getresponse()
        assert r.status == 200
        r.read()
    sock = conn.sock
    conn.request("POST", "/model/cohere.command-text-v14/invoke", body=b'{"prompt":"x"}')
    r = conn.getresponse()
    assert json.loads(r.read())["generations"][0]["finish_reason"] == "COMPLETE"
    assert conn.sock is sock
    conn.close()
    assert len(bedrock_emulator.requests) == 4


def test_fixture_environment(bedrock_emulator):
    assert os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] == bedrock_emulator.url
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert os.environ["AWS_DEFAULT_REGION"] == "us-east-1"


def test_context_manager_and_constructor_defaults():
    with BedrockEmulator(port=0, tokens=2) as emu:
        c = boto3.client(
            "bedrock-runtime", endpoint_url=emu.url, region_name="eu-west-1", aws_access_key_id="a", aws_secret_access_key="b"
        )
        r = c.invoke_model_with_response_stream(modelId="meta.llama3-8b-instruct-v1:0", body=b'{"prompt":"x"}')
        assert len(list(r["body"])) == 2
        emu.set_scenario(tokens=4)
        emu.reset()
        assert emu.scenario.tokens == 2
        with pytest.raises(TimeoutError):
            emu.wait_for(lambda reqs: len(reqs) > 5, timeout=0.1)
    # stopped: the port no longer accepts connections
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", emu.port, timeout=1).request("GET", "/_emulator/health")


def test_emulator_does_not_import_django():
    code = (
        "import sys; import django_bedrock_stream.emulator as e; "
        "assert not any(m == 'django' or m.startswith('django.') for m in sys.modules), 'django imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))


def test_cli_runs_and_serves(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "django_bedrock_stream.emulator", "--port", "0", "--tokens", "3"],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        url = line.strip().rsplit(" ", 1)[-1]
        c = boto3.client("bedrock-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
        r = c.invoke_model_with_response_stream(modelId="meta.llama3-8b-instruct-v1:0", body=b'{"prompt":"x"}')
        assert len(list(r["body"])) == 3
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.mark.parametrize(
    "command",
    [["-m", "django_bedrock_stream.emulator"], ["-m", "django", "bedrock_emulator"]],
    ids=["python -m", "manage.py"],
)
def test_busy_port_is_one_line_and_exit_code_2(command):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, *command, "--port", str(port)],
            cwd=REPO_ROOT,
            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), DJANGO_SETTINGS_MODULE="tests.settings"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert done.stderr == f"bedrock_emulator: port {port} is already in use (try --port {port + 1}, or --port 0 for a free one)\n"
    assert done.stdout == ""


def test_management_command_runs_and_serves():
    proc = subprocess.Popen(
        [sys.executable, "-m", "django", "bedrock_emulator", "--port", "0", "--tokens", "2", "--delay-ms", "1"],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), DJANGO_SETTINGS_MODULE="tests.settings"),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line
        url = line.strip().rsplit(" ", 1)[-1]
        c = boto3.client("bedrock-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
        r = c.converse_stream(modelId="meta.llama3-8b-instruct-v1:0", messages=[{"role": "user", "content": [{"text": "x"}]}])
        assert sum("contentBlockDelta" in e for e in r["stream"]) == 2
    finally:
        proc.terminate()
        proc.wait(5)


# -- API keys (bearer auth) -----------------------------------------------------------------------

API_KEY = "bedrock-api-key-emulator-test-0123456789"
AUTH_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.coral.service/"
INVOKE_PATH = "/model/meta.llama3-8b-instruct-v1:0/invoke-with-response-stream"


def _post_model(
    port: int, headers: dict[str, str], path: str = INVOKE_PATH, ca_file: str | Path | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = _connection(port, ca_file)
    conn.request("POST", path, body=b'{"prompt":"x"}', headers=headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), data


@pytest.fixture(scope="module")
def keyed_emulator():
    """Over HTTPS, as API keys need (botocore 1.44+ sends a bearer token over HTTPS only)."""
    with BedrockEmulator(port=0, tokens=3, api_key=API_KEY, tls=True) as emu:
        yield emu


@pytest.mark.parametrize(
    ("authorization", "error_type", "body"),
    [
        (f"Bearer {API_KEY}x", "AccessDeniedException", {"Message": "Authentication failed: Please make sure your API Key is valid."}),
        ("Bearer ", "AccessDeniedException", {"Message": "Authentication failed: Please make sure your API Key is valid."}),
        (None, "MissingAuthenticationTokenException", {"message": "Missing Authentication Token"}),
        (
            "AWS4-HMAC-SHA256 Credential=a/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=00",
            "UnrecognizedClientException",
            {"message": "The security token included in the request is invalid."},
        ),
    ],
    ids=["wrong key", "empty key", "no Authorization", "SigV4"],
)
def test_api_key_refusals_are_bedrocks(keyed_emulator, authorization, error_type, body):
    keyed_emulator.reset()
    headers = {"Authorization": authorization} if authorization is not None else {}
    status, response_headers, data = _post_model(keyed_emulator.port, headers, ca_file=keyed_emulator.ca_file)
    assert (status, response_headers["x-amzn-ErrorType"]) == (403, error_type + AUTH_SUFFIX)
    assert response_headers["Content-Type"] == "application/json"
    assert json.loads(data) == body
    (record,) = keyed_emulator.requests
    assert (record["status"], record["http_status"], record["error"], record["chunks_sent"]) == ("failed", 403, error_type, 0)
    assert API_KEY not in json.dumps(record)


def test_api_key_accepted_as_bearer(keyed_emulator):
    keyed_emulator.reset()
    status, headers, data = _post_model(
        keyed_emulator.port, {"Authorization": f"Bearer {API_KEY}"}, ca_file=keyed_emulator.ca_file
    )
    assert status == 200 and headers["Content-Type"] == "application/vnd.amazon.eventstream"
    (record,) = keyed_emulator.requests
    assert (record["status"], record["auth"], record["chunks_sent"]) == ("completed", "bearer", 3)
    assert API_KEY not in json.dumps(record) and API_KEY not in repr(keyed_emulator)
    # The control API is the emulator's own, not Bedrock's: no key needed.
    assert _http(keyed_emulator, "GET", "/_emulator/health")[0] == 200


def test_real_botocore_clients_against_a_keyed_emulator(keyed_emulator):
    """boto3 signs with the key when it has one (its token provider and "bearer" signer); with
    dummy SigV4 credentials it gets what Bedrock answers to unknown credentials."""
    from botocore.tokens import FrozenAuthToken

    class Token:
        def __init__(self, key):
            self.key = key

        def load_token(self, **kwargs):
            return self

        def get_frozen_token(self):
            return FrozenAuthToken(self.key)

    def keyed_client(key):
        core = botocore.session.Session()
        core.register_component("token_provider", Token(key))
        return boto3.session.Session(botocore_session=core, region_name="us-east-1").client(
            "bedrock-runtime",
            endpoint_url=keyed_emulator.url,
            config=Config(signature_version="bearer"),
            verify=str(keyed_emulator.ca_file),
        )

    keyed_emulator.reset()
    r = keyed_client(API_KEY).converse_stream(
        modelId="meta.llama3-8b-instruct-v1:0", messages=[{"role": "user", "content": [{"text": "x"}]}]
    )
    assert sum("contentBlockDelta" in e for e in r["stream"]) == 3
    with pytest.raises(ClientError) as denied:
        keyed_client("nope").invoke_model_with_response_stream(modelId="meta.llama3-8b-instruct-v1:0", body=b'{"prompt":"x"}')
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    sigv4 = boto3.client(
        "bedrock-runtime", endpoint_url=keyed_emulator.url, region_name="us-east-1", aws_access_key_id="a",
        aws_secret_access_key="b", verify=str(keyed_emulator.ca_file),
    )
    with pytest.raises(ClientError) as unknown:
        sigv4.invoke_model_with_response_stream(modelId="meta.llama3-8b-instruct-v1:0", body=b'{"prompt":"x"}')
    assert unknown.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert [(r["auth"], r["error"]) for r in keyed_emulator.requests] == [
        ("bearer", None), ("bearer", "AccessDeniedException"), ("sigv4", "UnrecognizedClientException")
    ]


def test_sigv4_still_accepted_without_a_key(bedrock_emulator, client):
    _, events = invoke_events(client, "meta.llama3-8b-instruct-v1:0", {"prompt": "x"})
    assert events
    (record,) = bedrock_emulator.requests
    assert (record["status"], record["auth"]) == ("completed", "sigv4")


CLI_COMMANDS = [["-m", "django_bedrock_stream.emulator"], ["-m", "django", "bedrock_emulator"]]
CLI_IDS = ["python -m", "manage.py"]


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=CLI_IDS)
def test_command_line_api_key_over_self_signed_tls(command):
    """``--tls-self-signed``: the banner gives the https URL and the CA file to trust; Ctrl-C removes it."""
    proc = subprocess.Popen(
        [sys.executable, *command, "--port", "0", "--api-key", API_KEY, "--tls-self-signed"],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), DJANGO_SETTINGS_MODULE="tests.settings"),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        banner = [proc.stdout.readline() for _ in range(5)]
        assert "listening on https://127.0.0.1:" in banner[0], banner
        assert banner[2].startswith("  export AWS_CA_BUNDLE="), banner
        assert "API key required" in "".join(banner) and API_KEY not in "".join(banner)
        port = int(banner[0].strip().rsplit(":", 1)[-1])
        ca_file = Path(banner[2].strip().split("=", 1)[1])
        assert ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert _post_model(port, {"Authorization": f"Bearer {API_KEY}"}, ca_file=ca_file)[0] == 200
        status, headers, _ = _post_model(port, {"Authorization": "Bearer wrong"}, ca_file=ca_file)
        assert (status, headers["x-amzn-ErrorType"]) == (403, "AccessDeniedException" + AUTH_SUFFIX)
        # The certificate is checked for real: a client that trusts another CA gets nowhere.
        with trustme.CA().cert_pem.tempfile() as other_ca, pytest.raises(ssl.SSLCertVerificationError):
            _post_model(port, {"Authorization": f"Bearer {API_KEY}"}, ca_file=other_ca)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert not ca_file.exists() and not ca_file.parent.exists()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(5)


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=CLI_IDS)
def test_command_line_tls_with_your_own_certificate(command, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    proc = subprocess.Popen(
        [sys.executable, *command, "--port", "0", "--tls-cert", str(tmp_path / "cert.pem"),
         "--tls-key", str(tmp_path / "key.pem")],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), DJANGO_SETTINGS_MODULE="tests.settings"),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        banner = [proc.stdout.readline() for _ in range(3)]
        assert "listening on https://127.0.0.1:" in banner[0], banner
        assert "AWS_CA_BUNDLE" not in "".join(banner)  # your certificate, your trust store
        url = banner[0].strip().rsplit(" ", 1)[-1]
        c = boto3.client(
            "bedrock-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id="a",
            aws_secret_access_key="b", verify=str(tmp_path / "ca.pem"),
        )
        r = c.converse_stream(modelId="meta.llama3-8b-instruct-v1:0", messages=[{"role": "user", "content": [{"text": "x"}]}])
        assert sum("contentBlockDelta" in e for e in r["stream"]) > 0
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=CLI_IDS)
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--tls-key", "key.pem"], "--tls-key needs --tls-cert"),
        (["--tls-cert", "cert.pem", "--tls-self-signed"], "use either --tls-cert or --tls-self-signed, not both"),
        (["--tls-cert", "no-such.pem"], "cannot load --tls-cert no-such.pem: No such file or directory"),
    ],
    ids=["key without cert", "cert and self-signed", "missing file"],
)
def test_command_line_tls_mistakes_are_one_line(command, options, message, tmp_path):
    done = subprocess.run(
        [sys.executable, *command, "--port", "0", *options],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), DJANGO_SETTINGS_MODULE="tests.settings"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and done.stdout == ""
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_in_process_tls_with_your_own_certificate(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))  # key and chain in one file
    with BedrockEmulator(host="localhost", port=0, certfile=tmp_path / "both.pem", tokens=2) as emu:
        assert emu.url.startswith("https://localhost:") and emu.ca_file is None
        with ca.cert_pem.tempfile() as ca_file:
            c = boto3.client(
                "bedrock-runtime", endpoint_url=emu.url, region_name="us-east-1", aws_access_key_id="a",
                aws_secret_access_key="b", verify=ca_file,
            )
            r = c.converse_stream(modelId="meta.llama3-8b-instruct-v1:0", messages=[{"role": "user", "content": [{"text": "x"}]}])
            assert sum("contentBlockDelta" in e for e in r["stream"]) == 2


def test_self_signed_tls_lives_as_long_as_the_emulator():
    emu = BedrockEmulator(port=0, tls=True)
    assert emu.url.startswith("https://") and emu.ca_file is None
    with emu:
        first = emu.ca_file
        assert first is not None and first.is_file()
        # A plain-HTTP client is refused without harming the server.
        plain = _connection(emu.port)
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            plain.request("GET", "/_emulator/health")
            plain.getresponse()
        plain.close()
        assert _http(emu, "GET", "/_emulator/health")[0] == 200
    assert emu.ca_file is None and not first.exists()
    with emu:  # a restart makes a new CA
        assert emu.ca_file is not None and emu.ca_file != first and _http(emu, "GET", "/_emulator/health")[0] == 200


def test_stopping_a_tls_emulator_drops_idle_keep_alive_clients_at_once():
    """A TLS close waits for the client's close_notify, which an idle keep-alive client (boto3's
    pool) never sends: stop() used to sit out its whole 2 s grace period and leave the connections
    to the garbage collector after the loop was gone (on Python 3.13, asyncio's "TypeError:
    'NoneType' object is not iterable" from Server._wakeup at exit)."""
    emu = BedrockEmulator(port=0, tls=True).start()
    idle = _connection(emu.port, emu.ca_file)
    idle.request("GET", "/_emulator/health")
    assert idle.getresponse().read()
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 1.5  # 2 s (the grace period) when it waited; milliseconds now
    idle.sock.settimeout(5)
    assert idle.sock.recv(1) == b""  # the server side is really closed
    idle.close()


def test_self_signed_tls_without_trustme_says_which_extra(monkeypatch):
    from django_bedrock_stream.emulator.server import MissingExtra

    monkeypatch.setitem(sys.modules, "trustme", None)
    with pytest.raises(MissingExtra, match=r'trustme is not installed; install it with: pip install "django-bedrock-stream\[tls\]"'):
        BedrockEmulator(port=0, tls=True).start()
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['trustme'] = None; from django_bedrock_stream.emulator.__main__ "
         "import main; sys.exit(main(['--port', '0', '--tls-self-signed']))"],
        cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), capture_output=True, text=True, timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        'bedrock_emulator: --tls-self-signed: trustme is not installed; install it with: '
        'pip install "django-bedrock-stream[tls]"\n'
    )


# -- beyond text: reasoning, citations, guardrails, cache, service tier, Nova's native format ---------

CLAUDE = "us.anthropic.claude-sonnet-4-20250514-v1:0"


def converse_events(client, text, model_id=CLAUDE, **kwargs):
    response = client.converse_stream(modelId=model_id, messages=[{"role": "user", "content": [{"text": text}]}], **kwargs)
    return list(response["stream"])


def blocks_of(events):
    """[(kind, contentBlockIndex, delta-or-None)] of the Converse block events, in order."""
    out = []
    for event in events:
        (kind, body), = event.items()
        if kind.startswith("contentBlock"):
            out.append((kind, body.get("contentBlockIndex"), body.get("delta")))
    return out


def test_converse_reasoning_then_signature_in_pieces_then_text(bedrock_emulator, client):
    events = converse_events(client, '[[emulator reasoning="Let me think about it." tokens=2]]')
    blocks = blocks_of(events)
    reasoning = [d["reasoningContent"] for k, i, d in blocks if k == "contentBlockDelta" and i == 0]
    assert "".join(r.get("text", "") for r in reasoning) == "Let me think about it."
    pieces = [r["signature"] for r in reasoning if "signature" in r]
    assert len(pieces) >= 2 and "".join(pieces) == signature_for("Let me think about it.")
    assert [r for r in reasoning if "signature" in r] == reasoning[-len(pieces):]  # the signature comes last
    assert blocks[len(reasoning)] == ("contentBlockStop", 0, None)
    assert [i for k, i, _ in blocks[len(reasoning) + 1:]] == [1, 1, 1]  # the text in block 1, then its stop
    [rec] = bedrock_emulator.requests
    assert rec["chunks_sent"] == len(reasoning) + 2 and len(rec["text"].split()) == 2


@pytest.mark.parametrize(
    "fields",
    [{"thinking": {"type": "enabled", "budget_tokens": 1024}}, {"reasoningConfig": {"type": "enabled", "maxReasoningEffort": "low"}}],
    ids=["claude thinking", "nova reasoningConfig"],
)
def test_converse_reasoning_when_the_request_turns_it_on(bedrock_emulator, client, fields):
    events = converse_events(client, "hi", additionalModelRequestFields=fields)
    reasoning = [d["reasoningContent"] for k, _, d in blocks_of(events) if d and "reasoningContent" in d]
    text = "".join(r.get("text", "") for r in reasoning)
    assert text and "".join(r.get("signature", "") for r in reasoning) == signature_for(text)
    assert not [d for _, _, d in blocks_of(converse_events(client, "hi")) if d and "reasoningContent" in d]


def test_converse_redacted_reasoning_and_citation(bedrock_emulator, client):
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF"
    response = client.converse_stream(modelId=CLAUDE, messages=[{"role": "user", "content": [
        {"document": {"format": "pdf", "name": "Leave policy", "source": {"bytes": pdf}}},
        {"text": '[[emulator redacted=opaque-bytes cite="Employees get 20 days." tokens=2]] How much leave?'},
    ]}])
    blocks = blocks_of(list(response["stream"]))
    assert blocks[:2] == [("contentBlockDelta", 0, {"reasoningContent": {"redactedContent": b"opaque-bytes"}}),
                          ("contentBlockStop", 0, None)]
    kind, index, delta = blocks[2]
    assert (kind, index) == ("contentBlockDelta", 1)
    assert delta == {"citation": {"title": "Leave policy", "sourceContent": [{"text": "Employees get 20 days."}],
                                  "location": {"documentChar": {"documentIndex": 0, "start": 0, "end": 22}}}}
    assert [i for _, i, _ in blocks[3:]] == [1, 1, 1]


def test_converse_guardrail_intervention_trace_only_when_asked(bedrock_emulator, client):
    marker = '[[emulator text="Call {NAME} today." guardrail=intervened unmasked="Call Alice today."]]'
    config = {"guardrailIdentifier": "g1", "guardrailVersion": "1"}
    traced = converse_events(client, marker, guardrailConfig={**config, "trace": "enabled"})
    assert traced[-2]["messageStop"]["stopReason"] == "guardrail_intervened"
    guardrail = traced[-1]["metadata"]["trace"]["guardrail"]
    assert guardrail["modelOutput"] == ["Call Alice today."]  # Bedrock sends it; our parser must drop it
    (assessment,) = guardrail["outputAssessments"]["emulatorguard1"]
    assert assessment["sensitiveInformationPolicy"]["piiEntities"][0]["match"] == "Alice"
    untraced = converse_events(client, marker, guardrailConfig=config)
    assert untraced[-2]["messageStop"]["stopReason"] == "guardrail_intervened"
    assert "trace" not in untraced[-1]["metadata"]
    text = "".join(d["text"] for _, _, d in blocks_of(untraced) if d)
    assert text == "Call {NAME} today."


def test_converse_cache_usage_and_service_tier(bedrock_emulator, client):
    events = converse_events(client, "[[emulator tokens=2 cache_read=120 cache_write=30]] hi", serviceTier={"type": "flex"})
    metadata = events[-1]["metadata"]
    usage = metadata["usage"]
    assert (usage["cacheReadInputTokens"], usage["cacheWriteInputTokens"], usage["outputTokens"]) == (120, 30, 2)
    assert usage["totalTokens"] == usage["inputTokens"] + 2 + 150
    assert metadata["serviceTier"] == {"type": "flex"}  # the request's tier, echoed
    forced = converse_events(client, "[[emulator service_tier=priority]] hi", serviceTier={"type": "flex"})
    assert forced[-1]["metadata"]["serviceTier"] == {"type": "priority"}
    plain = converse_events(client, "hi")[-1]["metadata"]
    assert "serviceTier" not in plain and "cacheReadInputTokens" not in plain["usage"]


def anthropic_body(content, **extra):
    return {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100, "messages": [{"role": "user", "content": content}], **extra}


def test_anthropic_messages_thinking_redacted_citations_and_cache(bedrock_emulator, client):
    marker = '[[emulator reasoning="Hmm, leave." redacted=secret cite="20 days" cite_title=policy tokens=2 cache_read=5 cache_write=6]]'
    _, events = invoke_events(client, "anthropic.claude-3-7-sonnet-20250219-v1:0", anthropic_body(marker))
    assert events[0]["message"]["usage"] == {"input_tokens": events[0]["message"]["usage"]["input_tokens"], "output_tokens": 1,
                                             "cache_creation_input_tokens": 6, "cache_read_input_tokens": 5}
    assert events[1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta" and e["index"] == 0]
    assert "".join(d.get("thinking", "") for d in deltas) == "Hmm, leave."
    signature = [d["signature"] for d in deltas if d["type"] == "signature_delta"]
    assert len(signature) >= 2 and "".join(signature) == signature_for("Hmm, leave.")
    rest = events[2 + len(deltas):]
    assert rest[0] == {"type": "content_block_stop", "index": 0}
    assert rest[1] == {"type": "content_block_start", "index": 1,
                       "content_block": {"type": "redacted_thinking", "data": base64.b64encode(b"secret").decode()}}
    assert rest[2] == {"type": "content_block_stop", "index": 1}
    assert rest[3] == {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": "", "citations": []}}
    assert rest[4]["delta"] == {"type": "citations_delta", "citation": {
        "type": "char_location", "cited_text": "20 days", "document_index": 0, "document_title": "policy",
        "start_char_index": 0, "end_char_index": 7}}
    assert [e["type"] for e in rest[5:]] == ["content_block_delta"] * 2 + ["content_block_stop", "message_delta", "message_stop"]
    assert rest[-1]["amazon-bedrock-invocationMetrics"]["cacheReadInputTokenCount"] == 5


def test_anthropic_messages_thinking_when_the_request_turns_it_on(bedrock_emulator, client):
    body = anthropic_body("hi", thinking={"type": "enabled", "budget_tokens": 1024})
    _, events = invoke_events(client, "anthropic.claude-3-7-sonnet-20250219-v1:0", body)
    assert events[1]["content_block"]["type"] == "thinking"
    r = client.invoke_model(modelId="anthropic.claude-3-7-sonnet-20250219-v1:0", body=json.dumps(body))
    content = json.loads(r["body"].read())["content"]
    assert content[0]["type"] == "thinking" and content[0]["signature"] == signature_for(content[0]["thinking"])
    assert content[1]["type"] == "text"


def test_titan_invoke_guardrail_action_on_every_chunk_trace_on_the_last(bedrock_emulator, client):
    body = {"inputText": "[[emulator tokens=3 guardrail=intervened unmasked='Account 1234561666']] hi"}
    r = client.invoke_model_with_response_stream(
        modelId="amazon.titan-text-express-v1", body=json.dumps(body), trace="ENABLED", guardrailIdentifier="g1", guardrailVersion="1"
    )
    chunks = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    assert [c["amazon-bedrock-guardrailAction"] for c in chunks] == ["INTERVENED"] * 3
    assert ["amazon-bedrock-trace" in c for c in chunks] == [False, False, True]
    assert chunks[-1]["amazon-bedrock-trace"]["guardrail"]["modelOutput"] == ["Account 1234561666"]
    assert chunks[-1]["completionReason"] == "FINISH"
    _, untraced = invoke_events(client, "amazon.titan-text-express-v1", body)
    assert not any("amazon-bedrock-trace" in c for c in untraced) and untraced[-1]["amazon-bedrock-guardrailAction"] == "INTERVENED"


NOVA = "us.amazon.nova-micro-v1:0"


def nova_body(text, **inference):
    return {"schemaVersion": "messages-v1", "messages": [{"role": "user", "content": [{"text": text}]}],
            "inferenceConfig": {"max_new_tokens": 100, **inference}}


def test_nova_native_invoke_stream_shape(bedrock_emulator, client, recorded_dir):
    _, events = invoke_events(client, NOVA, nova_body("[[emulator tokens=3 cache_read=4]] hi"))
    assert events[0] == {"messageStart": {"role": "assistant"}}
    assert [next(iter(e)) for e in events[1:7]] == ["contentBlockDelta", "contentBlockStop"] * 3
    assert [e[next(iter(e))]["contentBlockIndex"] for e in events[1:7]] == [0, 0, 1, 1, 2, 2]  # as recorded
    assert events[7] == {"messageStop": {"stopReason": "end_turn"}}
    metadata, metrics = events[8]["metadata"], events[8]["amazon-bedrock-invocationMetrics"]
    assert (metadata["metrics"], metadata["trace"]) == ({}, {})
    assert metadata["usage"] == {"inputTokens": metrics["inputTokenCount"], "outputTokens": 3,
                                 "cacheReadInputTokenCount": 4, "cacheWriteInputTokenCount": 0}
    assert (metrics["cacheReadInputTokenCount"], metrics["cacheWriteInputTokenCount"]) == (4, 0)
    # The recorded capture has the same shape: the same keys in each chunk's JSON.
    from .recorded import wire_events

    recorded = wire_events(recorded_dir / "invoke_nova_micro_tool_use.eventstream")
    assert set(recorded[-1]) == set(events[-1]) and set(recorded[-1]["metadata"]) == set(metadata)
    assert set(recorded[-1]["amazon-bedrock-invocationMetrics"]) == set(metrics)


def test_nova_native_max_tokens_non_streaming_and_validation(bedrock_emulator, client):
    _, events = invoke_events(client, NOVA, nova_body("hi", max_new_tokens=2))
    assert sum("contentBlockDelta" in e for e in events) == 2 and events[-2]["messageStop"]["stopReason"] == "max_tokens"
    r = client.invoke_model(modelId="amazon.nova-lite-v1:0", body=json.dumps(nova_body("[[emulator text='Hi there']]")))
    out = json.loads(r["body"].read())
    assert out["output"]["message"] == {"content": [{"text": "Hi there"}], "role": "assistant"}
    assert out["stopReason"] == "end_turn" and out["usage"]["outputTokens"] == 2
    with pytest.raises(ClientError) as e:
        client.invoke_model_with_response_stream(modelId=NOVA, body=json.dumps({"inputText": "hi"}))
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "required key [messages] not found" in e.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    ("model_id", "marker"),
    [("meta.llama3-8b-instruct-v1:0", "reasoning=x"), ("amazon.titan-text-express-v1", "cite=x"),
     (NOVA, "guardrail=intervened"), ("cohere.command-text-v14", "cache_read=3")],
)
def test_a_scenario_a_family_cannot_carry_is_a_validation_error(bedrock_emulator, client, model_id, marker):
    body = nova_body(f"[[emulator {marker}]]") if model_id == NOVA else {"prompt": f"[[emulator {marker}]]", "inputText": "x"}
    with pytest.raises(ClientError) as e:
        invoke_events(client, model_id, body)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert e.value.response["Error"]["Message"].startswith("The emulator has no ")


@pytest.mark.parametrize("marker", ["guardrail=maybe", "service_tier=gold", "cache_read=-1"])
def test_bad_beyond_text_values_are_validation_errors(bedrock_emulator, client, marker):
    with pytest.raises(ClientError) as e:
        converse_events(client, f"[[emulator {marker}]]")
    assert e.value.response["Error"]["Code"] == "ValidationException" and marker.split("=")[0] in e.value.response["Error"]["Message"]


def test_control_api_sets_beyond_text_defaults(bedrock_emulator, client):
    status, _, scenario = _http(bedrock_emulator, "POST", "/_emulator/scenario", {"reasoning": "Think first.", "cache_read": 2})
    assert status == 200 and scenario["reasoning"] == "Think first."
    events = converse_events(client, "hi")
    assert events[1]["contentBlockDelta"]["delta"] == {"reasoningContent": {"text": "Think"}}
    assert events[-1]["metadata"]["usage"]["cacheReadInputTokens"] == 2
    _http(bedrock_emulator, "POST", "/_emulator/scenario", {"reasoning": None, "cache_read": None})
    assert bedrock_emulator.scenario == Scenario()


def test_non_streaming_converse_carries_reasoning_and_usage(bedrock_emulator, client):
    r = client.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [
        {"text": '[[emulator reasoning="Short." text="Yes." cache_write=4 service_tier=priority]]'}]}])
    (reasoning, text) = r["output"]["message"]["content"]
    assert reasoning == {"reasoningContent": {"reasoningText": {"text": "Short.", "signature": signature_for("Short.")}}}
    assert text == {"text": "Yes."} and r["usage"]["cacheWriteInputTokens"] == 4 and r["serviceTier"] == {"type": "priority"}


# -- a reasoning block sent back on the next turn must be unchanged ----------------------------------


def second_turn(reasoning):
    return [
        {"role": "user", "content": [{"text": "hi"}]},
        {"role": "assistant", "content": [{"reasoningContent": {"reasoningText": reasoning}}, {"text": "Hello"}]},
        {"role": "user", "content": [{"text": "again"}]},
    ]


def test_converse_signature_round_trip(bedrock_emulator, client):
    events = converse_events(client, '[[emulator reasoning="I will greet."]] hi')
    signature = "".join(d["reasoningContent"].get("signature", "") for _, _, d in blocks_of(events) if d and "reasoningContent" in d)
    ok = client.converse_stream(modelId=CLAUDE, messages=second_turn({"text": "I will greet.", "signature": signature}))
    assert list(ok["stream"])
    assert bedrock_emulator.requests[-1]["body"]["messages"][1]["content"][0]["reasoningContent"]["reasoningText"]["signature"] == signature
    for tampered, message in [
        ({"text": "I will greet!", "signature": signature}, "Invalid `signature` in `thinking` block"),
        ({"text": "I will greet.", "signature": signature[:-8]}, "Invalid `signature` in `thinking` block"),
        ({"text": "I will greet."}, "thinking.signature: Field required"),
    ]:
        with pytest.raises(ClientError) as e:
            client.converse_stream(modelId=CLAUDE, messages=second_turn(tampered))
        assert e.value.response["Error"]["Code"] == "ValidationException"
        assert e.value.response["Error"]["Message"] == f"The model returned the following errors: messages.1.content.0{'.' if 'Field' in message else ': '}{message}"
    # A signature the emulator did not issue (a recorded one) is not its to judge.
    assert list(client.converse_stream(modelId=CLAUDE, messages=second_turn({"text": "x", "signature": "EqQBCgIYAhIM"}))["stream"])


def test_anthropic_signature_round_trip(bedrock_emulator, client):
    model = "anthropic.claude-3-7-sonnet-20250219-v1:0"
    first = json.loads(client.invoke_model(modelId=model, body=json.dumps(anthropic_body('[[emulator reasoning="Greet."]] hi')))["body"].read())
    thinking = first["content"][0]
    body: dict[str, Any] = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": [thinking, first["content"][1]]},
        {"role": "user", "content": "again"}]}
    assert invoke_events(client, model, body)[1]
    body["messages"][1]["content"][0] = {**thinking, "thinking": "Greet!"}
    with pytest.raises(ClientError) as e:
        invoke_events(client, model, body)
    assert e.value.response["Error"]["Message"] == "messages.1.content.0: Invalid `signature` in `thinking` block"


# -- images and documents, checked as Bedrock checks them ---------------------------------------------


def png(width=2, height=2):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def jpeg(width=3, height=2):
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


GIF = b"GIF89a" + struct.pack("<HH", 5, 4) + b"\x00\x00\x00;"
WEBP_LOSSLESS = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f" + struct.pack("<I", (6 - 1) | ((7 - 1) << 14)) + b"\x00" * 8
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def docx():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


def test_image_headers_are_read():
    from django_bedrock_stream.emulator.attachments import image_format, image_size

    assert [image_format(b) for b in (png(), jpeg(), GIF, WEBP_LOSSLESS, PDF)] == ["png", "jpeg", "gif", "webp", None]
    assert [image_size(b) for b in (png(9, 8), jpeg(3, 2), GIF, WEBP_LOSSLESS)] == [(9, 8), (3, 2), (5, 4), (6, 7)]


def image(fmt, data):
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def document(fmt, name, data):
    return {"document": {"format": fmt, "name": name, "source": {"bytes": data}}}


def test_converse_images_and_documents_arrive_byte_for_byte(bedrock_emulator, client):
    attached = [image("png", png()), image("jpeg", jpeg()), image("gif", GIF), image("webp", WEBP_LOSSLESS),
                document("pdf", "Quarterly report (2024) [final]", PDF), document("docx", "notes_v2", docx()),
                document("csv", "table", b"a,b\n1,2\n"), {"text": "Summarise these."}]
    response = client.converse_stream(modelId=CLAUDE, messages=[{"role": "user", "content": attached}])
    assert list(response["stream"])[-1]["metadata"]
    [rec] = bedrock_emulator.requests
    sent = [(b.get("image") or b.get("document"))["source"]["bytes"] for b in attached[:-1]]
    on_the_wire = [(b.get("image") or b.get("document"))["source"]["bytes"] for b in rec["body"]["messages"][0]["content"][:-1]]
    assert [base64.b64decode(b) for b in on_the_wire] == sent  # boto3 sent base64 in the JSON, the emulator kept it
    assert [(a["kind"], a["format"], a.get("name"), a["bytes"], a["sha256"]) for a in rec["attachments"]] == [
        (kind, fmt, name, len(data), hashlib.sha256(data).hexdigest())
        for (kind, fmt, name), data in zip(
            [("image", "png", None), ("image", "jpeg", None), ("image", "gif", None), ("image", "webp", None),
             ("document", "pdf", "Quarterly report (2024) [final]"), ("document", "docx", "notes_v2"),
             ("document", "csv", "table")], sent)
    ]


BIG = 3_932_160 + 1
CONVERSE_REFUSALS = [
    ([image("jpeg", png()), {"text": "x"}],
     "The model returned the following errors: messages.0.content.0.image.source.base64: "
     "The image was specified using the image/jpeg media type, but the image appears to be a image/png image"),
    ([{"text": "x"}, image("png", b"not an image at all")],
     "The model returned the following errors: messages.0.content.1.image.source.base64: Could not process image"),
    ([image("jpg", jpeg())],
     "1 validation error detected: Value 'jpg' at 'messages.1.member.content.1.member.image.format' failed to satisfy "
     "constraint: Member must satisfy enum value set: [png, jpeg, gif, webp]"),
    ([image("png", png() + b"\x00" * (BIG - len(png())))],
     "The model returned the following errors: messages.0.content.0.image.source.base64: image exceeds 5 MB maximum: "
     "5242884 bytes > 5242880 bytes"),
    ([image("png", png(8001, 1))],
     "The model returned the following errors: messages.0.content.0.image.source.base64.data: At least one of the "
     "image dimensions exceed max allowed size: 8000 pixels"),
    ([image("png", png())] * 21, "The model returned the following errors: messages: too many images: image_count > 20"),
    ([document("pdf", "report", png()), {"text": "x"}],
     "The model returned the following errors: messages.0.content.0.document.source.bytes: "
     "The document was specified as pdf, but its content is not a valid pdf file"),
    ([document("docx", "report", PDF), {"text": "x"}],
     "The model returned the following errors: messages.0.content.0.document.source.bytes: "
     "The document was specified as docx, but its content is not a valid docx file"),
    ([document("txt", "report", png()), {"text": "x"}],
     "The model returned the following errors: messages.0.content.0.document.source.bytes: "
     "The document was specified as txt, but its content is not a valid txt file"),
    ([document("pdf", "report.pdf", PDF), {"text": "x"}], "The document file name can only contain alphanumeric characters"),
    ([document("pdf", "two  spaces", PDF), {"text": "x"}], "The document file name can only contain alphanumeric characters"),
    ([document("pdf", "same", PDF), document("txt", "same", b"t"), {"text": "x"}], "Messages can't contain duplicate document names."),
    ([document("txt", f"d{i}", b"t") for i in range(6)] + [{"text": "x"}], "You can't include more than 5 documents in a request."),
    ([document("txt", "big", b"t" * 4_718_593), {"text": "x"}],
     "The maximum document size is 4.5 MB. Reduce the size of your document and retry your request."),
    ([document("pdf", "alone", PDF)], "A message that includes a document must also include a text content block."),
]


@pytest.mark.parametrize(("content", "message"), CONVERSE_REFUSALS, ids=range(len(CONVERSE_REFUSALS)))
def test_converse_attachments_refused_as_bedrock_refuses_them(bedrock_emulator, client, content, message):
    with pytest.raises(ClientError) as e:
        client.converse_stream(modelId="meta.llama3-2-11b-instruct-v1:0", messages=[{"role": "user", "content": content}])
    error = e.value.response["Error"]
    assert error["Code"] == "ValidationException" and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Message"].startswith(message)
    [rec] = bedrock_emulator.requests
    assert (rec["status"], rec["error"], rec["chunks_sent"]) == ("failed", "ValidationException", 0)


def test_attachment_limits_bedrock_lifts(bedrock_emulator, client):
    big_pdf = PDF + b"\x00" * 4_718_593
    content = [document("pdf", "big", big_pdf), {"text": "x"}]
    assert list(client.converse_stream(modelId="us.anthropic.claude-sonnet-4-20250514-v1:0", messages=[{"role": "user", "content": content}])["stream"])
    assert list(client.converse_stream(modelId="amazon.nova-pro-v1:0", messages=[{"role": "user", "content": content}])["stream"])
    with pytest.raises(ClientError):
        client.converse_stream(modelId="anthropic.claude-3-5-sonnet-20240620-v1:0", messages=[{"role": "user", "content": content}])
    with pytest.raises(ClientError) as e:
        client.converse_stream(modelId=CLAUDE, messages=[
            {"role": "user", "content": [{"text": "x"}]}, {"role": "assistant", "content": [image("png", png())]}])
    assert e.value.response["Error"]["Message"] == "You can only include images and documents if the role is user."


def b64(data):
    return base64.b64encode(data).decode()


def test_anthropic_messages_images_and_documents(bedrock_emulator, client):
    model = "anthropic.claude-3-5-sonnet-20240620-v1:0"
    good = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(png())}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(PDF)}, "title": "Plan"},
            {"type": "text", "text": "Describe."}]
    assert invoke_events(client, model, anthropic_body(good))[1]
    assert [(a["kind"], a["format"], a["sha256"]) for a in bedrock_emulator.requests[-1]["attachments"]] == [
        ("image", "png", hashlib.sha256(png()).hexdigest()), ("document", "pdf", hashlib.sha256(PDF).hexdigest())]
    for block, message in [
        ({"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": b64(jpeg())}},
         "messages.0.content.0.image.source.base64: The image was specified using the image/webp media type, but the image appears to be a image/jpeg image"),
        ({"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": b64(b"BM")}},
         "messages.0.content.0.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"),
        ({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(png())}},
         "messages.0.content.0.document.source.base64.data: The PDF specified was not valid."),
    ]:
        with pytest.raises(ClientError) as e:
            invoke_events(client, model, anthropic_body([block, {"type": "text", "text": "x"}]))
        assert (e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]) == ("ValidationException", message)


def test_nova_native_images(bedrock_emulator, client):
    body = nova_body("What is this?")
    body["messages"][0]["content"].insert(0, {"image": {"format": "gif", "source": {"bytes": b64(GIF)}}})
    assert invoke_events(client, NOVA, body)[1]
    assert bedrock_emulator.requests[-1]["attachments"][0]["format"] == "gif"
    body["messages"][0]["content"][0]["image"]["format"] = "png"
    with pytest.raises(ClientError) as e:
        invoke_events(client, NOVA, body)
    assert "image/png media type, but the image appears to be a image/gif image" in e.value.response["Error"]["Message"]


async def test_converse_attachments_through_aiobotocore(bedrock_emulator):
    from aiobotocore.session import get_session

    async with get_session().create_client("bedrock-runtime") as client:
        content = [image("webp", WEBP_LOSSLESS), {"text": "[[emulator reasoning='Looks fine.']] What is it?"}]
        response = await client.converse_stream(modelId=CLAUDE, messages=[{"role": "user", "content": content}])
        events = [event async for event in response["stream"]]
        with pytest.raises(ClientError) as e:
            await client.converse_stream(modelId=CLAUDE, messages=[{"role": "user", "content": [image("png", WEBP_LOSSLESS)]}])
    assert events[1]["contentBlockDelta"]["delta"] == {"reasoningContent": {"text": "Looks"}}
    assert base64.b64decode(bedrock_emulator.requests[0]["body"]["messages"][0]["content"][0]["image"]["source"]["bytes"]) == WEBP_LOSSLESS
    assert e.value.response["Error"]["Code"] == "ValidationException"


# -- prompt caching: a cache point writes its prefix, the same prefix later reads it -----------------


def test_converse_cache_point_writes_then_reads(bedrock_emulator, client):
    system = [{"text": "You are a careful assistant who answers in one short sentence."}, {"cachePoint": {"type": "default"}}]

    def usage(question, system=system):
        events = converse_events(client, question, system=system)
        return events[-1]["metadata"]["usage"]

    first, second = usage("What is 2+2?"), usage("And 3+3?")
    assert first["cacheWriteInputTokens"] > 0 and first["cacheReadInputTokens"] == 0
    assert (second["cacheReadInputTokens"], second["cacheWriteInputTokens"]) == (first["cacheWriteInputTokens"], 0)
    other = usage("x", system=[{"text": "Another prompt."}, {"cachePoint": {"type": "default"}}])
    assert other["cacheWriteInputTokens"] > 0 and other["cacheReadInputTokens"] == 0
    assert "cacheReadInputTokens" not in usage("x", system=[{"text": "No cache point."}])
    bedrock_emulator.reset()
    assert usage("What is 2+2?")["cacheWriteInputTokens"] == first["cacheWriteInputTokens"]  # reset empties the cache
    # A cache point after the history caches the conversation so far.
    history = [{"role": "user", "content": [{"text": "hi"}]}, {"role": "assistant", "content": [{"text": "Hello"}]},
               {"role": "user", "content": [{"text": "again"}, {"cachePoint": {"type": "default"}}]}]
    writes = client.converse_stream(modelId=CLAUDE, messages=history)
    assert list(writes["stream"])[-1]["metadata"]["usage"]["cacheWriteInputTokens"] > 0


def test_anthropic_cache_control_writes_then_reads(bedrock_emulator, client):
    body = anthropic_body("hi", system=[{"type": "text", "text": "Long instructions.", "cache_control": {"type": "ephemeral"}}])
    model = "anthropic.claude-3-7-sonnet-20250219-v1:0"
    first = invoke_events(client, model, body)[1][0]["message"]["usage"]
    second = invoke_events(client, model, body)[1][0]["message"]["usage"]
    assert first["cache_creation_input_tokens"] > 0 and first["cache_read_input_tokens"] == 0
    assert (second["cache_read_input_tokens"], second["cache_creation_input_tokens"]) == (first["cache_creation_input_tokens"], 0)


def test_every_registered_family_has_emulator_replies_and_is_routed_by_the_registry():
    from django_bedrock_stream.emulator.scenarios import REPLIES, invoke_family
    from django_bedrock_stream.families import FAMILIES

    assert set(REPLIES) == set(FAMILIES)
    for name, family in FAMILIES.items():
        if family.operation != "invoke_model_with_response_stream":
            continue
        body = family().build_body([{"role": "user", "content": "hi"}], max_tokens=5)
        for model_id in (family.default_model_id, f"us.{family.default_model_id}",
                         f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.{family.default_model_id}"):
            assert invoke_family(model_id, body) is REPLIES[name], (name, model_id)


# -- tools (issue 11) ----------------------------------------------------------------------------

CALCULATOR_SPEC = {"toolSpec": {"name": "calculator", "inputSchema": {"json": {"type": "object"}}}}
TOOL_CONFIG = {"tools": [CALCULATOR_SPEC]}
CLAUDE_TOOLS = [{"name": "calculator", "input_schema": {"type": "object"}}]


def test_tool_markers_take_json_values():
    text = '[[emulator tools=[{"name": "a", "input": {"q": "x y"}}, {"name": "b", "raw": "{"}]]] and [[emulator tool=c tool_input={"n": [1, 2]} tool_turns=2]]'
    assert parse_markers(text) == {
        "tools": [{"name": "a", "input": {"q": "x y"}}, {"name": "b", "raw": "{"}],
        "tool": "c", "tool_input": {"n": [1, 2]}, "tool_turns": "2",
    }
    scenario = Scenario().merged(parse_markers(text))
    assert scenario.tool_calls() == [
        {"name": "c", "raw": '{"n": [1, 2]}'}, {"name": "a", "raw": '{"q": "x y"}'}, {"name": "b", "raw": "{"},
    ]
    assert Scenario().merged({"tool": "c", "tool_raw": '{"x": 2+'}).tool_calls() == [{"name": "c", "raw": '{"x": 2+'}]


@pytest.mark.parametrize("values", [
    {"tool_input": "[1]"}, {"tool_input": "{not json"}, {"tools": '{"name": "a"}'}, {"tools": [{"input": {}}]},
    {"tools": [{"name": "a", "input": "text"}]}, {"tools": [{"name": "a", "extra": 1}]}, {"tool_turns": "-1"},
])
def test_bad_tool_values_are_refused(values):
    with pytest.raises(ValueError):
        Scenario().merged(values)


def test_input_pieces_cut_at_awkward_places():
    from django_bedrock_stream.emulator.scenarios import input_pieces

    text = json.dumps({"q": 'caf\u00e9 "x" \U0001f600'})  # ASCII: {"q": "caf\u00e9 \"x\" \ud83d\ude00"}
    pieces = input_pieces(text)
    assert pieces[0] == "" and "".join(pieces) == text and json.loads("".join(pieces))["q"] == 'caf\u00e9 "x" \U0001f600'
    cuts = {len("".join(pieces[:n])) for n in range(len(pieces))}
    assert text.index("\\ude00") in cuts  # between a surrogate pair's two escapes
    assert {i + 1 for i, char in enumerate(text) if char == "\\"} <= cuts  # right after each backslash
    assert {text.index("\\u00e9") + 4, text.index("\\ud83d") + 4} <= cuts  # inside each \\uXXXX escape
    raw = json.dumps({"q": "\U0001f600!"}, ensure_ascii=False)
    halves = input_pieces(raw, pairs=True)
    assert any(piece.endswith("\ud83d") for piece in halves) and any(piece.startswith("\ude00") for piece in halves)
    assert "".join(halves).encode("utf-16-le", "surrogatepass").decode("utf-16-le") == raw


def tool_blocks(events):
    """Converse events -> [(index, id, name, input pieces)] of the toolUse blocks, checking their framing."""
    blocks, open_blocks = [], {}
    for event in events:
        if "contentBlockStart" in event:
            start = event["contentBlockStart"]
            open_blocks[start["contentBlockIndex"]] = (start["start"]["toolUse"], [])
        elif "contentBlockDelta" in event and "toolUse" in event["contentBlockDelta"]["delta"]:
            open_blocks[event["contentBlockDelta"]["contentBlockIndex"]][1].append(
                event["contentBlockDelta"]["delta"]["toolUse"]["input"])
        elif "contentBlockStop" in event and event["contentBlockStop"]["contentBlockIndex"] in open_blocks:
            index = event["contentBlockStop"]["contentBlockIndex"]
            use, pieces = open_blocks.pop(index)
            blocks.append((index, use["toolUseId"], use["name"], pieces))
    assert not open_blocks
    return blocks


def test_converse_tool_turn_then_an_answer_quoting_the_results(bedrock_emulator, client):
    calls = [{"name": "calculator", "input": {"expression": "2+3"}}, {"name": "weather", "input": {"city": "Zürich"}}]
    prompt = f"[[emulator tools={json.dumps(calls)} text='Let me check.']] What now?"
    messages = [{"role": "user", "content": [{"text": prompt}]}]
    events = list(client.converse_stream(modelId=CLAUDE, messages=messages, toolConfig=TOOL_CONFIG)["stream"])
    assert [t["contentBlockDelta"]["delta"]["text"] for t in events if "text" in t.get("contentBlockDelta", {}).get("delta", {})] == [
        "Let", " me", " check."]
    blocks = tool_blocks(events)
    assert [(index, name) for index, _, name, _ in blocks] == [(1, "calculator"), (2, "weather")]  # text is block 0
    ids = [block[1] for block in blocks]
    assert len(set(ids)) == 2 and all(len(i) == 30 and i.startswith("tooluse_") for i in ids)
    assert [json.loads("".join(block[3])) for block in blocks] == [call["input"] for call in calls]
    assert all(block[3][0] == "" and len(block[3]) > 3 for block in blocks)
    assert events[-2] == {"messageStop": {"stopReason": "tool_use"}}
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 3 + sum(len(block[3]) for block in blocks)
    # The results come back: the model quotes them (an error as an error).
    messages += [
        {"role": "assistant", "content": [{"text": "Let me check."}] + [
            {"toolUse": {"toolUseId": i, "name": c["name"], "input": c["input"]}} for i, c in zip(ids, calls)]},
        {"role": "user", "content": [
            {"toolResult": {"toolUseId": ids[0], "content": [{"json": {"value": 5}}]}},
            {"toolResult": {"toolUseId": ids[1], "content": [{"text": "No station."}], "status": "error"}},
        ]},
    ]
    answer = list(client.converse_stream(modelId=CLAUDE, messages=messages, toolConfig=TOOL_CONFIG)["stream"])
    assert "".join(e["contentBlockDelta"]["delta"]["text"] for e in answer if "contentBlockDelta" in e) == (
        'Result of calculator: {"value":5}\nError from weather: No station.')
    assert answer[-2] == {"messageStop": {"stopReason": "end_turn"}} and not tool_blocks(answer)
    assert bedrock_emulator.requests[-1]["body"]["messages"][1:] == json.loads(json.dumps(messages[1:]))


def test_a_turn_of_tool_calls_alone_and_tools_not_offered(bedrock_emulator, client):
    marker = '[[emulator tool=calculator tool_input={"expression": "1"} reasoning="Use the tool."]] x'
    events = converse_events(client, marker, toolConfig=TOOL_CONFIG)
    assert not [e for e in events if "text" in e.get("contentBlockDelta", {}).get("delta", {})]
    [(index, _, name, _)] = tool_blocks(events)
    assert (index, name) == (1, "calculator")  # after the reasoning block (0), no text block
    assert [e["contentBlockStop"]["contentBlockIndex"] for e in events if "contentBlockStop" in e] == [0, 1]
    # A tool the request did not offer is called all the same (models do that)...
    events = converse_events(client, '[[emulator tool=teleport tools=[{"name": "x", "raw": "{oops"}]]] x', toolConfig=TOOL_CONFIG)
    assert [(name, "".join(pieces)) for _, _, name, pieces in tool_blocks(events)] == [("teleport", "{}"), ("x", "{oops")]
    # ...but without any tools offered the model cannot call one.
    events = converse_events(client, '[[emulator tool=calculator text="No tools here."]] x')
    assert not tool_blocks(events) and events[-2] == {"messageStop": {"stopReason": "end_turn"}}


def test_tool_turns_keep_calling_for_that_many_rounds(bedrock_emulator, client):
    messages = [{"role": "user", "content": [{"text": "[[emulator tool=calculator tool_turns=2]] x"}]}]
    for _ in range(2):
        events = list(client.converse_stream(modelId=CLAUDE, messages=messages, toolConfig=TOOL_CONFIG)["stream"])
        [(_, call_id, _, _)] = tool_blocks(events)
        messages += [
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": call_id, "name": "calculator", "input": {}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": call_id, "content": [{"text": "0"}]}}]},
        ]
    events = list(client.converse_stream(modelId=CLAUDE, messages=messages, toolConfig=TOOL_CONFIG)["stream"])
    assert not tool_blocks(events) and events[-2]["messageStop"]["stopReason"] == "end_turn"


def test_non_streaming_converse_returns_the_calls(bedrock_emulator, client):
    marker = '[[emulator tool=calculator tool_input={"expression": "2+3"}]] x'
    reply = client.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": marker}]}], toolConfig=TOOL_CONFIG)
    [block] = reply["output"]["message"]["content"]
    assert block["toolUse"]["name"] == "calculator" and block["toolUse"]["input"] == {"expression": "2+3"}
    assert reply["stopReason"] == "tool_use"


def test_anthropic_messages_tool_use_blocks(bedrock_emulator, client):
    body = anthropic_body('[[emulator tool=calculator tool_input={"expression": "2+3"} text="Sure."]] x', tools=CLAUDE_TOOLS)
    _, events = invoke_events(client, "anthropic.claude-3-haiku-20240307-v1:0", body)
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use"]
    use = starts[1]["content_block"]
    assert use["name"] == "calculator" and use["input"] == {} and use["id"].startswith("toolu_bdrk_01") and len(use["id"]) == 35
    pieces = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta" and e["index"] == 1]
    assert pieces[0] == "" and json.loads("".join(pieces)) == {"expression": "2+3"}
    assert [e["index"] for e in events if e["type"] == "content_block_stop"] == [0, 1]
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["output_tokens"] == 1 + len(pieces)
    # The result comes back as a tool_result block: quoted.
    body["messages"] += [
        {"role": "assistant", "content": [{"type": "text", "text": "Sure."}, {**use, "input": {"expression": "2+3"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": [{"type": "text", "text": "5"}]}]},
    ]
    _, events = invoke_events(client, "anthropic.claude-3-haiku-20240307-v1:0", body)
    assert "".join(filter(None, map(decode_invoke_text, events))) == "Result of calculator: 5"


def test_nova_native_tool_use_arrives_whole(bedrock_emulator, client):
    body = nova_body('[[emulator tool=calculator tool_input={"expression": "2+3"}]] x', )
    body["toolConfig"] = TOOL_CONFIG
    _, events = invoke_events(client, "amazon.nova-micro-v1:0", body)
    [start] = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
    assert str(uuid.UUID(start["start"]["toolUse"]["toolUseId"])) == start["start"]["toolUse"]["toolUseId"]
    [delta] = [e["contentBlockDelta"]["delta"]["toolUse"] for e in events if "toolUse" in e.get("contentBlockDelta", {}).get("delta", {})]
    assert json.loads(delta["input"]) == {"expression": "2+3"}
    assert {"messageStop": {"stopReason": "tool_use"}} in events


def converse_error(client, messages, model_id=CLAUDE, **kwargs):
    with pytest.raises(ClientError) as caught:
        client.converse_stream(modelId=model_id, messages=messages, **kwargs)
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    return caught.value.response["Error"]["Message"]


def use(call_id, name="calculator"):
    return {"toolUse": {"toolUseId": call_id, "name": name, "input": {}}}


def result(call_id, text="5", **extra):
    return {"toolResult": {"toolUseId": call_id, "content": [{"text": text}] if text else [], **extra}}


def test_converse_refuses_broken_tool_rounds_as_bedrock_does(bedrock_emulator, client):
    ask = {"role": "user", "content": [{"text": "x"}]}
    calls = {"role": "assistant", "content": [use("tooluse_a"), use("tooluse_b")]}
    assert converse_error(client, [ask, calls, {"role": "user", "content": [result("tooluse_a"), result("tooluse_b")]}]) == (
        "The toolConfig field must be defined when using toolUse and toolResult content blocks.")
    assert converse_error(client, [ask, calls, {"role": "user", "content": [result("tooluse_a")]}], toolConfig=TOOL_CONFIG) == (
        "Expected toolResult blocks at messages.2.content for the following Ids: tooluse_b")
    assert converse_error(client, [ask, calls, {"role": "user", "content": [result("tooluse_a"), result("tooluse_x")]}],
                          toolConfig=TOOL_CONFIG) == "Expected toolResult blocks at messages.2.content for the following Ids: tooluse_b"
    orphan = [ask, {"role": "assistant", "content": [{"text": "Hi"}]}, {"role": "user", "content": [result("tooluse_a")]}]
    assert converse_error(client, orphan, toolConfig=TOOL_CONFIG) == (
        "The number of toolResult blocks at messages.2.content exceeds the number of toolUse blocks of previous turn.")
    empty = [ask, {"role": "assistant", "content": [use("tooluse_a")]}, {"role": "user", "content": [result("tooluse_a", "", status="error")]}]
    assert converse_error(client, empty, toolConfig=TOOL_CONFIG) == (
        "The content field at messages.2.content.0.toolResult cannot be empty when status value is error.")
    assert not bedrock_emulator.requests[-1]["text"]


def test_claude_with_thinking_wants_the_reasoning_back_with_the_tool_round(bedrock_emulator, client):
    thinking = {"additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 1024}}}
    ask = {"role": "user", "content": [{"text": "x"}]}
    bare = [ask, {"role": "assistant", "content": [use("tooluse_a")]}, {"role": "user", "content": [result("tooluse_a")]}]
    message = converse_error(client, bare, toolConfig=TOOL_CONFIG, **thinking)
    assert message.startswith("The model returned the following errors: messages.1.content.0.type: Expected `thinking` "
                              "or `redacted_thinking`, but found `tool_use`. When `thinking` is enabled, a final `assistant`")
    reasoning = {"reasoningContent": {"reasoningText": {"text": "Hmm.", "signature": signature_for("Hmm.")}}}
    bare[1]["content"].insert(0, reasoning)
    assert list(client.converse_stream(modelId=CLAUDE, messages=bare, toolConfig=TOOL_CONFIG, **thinking)["stream"])
    # Other models have no such rule, nor does Claude without thinking.
    bare[1]["content"].pop(0)
    assert list(client.converse_stream(modelId=CLAUDE, messages=bare, toolConfig=TOOL_CONFIG)["stream"])
    assert list(client.converse_stream(modelId="amazon.nova-pro-v1:0", messages=bare, toolConfig=TOOL_CONFIG, **thinking)["stream"])


def anthropic_error(client, body):
    with pytest.raises(ClientError) as caught:
        client.invoke_model_with_response_stream(modelId="anthropic.claude-3-haiku-20240307-v1:0", body=json.dumps(body))
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    return caught.value.response["Error"]["Message"]


def test_anthropic_refuses_broken_tool_rounds_as_bedrock_does(bedrock_emulator, client):
    call = {"type": "tool_use", "id": "toolu_a", "name": "calculator", "input": {}}
    answer = {"type": "tool_result", "tool_use_id": "toolu_a", "content": "5"}

    def body(*messages, **extra):
        return {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                "messages": [{"role": "user", "content": "x"}, *messages], **extra}

    calls = {"role": "assistant", "content": [call]}
    assert anthropic_error(client, body(calls, {"role": "user", "content": [answer]})) == (
        "Requests which include `tool_use` or `tool_result` blocks must define tools.")
    assert anthropic_error(client, body(calls, {"role": "user", "content": "go on"}, tools=CLAUDE_TOOLS)) == (
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_a. "
        "Each `tool_use` block must have a corresponding `tool_result` block in the next message.")
    stray = {**answer, "tool_use_id": "toolu_b"}
    assert anthropic_error(client, body(calls, {"role": "user", "content": [answer, stray]}, tools=CLAUDE_TOOLS)) == (
        "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_b. "
        "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.")
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}, "tools": CLAUDE_TOOLS}
    assert anthropic_error(client, body(calls, {"role": "user", "content": [answer]}, **thinking)).startswith(
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`.")
    thought = {"type": "thinking", "thinking": "Hmm.", "signature": signature_for("Hmm.")}
    good = body({"role": "assistant", "content": [thought, call]}, {"role": "user", "content": [answer]}, **thinking)
    assert invoke_events(client, "anthropic.claude-3-haiku-20240307-v1:0", good)[1]
