"""Real clients against a live server: the AI SDK's own readers in Node (useChat's transports and
``processDataStream``) and a browser ``EventSource`` in headless Chromium.

The server is uvicorn in a thread of this process (``tests/servers.py``), serving ``tests.settings``
with boto3 pointed at the emulator. The last section replays every recorded Bedrock capture through the
views under a real WSGI server and uvicorn, and checks what ``ai`` 7, 6 and 5 (``useChat``'s machinery and
``readUIMessageStream``), AI SDK 4's readers and a plain SSE parser rebuild against the capture's own events.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import path, reverse

from django_bedrock_stream.families import ConverseFamily
from django_bedrock_stream.models import Completion
from django_bedrock_stream.parts import ToolResult
from django_bedrock_stream.protocols import map_finish_reason
from django_bedrock_stream.tools import tool, verify_call
from django_bedrock_stream.views import BedrockStreamView

from .recorded import (
    FAMILY_OF,
    RECORDED_DIR,
    boto3_events,
    expected_usage,
    load_index,
    wire_events,
    wire_guardrail,
    wire_latency,
    wire_reasoning,
    wire_sources,
    wire_tool_calls,
)
from .servers import UvicornThread, WSGIThread
from .test_protocols import AI_PACKAGES, parse_sse
from .urls import urlpatterns as site_urls

JS = Path(__file__).parent / "js"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(
    NODE is None or not all((JS / "node_modules" / name).exists() for name in [*AI_PACKAGES, "@ai-sdk/ui-utils"]),
    reason="node and tests/js/node_modules are needed (run `npm ci --prefix tests/js`)",
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def live_server_url(bedrock_emulator: Any, transactional_db: Any) -> Any:
    with UvicornThread() as server:
        yield server.url


def run_node(url: str, mode: str, prompt: str) -> dict[str, Any]:
    done = subprocess.run(
        [NODE, str(JS / "live-clients.mjs"), url, mode, prompt],
        capture_output=True, text=True, timeout=60, cwd=JS, check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@needs_node
@pytest.mark.parametrize("family", ["converse", "anthropic-messages", "llama3"])
def test_use_chat_default_transport_reads_the_ui_message_stream(live_server_url: str, bedrock_emulator: Any, family: str) -> None:
    result = run_node(f"{live_server_url}/bedrock/{family}/?protocol=ui", "ui", "[[emulator tokens=9]] Hello useChat")
    record = bedrock_emulator.requests[-1]
    assert result["error"] is None and result["status"] == "ready"
    assert result["text"] == record["text"]
    row = Completion.objects.get()
    assert result["usage"] == {
        "inputTokens": row.input_tokens,
        "outputTokens": row.output_tokens,
        "cacheReadTokens": 0,
        "cacheWriteTokens": 0,
    }
    assert result["finishReason"] == "stop"
    # useChat sent the AI SDK 5+ message shape (parts), which the view accepted.
    assert result["sentBody"]["messages"][0]["parts"][0]["text"] == "[[emulator tokens=9]] Hello useChat"


@needs_node
def test_use_chat_reports_length_and_in_stream_errors(live_server_url: str, bedrock_emulator: Any) -> None:
    cut = run_node(f"{live_server_url}/bedrock/converse/?protocol=ui", "ui", "[[emulator tokens=5 stop=max_tokens]] x")
    assert cut["finishReason"] == "length"
    failed = run_node(f"{live_server_url}/bedrock/converse/?protocol=ui", "ui", "[[emulator tokens=6 error_at=2]] x")
    assert failed["status"] == "error" and failed["error"]
    assert failed["text"] == bedrock_emulator.requests[-1]["text"]


@needs_node
def test_text_stream_chat_transport_reads_the_text_protocol(live_server_url: str, bedrock_emulator: Any) -> None:
    result = run_node(f"{live_server_url}/bedrock/mistral/", "text", "[[emulator tokens=7]] plain text please")
    assert result["error"] is None and result["text"] == bedrock_emulator.requests[-1]["text"]


@needs_node
@pytest.mark.parametrize("family", ["cohere", "titan", "anthropic"])
def test_process_data_stream_reads_the_v1_data_stream(live_server_url: str, bedrock_emulator: Any, family: str) -> None:
    result = run_node(f"{live_server_url}/bedrock/{family}/?protocol=data", "data", "[[emulator tokens=8]] v1 please")
    row = Completion.objects.get()
    assert result["error"] is None and result["text"] == bedrock_emulator.requests[-1]["text"] == row.text
    assert result["finishReason"] == "stop"
    assert result["usage"] == {"promptTokens": row.input_tokens, "completionTokens": row.output_tokens}


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is needed (apt-get install chromium)")
def test_browser_eventsource_consumes_the_sse_endpoint(live_server_url: str, bedrock_emulator: Any) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    from urllib.parse import quote

    stream_url = quote("/get/llama2/?prompt=" + quote("[[emulator tokens=6 delay_ms=20]] hi"))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page()
            page.goto(f"{live_server_url}/sse-page/?stream={stream_url}")
            result = page.evaluate("window.result")
        finally:
            browser.close()
    assert "error" not in result, result
    assert "".join(result["tokens"]) == bedrock_emulator.requests[-1]["text"]
    assert result["ids"] == [str(i) for i in range(1, len(result["tokens"]) + 1)]
    assert result["done"]["finish_reason"] == "stop" and result["done"]["usage"]["output_tokens"] == 6


# --------------------------------------------------------------------------------------------------------------
# Every recorded capture, replayed through the views under WSGI and ASGI, read by the AI SDK's clients
# --------------------------------------------------------------------------------------------------------------

CAPTURES = load_index()
needs_captures = pytest.mark.skipif(not CAPTURES, reason=f"recorded Bedrock captures not found at {RECORDED_DIR}")


@pytest.fixture(params=["wsgi", "asgi"])
def server(request: Any, bedrock_emulator: Any, transactional_db: Any) -> Any:
    """Django under a real WSGI server (wsgiref, threads) or a real ASGI one (uvicorn)."""
    with (WSGIThread() if request.param == "wsgi" else UvicornThread()) as running:
        yield running


def capture_url(server: Any, entry: dict[str, Any], protocol: str) -> str:
    """The package's own view for the capture's family."""
    path = reverse(f"django_bedrock_stream:{FAMILY_OF[entry['payload_family']].name}")
    return f"{server.url}{path}?protocol={protocol}"


def replay_prompt(entry: dict[str, Any]) -> str:
    """The emulator answers a request whose prompt holds this marker with the capture's bytes."""
    return f"[[emulator replay={RECORDED_DIR / entry['file']}]]"


