"""Wire encoders: exact bytes, escaping, life-cycle rules, finish mapping, negotiation, and real AI SDK parsers.

Pure tests (no Django, no network). The last section runs the AI SDK's own client code under Node
(``tests/js``); it is skipped when ``node`` or ``tests/js/node_modules`` is missing (``npm ci`` in tests/js).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

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
        'data: {"type":"text-start","id":"msg_1-text"}\n\n'
        'data: {"type":"text-delta","id":"msg_1-text","delta":"Hello"}\n\n'
        ": ping\n\n"
        'data: {"type":"text-end","id":"msg_1-text"}\n\n'
        'data: {"type":"finish","messageMetadata":'
        '{"finishReason":"length","usage":{"inputTokens":12,"outputTokens":7}}}\n\n'
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
        '"usage":{"input_tokens":12,"output_tokens":7}}\n\n'
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
        '"usage":{"input_tokens":0,"output_tokens":0}'
        in ServerSentEventsProtocol().finish(None, {})
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

needs_node = pytest.mark.skipif(
    NODE is None
    or not (JS_DIR / "node_modules" / "ai").is_dir()
    or not (JS_DIR / "node_modules" / "@ai-sdk" / "ui-utils").is_dir(),
    reason="needs `node` on PATH and `npm ci` in tests/js (installs the pinned ai and @ai-sdk/ui-utils)",
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
    script: str, body: str, tmp_path: Path, chunk_size: int = 0
) -> dict[str, Any]:
    path = tmp_path / "body.txt"
    path.write_bytes(body.encode("utf-8"))
    args = [str(NODE), str(JS_DIR / script), str(path)]
    if chunk_size:
        args += ["--chunk-size", str(chunk_size)]
    completed = subprocess.run(
        args, cwd=JS_DIR, capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


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
    assert result == {
        "text": JOINED,
        "finishReason": "length",
        "usage": usage,
        "messageId": "msg_data",
        "step": {"finishReason": "length", "isContinued": False, "usage": usage},
        "errors": [],
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


@needs_node
@pytest.mark.parametrize(
    ("cls", "chunk_size"),
    [(UIMessageStreamProtocol, 0), (UIMessageStreamProtocol, 5), (TopLevelFinishUI, 0)],
)
def test_ai_sdk_ui_chat_reads_ui_message_stream(
    tmp_path: Path, cls: type[UIMessageStreamProtocol], chunk_size: int
) -> None:
    protocol = cls("msg_ui")
    body = protocol.start() + protocol.ping()
    body += "".join(protocol.delta(d) for d in DELTAS)
    body += protocol.ping() + protocol.finish("guardrail_intervened", USAGE)
    result = parse_with_node("parse-ui-stream.mjs", body, tmp_path, chunk_size)
    metadata = {
        "finishReason": "content-filter",
        "usage": {"inputTokens": 12, "outputTokens": 7},
    }
    assert result == {
        "text": JOINED,
        # onFinish's finishReason: only from the opt-in top-level key.
        "finishReason": "content-filter" if cls.top_level_finish_reason else None,
        "metadata": metadata,
        "usage": metadata["usage"],
        "messageId": "msg_ui",
        "status": "ready",
        "error": None,
        "textState": ["done"],
        "readUIMessageStreamText": JOINED,
    }


@needs_node
def test_ai_sdk_ui_chat_reads_ui_message_stream_error(tmp_path: Path) -> None:
    protocol = UIMessageStreamProtocol("msg_ui")
    body = (
        protocol.start()
        + protocol.delta("partial")
        + protocol.error('Throttled: "slow down"')
    )
    result = parse_with_node("parse-ui-stream.mjs", body, tmp_path)
    assert result["status"] == "error"
    assert result["error"] == 'Throttled: "slow down"'
    assert result["text"] == "partial"
    assert result["finishReason"] is None
