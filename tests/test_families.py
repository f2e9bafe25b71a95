"""Each family's I/O-free parser, on plain dicts and on the real recorded Bedrock bytes."""

from __future__ import annotations

import json

import pytest

from django_bedrock_stream.families import (
    FAMILIES,
    AnthropicFamily,
    AnthropicMessagesFamily,
    BedrockFamily,
    CohereFamily,
    ConverseFamily,
    Llama2Family,
    Llama3Family,
    MistralFamily,
    NovaFamily,
    TitanFamily,
)
from django_bedrock_stream.parts import GuardrailTrace, ReasoningDelta, Source, TextDelta, ToolCall, ToolCallStart
from django_bedrock_stream.streams import BedrockStream

from .recorded import (
    FAMILY_OF,
    RECORDED_DIR,
    assert_capture_parts,
    boto3_events,
    expected_usage,
    load_index,
    unmasked_strings,
    wire_events,
    wire_reasoning,
)

INDEX = [entry for entry in load_index() if entry["payload_family"] in FAMILY_OF]
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Tell me a joke"},
]


def chunk(data: dict) -> dict:
    return {"chunk": {"bytes": json.dumps(data).encode()}}


def run(family: BedrockFamily, events: list[dict]) -> BedrockStream:
    stream = BedrockStream(events, family.parse_event)
    assert "".join(stream) == stream.text
    return stream


@pytest.mark.skipif(not INDEX, reason=f"recorded Bedrock captures not found at {RECORDED_DIR}")
@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
def test_recorded_capture_parses_to_expected_text_stop_reason_and_usage(entry: dict) -> None:
    family = FAMILY_OF[entry["payload_family"]]()
    stream = run(family, boto3_events(RECORDED_DIR / entry["file"]))
    assert stream.text == entry["expected_text"]
    assert stream.stop_reason == entry["stop_reason"]
    assert stream.usage == expected_usage(entry)


@pytest.mark.skipif(not INDEX, reason=f"recorded Bedrock captures not found at {RECORDED_DIR}")
@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
def test_recorded_capture_parts_equal_the_raw_events(entry: dict) -> None:
    """Reasoning, signatures, sources, tool calls, guardrail: each computed from the raw events
    (tests/recorded.py, no family code) and compared with what the family parsed."""
    stream = run(FAMILY_OF[entry["payload_family"]](), boto3_events(RECORDED_DIR / entry["file"]))
    assert_capture_parts(stream, entry)


def test_every_payload_family_of_the_captures_has_a_family() -> None:
    assert {entry["payload_family"] for entry in load_index()} <= set(FAMILY_OF)


def test_registry_names_every_family() -> None:
    assert set(FAMILIES) == {
        "anthropic", "anthropic-messages", "cohere", "llama2", "llama3", "mistral", "titan", "converse", "nova",
    }


def test_family_without_name_is_rejected_at_class_creation() -> None:
    with pytest.raises(NotImplementedError, match="Broken must define the class attribute 'name'"):
        type("Broken", (BedrockFamily,), {})


def usage(inp: int, out: int, cache_read: int = 0, cache_write: int = 0) -> dict[str, int]:
    return {"input_tokens": inp, "output_tokens": out, "cache_read_tokens": cache_read, "cache_write_tokens": cache_write}


def test_invocation_metrics_fill_missing_counts_and_unknown_keys_are_ignored() -> None:
    events = [
        chunk({"text": "Hi", "is_finished": False, "p": "abcdef"}),
        chunk({"text": " there", "is_finished": False, "unknown": [1]}),
        chunk({
            "is_finished": True,
            "finish_reason": "COMPLETE",
            "generations": [{"text": "Hi there"}],
            "amazon-bedrock-invocationMetrics": {"inputTokenCount": 7, "outputTokenCount": 2,
                                                  "invocationLatency": 10, "firstByteLatency": 5},
        }),
    ]
    stream = run(CohereFamily(), events)
    assert (stream.text, stream.stop_reason, stream.usage) == (
        "Hi there", "COMPLETE", usage(7, 2)
    )
    assert stream.latency_ms == 10


