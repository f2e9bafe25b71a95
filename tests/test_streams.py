"""The stream functions over real boto3 / aiobotocore responses from the emulator, and over the recorded
Bedrock captures replayed byte for byte."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import boto3
import pytest

from django_bedrock_stream import parts as p
from django_bedrock_stream import streams
from django_bedrock_stream.callbacks import StreamCallbacks
from django_bedrock_stream.emulator.scenarios import signature_for
from django_bedrock_stream.exceptions import BedrockStreamInterrupted
from django_bedrock_stream.families import FAMILIES, Llama2Family
from django_bedrock_stream.streams import BedrockStream

from .recorded import FAMILY_OF, RECORDED_DIR, assert_capture_parts, expected_usage, load_index, unmasked_strings

STREAM_FUNCTIONS = {
    "anthropic": streams.anthropic_stream,
    "anthropic-messages": streams.anthropic_messages_stream,
    "cohere": streams.cohere_stream,
    "llama2": streams.llama2_stream,
    "llama3": streams.llama3_stream,
    "mistral": streams.mistral_stream,
    "titan": streams.titan_stream,
    "nova": streams.nova_stream,
    "converse": streams.converse_stream,
}
MESSAGES = [{"role": "user", "content": "[[emulator tokens=7]] Hello there"}]


def boto3_client() -> Any:
    return boto3.client("bedrock-runtime")


def call(client: Any, family_name: str, messages: list[dict[str, str]] = MESSAGES, model_id: str | None = None) -> Any:
    family = FAMILIES[family_name]()
    body = family.build_body(messages, max_tokens=100)
    kwargs = family.request_kwargs(model_id or family.default_model_id, body)
    return getattr(client, family.operation)(**kwargs)


@pytest.mark.parametrize("family", sorted(STREAM_FUNCTIONS))
def test_stream_functions_over_boto3(bedrock_emulator: Any, family: str) -> None:
    stream = STREAM_FUNCTIONS[family](call(boto3_client(), family))
    deltas = list(stream)
    record = bedrock_emulator.requests[-1]
    assert len(deltas) == 7 and all(isinstance(d, str) for d in deltas)
    assert stream.text == "".join(deltas) == record["text"]
    assert stream.stop_reason and stream.finished
    assert stream.usage["output_tokens"] == 7 and stream.usage["input_tokens"] > 0


@pytest.mark.parametrize("family", ["llama2", "converse", "anthropic-messages"])
async def test_async_for_over_boto3_reads_on_the_pool(bedrock_emulator: Any, family: str) -> None:
    stream = STREAM_FUNCTIONS[family](call(boto3_client(), family))
    deltas = [delta async for delta in stream]
    assert "".join(deltas) == stream.text == bedrock_emulator.requests[-1]["text"]


@pytest.mark.parametrize("family", sorted(STREAM_FUNCTIONS))
async def test_async_for_over_aiobotocore(bedrock_emulator: Any, family: str) -> None:
    from aiobotocore.session import get_session

    async with get_session().create_client("bedrock-runtime") as client:
        family_obj = FAMILIES[family]()
        kwargs = family_obj.request_kwargs(family_obj.default_model_id, family_obj.build_body(MESSAGES, max_tokens=100))
        response = await getattr(client, family_obj.operation)(**kwargs)
        stream = STREAM_FUNCTIONS[family](response)
        deltas = [delta async for delta in stream]
        with pytest.raises(TypeError, match="async for"):
            iter(stream)
    assert "".join(deltas) == stream.text == bedrock_emulator.requests[-1]["text"]
    assert stream.usage["output_tokens"] == 7


def test_callbacks_fire_in_order_sync_and_async_callables(bedrock_emulator: Any) -> None:
    events: list[tuple[str, Any]] = []

    async def on_token(token: str) -> None:
        events.append(("token", token))

    callbacks = StreamCallbacks(
        on_start=lambda: events.append(("start", None)),
        on_token=on_token,
        on_completion=lambda text: events.append(("completion", text)),
        on_final=lambda text: events.append(("final", text)),
    )
    stream = streams.mistral_stream(call(boto3_client(), "mistral"), callbacks=callbacks)
    text = "".join(stream)
    names = [name for name, _ in events]
    assert names == ["start"] + ["token"] * 7 + ["completion", "final"]
    assert events[-1] == ("final", text) and events[-2] == ("completion", text)


async def test_async_callbacks_under_async_for(bedrock_emulator: Any) -> None:
    events: list[str] = []

    async def note(*args: Any) -> None:
        await asyncio.sleep(0)
        events.append("x")

    stream = streams.titan_stream(call(boto3_client(), "titan"), StreamCallbacks(note, note, note, note))
    async for _ in stream:
        pass
    assert len(events) == 1 + 7 + 2


def test_generic_bedrock_stream_with_a_one_line_extractor(bedrock_emulator: Any) -> None:
    stream = streams.bedrock_stream(call(boto3_client(), "llama3"), lambda chunk: chunk.get("generation"))
    assert "".join(stream) == bedrock_emulator.requests[-1]["text"]
    # usage comes from amazon-bedrock-invocationMetrics on the last chunk
    assert stream.usage["output_tokens"] == 7


def test_mid_stream_exception_raises_our_error_after_the_text_so_far(bedrock_emulator: Any) -> None:
    messages = [{"role": "user", "content": "[[emulator tokens=9 error_at=4 error=throttlingException]] hi"}]
    stream = streams.cohere_stream(call(boto3_client(), "cohere", messages))
    received = []
    with pytest.raises(BedrockStreamInterrupted) as info:
        for delta in stream:
            received.append(delta)
    assert info.value.code == "throttlingException" and info.value.status_code == 429
    assert info.value.__cause__ is info.value.upstream
    assert "".join(received) == stream.text == bedrock_emulator.requests[-1]["text"]
    assert stream.error is info.value and not stream.finished


def test_close_stops_the_upstream_generation(bedrock_emulator: Any) -> None:
    messages = [{"role": "user", "content": "[[emulator tokens=50 delay_ms=30]] long"}]
    stream = streams.llama2_stream(call(boto3_client(), "llama2", messages))
    iterator = iter(stream)
    next(iterator)
    stream.close()
    bedrock_emulator.wait_for(lambda records: records[-1]["status"] == "disconnected")
    assert bedrock_emulator.requests[-1]["chunks_sent"] < 50


INDEX = [entry for entry in load_index() if entry["payload_family"] in FAMILY_OF]
FUNCTION_FOR = {
    "converse": streams.converse_stream,
    "anthropic-messages": streams.anthropic_messages_stream,
    "anthropic-text-completions": streams.anthropic_stream,
    "amazon-titan-text": streams.titan_stream,
    "meta-llama": streams.llama2_stream,
    "cohere-command": streams.cohere_stream,
    "amazon-nova": streams.nova_stream,
}


@pytest.mark.skipif(not INDEX, reason=f"recorded Bedrock captures not found at {RECORDED_DIR}")
@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
def test_recorded_captures_replayed_through_boto3(bedrock_emulator: Any, entry: dict[str, Any]) -> None:
    """Real Bedrock bytes, sent byte for byte by the emulator, decoded by unmodified boto3."""
    bedrock_emulator.set_scenario(replay=str(RECORDED_DIR / entry["file"]))
    client = boto3_client()
    if entry["operation"] == "converse-stream":
        response = client.converse_stream(modelId=entry["model_id"], messages=[{"role": "user", "content": [{"text": "x"}]}])
    else:
        response = client.invoke_model_with_response_stream(modelId=entry["model_id"], body=json.dumps(entry["request_body"]))
    stream = FUNCTION_FOR[entry["payload_family"]](response)
    assert "".join(stream) == entry["expected_text"]
    assert stream.stop_reason == entry["stop_reason"]
    assert stream.usage == expected_usage(entry)


# -- text split inside a character: surrogate pairs across chunks (I/O-free, plain event dicts) ------

HIGH, LOW, EMOJI = "\ud83d", "\ude00", "\U0001F600"


def llama_events(*texts: str) -> list[dict[str, Any]]:
    """Invoke chunks as boto3 yields them; ``json.dumps`` escapes a lone surrogate as Bedrock does."""
    return [{"chunk": {"bytes": json.dumps({"generation": text}).encode()}} for text in texts]


def converse_events(*texts: str) -> list[dict[str, Any]]:
    return [{"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": text}}} for text in texts]


def plain_stream(events: list[dict[str, Any]], family: str) -> tuple[streams.BedrockStream, list[str]]:
    seen: list[str] = []
    callbacks = StreamCallbacks(on_token=seen.append, on_completion=seen.append)
    return streams.BedrockStream(events, FAMILIES[family]().parse_event, callbacks), seen


JOINS = [
    # (texts of consecutive chunks, deltas the stream yields)
    ((f"Hi {HIGH}", f"{LOW}!"), ["Hi ", f"{EMOJI}!"]),  # the pair split between two chunks
    ((HIGH, LOW, " ok"), [EMOJI, " ok"]),  # each half a chunk of its own
    ((f"a{HIGH}",), ["a", "\ufffd"]),  # never completed: U+FFFD when the stream ends
    ((HIGH, "b"), ["\ufffdb"]),  # followed by something else
    ((HIGH, HIGH, LOW), ["\ufffd", EMOJI]),
    ((f"{LOW}x",), ["\ufffdx"]),  # a lone low surrogate
    ((f"a{HIGH}b{LOW}c",), ["a\ufffdb\ufffdc"]),  # lone ones inside a chunk
    ((f"é{EMOJI}", "plain"), [f"é{EMOJI}", "plain"]),  # valid text is untouched
]


@pytest.mark.parametrize("family", ["llama3", "converse"])
@pytest.mark.parametrize(("texts", "deltas"), JOINS)
def test_surrogate_pairs_are_joined_across_chunks(family: str, texts: tuple[str, ...], deltas: list[str]) -> None:
    events = llama_events(*texts) if family == "llama3" else converse_events(*texts)
    stream, seen = plain_stream(events, family)
    assert list(stream) == deltas
    assert stream.text == "".join(deltas) and stream.text.encode("utf-8")
    assert seen == [*deltas, stream.text]  # on_token and on_completion never see a lone surrogate


@pytest.mark.parametrize(("texts", "deltas"), JOINS)
async def test_surrogate_pairs_are_joined_across_chunks_under_async_for(texts: tuple[str, ...], deltas: list[str]) -> None:
    stream, seen = plain_stream(converse_events(*texts), "converse")
    assert [delta async for delta in stream] == deltas
    assert stream.text == "".join(deltas) and seen == [*deltas, stream.text]


def test_a_half_pair_left_when_the_stream_breaks_is_dropped() -> None:
    def source() -> Any:
        yield from llama_events(f"Hi {HIGH}")
        raise ConnectionResetError("gone")

    stream = streams.llama3_stream({"body": source()})
    received = []
    with pytest.raises(BedrockStreamInterrupted):
        for delta in stream:
            received.append(delta)
    assert received == ["Hi "] and stream.text == "Hi "  # what the client got, nothing unencodable


def _unparseable_stream() -> BedrockStream:
    events = [{"chunk": {"bytes": b'{"generation": "Hi"}'}}, {"chunk": {"bytes": b"{not json"}}]
    return BedrockStream(events, Llama2Family().parse_event)


def test_an_event_the_family_cannot_parse_fails_the_stream() -> None:
    """Not a raw ValueError escaping the runner (a row left ``cancelled``): a stream failure."""
    stream = _unparseable_stream()
    with pytest.raises(BedrockStreamInterrupted) as caught:
        list(stream)
    assert stream.text == "Hi" and stream.error is caught.value
    assert caught.value.code == "JSONDecodeError" and "{not json" not in caught.value.message


async def test_an_event_the_family_cannot_parse_fails_the_async_stream() -> None:
    stream = _unparseable_stream()
    with pytest.raises(BedrockStreamInterrupted):
        [text async for text in stream]
    assert stream.text == "Hi"


# -- typed parts: the recorded captures and the emulator's scenarios, through boto3 and aiobotocore ----


def replayed(client: Any, entry: dict[str, Any]) -> Any:
    if entry["operation"] == "converse-stream":
        return client.converse_stream(modelId=entry["model_id"], messages=[{"role": "user", "content": [{"text": "x"}]}])
    return client.invoke_model_with_response_stream(modelId=entry["model_id"], body=json.dumps(entry["request_body"]))


@pytest.mark.skipif(not INDEX, reason=f"recorded Bedrock captures not found at {RECORDED_DIR}")
@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
def test_recorded_capture_parts_replayed_through_boto3(bedrock_emulator: Any, entry: dict[str, Any]) -> None:
    bedrock_emulator.set_scenario(replay=str(RECORDED_DIR / entry["file"]))
    stream = FUNCTION_FOR[entry["payload_family"]](replayed(boto3_client(), entry))
    list(stream.parts())
    assert_capture_parts(stream, entry)


PARTS_CAPTURES = [e for e in INDEX if e.get("reasoning_text") or "tool_use" in e["stop_reason"] or "guardrail" in e["file"]
                  or "citations" in e["file"]]


@pytest.mark.skipif(not INDEX, reason=f"recorded Bedrock captures not found at {RECORDED_DIR}")
@pytest.mark.parametrize("entry", PARTS_CAPTURES, ids=[e["file"] for e in PARTS_CAPTURES])
async def test_recorded_capture_parts_replayed_through_aiobotocore(bedrock_emulator: Any, entry: dict[str, Any]) -> None:
    from aiobotocore.session import get_session

    bedrock_emulator.set_scenario(replay=str(RECORDED_DIR / entry["file"]))
    async with get_session().create_client("bedrock-runtime") as client:
        if entry["operation"] == "converse-stream":
            response = await client.converse_stream(modelId=entry["model_id"], messages=[{"role": "user", "content": [{"text": "x"}]}])
        else:
            response = await client.invoke_model_with_response_stream(modelId=entry["model_id"], body=json.dumps(entry["request_body"]))
        stream = FUNCTION_FOR[entry["payload_family"]](response)
        kinds = [type(part) async for part in stream.aparts()]
    assert kinds[-1] is p.Finish
    assert_capture_parts(stream, entry)


EVERYTHING = ('[[emulator tokens=3 reasoning="Let me think." redacted=opaque cite="Twenty days." cite_title=policy '
              'cache_read=7 cache_write=3 guardrail=intervened unmasked="Alice Example is here"]]')


def assert_everything(stream: BedrockStream, *, converse: bool) -> None:
    blocks = stream.reasoning_blocks
    assert stream.reasoning == "Let me think."
    assert blocks[0] == {"text": "Let me think.", "signature": signature_for("Let me think."), "redacted": ""}
    assert blocks[1]["redacted"] == base64.b64encode(b"opaque").decode()
    (source,) = stream.sources
    assert (source.id, source.title, source.cited_text, source.document_index) == ("source-1", "policy", "Twenty days.", 0)
    assert stream.usage["cache_read_tokens"] == 7 and stream.usage["cache_write_tokens"] == 3
    assert len(stream.text.split()) == 3
    if converse:
        assert stream.stop_reason == "guardrail_intervened" and stream.service_tier == "priority"
        assert stream.guardrail is not None and stream.guardrail.action == "INTERVENED"
        assert unmasked_strings(stream.guardrail.trace) == set() and stream.guardrail.trace["actionReason"]
        assert "Alice" not in json.dumps(stream.summary())


def test_converse_stream_carries_every_part_from_the_emulator(bedrock_emulator: Any) -> None:
    response = boto3_client().converse_stream(
        modelId="us.anthropic.claude-sonnet-4-20250514-v1:0",
        messages=[{"role": "user", "content": [{"text": EVERYTHING}]}],
        guardrailConfig={"guardrailIdentifier": "g1", "guardrailVersion": "1", "trace": "enabled"},
        serviceTier={"type": "priority"},
    )
    stream = streams.converse_stream(response)
    kinds = [type(part).__name__ for part in stream.parts()]
    assert_everything(stream, converse=True)
    # 3 reasoning deltas, the signature (once its block stopped), the redacted block
    assert kinds == ["ReasoningDelta"] * 5 + ["Source"] + ["TextDelta"] * 3 + ["GuardrailTrace", "Finish"]


def test_anthropic_messages_stream_carries_reasoning_citations_and_cache(bedrock_emulator: Any) -> None:
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
            "messages": [{"role": "user", "content": EVERYTHING.replace(" guardrail=intervened", "")}]}
    response = boto3_client().invoke_model_with_response_stream(
        modelId="anthropic.claude-3-7-sonnet-20250219-v1:0", body=json.dumps(body))
    stream = streams.anthropic_messages_stream(response)
    assert [d for d in stream]
    assert_everything(stream, converse=False)
    assert stream.stop_reason == "end_turn" and stream.guardrail is None


async def test_aparts_over_aiobotocore_carry_the_parts(bedrock_emulator: Any) -> None:
    from aiobotocore.session import get_session

    async with get_session().create_client("bedrock-runtime") as client:
        response = await client.converse_stream(
            modelId="anthropic.claude-3-haiku-20240307-v1:0",
            messages=[{"role": "user", "content": [{"text": EVERYTHING}]}],
            guardrailConfig={"guardrailIdentifier": "g1", "guardrailVersion": "1", "trace": "enabled"},
            serviceTier={"type": "priority"},
        )
        stream = streams.converse_stream(response)
        parts = [part async for part in stream.aparts()]
    assert_everything(stream, converse=True)
    assert parts[-1] == p.Finish("guardrail_intervened", stream.usage_detail, stream.latency_ms, "priority")


def test_nova_stream_over_the_emulator_with_cache_usage(bedrock_emulator: Any) -> None:
    messages = [{"role": "user", "content": "[[emulator tokens=4 cache_read=9 cache_write=2]] Hello"}]
    stream = streams.nova_stream(call(boto3_client(), "nova", messages))
    texts = [part for part in stream.parts() if isinstance(part, p.TextDelta)]
    assert [t.index for t in texts] == [0, 1, 2, 3]  # one content block per delta, as Nova sends it
    record = bedrock_emulator.requests[-1]
    assert record["body"]["schemaVersion"] == "messages-v1" and record["body"]["inferenceConfig"] == {"max_new_tokens": 100}
    assert stream.text == record["text"] and stream.stop_reason == "end_turn"
    assert stream.usage == {"input_tokens": stream.usage["input_tokens"], "output_tokens": 4, "cache_read_tokens": 9,
                            "cache_write_tokens": 2}


@pytest.mark.parametrize("trace", [True, False], ids=["trace", "no trace"])
def test_titan_invoke_guardrail_verdict_without_the_unmasked_output(bedrock_emulator: Any, trace: bool) -> None:
    body = {"inputText": "[[emulator tokens=3 guardrail=intervened unmasked='Bob Example 555-0100']] hi"}
    extra = {"trace": "ENABLED", "guardrailIdentifier": "g1", "guardrailVersion": "1"} if trace else {}
    response = boto3_client().invoke_model_with_response_stream(
        modelId="amazon.titan-text-express-v1", body=json.dumps(body), **extra)
    stream = streams.titan_stream(response)
    list(stream)
    assert stream.guardrail is not None and stream.guardrail.action == "INTERVENED"
    assert bool(stream.guardrail.trace) is trace
    assert "Bob" not in json.dumps(stream.summary()) and unmasked_strings(stream.guardrail.trace) == set()


@pytest.mark.parametrize("cut", ["error_at", "drop_at"])
def test_a_reasoning_stream_cut_before_its_block_stop_keeps_no_signature(bedrock_emulator: Any, cut: str) -> None:
    """3 reasoning deltas and 3 signature pieces are sent; the block's stop never arrives."""
    response = boto3_client().converse_stream(
        modelId="anthropic.claude-3-7-sonnet-20250219-v1:0",
        messages=[{"role": "user", "content": [{"text": f'[[emulator reasoning="one two three" {cut}=6]]'}]}],
    )
    stream = streams.converse_stream(response)
    with pytest.raises(BedrockStreamInterrupted):
        list(stream.parts())
    assert stream.reasoning_blocks == [{"text": "one two three", "signature": "", "redacted": ""}]
    assert bedrock_emulator.requests[-1]["chunks_sent"] == 6


def test_a_reasoning_stream_cut_after_its_block_stop_keeps_the_signature(bedrock_emulator: Any) -> None:
    response = boto3_client().invoke_model_with_response_stream(
        modelId="anthropic.claude-3-7-sonnet-20250219-v1:0",
        body=json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "messages": [
            {"role": "user", "content": '[[emulator reasoning="one two three" tokens=3 error_at=7]]'}]}),
    )
    stream = streams.anthropic_messages_stream(response)
    with pytest.raises(BedrockStreamInterrupted):
        list(stream)
    assert stream.reasoning_blocks == [{"text": "one two three", "signature": signature_for("one two three"), "redacted": ""}]
    assert len(stream.text.split()) == 1
