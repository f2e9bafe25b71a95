"""Real clients against a live server: the AI SDK's own readers in Node (useChat's transports and
``processDataStream``) and a browser ``EventSource`` in headless Chromium.

The server is uvicorn in a thread of this process (``tests/servers.py``), serving ``tests.settings``
with boto3 pointed at the emulator.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from django_bedrock_stream.models import Completion

from .servers import UvicornThread

JS = Path(__file__).parent / "js"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(
    NODE is None or not (JS / "node_modules" / "ai").exists(),
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
    assert result["usage"] == {"inputTokens": row.input_tokens, "outputTokens": row.output_tokens}
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
