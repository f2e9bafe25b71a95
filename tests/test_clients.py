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
from django.urls import reverse

from django_bedrock_stream.models import Completion
from django_bedrock_stream.protocols import map_finish_reason

from .recorded import (
    FAMILY_OF,
    RECORDED_DIR,
    expected_usage,
    load_index,
    wire_events,
    wire_guardrail,
    wire_latency,
    wire_reasoning,
    wire_sources,
)
from .servers import UvicornThread, WSGIThread
from .test_protocols import AI_PACKAGES, parse_sse

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


class Expected:
    """What a capture must come out as, from index.json and the capture's raw events (not our parser)."""

    def __init__(self, entry: dict[str, Any]) -> None:
        events = wire_events(RECORDED_DIR / entry["file"])
        self.file = entry["file"]
        self.text: str = entry["expected_text"]
        self.reasoning, self.signatures = wire_reasoning(events)
        assert self.reasoning == entry.get("reasoning_text", "")
        self.sources = wire_sources(events)
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
    # The captures hold what this test is about: a signed reasoning block and citations.
    assert any(expected.signatures for expected in captures) and any(expected.sources for expected in captures)
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
        assert {part["type"] for part in parts} <= {"step-start", "text", "reasoning", "source-document", "source-url"}


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
        assert set(by_name) <= {"token", "reasoning", "source", "guardrail", "done"}, expected.file
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