def test_mistral_and_titan_and_llama_chunks() -> None:
    mistral = run(MistralFamily(), [chunk({"outputs": [{"text": "a", "stop_reason": None}]}),
                                    chunk({"outputs": [{"text": "b", "stop_reason": "length"}]})])
    assert (mistral.text, mistral.stop_reason) == ("ab", "length")
    titan = run(TitanFamily(), [chunk({"outputText": "x", "index": 0, "totalOutputTextTokenCount": 3.0,
                                       "completionReason": "FINISH", "inputTextTokenCount": 4.0})])
    assert (titan.text, titan.stop_reason, titan.usage) == ("x", "FINISH", usage(4, 3))
    llama = run(Llama3Family(), [chunk({"generation": "y", "prompt_token_count": 9, "generation_token_count": 1,
                                        "stop_reason": None}),
                                 chunk({"generation": "z", "prompt_token_count": None, "generation_token_count": 2,
                                        "stop_reason": "stop"})])
    assert (llama.text, llama.stop_reason, llama.usage) == ("yz", "stop", usage(9, 2))


def test_anthropic_messages_parts_tool_input_and_usage_from_message_events() -> None:
    events = [
        chunk({"type": "message_start", "message": {"usage": {
            "input_tokens": 11, "output_tokens": 1, "cache_read_input_tokens": 7, "cache_creation_input_tokens": 3}}}),
        chunk({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        chunk({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hm"}}),
        chunk({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig-"}}),
        chunk({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "nature"}}),
        chunk({"type": "content_block_stop", "index": 0}),
        chunk({"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "b3BhcXVl"}}),
        chunk({"type": "content_block_stop", "index": 1}),
        chunk({"type": "content_block_delta", "index": 2, "delta": {"type": "citations_delta", "citation": {
            "type": "char_location", "cited_text": "20 days", "document_index": 0, "document_title": "policy",
            "start_char_index": 4, "end_char_index": 11}}}),
        chunk({"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "Hi"}}),
        chunk({"type": "content_block_stop", "index": 2}),
        chunk({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "t1", "name": "f"}}),
        chunk({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": '{"a": '}}),
        chunk({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
        chunk({"type": "content_block_stop", "index": 3}),
        chunk({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}}),
        chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 99, "outputTokenCount": 99}}),
    ]
    stream = run(AnthropicMessagesFamily(), events)
    assert (stream.text, stream.stop_reason, stream.usage) == ("Hi", "tool_use", usage(11, 5, 7, 3))
    assert stream.reasoning_blocks == [
        {"text": "Hm", "signature": "sig-nature", "redacted": ""},
        {"text": "", "signature": "", "redacted": "b3BhcXVl"},
    ]
    (source,) = stream.sources
    assert (source.id, source.title, source.cited_text, source.document_index) == ("source-1", "policy", "20 days", 0)
    assert dict(source.location) == {"type": "char_location", "document_index": 0, "start_char_index": 4, "end_char_index": 11}
    assert stream.tool_calls == [ToolCall("t1", "f", {"a": 1}, index=3)]


def test_converse_parts_reasoning_citation_tool_cache_tier_and_guardrail() -> None:
    trace = {"modelOutput": ["Call Alice"], "outputAssessments": {"g": [{"sensitiveInformationPolicy": {
        "piiEntities": [{"match": "Alice", "type": "NAME", "action": "ANONYMIZED"}]}}]}, "actionReason": "masked"}
    events: list[dict] = [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hmm"}}}},
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "ab"}}}},
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "cd"}}}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"reasoningContent": {"redactedContent": b"\x00\xff"}}}},
        {"contentBlockStop": {"contentBlockIndex": 1}},
        {"contentBlockDelta": {"contentBlockIndex": 2, "delta": {"citation": {
            "title": "doc", "sourceContent": [{"text": "a"}, {"text": "b"}],
            "location": {"documentChar": {"documentIndex": 1, "start": 0, "end": 2}}}}}},
        {"contentBlockDelta": {"contentBlockIndex": 2, "delta": {"text": "Call {NAME}"}}},
        {"contentBlockStop": {"contentBlockIndex": 2}},
        {"contentBlockStart": {"contentBlockIndex": 3, "start": {"toolUse": {"toolUseId": "t", "name": "f"}}}},
        {"contentBlockDelta": {"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{}"}}}},
        {"contentBlockStop": {"contentBlockIndex": 3}},
        {"messageStop": {"stopReason": "guardrail_intervened"}},
        {"metadata": {"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7, "cacheReadInputTokens": 5,
                                "cacheWriteInputTokens": 6},
                      "metrics": {"latencyMs": 1}, "trace": {"guardrail": trace}, "serviceTier": {"type": "flex"}}},
    ]
    stream = run(ConverseFamily(), events)
    assert (stream.text, stream.stop_reason, stream.usage) == ("Call {NAME}", "guardrail_intervened", usage(3, 4, 5, 6))
    assert (stream.latency_ms, stream.service_tier) == (1, "flex")
    assert stream.reasoning_blocks == [{"text": "hmm", "signature": "abcd", "redacted": ""},
                                       {"text": "", "signature": "", "redacted": "AP8="}]
    (source,) = stream.sources
    assert (source.title, source.cited_text, source.document_index) == ("doc", "ab", 1)
    assert stream.tool_calls == [ToolCall("t", "f", {}, index=3)]
    assert stream.guardrail == GuardrailTrace("INTERVENED", {"outputAssessments": {"g": [{"sensitiveInformationPolicy": {
        "piiEntities": [{"type": "NAME", "action": "ANONYMIZED"}]}}]}, "actionReason": "masked"})
    parts = list(run(ConverseFamily(), events).parts())
    assert [type(part).__name__ for part in parts] == [
        "ReasoningDelta", "ReasoningDelta", "ReasoningDelta", "Source", "TextDelta", "ToolCallStart",
        "ToolInputDelta", "ToolCall", "GuardrailTrace", "Finish",
    ]
    assert parts[1] == ReasoningDelta(signature="abcd", index=0)  # one part, at the block's stop


