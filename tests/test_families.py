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
    TitanFamily,
)
from django_bedrock_stream.streams import BedrockStream

from .recorded import FAMILY_OF, RECORDED_DIR, boto3_events, expected_usage, load_index

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


def test_registry_names_every_family() -> None:
    assert set(FAMILIES) == {
        "anthropic", "anthropic-messages", "cohere", "llama2", "llama3", "mistral", "titan", "converse",
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


def test_anthropic_messages_skips_tool_input_and_reads_usage_from_message_events() -> None:
    events = [
        chunk({"type": "message_start", "message": {"usage": {"input_tokens": 11, "output_tokens": 1}}}),
        chunk({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        chunk({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{"}}),
        chunk({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}),
        chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 99, "outputTokenCount": 99}}),
    ]
    stream = run(AnthropicMessagesFamily(), events)
    assert (stream.text, stream.stop_reason, stream.usage) == ("Hi", "end_turn", {"input_tokens": 11, "output_tokens": 5})


def test_converse_ignores_reasoning_and_tool_deltas() -> None:
    events = [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hmm"}}}},
        {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"text": "Yes"}}},
        {"contentBlockDelta": {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{}"}}}},
        {"messageStop": {"stopReason": "tool_use"}},
        {"metadata": {"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}, "metrics": {"latencyMs": 1}}},
    ]
    stream = run(ConverseFamily(), events)
    assert (stream.text, stream.stop_reason, stream.usage) == ("Yes", "tool_use", {"input_tokens": 3, "output_tokens": 4})


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
    invoke = TitanFamily().request_kwargs("amazon.titan-text-express-v1", {"inputText": "é"})
    assert json.loads(invoke["body"]) == {"inputText": "é"} and invoke["contentType"] == "application/json"
