"""Wire encoders: exact bytes, escaping, life-cycle rules, finish mapping, negotiation, and real AI SDK parsers.

Pure tests (no Django, no network). The last section runs the AI SDK's own client code under Node
(``tests/js``); it is skipped when ``node`` or ``tests/js/node_modules`` is missing (``npm ci`` in tests/js).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from django_bedrock_stream import parts as p
from django_bedrock_stream.protocols import (
    PROTOCOLS,
    DataStreamProtocol,
    ServerSentEvent,
    ServerSentEventsProtocol,
    StreamProtocol,
    TextProtocol,
    UIMessageStreamProtocol,
    get_protocol,
    map_finish_reason,
    negotiate_protocol,
)

USAGE = {"input_tokens": 12, "output_tokens": 7}

# Text that exercises JSON escaping: quotes, backslash, newline/CR/tab, control char, non-ASCII, emoji,
# U+2028 (valid raw in JSON, a line break in old JS), and something that looks like SSE framing.
TRICKY = 'say "hi"\\ \n\r\t\x01 é 日本 😀 \u2028 data: [DONE]\n\n'


def run(
    protocol: StreamProtocol, *deltas: str, stop_reason: str | None = "end_turn"
) -> str:
    return (
        protocol.start()
        + "".join(protocol.delta(d) for d in deltas)
        + protocol.finish(stop_reason, USAGE)
    )


# ----------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------


def test_registry_names_and_content_types() -> None:
    assert {name: cls.content_type for name, cls in PROTOCOLS.items()} == {
        "text": "text/plain; charset=utf-8",
        "data": "text/plain; charset=utf-8",
        "ui": "text/event-stream",
        "sse": "text/event-stream",
    }
    assert all(cls.name == name for name, cls in PROTOCOLS.items())


def test_headers() -> None:
    assert TextProtocol().headers() == {}
    assert DataStreamProtocol().headers() == {"x-vercel-ai-data-stream": "v1"}
    assert UIMessageStreamProtocol().headers() == {
        "x-vercel-ai-ui-message-stream": "v1"
    }
    assert ServerSentEventsProtocol().headers() == {}
    protocol = DataStreamProtocol()
    protocol.headers()["x"] = "y"
    assert protocol.headers() == {"x-vercel-ai-data-stream": "v1"}


def test_get_protocol() -> None:
    assert get_protocol("ui") is UIMessageStreamProtocol
    with pytest.raises(ValueError, match="'text', 'data', 'ui', 'sse'"):
        get_protocol("json")


def test_generated_message_ids_are_unique() -> None:
    a, b = UIMessageStreamProtocol(), UIMessageStreamProtocol()
    assert a.message_id.startswith("msg_") and len(a.message_id) == 36
    assert a.message_id != b.message_id
    assert UIMessageStreamProtocol("m1").message_id == "m1"


# ----------------------------------------------------------------------------------------------------------
# Exact bytes
# ----------------------------------------------------------------------------------------------------------


def test_text_protocol() -> None:
    protocol = TextProtocol("m")
    assert protocol.start() == ""
    assert protocol.delta("Hel") == "Hel"
    assert protocol.delta(TRICKY) == TRICKY
    assert protocol.ping() == ""
    assert protocol.finish("end_turn", USAGE) == ""
    assert TextProtocol().error("boom") == ""


def test_data_stream_protocol() -> None:
    body = run(DataStreamProtocol("msg_1"), "Hello", ", world")
    assert body == (
        'f:{"messageId":"msg_1"}\n'
        '0:"Hello"\n'
        '0:", world"\n'
        'e:{"finishReason":"stop","usage":{"promptTokens":12,"completionTokens":7},"isContinued":false}\n'
        'd:{"finishReason":"stop","usage":{"promptTokens":12,"completionTokens":7}}\n'
    )


def test_data_stream_error_and_ping() -> None:
    protocol = DataStreamProtocol("msg_1")
    assert protocol.ping() == ""
    assert protocol.start() + protocol.delta("a") + protocol.error(
        'Too many "requests"'
    ) == ('f:{"messageId":"msg_1"}\n0:"a"\n3:"Too many \\"requests\\""\n')


def test_ui_message_stream_protocol() -> None:
    protocol = UIMessageStreamProtocol("msg_1")
    body = (
        protocol.start()
        + protocol.delta("Hello")
        + protocol.ping()
        + protocol.finish("max_tokens", USAGE)
    )
    assert body == (
        'data: {"type":"start","messageId":"msg_1"}\n\n'
        'data: {"type":"start-step"}\n\n'
        'data: {"type":"text-start","id":"msg_1-text-1"}\n\n'
        'data: {"type":"text-delta","id":"msg_1-text-1","delta":"Hello"}\n\n'
        ": ping\n\n"
        'data: {"type":"text-end","id":"msg_1-text-1"}\n\n'
        'data: {"type":"finish-step"}\n\n'
        'data: {"type":"finish","messageMetadata":'
        '{"finishReason":"length","usage":{"inputTokens":12,"outputTokens":7,"cacheReadTokens":0,"cacheWriteTokens":0}}}\n\n'
        "data: [DONE]\n\n"
    )


class TopLevelFinishUI(UIMessageStreamProtocol):
    """Opt-in for clients on ai >= 5.0.92 (ai 5.0.0-5.0.91 reject the key)."""

    top_level_finish_reason = True


def test_ui_message_stream_top_level_finish_reason() -> None:
    finish = TopLevelFinishUI("m").finish("end_turn", USAGE)
    assert 'data: {"type":"finish","finishReason":"stop","messageMetadata":' in finish


def test_ui_message_stream_error() -> None:
    protocol = UIMessageStreamProtocol("msg_1")
    assert protocol.error("Throttled\nretry") == (
        'data: {"type":"error","errorText":"Throttled\\nretry"}\n\ndata: [DONE]\n\n'
    )


def test_server_sent_events_protocol() -> None:
    protocol = ServerSentEventsProtocol("msg_1")
    assert protocol.start() == ""
    body = (
        protocol.delta("Hel")
        + protocol.ping()
        + protocol.delta("lo")
        + protocol.finish(None, USAGE)
    )
    assert body == (
        'event: token\nid: 1\ndata: {"text":"Hel"}\n\n'
        ": ping\n\n"
        'event: token\nid: 2\ndata: {"text":"lo"}\n\n'
        'event: done\nid: 3\ndata: {"finish_reason":"other","stop_reason":null,'
        '"usage":{"input_tokens":12,"output_tokens":7,"cache_read_tokens":0,"cache_write_tokens":0}}\n\n'
    )


def test_server_sent_events_error_continues_ids() -> None:
    protocol = ServerSentEventsProtocol()
    protocol.delta("a")
    assert (
        protocol.error('bad "input"')
        == 'event: error\nid: 2\ndata: {"message":"bad \\"input\\""}\n\n'
    )


def test_ids_are_per_instance() -> None:
    first, second = ServerSentEventsProtocol(), ServerSentEventsProtocol()
    first.delta("a")
    first.delta("b")
    assert second.delta("c").startswith("event: token\nid: 1\n")


# ----------------------------------------------------------------------------------------------------------
# JSON escaping
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls", [DataStreamProtocol, UIMessageStreamProtocol, ServerSentEventsProtocol]
)
def test_json_escaping_round_trips(cls: type[StreamProtocol]) -> None:
    protocol = cls("m")
    protocol.start()
    encoded = protocol.delta(TRICKY)
    if cls is UIMessageStreamProtocol:  # the first delta opens the text block
        opening = 'data: {"type":"text-start","id":"m-text-1"}\n\n'
        assert encoded.startswith(opening)
        encoded = encoded.removeprefix(opening)
    # Framing intact: the payload adds no raw CR/LF of its own, so one line (+ SSE blank line) per event.
    assert "\r" not in encoded
    if cls is DataStreamProtocol:
        assert encoded.count("\n") == 1
        payload = encoded.removeprefix("0:").removesuffix("\n")
        assert json.loads(payload) == TRICKY
    else:
        assert encoded.endswith("\n\n") and encoded.count("\n") == (
            4 if cls is ServerSentEventsProtocol else 2
        )
        payload = encoded.rstrip("\n").split("data: ", 1)[1]
        decoded = json.loads(payload)
        assert decoded.get("delta", decoded.get("text")) == TRICKY
    # Compact, non-ASCII kept raw.
    assert (
        "😀" in encoded
        and "日本" in encoded
        and "\\u" not in encoded.replace("\\u0001", "")
    )
    encoded.encode("utf-8")


def test_exact_escapes() -> None:
    protocol = DataStreamProtocol("m")
    protocol.start()
    assert (
        protocol.delta('a"b\\c\nd\re\tf\x00g é😀')
        == '0:"a\\"b\\\\c\\nd\\re\\tf\\u0000g é😀"\n'
    )


@pytest.mark.parametrize(
    "cls", [DataStreamProtocol, UIMessageStreamProtocol, ServerSentEventsProtocol]
)
def test_lone_surrogates_are_escaped_not_crashed(cls: type[StreamProtocol]) -> None:
    protocol = cls("m")
    protocol.start()
    first, second = protocol.delta("\ud83d"), protocol.delta("\ude00")
    assert "\\ud83d" in first and "\\ude00" in second
    (first + second).encode("utf-8")  # the response layer must be able to encode it


def test_text_protocol_replaces_lone_surrogates() -> None:
    assert TextProtocol().delta("a\ud83db") == "a\ufffdb"


# ----------------------------------------------------------------------------------------------------------
# Life cycle
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", list(PROTOCOLS.values()))
def test_nothing_after_terminal_event(cls: type[StreamProtocol]) -> None:
    protocol = cls("m")
    run(protocol, "x")
    assert protocol.closed
    assert protocol.delta("late") == protocol.error("late") == protocol.ping() == ""
    assert protocol.finish("end_turn", USAGE) == ""
    errored = cls("m")
    errored.error("boom")
    assert (
        errored.closed
        and errored.finish("end_turn", USAGE) == ""
        and errored.start() == ""
    )


def test_start_is_emitted_once_and_implicitly() -> None:
    explicit = UIMessageStreamProtocol("m")
    assert explicit.start() != "" and explicit.start() == ""
    implicit = UIMessageStreamProtocol("m")
    assert implicit.delta("x") == UIMessageStreamProtocol("m").start() + explicit.delta(
        "x"
    )
    empty = UIMessageStreamProtocol("m")
    assert empty.finish("end_turn", USAGE).startswith('data: {"type":"start"')


def test_empty_deltas_produce_nothing() -> None:
    protocol = ServerSentEventsProtocol()
    assert protocol.delta("") == ""
    assert protocol.delta("a").startswith("event: token\nid: 1\n")


def test_error_before_start_has_no_start() -> None:
    assert (
        UIMessageStreamProtocol("m").error("x")
        == 'data: {"type":"error","errorText":"x"}\n\ndata: [DONE]\n\n'
    )
    assert DataStreamProtocol("m").error("x") == '3:"x"\n'


def test_usage_is_lenient() -> None:
    odd_usage: Any = {
        "input_tokens": 3.0,
        "output_tokens": None,
    }  # Titan floats, a missing count
    finish = DataStreamProtocol("m").finish("end_turn", odd_usage)
    assert '"usage":{"promptTokens":3,"completionTokens":0}' in finish
    assert (
        '"usage":{"input_tokens":0,"output_tokens":0,"cache_read_tokens":0,"cache_write_tokens":0}'
        in ServerSentEventsProtocol().finish(None, {})
    )
    odd_cache: Any = {"cache_read_tokens": 4.0, "cache_write_tokens": None}
    assert (
        '"usage":{"inputTokens":0,"outputTokens":0,"cacheReadTokens":4,"cacheWriteTokens":0}'
        in UIMessageStreamProtocol("m").finish("end_turn", odd_cache)
    )


# ----------------------------------------------------------------------------------------------------------
# Typed parts: every part in every protocol, byte for byte
# ----------------------------------------------------------------------------------------------------------

REASONING = p.ReasoningDelta(text='Let me "think" 🤔')
SIGNATURE = p.ReasoningDelta(signature="c2lnbmF0dXJl")
REDACTED = p.ReasoningDelta(redacted="cmVkYWN0ZWQ=")
DOCUMENT_CHAR = {"documentChar": {"documentIndex": 1, "start": 0, "end": 58}}
DOCUMENT_SOURCE = p.Source(
    id="source-1", title="policy", cited_text="Employees get 20 days.", document_index=1, location=DOCUMENT_CHAR
)
WEB = {"web": {"url": "https://example.com/a?b=1&c=2", "domain": "example.com"}}
URL_SOURCE = p.Source(id="source-2", title="Example", url="https://example.com/a?b=1&c=2", cited_text="c", location=WEB)
BARE_SOURCE = p.Source(id="source-3")  # no title, URL, text or location
FILE = p.File(media_type="image/png", data="iVBORw0KGgo=")
GUARDRAIL = p.GuardrailTrace(action="INTERVENED", trace={"outputAssessments": {"g1": [{"contentPolicy": {}}]}})
BAD_JSON = "The tool input is not valid JSON: Unterminated string"
TOOL_START = p.ToolCallStart(id="t1", name="get_weather")
TOOL_DELTA = p.ToolInputDelta(id="t1", delta='{"location": "Par')
TOOL_CALL = p.ToolCall(id="t1", name="get_weather", input={"location": "Paris"})
SIGNED_CALL = p.ToolCall(id="t1", name="get_weather", input={"location": "Paris"}, signature="c2lnbmVk")
BAD_CALL = p.ToolCall(id="t2", name="get_weather", input='{"loc', error=BAD_JSON)
TOOL_RESULT = p.ToolResult(id="t1", name="get_weather", output={"temperature": 21})
TOOL_ERROR = p.ToolResult(id="t2", name="get_weather", error=BAD_JSON)
TOOL_DENIED = p.ToolDenied(call_id="t3")
APPROVAL = p.ToolApprovalRequest(approval_id="YXBwcm92YWw", call_id="t3")
STEP = p.StepFinish("tool_use", p.Usage(input_tokens=4, output_tokens=2, cache_read_tokens=100, cache_write_tokens=20))
# A tool Bedrock runs itself (Nova 2's code interpreter): its call and its result arrive in the stream.
CODE = {"snippet": "6 * 7"}
CODE_OUTPUT = {"stdOut": "42", "stdErr": "", "exitCode": 0, "isError": False}
SERVER_START = p.ToolCallStart(id="t4", name="nova_code_interpreter", provider_executed=True)
SERVER_CALL = p.ToolCall(id="t4", name="nova_code_interpreter", input=CODE, provider_executed=True)
SERVER_RESULT = p.ToolResult(id="t4", name="nova_code_interpreter", output=CODE_OUTPUT, provider_executed=True)
SERVER_ERROR = p.ToolResult(id="t4", name="nova_code_interpreter", error="Timed out", provider_executed=True)
TOOL_PARTS: list[p.Part] = [
    TOOL_START, TOOL_DELTA, TOOL_CALL, SIGNED_CALL, BAD_CALL, TOOL_RESULT, TOOL_ERROR, TOOL_DENIED, APPROVAL, STEP,
    SERVER_START, SERVER_CALL, SERVER_RESULT, SERVER_ERROR,
]


def ui_block(kind: str, block_id: str, *deltas: dict[str, Any]) -> str:
    """The exact chunks of one complete reasoning block (what a signature or redacted part is)."""
    return (
        f'data: {{"type":"{kind}-start","id":"{block_id}"}}\n\n'
        + "".join(
            f"data: {json.dumps({'type': f'{kind}-delta', 'id': block_id, **d}, separators=(',', ':'))}\n\n"
            for d in deltas
        )
        + f'data: {{"type":"{kind}-end","id":"{block_id}"}}\n\n'
    )


#: part -> what each protocol writes for it, right after start() (so SSE ids start at 1, ui block ids at 1).
PART_WIRE: dict[str, tuple[p.Part, dict[str, str]]] = {
    "reasoning-text": (
        REASONING,
        {
            "text": "",
            "data": 'g:"Let me \\"think\\" 🤔"\n',
            "ui": 'data: {"type":"reasoning-start","id":"m-reasoning-1"}\n\n'
            'data: {"type":"reasoning-delta","id":"m-reasoning-1","delta":"Let me \\"think\\" 🤔"}\n\n',
            "sse": 'event: reasoning\nid: 1\ndata: {"text":"Let me \\"think\\" 🤔"}\n\n',
        },
    ),
    "reasoning-signature": (
        SIGNATURE,
        {
            "text": "",
            "data": 'j:{"signature":"c2lnbmF0dXJl"}\n',
            "ui": 'data: {"type":"reasoning-start","id":"m-reasoning-1"}\n\n'
            'data: {"type":"reasoning-delta","id":"m-reasoning-1","delta":"",'
            '"providerMetadata":{"bedrock":{"signature":"c2lnbmF0dXJl"}}}\n\n'
            'data: {"type":"reasoning-end","id":"m-reasoning-1"}\n\n',
            "sse": 'event: reasoning\nid: 1\ndata: {"signature":"c2lnbmF0dXJl"}\n\n',
        },
    ),
    "reasoning-redacted": (
        REDACTED,
        {
            "text": "",
            "data": 'i:{"data":"cmVkYWN0ZWQ="}\n',
            "ui": 'data: {"type":"reasoning-start","id":"m-reasoning-1"}\n\n'
            'data: {"type":"reasoning-delta","id":"m-reasoning-1","delta":"",'
            '"providerMetadata":{"bedrock":{"redactedData":"cmVkYWN0ZWQ="}}}\n\n'
            'data: {"type":"reasoning-end","id":"m-reasoning-1"}\n\n',
            "sse": 'event: reasoning\nid: 1\ndata: {"redacted":"cmVkYWN0ZWQ="}\n\n',
        },
    ),
    "source-document": (
        DOCUMENT_SOURCE,
        {
            "text": "",
            "data": "",  # data stream v1 sources are URLs only
            "ui": 'data: {"type":"source-document","sourceId":"source-1","mediaType":"text/plain","title":"policy",'
            '"providerMetadata":{"bedrock":{"citedText":"Employees get 20 days.","documentIndex":1,'
            '"location":{"documentChar":{"documentIndex":1,"start":0,"end":58}}}}}\n\n',
            "sse": 'event: source\nid: 1\ndata: {"id":"source-1","title":"policy","cited_text":"Employees get 20 days.",'
            '"document_index":1,"location":{"documentChar":{"documentIndex":1,"start":0,"end":58}}}\n\n',
        },
    ),
    "source-url": (
        URL_SOURCE,
        {
            "text": "",
            "data": 'h:{"sourceType":"url","id":"source-2","url":"https://example.com/a?b=1&c=2","title":"Example"}\n',
            "ui": 'data: {"type":"source-url","sourceId":"source-2","url":"https://example.com/a?b=1&c=2","title":"Example",'
            '"providerMetadata":{"bedrock":{"citedText":"c",'
            '"location":{"web":{"url":"https://example.com/a?b=1&c=2","domain":"example.com"}}}}}\n\n',
            "sse": 'event: source\nid: 1\ndata: {"id":"source-2","title":"Example","url":"https://example.com/a?b=1&c=2",'
            '"cited_text":"c","location":{"web":{"url":"https://example.com/a?b=1&c=2","domain":"example.com"}}}\n\n',
        },
    ),
    "source-bare": (
        BARE_SOURCE,
        {
            "text": "",
            "data": "",
            "ui": 'data: {"type":"source-document","sourceId":"source-3","mediaType":"text/plain","title":"Document 1"}\n\n',
            "sse": 'event: source\nid: 1\ndata: {"id":"source-3"}\n\n',
        },
    ),
    "file": (
        FILE,
        {
            "text": "",
            "data": 'k:{"data":"iVBORw0KGgo=","mimeType":"image/png"}\n',
            "ui": 'data: {"type":"file","url":"data:image/png;base64,iVBORw0KGgo=","mediaType":"image/png"}\n\n',
            "sse": 'event: file\nid: 1\ndata: {"media_type":"image/png","data":"iVBORw0KGgo="}\n\n',
        },
    ),
    "guardrail": (
        GUARDRAIL,
        {
            "text": "",
            "data": "",
            "ui": "",  # the action is in the finish chunk's messageMetadata.guardrail
            "sse": 'event: guardrail\nid: 1\ndata: {"action":"INTERVENED",'
            '"trace":{"outputAssessments":{"g1":[{"contentPolicy":{}}]}}}\n\n',
        },
    ),
    # -- tools (the text protocol carries none of them) --
    "tool-start": (
        TOOL_START,
        {
            "text": "",
            "data": 'b:{"toolCallId":"t1","toolName":"get_weather"}\n',
            "ui": 'data: {"type":"tool-input-start","toolCallId":"t1","toolName":"get_weather"}\n\n',
            "sse": 'event: tool-call-start\nid: 1\ndata: {"id":"t1","name":"get_weather"}\n\n',
        },
    ),
    "tool-input-delta": (
        TOOL_DELTA,
        {
            "text": "",
            "data": 'c:{"toolCallId":"t1","argsTextDelta":"{\\"location\\": \\"Par"}\n',
            "ui": 'data: {"type":"tool-input-delta","toolCallId":"t1","inputTextDelta":"{\\"location\\": \\"Par"}\n\n',
            "sse": 'event: tool-input\nid: 1\ndata: {"id":"t1","delta":"{\\"location\\": \\"Par"}\n\n',
        },
    ),
    "tool-call": (
        TOOL_CALL,
        {
            "text": "",
            "data": '9:{"toolCallId":"t1","toolName":"get_weather","args":{"location":"Paris"}}\n',
            "ui": 'data: {"type":"tool-input-available","toolCallId":"t1","toolName":"get_weather",'
            '"input":{"location":"Paris"}}\n\n',
            "sse": 'event: tool-call\nid: 1\ndata: {"id":"t1","name":"get_weather","input":{"location":"Paris"}}\n\n',
        },
    ),
    "tool-call-signed": (
        SIGNED_CALL,
        {
            "text": "",
            # v1: AI SDK 4 keeps every field of the call in its tool invocation and posts it back
            "data": '9:{"toolCallId":"t1","toolName":"get_weather","args":{"location":"Paris"},"signature":"c2lnbmVk"}\n',
            "ui": 'data: {"type":"tool-input-available","toolCallId":"t1","toolName":"get_weather",'
            '"input":{"location":"Paris"},"providerMetadata":{"bedrock":{"signature":"c2lnbmVk"}}}\n\n',
            "sse": 'event: tool-call\nid: 1\ndata: {"id":"t1","name":"get_weather","input":{"location":"Paris"},'
            '"signature":"c2lnbmVk"}\n\n',
        },
    ),
    "tool-call-not-json": (
        BAD_CALL,
        {
            "text": "",
            "data": "",  # v1 has no such part: its a: error result follows
            "ui": 'data: {"type":"tool-input-error","toolCallId":"t2","toolName":"get_weather","input":"{\\"loc",'
            f'"errorText":"{BAD_JSON}"}}\n\n',
            "sse": 'event: tool-call\nid: 1\ndata: {"id":"t2","name":"get_weather","input":"{\\"loc",'
            f'"error":"{BAD_JSON}"}}\n\n',
        },
    ),
    "tool-result": (
        TOOL_RESULT,
        {
            "text": "",
            "data": 'a:{"toolCallId":"t1","result":{"temperature":21}}\n',
            "ui": 'data: {"type":"tool-output-available","toolCallId":"t1","output":{"temperature":21}}\n\n',
            "sse": 'event: tool-result\nid: 1\ndata: {"id":"t1","name":"get_weather","output":{"temperature":21}}\n\n',
        },
    ),
    "tool-result-error": (
        TOOL_ERROR,
        {
            "text": "",
            "data": f'a:{{"toolCallId":"t2","result":{{"error":"{BAD_JSON}"}},"isError":true}}\n',
            "ui": f'data: {{"type":"tool-output-error","toolCallId":"t2","errorText":"{BAD_JSON}"}}\n\n',
            "sse": f'event: tool-result\nid: 1\ndata: {{"id":"t2","name":"get_weather","error":"{BAD_JSON}"}}\n\n',
        },
    ),
    "tool-denied": (
        TOOL_DENIED,
        {
            "text": "",
            "data": "",
            "ui": 'data: {"type":"tool-output-denied","toolCallId":"t3"}\n\n',
            "sse": 'event: tool-denied\nid: 1\ndata: {"id":"t3"}\n\n',
        },
    ),
    "tool-approval-request": (
        APPROVAL,
        {
            "text": "",
            "data": "",
            "ui": 'data: {"type":"tool-approval-request","approvalId":"YXBwcm92YWw","toolCallId":"t3"}\n\n',
            "sse": 'event: tool-approval-request\nid: 1\ndata: {"approval_id":"YXBwcm92YWw","id":"t3"}\n\n',
        },
    ),
    "step": (
        STEP,
        {
            "text": "",
            "data": 'e:{"finishReason":"tool-calls","usage":{"promptTokens":4,"completionTokens":2},"isContinued":false}\n'
            'f:{"messageId":"m"}\n',
            "ui": 'data: {"type":"finish-step"}\n\ndata: {"type":"start-step"}\n\n',
            "sse": 'event: step\nid: 1\ndata: {"finish_reason":"tool-calls","stop_reason":"tool_use",'
            '"usage":{"input_tokens":4,"output_tokens":2,"cache_read_tokens":100,"cache_write_tokens":20}}\n\n',
        },
    ),
    "server-tool-start": (
        SERVER_START,
        {
            "text": "",
            "data": 'b:{"toolCallId":"t4","toolName":"nova_code_interpreter"}\n',
            "ui": 'data: {"type":"tool-input-start","toolCallId":"t4","toolName":"nova_code_interpreter",'
            '"providerExecuted":true}\n\n',
            "sse": 'event: tool-call-start\nid: 1\ndata: {"id":"t4","name":"nova_code_interpreter",'
            '"provider_executed":true}\n\n',
        },
    ),
    "server-tool-call": (
        SERVER_CALL,
        {
            "text": "",
            "data": '9:{"toolCallId":"t4","toolName":"nova_code_interpreter","args":{"snippet":"6 * 7"},'
            '"providerExecuted":true}\n',
            "ui": 'data: {"type":"tool-input-available","toolCallId":"t4","toolName":"nova_code_interpreter",'
            '"input":{"snippet":"6 * 7"},"providerExecuted":true}\n\n',
            "sse": 'event: tool-call\nid: 1\ndata: {"id":"t4","name":"nova_code_interpreter","input":{"snippet":"6 * 7"},'
            '"provider_executed":true}\n\n',
        },
    ),
    "server-tool-result": (
        SERVER_RESULT,
        {
            "text": "",
            "data": 'a:{"toolCallId":"t4","result":{"stdOut":"42","stdErr":"","exitCode":0,"isError":false}}\n',
            "ui": 'data: {"type":"tool-output-available","toolCallId":"t4",'
            '"output":{"stdOut":"42","stdErr":"","exitCode":0,"isError":false},"providerExecuted":true}\n\n',
            "sse": 'event: tool-result\nid: 1\ndata: {"id":"t4","name":"nova_code_interpreter",'
            '"output":{"stdOut":"42","stdErr":"","exitCode":0,"isError":false},"provider_executed":true}\n\n',
        },
    ),
    "server-tool-error": (
        SERVER_ERROR,
        {
            "text": "",
            "data": 'a:{"toolCallId":"t4","result":{"error":"Timed out"},"isError":true}\n',
            "ui": 'data: {"type":"tool-output-error","toolCallId":"t4","errorText":"Timed out","providerExecuted":true}\n\n',
            "sse": 'event: tool-result\nid: 1\ndata: {"id":"t4","name":"nova_code_interpreter","error":"Timed out",'
            '"provider_executed":true}\n\n',
        },
    ),
}


@pytest.mark.parametrize("name", list(PROTOCOLS))
@pytest.mark.parametrize("case", list(PART_WIRE))
def test_part_bytes(case: str, name: str) -> None:
    part, wire = PART_WIRE[case]
    protocol = PROTOCOLS[name]("m")
    protocol.start()
    assert protocol.part(part) == wire[name]


def test_every_tool_part_has_its_bytes() -> None:
    assert [part for part in TOOL_PARTS if not any(part is wire[0] for wire in PART_WIRE.values())] == []


@pytest.mark.parametrize("part", TOOL_PARTS, ids=lambda part: type(part).__name__)
def test_the_text_protocol_carries_no_tool_part(part: p.Part) -> None:
    protocol = TextProtocol("m")
    assert protocol.part(part) == ""
    assert protocol.delta("x") == "x" and not protocol.closed  # and the stream goes on untouched


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_a_part_starts_the_stream(name: str) -> None:
    protocol = PROTOCOLS[name]("m")
    expected = PROTOCOLS[name]("m").start() + PART_WIRE["reasoning-text"][1][name]
    assert protocol.part(REASONING) == (expected if PART_WIRE["reasoning-text"][1][name] else "")
    assert protocol.start() == ""  # whatever it sent, it sent once


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_parts_after_the_end_are_dropped(name: str) -> None:
    protocol = PROTOCOLS[name]("m")
    protocol.finish("end_turn", USAGE)
    assert [protocol.part(part) for part, _ in PART_WIRE.values()] == [""] * len(PART_WIRE)


def test_ui_blocks_open_lazily_and_close_in_order() -> None:
    protocol = UIMessageStreamProtocol("m")
    body = (
        protocol.part(p.ReasoningDelta(text="a"))
        + protocol.part(p.ReasoningDelta(text="b"))
        + protocol.part(p.ReasoningDelta(signature="S1"))  # completes block 1
        + protocol.part(p.ReasoningDelta(text="c", index=1))  # a new block
        + protocol.part(p.ReasoningDelta(signature="S2", index=1))
        + protocol.delta("Hi")
        + protocol.part(DOCUMENT_SOURCE)  # a source does not close the text block
        + protocol.delta(" there")
        + protocol.part(REDACTED)  # closes the text, a block of its own
        + protocol.part(p.ReasoningDelta(text="d", index=3))
        + protocol.delta("!")
        + protocol.finish("end_turn", USAGE)
    )
    assert body == (
        'data: {"type":"start","messageId":"m"}\n\n'
        'data: {"type":"start-step"}\n\n'
        'data: {"type":"reasoning-start","id":"m-reasoning-1"}\n\n'
        'data: {"type":"reasoning-delta","id":"m-reasoning-1","delta":"a"}\n\n'
        'data: {"type":"reasoning-delta","id":"m-reasoning-1","delta":"b"}\n\n'
        'data: {"type":"reasoning-delta","id":"m-reasoning-1","delta":"","providerMetadata":{"bedrock":{"signature":"S1"}}}\n\n'
        'data: {"type":"reasoning-end","id":"m-reasoning-1"}\n\n'
        'data: {"type":"reasoning-start","id":"m-reasoning-2"}\n\n'
        'data: {"type":"reasoning-delta","id":"m-reasoning-2","delta":"c"}\n\n'
        'data: {"type":"reasoning-delta","id":"m-reasoning-2","delta":"","providerMetadata":{"bedrock":{"signature":"S2"}}}\n\n'
        'data: {"type":"reasoning-end","id":"m-reasoning-2"}\n\n'
        'data: {"type":"text-start","id":"m-text-3"}\n\n'
        'data: {"type":"text-delta","id":"m-text-3","delta":"Hi"}\n\n'
        + PART_WIRE["source-document"][1]["ui"]
        + 'data: {"type":"text-delta","id":"m-text-3","delta":" there"}\n\n'
        'data: {"type":"text-end","id":"m-text-3"}\n\n'
        + ui_block("reasoning", "m-reasoning-4", {"delta": "", "providerMetadata": {"bedrock": {"redactedData": "cmVkYWN0ZWQ="}}})
        + 'data: {"type":"reasoning-start","id":"m-reasoning-5"}\n\n'
        'data: {"type":"reasoning-delta","id":"m-reasoning-5","delta":"d"}\n\n'
        'data: {"type":"reasoning-end","id":"m-reasoning-5"}\n\n'
        'data: {"type":"text-start","id":"m-text-6"}\n\n'
        'data: {"type":"text-delta","id":"m-text-6","delta":"!"}\n\n'
        'data: {"type":"text-end","id":"m-text-6"}\n\n'
        'data: {"type":"finish-step"}\n\n'
        'data: {"type":"finish","messageMetadata":{"finishReason":"stop",'
        '"usage":{"inputTokens":12,"outputTokens":7,"cacheReadTokens":0,"cacheWriteTokens":0}}}\n\n'
        "data: [DONE]\n\n"
    )


def test_ui_tool_calls_close_the_open_block_and_a_step_splits_the_message() -> None:
    protocol = UIMessageStreamProtocol("m")
    body = (
        protocol.delta("Let me check.")
        + protocol.part(TOOL_START)  # closes the text block
        + protocol.part(TOOL_DELTA)
        + protocol.part(p.ToolInputDelta(id="t1", delta='is"}'))
        + protocol.part(SIGNED_CALL)
        + protocol.part(REASONING)  # a block opened between a call and its result
        + protocol.part(TOOL_RESULT)  # does not close it
        + protocol.part(STEP)  # closes it; the next turn is a new step
        + protocol.delta("Sunny.")
        + protocol.finish("end_turn", USAGE)
    )
    assert body == (
        'data: {"type":"start","messageId":"m"}\n\n'
        'data: {"type":"start-step"}\n\n'
        'data: {"type":"text-start","id":"m-text-1"}\n\n'
        'data: {"type":"text-delta","id":"m-text-1","delta":"Let me check."}\n\n'
        'data: {"type":"text-end","id":"m-text-1"}\n\n'
        + PART_WIRE["tool-start"][1]["ui"]
        + PART_WIRE["tool-input-delta"][1]["ui"]
        + 'data: {"type":"tool-input-delta","toolCallId":"t1","inputTextDelta":"is\\"}"}\n\n'
        + PART_WIRE["tool-call-signed"][1]["ui"]
        + 'data: {"type":"reasoning-start","id":"m-reasoning-2"}\n\n'
        'data: {"type":"reasoning-delta","id":"m-reasoning-2","delta":"Let me \\"think\\" 🤔"}\n\n'
        + PART_WIRE["tool-result"][1]["ui"]
        + 'data: {"type":"reasoning-end","id":"m-reasoning-2"}\n\n'
        'data: {"type":"finish-step"}\n\n'
        'data: {"type":"start-step"}\n\n'
        'data: {"type":"text-start","id":"m-text-3"}\n\n'
        'data: {"type":"text-delta","id":"m-text-3","delta":"Sunny."}\n\n'
        'data: {"type":"text-end","id":"m-text-3"}\n\n'
        'data: {"type":"finish-step"}\n\n'
        'data: {"type":"finish","messageMetadata":{"finishReason":"stop",'
        '"usage":{"inputTokens":12,"outputTokens":7,"cacheReadTokens":0,"cacheWriteTokens":0}}}\n\n'
        "data: [DONE]\n\n"
    )


def test_ui_error_inside_an_open_block() -> None:
    protocol = UIMessageStreamProtocol("m")
    protocol.part(REASONING)
    # The error ends the stream as is: the AI SDK marks the message failed, an open block does not matter.
    assert protocol.error("boom") == 'data: {"type":"error","errorText":"boom"}\n\ndata: [DONE]\n\n'


FULL_USAGE = {"input_tokens": 10, "output_tokens": 5, "cache_read_tokens": 100, "cache_write_tokens": 20}
METADATA = {
    "model_id": "us.anthropic.claude-sonnet-4-20250514-v1:0",
    "latency_ms": 1999,
    "service_tier": "priority",
    "guardrail": "INTERVENED",
}


def test_finish_metadata_ui() -> None:
    protocol = UIMessageStreamProtocol("m")
    protocol.start()
    assert protocol.finish("guardrail_intervened", FULL_USAGE, METADATA) == (
        'data: {"type":"finish-step"}\n\n'
        'data: {"type":"finish","messageMetadata":{"finishReason":"content-filter",'
        '"usage":{"inputTokens":10,"outputTokens":5,"cacheReadTokens":100,"cacheWriteTokens":20},'
        '"modelId":"us.anthropic.claude-sonnet-4-20250514-v1:0","latencyMs":1999,"serviceTier":"priority",'
        '"guardrail":"INTERVENED"}}\n\n'
        "data: [DONE]\n\n"
    )


def test_finish_metadata_sse() -> None:
    protocol = ServerSentEventsProtocol("m")
    assert protocol.finish("end_turn", FULL_USAGE, METADATA) == (
        'event: done\nid: 1\ndata: {"finish_reason":"stop","stop_reason":"end_turn",'
        '"usage":{"input_tokens":10,"output_tokens":5,"cache_read_tokens":100,"cache_write_tokens":20},'
        '"model_id":"us.anthropic.claude-sonnet-4-20250514-v1:0","latency_ms":1999,"service_tier":"priority",'
        '"guardrail":"INTERVENED"}\n\n'
    )


def test_finish_metadata_unknown_values_are_left_out() -> None:
    partial = {"model_id": "m1", "latency_ms": None, "service_tier": None, "guardrail": None}
    ui = UIMessageStreamProtocol("m")
    ui.start()
    assert '"messageMetadata":{"finishReason":"stop","usage":{"inputTokens":12,"outputTokens":7,' \
        '"cacheReadTokens":0,"cacheWriteTokens":0},"modelId":"m1"}}' in ui.finish("end_turn", USAGE, partial)
    assert ServerSentEventsProtocol().finish("end_turn", USAGE, partial).endswith(
        '"cache_read_tokens":0,"cache_write_tokens":0},"model_id":"m1"}\n\n'
    )


@pytest.mark.parametrize("name", ["text", "data"])
def test_finish_metadata_has_no_place_in_text_and_data(name: str) -> None:
    with_metadata, without = PROTOCOLS[name]("m"), PROTOCOLS[name]("m")
    assert with_metadata.finish("end_turn", FULL_USAGE, METADATA) == without.finish("end_turn", FULL_USAGE)
    if name == "data":  # v1 usage has two counts
        assert without.metadata == {} and '"usage":{"promptTokens":10,"completionTokens":5}' in (
            DataStreamProtocol("m").finish("end_turn", FULL_USAGE, METADATA)
        )


# ----------------------------------------------------------------------------------------------------------
# ServerSentEvent
# ----------------------------------------------------------------------------------------------------------


def test_sse_encode_all_fields() -> None:
    event = ServerSentEvent("payload", event="token", id="7", retry=3000, comment="hi")
    assert event.encode() == ": hi\nevent: token\nid: 7\nretry: 3000\ndata: payload\n\n"


def test_sse_multi_line_data_and_comment() -> None:
    assert (
        ServerSentEvent("a\nb\r\nc\rd").encode()
        == "data: a\ndata: b\ndata: c\ndata: d\n\n"
    )
    assert ServerSentEvent("line\n").encode() == "data: line\ndata: \n\n"
    assert ServerSentEvent("").encode() == "data: \n\n"
    assert ServerSentEvent(" leading").encode() == "data:  leading\n\n"
    assert ServerSentEvent(comment="ping").encode() == ": ping\n\n"
    assert ServerSentEvent(comment="a\n\nb").encode() == ": a\n:\n: b\n\n"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": "x", "event": "a\nb"},
        {"data": "x", "event": "a\rb"},
        {"data": "x", "id": "1\n2"},
        {"data": "x", "id": "1\x002"},
        {"data": "x", "retry": -1},
        {},
    ],
)
def test_sse_rejects_unsafe_fields(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ServerSentEvent(**kwargs)


# ----------------------------------------------------------------------------------------------------------
# Finish reasons
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("stop", "stop"),
        ("COMPLETE", "stop"),
        ("FINISH", "stop"),
        ("STOP_CRITERIA_MET", "stop"),
        ("max_tokens", "length"),
        ("length", "length"),
        ("MAX_TOKENS", "length"),
        ("LENGTH", "length"),
        ("ERROR_LIMIT", "length"),
        ("model_context_window_exceeded", "length"),
        ("content_filtered", "content-filter"),
        ("guardrail_intervened", "content-filter"),
        ("CONTENT_FILTERED", "content-filter"),
        ("ERROR_TOXIC", "content-filter"),
        ("tool_use", "tool-calls"),
        ("error", "error"),
        ("ERROR", "error"),
        (None, "other"),
        ("", "other"),
        ("something_new", "other"),
        ("End_Turn", "other"),
    ],
)
def test_map_finish_reason(stop_reason: str | None, expected: str) -> None:
    assert map_finish_reason(stop_reason) == expected


def test_finish_reasons_are_valid_for_every_ai_sdk() -> None:
    from django_bedrock_stream.protocols import FINISH_REASONS, UNKNOWN_FINISH_REASON

    # The `ai` 7 UI message stream `finish` chunk's enum (a subset of ai 5's, which also had "unknown").
    allowed = {
        "stop",
        "length",
        "content-filter",
        "tool-calls",
        "error",
        "interrupted",
        "other",
    }
    assert set(FINISH_REASONS.values()) | {UNKNOWN_FINISH_REASON} <= allowed


# ----------------------------------------------------------------------------------------------------------
# Negotiation
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "accept", "default", "expected"),
    [
        ("text", "text/event-stream", "ui", "text"),
        ("data", None, "sse", "data"),
        (" SSE ", None, "text", "sse"),
        ("", "text/event-stream", "data", "sse"),
        (None, "text/event-stream", "data", "sse"),
        (None, "text/event-stream", "text", "sse"),
        (None, "text/event-stream", "ui", "ui"),
        (None, "text/html, text/event-stream;q=0.5", "data", "sse"),
        (None, "Text/Event-Stream", "data", "sse"),
        (None, "text/event-stream;q=0", "data", "data"),
        (None, "*/*", "data", "data"),
        (None, "text/plain", "ui", "ui"),
        (None, None, "text", "text"),
        (None, "", "sse", "sse"),
    ],
)
def test_negotiate_protocol(
    query: str | None, accept: str | None, default: str, expected: str
) -> None:
    assert negotiate_protocol(query, accept, default) == expected


def test_negotiate_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown stream protocol 'xml'"):
        negotiate_protocol("xml", None, "ui")
    with pytest.raises(ValueError):
        negotiate_protocol(None, None, "bogus")


# ----------------------------------------------------------------------------------------------------------
# Real clients: the AI SDK's own parsers under Node (tests/js)
# ----------------------------------------------------------------------------------------------------------

JS_DIR = Path(__file__).parent / "js"
NODE = shutil.which("node")
#: The `ai` majors installed side by side in tests/js (package.json): "ai" is 7.x, "ai6"/"ai5" npm aliases.
AI_PACKAGES = ["ai", "ai6", "ai5"]

needs_node = pytest.mark.skipif(
    NODE is None
    or not all((JS_DIR / "node_modules" / name).is_dir() for name in [*AI_PACKAGES, "@ai-sdk/ui-utils"]),
    reason="needs `node` on PATH and `npm ci --prefix tests/js` (installs the pinned ai 7/6/5 and @ai-sdk/ui-utils)",
)

DELTAS = [
    "Hello",
    ', "world"\n',
    "é 日本 😀",
    "\ud83d",
    "\ude00",
    " \u2028 data: [DONE]\n\n",
    "end",
]
JOINED = 'Hello, "world"\né 日本 😀😀 \u2028 data: [DONE]\n\nend'


def parse_with_node(
    script: str, body: str, tmp_path: Path, chunk_size: int = 0, ai: str = "ai"
) -> dict[str, Any]:
    path = tmp_path / "body.txt"
    path.write_bytes(body.encode("utf-8"))
    args = [str(NODE), str(JS_DIR / script), str(path), "--ai", ai]
    if chunk_size:
        args += ["--chunk-size", str(chunk_size)]
    completed = subprocess.run(
        args, cwd=JS_DIR, capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def parse_sse(body: str) -> list[tuple[str, str | None, Any]]:
    """(event, id, JSON data) per dispatched event, parsed as the WHATWG "Server-sent events" section says
    (what a browser's EventSource does): fields per line, ``data`` lines joined by LF, comments skipped."""
    events: list[tuple[str, str | None, Any]] = []
    event, event_id, data = "", None, []
    for line in re.split(r"\r\n|\r|\n", body):
        if not line:
            if data:
                events.append((event or "message", event_id, json.loads("\n".join(data))))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
    return events


@needs_node
@pytest.mark.parametrize("chunk_size", [0, 5])
def test_ai_sdk_4_reads_data_stream(tmp_path: Path, chunk_size: int) -> None:
    protocol = DataStreamProtocol("msg_data")
    result = parse_with_node(
        "parse-data-stream.mjs",
        run(protocol, *DELTAS, stop_reason="max_tokens"),
        tmp_path,
        chunk_size,
    )
    usage = {"promptTokens": 12, "completionTokens": 7}
    message = {
        "id": "msg_data",
        "role": "assistant",
        "content": JOINED,
        "reasoning": None,
        "parts": [{"type": "step-start"}, {"type": "text", "text": JOINED}],
    }
    assert result == {
        "messageId": "msg_data",
        "text": JOINED,
        "reasoning": [],
        "signatures": [],
        "redacted": [],
        "sources": [],
        "files": [],
        "tools": [],
        "steps": [{"finishReason": "length", "isContinued": False, "usage": usage}],
        "step": {"finishReason": "length", "isContinued": False, "usage": usage},
        "finishReason": "length",
        "usage": usage,
        "errors": [],
        "chat": {"error": None, "finishReason": "length", "usage": {**usage, "totalTokens": 19}, "message": message},
    }


@needs_node
def test_ai_sdk_4_reads_data_stream_error(tmp_path: Path) -> None:
    protocol = DataStreamProtocol("msg_data")
    body = (
        protocol.start()
        + protocol.delta("partial")
        + protocol.error('Throttled: "slow down"')
    )
    result = parse_with_node("parse-data-stream.mjs", body, tmp_path)
    assert result["text"] == "partial"
    assert result["errors"] == ['Throttled: "slow down"']
    assert result["finishReason"] is None
    assert result["chat"]["error"] == 'Throttled: "slow down"'


def ui_text_message(message_id: str, text: str, metadata: Any) -> dict[str, Any]:
    return {
        "id": message_id,
        "role": "assistant",
        "metadata": metadata,
        "parts": [{"type": "step-start"}, {"type": "text", "text": text, "state": "done"}],
    }


@needs_node
@pytest.mark.parametrize(
    ("ai", "cls", "chunk_size"),
    [
        *[(ai, UIMessageStreamProtocol, 0) for ai in AI_PACKAGES],
        ("ai", UIMessageStreamProtocol, 5),
        ("ai6", UIMessageStreamProtocol, 5),
        *[(ai, TopLevelFinishUI, 0) for ai in AI_PACKAGES],
    ],
)
def test_ai_sdk_ui_chat_reads_ui_message_stream(
    tmp_path: Path, ai: str, cls: type[UIMessageStreamProtocol], chunk_size: int
) -> None:
    protocol = cls("msg_ui")
    body = protocol.start() + protocol.ping()
    body += "".join(protocol.delta(d) for d in DELTAS)
    body += protocol.ping() + protocol.finish("guardrail_intervened", USAGE)
    result = parse_with_node("parse-ui-stream.mjs", body, tmp_path, chunk_size, ai)
    metadata = {
        "finishReason": "content-filter",
        "usage": {"inputTokens": 12, "outputTokens": 7, "cacheReadTokens": 0, "cacheWriteTokens": 0},
    }
    message = ui_text_message("msg_ui", JOINED, metadata)
    assert result == {
        "status": "ready",
        "error": None,
        # onFinish's finishReason: only from the opt-in top-level key.
        "finishReason": "content-filter" if cls.top_level_finish_reason else None,
        "message": message,
        "read": {"error": None, "message": message},
    }


@needs_node
@pytest.mark.parametrize("ai", AI_PACKAGES)
def test_ai_sdk_ui_chat_reads_ui_message_stream_error(tmp_path: Path, ai: str) -> None:
    protocol = UIMessageStreamProtocol("msg_ui")
    body = (
        protocol.start()
        + protocol.delta("partial")
        + protocol.error('Throttled: "slow down"')
    )
    result = parse_with_node("parse-ui-stream.mjs", body, tmp_path, ai=ai)
    assert result["status"] == "error"
    assert result["error"] == 'Throttled: "slow down"'
    assert result["finishReason"] is None
    texts = [part["text"] for part in result["message"]["parts"] if part["type"] == "text"]
    assert texts == ["partial"]
    assert result["read"]["error"] == 'Throttled: "slow down"'


# Every part type, in one answer: what each client rebuilds from it.
ANSWER: list[p.Part | str] = [
    REASONING,
    p.ReasoningDelta(text=" Done."),
    SIGNATURE,
    REDACTED,
    "Answer",
    # step 1 ends with three calls: one that ran here, one whose input was not JSON, one Bedrock ran
    TOOL_START,
    TOOL_DELTA,
    p.ToolInputDelta(id="t1", delta='is"}'),
    SIGNED_CALL,
    p.ToolCallStart(id="t2", name="get_weather"),
    p.ToolInputDelta(id="t2", delta='{"loc'),
    BAD_CALL,
    SERVER_START,
    p.ToolInputDelta(id="t4", delta='{"snippet": "6 * 7"}'),
    SERVER_CALL,
    SERVER_RESULT,
    TOOL_RESULT,
    TOOL_ERROR,
    STEP,
    DOCUMENT_SOURCE,
    URL_SOURCE,
    BARE_SOURCE,
    FILE,
    GUARDRAIL,
    " more 😀",
]


def encode_answer(protocol: StreamProtocol) -> str:
    body = protocol.start()
    for item in ANSWER:
        body += protocol.delta(item) if isinstance(item, str) else protocol.part(item)
    return body + protocol.finish("end_turn", FULL_USAGE, METADATA)


#: ``metadata`` of the UIMessage rebuilt from ANSWER (the finish chunk's messageMetadata).
ANSWER_METADATA = {
    "finishReason": "stop",
    "usage": {"inputTokens": 10, "outputTokens": 5, "cacheReadTokens": 100, "cacheWriteTokens": 20},
    "modelId": "us.anthropic.claude-sonnet-4-20250514-v1:0",
    "latencyMs": 1999,
    "serviceTier": "priority",
    "guardrail": "INTERVENED",
}


@needs_node
@pytest.mark.parametrize(("ai", "chunk_size"), [(ai, 0) for ai in AI_PACKAGES] + [("ai6", 7)])
def test_ai_sdk_rebuilds_every_ui_part(tmp_path: Path, ai: str, chunk_size: int) -> None:
    result = parse_with_node("parse-ui-stream.mjs", encode_answer(UIMessageStreamProtocol("msg")), tmp_path, chunk_size, ai)
    message = {
        "id": "msg",
        "role": "assistant",
        "metadata": ANSWER_METADATA,
        "parts": [
            {"type": "step-start"},
            # The signature stays on its reasoning part, where the AI SDK sends it back next turn.
            {
                "type": "reasoning",
                "id": "msg-reasoning-1",
                "text": 'Let me "think" 🤔 Done.',
                "providerMetadata": {"bedrock": {"signature": "c2lnbmF0dXJl"}},
                "state": "done",
            },
            {
                "type": "reasoning",
                "id": "msg-reasoning-2",
                "text": "",
                "providerMetadata": {"bedrock": {"redactedData": "cmVkYWN0ZWQ="}},
                "state": "done",
            },
            {"type": "text", "text": "Answer", "state": "done"},  # a tool call ends the text block
            # Each call becomes a tool-<name> part; its result lands on it, whenever it arrives.
            {
                "type": "tool-get_weather",
                "toolCallId": "t1",
                "state": "output-available",
                "input": {"location": "Paris"},
                "output": {"temperature": 21},
                "callProviderMetadata": {"bedrock": {"signature": "c2lnbmVk"}},  # sent back with the call
            },
            {
                "type": "tool-get_weather",
                "toolCallId": "t2",
                "state": "output-error",
                # ai 7 keeps input that is not JSON as the input, ai 6 and 5 as rawInput
                "input" if ai == "ai" else "rawInput": '{"loc',
                "errorText": BAD_JSON,
            },
            {
                "type": "tool-nova_code_interpreter",
                "toolCallId": "t4",
                "state": "output-available",
                "input": CODE,
                "output": CODE_OUTPUT,
                "providerExecuted": True,  # lastAssistantMessageIsCompleteWithToolCalls leaves it out
            },
            {"type": "step-start"},  # the StepFinish: the next model turn
            {
                "type": "source-document",
                "sourceId": "source-1",
                "mediaType": "text/plain",
                "title": "policy",
                "providerMetadata": {
                    "bedrock": {"citedText": "Employees get 20 days.", "documentIndex": 1, "location": DOCUMENT_CHAR}
                },
            },
            {
                "type": "source-url",
                "sourceId": "source-2",
                "url": "https://example.com/a?b=1&c=2",
                "title": "Example",
                "providerMetadata": {"bedrock": {"citedText": "c", "location": WEB}},
            },
            {"type": "source-document", "sourceId": "source-3", "mediaType": "text/plain", "title": "Document 1"},
            {"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,iVBORw0KGgo="},
            {"type": "text", "text": " more 😀", "state": "done"},
        ],
    }
    assert result == {
        "status": "ready",
        "error": None,
        "finishReason": None,
        "message": message,
        "read": {"error": None, "message": message},
    }


#: A turn that ends waiting for the user: one call asks for approval, another is denied at once (the
#: denial normally opens the next request's stream; here it checks the chunk on its own).
DELETE = {"path": "/tmp/x"}
APPROVAL_TURN: list[p.Part | str] = [
    "Deleting.",
    p.ToolCallStart(id="t3", name="delete_file"),
    p.ToolInputDelta(id="t3", delta='{"path": "/tmp/x"}'),
    p.ToolCall(id="t3", name="delete_file", input=DELETE, signature="c2lnbmVk"),
    APPROVAL,
    p.ToolCallStart(id="t5", name="delete_file"),
    p.ToolCall(id="t5", name="delete_file", input={}, signature="c2lnMg"),
    p.ToolApprovalRequest(approval_id="YXBwcm92YWwy", call_id="t5"),
    p.ToolDenied(call_id="t5"),
]


def encode_turn(protocol: StreamProtocol, turn: list[p.Part | str], stop_reason: str) -> str:
    body = protocol.start()
    for item in turn:
        body += protocol.delta(item) if isinstance(item, str) else protocol.part(item)
    return body + protocol.finish(stop_reason, USAGE)


@needs_node
@pytest.mark.parametrize("ai", ["ai", "ai6"])
def test_ai_sdk_6_and_7_rebuild_approval_requests_and_denials(tmp_path: Path, ai: str) -> None:
    body = encode_turn(UIMessageStreamProtocol("msg"), APPROVAL_TURN, "tool_use")
    result = parse_with_node("parse-ui-stream.mjs", body, tmp_path, 0, ai)
    metadata = {
        "finishReason": "tool-calls",
        "usage": {"inputTokens": 12, "outputTokens": 7, "cacheReadTokens": 0, "cacheWriteTokens": 0},
    }
    message = {
        "id": "msg",
        "role": "assistant",
        "metadata": metadata,
        "parts": [
            {"type": "step-start"},
            {"type": "text", "text": "Deleting.", "state": "done"},
            {
                "type": "tool-delete_file",
                "toolCallId": "t3",
                "state": "approval-requested",  # what addToolApprovalResponse answers
                "input": DELETE,
                "callProviderMetadata": {"bedrock": {"signature": "c2lnbmVk"}},
                "approval": {"id": "YXBwcm92YWw"},
            },
            {
                "type": "tool-delete_file",
                "toolCallId": "t5",
                "state": "output-denied",
                "input": {},
                "callProviderMetadata": {"bedrock": {"signature": "c2lnMg"}},
                "approval": {"id": "YXBwcm92YWwy"},
            },
        ],
    }
    assert result == {
        "status": "ready",
        "error": None,
        "finishReason": None,
        "message": message,
        "read": {"error": None, "message": message},
    }


@needs_node
def test_ai_sdk_5_has_no_approvals(tmp_path: Path) -> None:
    """Approvals are AI SDK 6+ (README): ai 5 fails the response on the chunk, so a view whose tools
    need approval needs ai 6 or later in the browser."""
    body = encode_turn(UIMessageStreamProtocol("msg"), APPROVAL_TURN[:5], "tool_use")
    result = parse_with_node("parse-ui-stream.mjs", body, tmp_path, 0, "ai5")
    assert result["status"] == "error" and "tool-approval-request" in result["error"]
    assert result["read"]["error"] is not None


@needs_node
@pytest.mark.parametrize("chunk_size", [0, 7])
def test_ai_sdk_4_rebuilds_every_data_part(tmp_path: Path, chunk_size: int) -> None:
    result = parse_with_node("parse-data-stream.mjs", encode_answer(DataStreamProtocol("msg")), tmp_path, chunk_size)
    url_source = {"sourceType": "url", "id": "source-2", "url": "https://example.com/a?b=1&c=2", "title": "Example"}
    file = {"data": "iVBORw0KGgo=", "mimeType": "image/png"}
    usage = {"promptTokens": 10, "completionTokens": 5}
    final_step = {"finishReason": "stop", "isContinued": False, "usage": usage}
    t1, t2, t4 = (
        {"toolCallId": "t1", "toolName": "get_weather"},
        {"toolCallId": "t2", "toolName": "get_weather"},
        {"toolCallId": "t4", "toolName": "nova_code_interpreter"},
    )

    def invocation(call: dict[str, str], args: Any, result: Any) -> dict[str, Any]:
        return {"type": "tool-invocation", "toolInvocation": {"state": "result", "step": 0, **call, "args": args, "result": result}}

    assert result == {
        "messageId": "msg",
        "text": "Answer more 😀",
        "reasoning": ['Let me "think" 🤔', " Done."],
        "signatures": [{"signature": "c2lnbmF0dXJl"}],
        "redacted": [{"data": "cmVkYWN0ZWQ="}],
        "sources": [url_source],  # v1 has URL sources only
        "files": [file],
        "tools": [
            ["b", t1],
            ["c", {"toolCallId": "t1", "argsTextDelta": '{"location": "Par'}],
            ["c", {"toolCallId": "t1", "argsTextDelta": 'is"}'}],
            ["9", {**t1, "args": {"location": "Paris"}, "signature": "c2lnbmVk"}],  # kept by the client, sent back
            ["b", t2],
            ["c", {"toolCallId": "t2", "argsTextDelta": '{"loc'}],  # input that is not JSON: no 9: part
            ["b", t4],
            ["c", {"toolCallId": "t4", "argsTextDelta": '{"snippet": "6 * 7"}'}],
            ["9", {**t4, "args": CODE, "providerExecuted": True}],
            ["a", {"toolCallId": "t4", "result": CODE_OUTPUT}],
            ["a", {"toolCallId": "t1", "result": {"temperature": 21}}],
            # v1 has no tool error: it is the result, marked (AI SDK 4 keeps the mark in the invocation)
            ["a", {"toolCallId": "t2", "result": {"error": BAD_JSON}, "isError": True}],
        ],
        "steps": [{"finishReason": "tool-calls", "isContinued": False, "usage": {"promptTokens": 4, "completionTokens": 2}},
                  final_step],
        "step": final_step,
        "finishReason": "stop",
        "usage": usage,
        "errors": [],
        "chat": {
            "error": None,
            "finishReason": "stop",
            "usage": {**usage, "totalTokens": 15},
            "message": {
                "id": "msg",
                "role": "assistant",
                "content": "Answer more 😀",
                "reasoning": 'Let me "think" 🤔 Done.',
                "parts": [
                    {"type": "step-start"},
                    {
                        "type": "reasoning",
                        "reasoning": 'Let me "think" 🤔 Done.',
                        "details": [
                            {"type": "text", "text": 'Let me "think" 🤔 Done.', "signature": "c2lnbmF0dXJl"},
                            {"type": "redacted", "data": "cmVkYWN0ZWQ="},
                        ],
                    },
                    {"type": "text", "text": "Answer"},
                    invocation({**t1, "signature": "c2lnbmVk"}, {"location": "Paris"}, {"temperature": 21}),
                    {"type": "tool-invocation", "toolInvocation": {  # args: what AI SDK 4 made of '{"loc'
                        "state": "result", "step": 0, **t2, "args": {}, "result": {"error": BAD_JSON}, "isError": True}},
                    invocation({**t4, "providerExecuted": True}, CODE, CODE_OUTPUT),
                    {"type": "step-start"},
                    {"type": "source", "source": url_source},
                    {"type": "file", "mimeType": "image/png", "data": "iVBORw0KGgo="},
                    {"type": "text", "text": " more 😀"},
                ],
            },
        },
    }


def test_sse_typed_events_parse_as_documented() -> None:
    events = parse_sse(encode_answer(ServerSentEventsProtocol("msg")))
    assert [event_id for _, event_id, _ in events] == [str(n) for n in range(1, len(events) + 1)]
    assert [(event, data) for event, _, data in events] == [
        ("reasoning", {"text": 'Let me "think" 🤔'}),
        ("reasoning", {"text": " Done."}),
        ("reasoning", {"signature": "c2lnbmF0dXJl"}),
        ("reasoning", {"redacted": "cmVkYWN0ZWQ="}),
        ("token", {"text": "Answer"}),
        ("tool-call-start", {"id": "t1", "name": "get_weather"}),
        ("tool-input", {"id": "t1", "delta": '{"location": "Par'}),
        ("tool-input", {"id": "t1", "delta": 'is"}'}),
        ("tool-call", {"id": "t1", "name": "get_weather", "input": {"location": "Paris"}, "signature": "c2lnbmVk"}),
        ("tool-call-start", {"id": "t2", "name": "get_weather"}),
        ("tool-input", {"id": "t2", "delta": '{"loc'}),
        ("tool-call", {"id": "t2", "name": "get_weather", "input": '{"loc', "error": BAD_JSON}),
        ("tool-call-start", {"id": "t4", "name": "nova_code_interpreter", "provider_executed": True}),
        ("tool-input", {"id": "t4", "delta": '{"snippet": "6 * 7"}'}),
        ("tool-call", {"id": "t4", "name": "nova_code_interpreter", "input": CODE, "provider_executed": True}),
        ("tool-result", {"id": "t4", "name": "nova_code_interpreter", "output": CODE_OUTPUT, "provider_executed": True}),
        ("tool-result", {"id": "t1", "name": "get_weather", "output": {"temperature": 21}}),
        ("tool-result", {"id": "t2", "name": "get_weather", "error": BAD_JSON}),
        (
            "step",
            {
                "finish_reason": "tool-calls",
                "stop_reason": "tool_use",
                "usage": {"input_tokens": 4, "output_tokens": 2, "cache_read_tokens": 100, "cache_write_tokens": 20},
            },
        ),
        (
            "source",
            {
                "id": "source-1",
                "title": "policy",
                "cited_text": "Employees get 20 days.",
                "document_index": 1,
                "location": DOCUMENT_CHAR,
            },
        ),
        (
            "source",
            {"id": "source-2", "title": "Example", "url": "https://example.com/a?b=1&c=2", "cited_text": "c", "location": WEB},
        ),
        ("source", {"id": "source-3"}),
        ("file", {"media_type": "image/png", "data": "iVBORw0KGgo="}),
        ("guardrail", {"action": "INTERVENED", "trace": {"outputAssessments": {"g1": [{"contentPolicy": {}}]}}}),
        ("token", {"text": " more 😀"}),
        (
            "done",
            {
                "finish_reason": "stop",
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_tokens": 100, "cache_write_tokens": 20},
                "model_id": "us.anthropic.claude-sonnet-4-20250514-v1:0",
                "latency_ms": 1999,
                "service_tier": "priority",
                "guardrail": "INTERVENED",
            },
        ),
    ]


README = Path(__file__).resolve().parents[1] / "README.md"


def documented_sse_events() -> dict[str, set[str]]:
    """The README's sse contract ("Output protocols"): event name -> the names in backticks in its row."""
    text = README.read_text(encoding="utf-8")
    table = text.split("**The `sse` events**", 1)[1].split("\n\n", 2)[1]
    rows = table.splitlines()[2:]  # after the header and the |---| line
    documented = {}
    for row in rows:
        event, fields = (cell.strip() for cell in row.strip("|").split("|", 1))
        documented[event.strip("`")] = set(re.findall(r"`([^`]+)`", fields))
    return documented


def test_the_readme_documents_every_sse_event_and_field() -> None:
    """Every event the sse protocol sends, and every field of its payload (nested usage counts
    included), is in the README's contract table; every documented event is sent by something."""
    sent: list[tuple[str, Any]] = []
    for part, _ in PART_WIRE.values():
        protocol = ServerSentEventsProtocol("m")
        sent += [(event, data) for event, _, data in parse_sse(protocol.part(part))]
    sent += [(event, data) for event, _, data in parse_sse(encode_answer(ServerSentEventsProtocol("m")))]
    sent += [(event, data) for event, _, data in parse_sse(ServerSentEventsProtocol("m").error("boom"))]
    documented = documented_sse_events()
    assert {event for event, _ in sent} == set(documented)
    for event, data in sent:
        fields = set(data) | set(data.get("usage", {}))
        assert fields <= documented[event], (event, fields - documented[event])