def test_guardrail_trace_drops_what_the_guardrail_masked_at_any_depth() -> None:
    """modelOutput and every match (PII entity, regex, custom word): the masked text itself."""
    trace = {"modelOutput": ["x 1234561666"], "input": {"g": {"sensitiveInformationPolicy": {
        "regexes": [{"name": "Account", "match": "1234561666", "action": "ANONYMIZED"}]}}},
        "outputs": [{"g": {"wordPolicy": {"customWords": [{"match": "darn", "action": "BLOCKED"}]}}}]}
    events = [chunk({"outputText": "x {Account}", "completionReason": "FINISH", "amazon-bedrock-guardrailAction": "INTERVENED",
                     "amazon-bedrock-trace": {"guardrail": trace},
                     "amazon-bedrock-invocationMetrics": {"inputTokenCount": 1, "outputTokenCount": 2}})]
    stream = run(TitanFamily(), events)
    assert stream.guardrail is not None and stream.guardrail.action == "INTERVENED"
    assert unmasked_strings(stream.guardrail.trace) == set()
    assert stream.guardrail.trace["outputs"] == [{"g": {"wordPolicy": {"customWords": [{"action": "BLOCKED"}]}}}]
    assert "1234561666" not in json.dumps(stream.summary()) and "darn" not in json.dumps(stream.summary())


@pytest.mark.skipif(not (RECORDED_DIR / "converse_claude_sonnet4_thinking.eventstream").exists(), reason="no captures")
def test_a_signature_is_kept_only_when_its_block_completes() -> None:
    """A stream cut between the signature and its block's stop has the reasoning, no signature."""
    events = boto3_events(RECORDED_DIR / "converse_claude_sonnet4_thinking.eventstream")
    stop = next(i for i, e in enumerate(events) if "contentBlockStop" in e)
    assert "signature" in events[stop - 1]["contentBlockDelta"]["delta"]["reasoningContent"]
    cut = run(ConverseFamily(), events[:stop])
    text, signatures = wire_reasoning(wire_events(RECORDED_DIR / "converse_claude_sonnet4_thinking.eventstream"))
    assert cut.reasoning == text and cut.reasoning_blocks == [{"text": text, "signature": "", "redacted": ""}]
    assert not [p for p in run(ConverseFamily(), events[:stop]).parts() if isinstance(p, ReasoningDelta) and p.signature]
    whole = run(ConverseFamily(), events)
    assert [b["signature"] for b in whole.reasoning_blocks] == signatures and len(signatures[0]) > 100