def run_jobs(ai: str, jobs: list[dict[str, str]]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [NODE, str(JS / "chat-clients.mjs"), ai],
        input=json.dumps(jobs), capture_output=True, text=True, timeout=300, cwd=JS, check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    assert len(results) == len(jobs)
    return results


GUARDRAIL_ACTION = "amazon-bedrock-guardrailAction"  # an invoke chunk's guardrail verdict


def wire_server_tools(events: list[dict[str, Any]]) -> tuple[set[str], dict[str, Any]]:
    """Bedrock's own tools in a Converse capture, from the raw events: the ids of the calls it ran
    (``toolUse`` of type ``server_tool_use``) and, by call id, the one ``json`` value of the result
    block it streamed for each (``toolResult`` start and deltas)."""
    server: set[str] = set()
    results: dict[int, tuple[str, list[dict[str, Any]]]] = {}
    for event in events:
        start = (event.get("contentBlockStart") or {}).get("start") or {}
        if (start.get("toolUse") or {}).get("type") == "server_tool_use":
            server.add(start["toolUse"]["toolUseId"])
        if "toolResult" in start:
            results[event["contentBlockStart"]["contentBlockIndex"]] = (start["toolResult"]["toolUseId"], [])
        delta = event.get("contentBlockDelta") or {}
        if "toolResult" in delta.get("delta", {}):
            results[delta["contentBlockIndex"]][1].extend(delta["delta"]["toolResult"])
    outputs = {}
    for call_id, content in results.values():
        [(kind, value)] = [item for block in content for item in block.items()]  # these captures: one json item
        assert kind == "json"
        outputs[call_id] = value
    return server, outputs


class Expected:
    """What a capture must come out as, from index.json and the capture's raw events (not our parser)."""

    def __init__(self, entry: dict[str, Any]) -> None:
        events = wire_events(RECORDED_DIR / entry["file"])
        self.file = entry["file"]
        self.text: str = entry["expected_text"]
        self.reasoning, self.signatures = wire_reasoning(events)
        assert self.reasoning == entry.get("reasoning_text", "")
        self.sources = wire_sources(events)
        #: (id, name, input) of each tool call; the ones Bedrock ran itself, and their outputs.
        self.tool_calls, self.tool_input = wire_tool_calls(events)
        assert self.tool_input == entry.get("tool_input_json_concatenated", "")
        self.server_tools, self.server_outputs = wire_server_tools(events)
        self.stop_reason: str = entry["stop_reason"]
        self.usage = expected_usage(entry)
        self.latency_ms = wire_latency(entry)
        invoke_actions = [event[GUARDRAIL_ACTION] for event in events if GUARDRAIL_ACTION in event]
        self.guardrail: str | None = None
        if invoke_actions:
            self.guardrail = invoke_actions[-1]
        elif wire_guardrail(events) is not None:  # Converse names no action: its stop reason does
            self.guardrail = "INTERVENED" if self.stop_reason == "guardrail_intervened" else "NONE"

    def source_details(self, source: dict[str, Any], *, camel: bool = False) -> dict[str, Any]:
        """The details a protocol sends: camelCase in the ui protocol's providerMetadata, else snake_case."""
        where = next(iter(source["location"].values()), {})
        details = {
            "citedText" if camel else "cited_text": source["cited_text"],
            "documentIndex" if camel else "document_index": where.get("documentIndex"),
            "location": source["location"],
        }
        return {key: value for key, value in details.items() if value not in ("", None, {})}

    def ui_sources(self) -> list[dict[str, Any]]:
        """The UIMessage's source parts: a web citation is a ``source-url``, any other a ``source-document``."""
        parts = []
        for number, source in enumerate(self.sources, 1):
            url = (source["location"].get("web") or {}).get("url")
            details = self.source_details(source, camel=True)
            part: dict[str, Any]
            if url:
                part = {"type": "source-url", "sourceId": f"source-{number}", "url": url}
                if source["title"]:
                    part["title"] = source["title"]
            else:
                title = source["title"] or f"Document {details.get('documentIndex', 0) + 1}"
                part = {"type": "source-document", "sourceId": f"source-{number}", "mediaType": "text/plain", "title": title}
            if details:
                part["providerMetadata"] = {"bedrock": details}
            parts.append(part)
        return parts

    def ui_tools(self) -> list[dict[str, Any]]:
        """The UIMessage's tool parts: each call as it came (the views here offer no tools, so none
        is signed or run); one Bedrock ran itself is ``providerExecuted``, with the output it streamed."""
        parts = []
        for call_id, name, call_input in self.tool_calls:
            part: dict[str, Any] = {"type": f"tool-{name}", "toolCallId": call_id, "state": "input-available",
                                    "input": call_input}
            if call_id in self.server_tools:
                part.update(state="output-available", output=self.server_outputs[call_id], providerExecuted=True)
            parts.append(part)
        return parts

    def sse_tools(self) -> dict[str, list[dict[str, Any]]]:
        """The sse protocol's tool events, by name (the input pieces joined per call)."""
        def mark(call_id: str) -> dict[str, bool]:
            return {"provider_executed": True} if call_id in self.server_tools else {}

        return {
            "tool-call-start": [{"id": call_id, "name": name, **mark(call_id)} for call_id, name, _ in self.tool_calls],
            "tool-call": [{"id": i, "name": name, "input": given, **mark(i)} for i, name, given in self.tool_calls],
            "tool-result": [
                {"id": call_id, "name": name, "output": self.server_outputs[call_id], **mark(call_id)}
                for call_id, name, _ in self.tool_calls if call_id in self.server_tools
            ],
        }

    def ui_metadata(self, model_id: str) -> dict[str, Any]:
        usage = self.usage
        metadata: dict[str, Any] = {
            "finishReason": map_finish_reason(self.stop_reason),
            "usage": {
                "inputTokens": usage["input_tokens"],
                "outputTokens": usage["output_tokens"],
                "cacheReadTokens": usage["cache_read_tokens"],
                "cacheWriteTokens": usage["cache_write_tokens"],
            },
            "modelId": model_id,
        }
        if self.latency_ms is not None:
            metadata["latencyMs"] = self.latency_ms
        if self.guardrail is not None:
            metadata["guardrail"] = self.guardrail
        return metadata


def completed_rows(count: int) -> list[Completion]:
    rows = list(Completion.objects.order_by("pk"))
    assert len(rows) == count and all(row.status == Completion.Status.COMPLETED for row in rows)
    return rows


@needs_node
@needs_captures
@pytest.mark.parametrize("ai", AI_PACKAGES)
def test_every_capture_rebuilds_its_ui_message(server: Any, ai: str) -> None:
    jobs = [{"url": capture_url(server, e, "ui"), "protocol": "ui", "prompt": replay_prompt(e)} for e in CAPTURES]
    results = run_jobs(ai, jobs)
    captures = [Expected(entry) for entry in CAPTURES]
    # The captures hold what this test is about: a signed reasoning block, citations, tool calls (two in
    # one turn) and a tool Bedrock ran itself.
    assert any(expected.signatures for expected in captures) and any(expected.sources for expected in captures)
    assert any(len(expected.tool_calls) == 2 for expected in captures) and any(e.server_tools for e in captures)
    for expected, result, row in zip(captures, results, completed_rows(len(CAPTURES))):
        assert (result["httpStatus"], result["contentType"]) == (200, "text/event-stream"), expected.file
        assert (result["status"], result["error"]) == ("ready", None), expected.file
        message = result["message"]
        assert result["read"] == {"error": None, "message": message}, expected.file  # both readers agree
        parts = message["parts"]
        texts = [part["text"] for part in parts if part["type"] == "text"]
        assert "".join(texts) == expected.text == row.text and len(texts) <= 1, expected.file
        reasoning = [part for part in parts if part["type"] == "reasoning"]
        assert "".join(part["text"] for part in reasoning) == expected.reasoning, expected.file
        signed = [part["providerMetadata"]["bedrock"]["signature"] for part in reasoning if "providerMetadata" in part]
        assert signed == expected.signatures, expected.file
        assert all(part["state"] == "done" for part in reasoning), expected.file
        sources = [part for part in parts if part["type"].startswith("source-")]
        assert sources == expected.ui_sources(), expected.file
        assert message["metadata"] == expected.ui_metadata(row.model_id), expected.file
        tools = [part for part in parts if part["type"].startswith("tool-")]
        assert tools == expected.ui_tools(), expected.file
        assert [call["id"] for call in row.parts["tool_calls"]] == [call_id for call_id, _, _ in expected.tool_calls]
        assert {part["type"] for part in parts} - {part["type"] for part in tools} <= {
            "step-start", "text", "reasoning", "source-document", "source-url"
        }


@needs_node
@needs_captures
def test_every_capture_through_the_v1_data_stream(server: Any) -> None:
    jobs = [{"url": capture_url(server, e, "data"), "protocol": "data", "prompt": replay_prompt(e)} for e in CAPTURES]
    for entry, result, row in zip(CAPTURES, run_jobs("ai", jobs), completed_rows(len(CAPTURES))):
        expected = Expected(entry)
        assert (result["httpStatus"], result["contentType"]) == (200, "text/plain; charset=utf-8"), expected.file
        raw, chat = result["parts"], result["chat"]
        assert raw["errors"] == [] and chat["error"] is None, expected.file
        assert raw["text"] == chat["message"]["content"] == expected.text, expected.file
        assert "".join(raw["reasoning"]) == expected.reasoning, expected.file
        assert (chat["message"]["reasoning"] or "") == expected.reasoning, expected.file
        assert raw["signatures"] == [{"signature": signature} for signature in expected.signatures], expected.file
        web = [s for s in expected.sources if "web" in s["location"]]
        assert [(s["url"], s.get("title", "")) for s in raw["sources"]] == [
            (s["location"]["web"]["url"], s["title"]) for s in web
        ], expected.file
        usage = {"promptTokens": expected.usage["input_tokens"], "completionTokens": expected.usage["output_tokens"]}
        assert (raw["finishReason"], raw["usage"]) == (map_finish_reason(expected.stop_reason), usage), expected.file
        assert raw["messageId"] == chat["message"]["id"], expected.file
        calls = [value for code, value in raw["tools"] if code == "9"]
        assert calls == [  # a tool Bedrock ran is marked, so that AI SDK 4 sends it back as history
            {"toolCallId": i, "toolName": name, "args": given, **({"providerExecuted": True} if i in expected.server_tools else {})}
            for i, name, given in expected.tool_calls
        ], expected.file
        assert "".join(value["argsTextDelta"] for code, value in raw["tools"] if code == "c") == expected.tool_input
        assert [value for code, value in raw["tools"] if code == "a"] == [
            {"toolCallId": call_id, "result": output} for call_id, output in expected.server_outputs.items()
        ], expected.file
        invocations = [part["toolInvocation"] for part in chat["message"]["parts"] if part["type"] == "tool-invocation"]
        assert [(i["toolCallId"], i["state"]) for i in invocations] == [
            (call_id, "result" if call_id in expected.server_tools else "call") for call_id, _, _ in expected.tool_calls
        ], expected.file
        assert row.text == expected.text


def read_sse(url: str, prompt: str) -> tuple[int, str, str]:
    parsed = urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        body = json.dumps({"messages": [{"role": "user", "content": prompt}]})
        connection.request("POST", f"{parsed.path}?{parsed.query}", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode("utf-8")
    finally:
        connection.close()


@needs_captures
def test_every_capture_through_typed_server_sent_events(server: Any) -> None:
    bodies = [read_sse(capture_url(server, e, "sse"), replay_prompt(e)) for e in CAPTURES]
    for entry, (status, content_type, body), row in zip(CAPTURES, bodies, completed_rows(len(CAPTURES))):
        expected = Expected(entry)
        assert (status, content_type) == (200, "text/event-stream"), expected.file
        events = parse_sse(body)
        assert [event_id for _, event_id, _ in events] == [str(n) for n in range(1, len(events) + 1)]
        by_name: dict[str, list[Any]] = {}
        for name, _, data in events:
            by_name.setdefault(name, []).append(data)
        tool_events = {"tool-call-start", "tool-input", "tool-call", "tool-result"}
        assert set(by_name) <= {"token", "reasoning", "source", "guardrail", "done", *tool_events}, expected.file
        assert {name: by_name.get(name, []) for name in tool_events - {"tool-input"}} == expected.sse_tools()
        assert "".join(data["delta"] for data in by_name.get("tool-input", [])) == expected.tool_input
        assert "".join(data["text"] for data in by_name.get("token", [])) == expected.text, expected.file
        reasoning = by_name.get("reasoning", [])
        assert "".join(data.get("text", "") for data in reasoning) == expected.reasoning, expected.file
        assert [data["signature"] for data in reasoning if "signature" in data] == expected.signatures
        assert by_name.get("source", []) == [
            {"id": f"source-{number}", "title": source["title"], **expected.source_details(source)}
            for number, source in enumerate(expected.sources, 1)
        ], expected.file
        guardrails = by_name.get("guardrail", [])
        assert [data["action"] for data in guardrails] == ([expected.guardrail] if expected.guardrail else [])
        assert all("modelOutput" not in data["trace"] for data in guardrails)
        done = {
            "finish_reason": map_finish_reason(expected.stop_reason),
            "stop_reason": expected.stop_reason,
            "usage": expected.usage,
            "model_id": row.model_id,
        }
        if expected.latency_ms is not None:
            done["latency_ms"] = expected.latency_ms
        if expected.guardrail is not None:
            done["guardrail"] = expected.guardrail
        assert by_name["done"] == [done], expected.file
        assert [name for name, _, _ in events][-1] == "done"


# --------------------------------------------------------------------------------------------------------------
# Runs with tools: useChat's machinery against a live server, and Bedrock's own tools
# --------------------------------------------------------------------------------------------------------------


@tool
def calculator(expression: str) -> str:
    """Add whole numbers.

    Args:
        expression: Terms joined by +, like "2+3".
    """
    return str(sum(int(term) for term in expression.split("+")))


@tool
def final_result(result: float) -> str:
    """The final answer (the tool the recorded Nova 2 request offered besides its code interpreter)."""
    return f"noted {result}"


class CalculatorView(BedrockStreamView):
    family_class = ConverseFamily
    stream_protocol = "ui"
    tools = [calculator]


class CodeInterpreterView(BedrockStreamView):
    family_class = ConverseFamily
    stream_protocol = "ui"
    tools = [final_result]
    max_steps = 2


urlpatterns = [
    *site_urls,
    path("tools/calculator/", CalculatorView.as_view()),
    path("tools/code-interpreter/", CodeInterpreterView.as_view()),
]


def round_trip(url: str, ai: str, flow: str, prompt: str) -> dict[str, Any]:
    """``tests/js/tool-round-trip.mjs``: AbstractChat + DefaultChatTransport over real fetch."""
    done = subprocess.run(
        [str(NODE), str(JS / "tool-round-trip.mjs"), url, ai, flow, prompt],
        capture_output=True, text=True, timeout=60, cwd=JS, check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@needs_node
@pytest.mark.urls(__name__)
@pytest.mark.parametrize("ai", AI_PACKAGES)
def test_use_chat_shows_a_server_tool_run_over_two_steps(live_server_url: str, bedrock_emulator: Any, ai: str) -> None:
    """One request, two model turns: the final UIMessage holds the first turn's text, the call (signed,
    its input, the server's output) and, after a step-start, the answer; the chat sends nothing back
    (lastAssistantMessageIsCompleteWithToolCalls does not fire on a finished run)."""
    prompt = '[[emulator tool=calculator tool_input={"expression": "2+3"} text="Let me compute."]] What is 2+3?'
    result = round_trip(f"{live_server_url}/tools/calculator/", ai, "server", prompt)
    assert (result["posts"], result["errors"], result["status"]) == (1, [], "ready")
    first, second = bedrock_emulator.requests
    [call] = [block["toolUse"] for block in second["body"]["messages"][-2]["content"] if "toolUse" in block]
    row = Completion.objects.get()
    [question, answer] = result["messages"]
    assert question["parts"] == [{"type": "text", "text": prompt}]
    [part] = [part for part in answer["parts"] if part["type"] == "tool-calculator"]
    signature = part["callProviderMetadata"]["bedrock"]["signature"]
    assert verify_call(signature, name="calculator", input={"expression": "2+3"}, binding="anonymous") == call["toolUseId"]
    assert answer["parts"] == [
        {"type": "step-start"},
        {"type": "text", "text": "Let me compute.", "state": "done"},
        {
            "type": "tool-calculator",
            "toolCallId": call["toolUseId"],
            "state": "output-available",
            "input": {"expression": "2+3"},
            "output": "5",
            "callProviderMetadata": {"bedrock": {"signature": signature}},
        },
        {"type": "step-start"},
        {"type": "text", "text": "Result of calculator: 5", "state": "done"},
    ]
    assert first["text"] == "Let me compute." and second["text"] == "Result of calculator: 5"
    usage = {"inputTokens": row.input_tokens, "outputTokens": row.output_tokens, "cacheReadTokens": 0, "cacheWriteTokens": 0}
    latency = answer["metadata"]["latencyMs"]  # Bedrock's own measure, of the last turn
    assert isinstance(latency, int) and latency >= 0
    assert answer["metadata"] == {"finishReason": "stop", "usage": usage, "modelId": row.model_id, "latencyMs": latency}
    assert row.parts["tool_runs"][0]["output"] == "5" and row.text == "Let me compute.Result of calculator: 5"


NOVA_CODE = RECORDED_DIR / "converse_nova2_lite_code_interpreter.eventstream"


@pytest.mark.urls(__name__)
@pytest.mark.skipif(not NOVA_CODE.exists(), reason=f"recorded Bedrock captures not found at {RECORDED_DIR}")
def test_a_tool_bedrock_ran_itself_is_shown_and_not_run_again(bedrock_emulator: Any, transactional_db: Any) -> None:
    """Nova 2's code interpreter (a ``server_tool_use`` call and its ``toolResult`` in the stream) reaches
    the browser as a provider-executed call with Bedrock's output; the loop runs only the view's own
    tool and leaves Bedrock's out of the next turn (a ``toolUse`` there would need a result from us)."""
    events = wire_events(NOVA_CODE)
    server_ids, outputs = wire_server_tools(events)
    calls, _ = wire_tool_calls(events)
    [(code_id, code_name, code_input), (final_id, final_name, final_input)] = calls
    assert (server_ids, code_name, final_name) == ({code_id}, "nova_code_interpreter", "final_result")
    body = json.dumps({"messages": [{"role": "user", "content": f"[[emulator replay={NOVA_CODE}]]"}]})
    response: Any = Client().post("/tools/code-interpreter/", body, content_type="application/json")
    assert response.status_code == 200
    events_ui = [line.removeprefix("data: ") for line in b"".join(response.streaming_content).decode().split("\n\n")]
    chunks = [json.loads(event) for event in events_ui if event.startswith("{")]
    first_turn = chunks[: [chunk["type"] for chunk in chunks].index("finish-step")]
    outcomes = [chunk for chunk in first_turn if chunk["type"].startswith("tool-output")]
    assert outcomes == [
        {"type": "tool-output-available", "toolCallId": code_id, "output": outputs[code_id], "providerExecuted": True},
        {"type": "tool-output-available", "toolCallId": final_id, "output": f"noted {final_input['result']}"},
    ]
    started = [chunk for chunk in first_turn if chunk["type"] == "tool-input-start"]
    assert started == [
        {"type": "tool-input-start", "toolCallId": code_id, "toolName": code_name, "providerExecuted": True},
        {"type": "tool-input-start", "toolCallId": final_id, "toolName": final_name},
    ]
    [code_call, final_call] = [chunk for chunk in first_turn if chunk["type"] == "tool-input-available"]
    assert code_call == {"type": "tool-input-available", "toolCallId": code_id, "toolName": code_name,
                         "input": code_input, "providerExecuted": True}  # not signed: not the view's tool
    assert (final_call["toolCallId"], final_call["input"], "providerMetadata" in final_call) == (final_id, final_input, True)
    # The next turn carries the view's call and its result only.
    _, second = bedrock_emulator.requests
    assistant, results = second["body"]["messages"][-2:]
    assert [block["toolUse"]["toolUseId"] for block in assistant["content"] if "toolUse" in block] == [final_id]
    assert [block["toolResult"]["toolUseId"] for block in results["content"]] == [final_id]
    assert code_id not in json.dumps(second["body"])
    row = Completion.objects.get()
    assert [run["name"] for run in row.parts["tool_runs"]] == ["final_result"]


@pytest.mark.skipif(not NOVA_CODE.exists(), reason=f"recorded Bedrock captures not found at {RECORDED_DIR}")
def test_a_failed_run_of_a_tool_bedrock_ran_itself_is_an_error_result() -> None:
    """The capture's events with the result block turned into a failure (``status: error``, a text
    item): an error result, marked provider-executed."""
    [code_id] = wire_server_tools(wire_events(NOVA_CODE))[0]
    family = ConverseFamily()
    parts = []
    for event in boto3_events(NOVA_CODE):
        start = (event.get("contentBlockStart") or {}).get("start") or {}
        if "toolResult" in start:
            start["toolResult"]["status"] = "error"
        delta = (event.get("contentBlockDelta") or {}).get("delta") or {}
        if "toolResult" in delta:
            delta["toolResult"] = [{"text": "Timed out"}]
        parsed = family.parse_event(event)
        parts += list(parsed.parts) if parsed is not None else []
    assert [part for part in parts if isinstance(part, ToolResult)] == [
        ToolResult(code_id, "nova_code_interpreter", error="Timed out", provider_executed=True)
    ]