def test_anthropic_signature_without_its_block_stop_is_dropped() -> None:
    events = [
        chunk({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        chunk({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hm"}}),
        chunk({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
    ]
    stream = run(AnthropicMessagesFamily(), events)
    assert stream.reasoning_blocks == [{"text": "Hm", "signature": "", "redacted": ""}]


def test_nova_native_chunks_are_converse_events() -> None:
    events = [
        chunk({"messageStart": {"role": "assistant"}}),
        chunk({"contentBlockDelta": {"delta": {"text": "Hi"}, "contentBlockIndex": 0}}),
        chunk({"contentBlockStop": {"contentBlockIndex": 0}}),
        chunk({"contentBlockStart": {"start": {"toolUse": {"toolUseId": "u", "name": "w"}}, "contentBlockIndex": 1}}),
        chunk({"contentBlockDelta": {"delta": {"toolUse": {"input": '{"x":1}'}}, "contentBlockIndex": 1}}),
        chunk({"contentBlockStop": {"contentBlockIndex": 1}}),
        chunk({"messageStop": {"stopReason": "tool_use"}}),
        chunk({"metadata": {"usage": {"inputTokens": 4, "outputTokens": 2, "cacheReadInputTokenCount": 3,
                                      "cacheWriteInputTokenCount": 1}, "metrics": {}, "trace": {}},
               "amazon-bedrock-invocationMetrics": {"inputTokenCount": 4, "outputTokenCount": 2, "invocationLatency": 9,
                                                    "firstByteLatency": 1}}),
    ]
    stream = run(NovaFamily(), events)
    assert (stream.text, stream.stop_reason, stream.usage, stream.latency_ms) == ("Hi", "tool_use", usage(4, 2, 3, 1), 9)
    parts = list(run(NovaFamily(), events).parts())
    assert parts[:3] == [TextDelta("Hi", 0), ToolCallStart("u", "w", 1), parts[2]]
    assert parts[3] == ToolCall("u", "w", {"x": 1}, index=1) and isinstance(parts[-1], type(stream.finish_part()))
    assert not any(isinstance(p, (Source, GuardrailTrace)) for p in parts)


def test_request_bodies_per_family() -> None:
    anthropic = AnthropicFamily().build_body(MESSAGES, max_tokens=50)
    assert anthropic["max_tokens_to_sample"] == 50 and anthropic["prompt"].endswith("\n\nAssistant:")
    messages = AnthropicMessagesFamily().build_body(MESSAGES, max_tokens=50)
    assert messages["system"] == "Be brief." and messages["anthropic_version"] == "bedrock-2023-05-31"
    assert [m["role"] for m in messages["messages"]] == ["user", "assistant", "user"]
    assert Llama2Family().build_body(MESSAGES, max_tokens=5)["max_gen_len"] == 5
    assert "<|begin_of_text|>" in Llama3Family().build_body(MESSAGES, max_tokens=5)["prompt"]
    assert MistralFamily().build_body(MESSAGES, max_tokens=5)["max_tokens"] == 5
    assert TitanFamily().build_body(MESSAGES, max_tokens=5)["textGenerationConfig"] == {"maxTokenCount": 5}
    assert CohereFamily().build_body(MESSAGES, max_tokens=5)["max_tokens"] == 5
    converse = ConverseFamily().build_body(MESSAGES, max_tokens=5)
    assert converse["system"] == [{"text": "Be brief."}]
    assert converse["inferenceConfig"] == {"maxTokens": 5}
    kwargs = ConverseFamily().request_kwargs("m", converse)
    assert kwargs["modelId"] == "m" and kwargs["messages"][0]["content"] == [{"text": "Hi"}]
    nova = NovaFamily().build_body(MESSAGES, max_tokens=5)
    assert (nova["schemaVersion"], nova["inferenceConfig"], nova["system"]) == ("messages-v1", {"max_new_tokens": 5}, [{"text": "Be brief."}])
    assert nova["messages"][0] == {"role": "user", "content": [{"text": "Hi"}]}
    assert NovaFamily().operation == "invoke_model_with_response_stream"
    invoke = TitanFamily().request_kwargs("amazon.titan-text-express-v1", {"inputText": "é"})
    assert json.loads(invoke["body"]) == {"inputText": "é"} and invoke["contentType"] == "application/json"
