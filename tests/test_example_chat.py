"""The example site's chat page in Chromium, served as ``make demo`` (runserver) and ``make demo-asgi``
(uvicorn) serve it, with the built-in emulator: reasoning streams open and folds when the answer
starts, its signature goes back with the next turn, citations are numbered with their sources listed,
an image and a PDF arrive at the emulator as image/document blocks, usage shows the prompt cache, and
what the user or the model writes is only ever text. Tools (the example's ``converse-tools`` endpoint):
a server tool runs between two steps of one message, a browser tool runs in the page and its output
reaches the model, and an approval granted or denied is acted on and told to the model. Saved chats
(the page's default mode): the sidebar lists, opens, renames and deletes the visitor's chats only, a
reload mid-answer picks the running answer up again (Redis), and Stop ends it on the server, kept as
cancelled. The tool flows and the page's own rendering run in the one-off mode (the page sends the
whole conversation to the plain endpoints).

Debian's ``chromium``, driven by Playwright through ``executable_path`` (no browser download).
Screenshots of each flow are written to ``$TMPDIR/example-chat-*.png``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .media_files import pdf, png
from .test_example_project import REPO, _free_port, _listening, demo_env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is needed (apt-get install chromium)")
SHOTS = Path(tempfile.gettempdir())
PNG, PDF = png(40, 30, noise=True), pdf("Quarterly numbers")
XSS = "<img src=x onerror=alert(1)>"
#: The browser's time zone in these tests (an offset no server default has: +08:45, no daylight saving).
TIME_ZONE = "Australia/Eucla"


@pytest.fixture(autouse=True)
def _close_bedrock_clients() -> None:
    """Replaces the suite's async fixture of this name: these tests make no Bedrock client in-process
    (the site runs in a subprocess), and Playwright's sync API keeps an event loop running in this
    thread for the whole module, where an async fixture cannot run."""


class Demo:
    """A running ``make demo`` / ``make demo-asgi``: the site's URL and the emulator's control API."""

    def __init__(self, target: str, url: str, emulator: str, db: Path) -> None:
        self.target, self.url, self.emulator, self.db = target, url, emulator, db

    def requests(self) -> list[dict[str, Any]]:
        """The emulator's request log (each record: the request ``body`` as received, ``attachments``,
        ``status``)."""
        with urllib.request.urlopen(f"{self.emulator}/_emulator/requests", timeout=10) as response:
            records: list[dict[str, Any]] = json.load(response)
        return records

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.emulator}/_emulator/reset", data=b"{}", method="POST")
        urllib.request.urlopen(request, timeout=10).close()


#: What ``make demo`` and ``make demo-asgi`` serve the site with (see the Makefile), minus runserver's
#: autoreloader: a file saved in the checkout while the tests run must not restart the server under them.
SERVERS = {
    "demo": lambda python, port: [python, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
    "demo-asgi": lambda python, port: [str(Path(python).parent / "uvicorn"), "example_project.asgi:application",
                                       "--host", "127.0.0.1", "--port", str(port)],
}


@pytest.fixture(scope="module", params=list(SERVERS))
def demo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The example site as ``make <target>`` runs it: its own settings (a database of its own), the
    emulator on a port of its own, runserver or uvicorn."""
    target = request.param
    tmp_path = tmp_path_factory.mktemp(target)
    port, emulator_port = _free_port(), _free_port()
    env = dict(demo_env(tmp_path), BEDROCK_EMULATOR_URL=f"http://127.0.0.1:{emulator_port}")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, env=env, check=True)
    log = (tmp_path / "servers.log").open("wb")
    commands = [
        [sys.executable, "manage.py", "bedrock_emulator", "--port", str(emulator_port), "--tokens", "6", "--delay-ms", "15"],
        SERVERS[target](sys.executable, port),
    ]
    processes = [subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True) for command in commands]
    try:
        deadline = time.monotonic() + 120
        while not (_listening(port) and _listening(emulator_port)):
            if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
                pytest.fail(f"{target} did not start:\n{(tmp_path / 'servers.log').read_text()}")
            time.sleep(0.2)
        yield Demo(target, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{emulator_port}", tmp_path / "db.sqlite3")
    finally:
        for process in processes:  # each in a session started here
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, demo: Demo) -> Iterator[Any]:
    """The chat page on the Converse endpoint, with a fresh emulator (log and prompt cache emptied).
    ``page.dialogs`` and ``page.errors`` collect any alert() and uncaught script error."""
    demo.reset()
    context = browser.new_context(viewport={"width": 1100, "height": 1000}, timezone_id=TIME_ZONE)
    tab = context.new_page()
    tab.dialogs, tab.errors = [], []
    tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    tab.set_default_timeout(30_000)
    tab.goto(demo.url + "/")
    tab.select_option("#family", "converse")
    yield tab
    context.close()


def one_off(page: Any) -> None:
    """The page's one-off mode: it keeps the conversation and posts all of it to the plain endpoints."""
    page.select_option("#mode", "plain")
    assert page.locator("#sidebar").is_hidden()


def send(page: Any, text: str) -> None:
    """Type ``text``, send it, and wait until its answer has finished streaming."""
    done = page.locator(".turn.assistant[aria-busy=false]").count()
    page.fill("#prompt", text)
    page.click("#send")
    page.wait_for_function(f"document.querySelectorAll('.turn.assistant[aria-busy=false]').length > {done}")


def stats(turn: Any) -> dict[str, str]:
    """The usage shown under an answer, by stat name."""
    return {node.get_attribute("data-stat"): node.inner_text() for node in turn.locator("[data-stat]").all()}


def shot(page: Any, name: str) -> None:
    """A screenshot of the whole page with the whole conversation (not scrolled inside its box)."""
    page.evaluate("document.getElementById('transcript').style.maxHeight = 'none'")
    page.screenshot(path=str(SHOTS / name), full_page=True)


def settled(demo: Demo, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        records = demo.requests()
        if len(records) >= count and all(r["status"] != "streaming" for r in records):
            return records
        assert time.monotonic() < deadline, records
        time.sleep(0.1)


# Every change to the newest answer, as the user would have seen it: the Thinking toggle's state, the
# reasoning and the answer text. Recorded in the page, so no state is missed however fast it streams.
RECORD = """() => {
  window.seen = [];
  new MutationObserver(() => {
    const turn = [...document.querySelectorAll('.turn.assistant')].pop();
    if (!turn) return;
    const toggle = turn.querySelector('.thinking-toggle');
    window.seen.push({
      expanded: toggle ? toggle.getAttribute('aria-expanded') : null,
      shown: toggle ? !turn.querySelector('.thinking-body').hidden : null,
      thinking: (turn.querySelector('.thinking-body') || {}).textContent || '',
      answer: (turn.querySelector('.bubble') || {}).textContent || '',
    });
  }).observe(document.getElementById('transcript'), {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def test_reasoning_streams_open_folds_for_the_answer_and_its_signature_goes_back(page: Any, demo: Demo) -> None:
    reasoning = "First I add two and two. That makes four. Then I check it twice."
    streams: list[Any] = []
    page.on("response", lambda response: streams.append(response) if "protocol=ui" in response.url else None)
    page.evaluate(RECORD)
    send(page, f'[[emulator reasoning="{reasoning}" delay_ms=25 text="Two and two make four."]] What is 2+2?')
    assert page.evaluate("document.activeElement.id") == "prompt"  # focus back in the composer

    seen = page.evaluate("window.seen")
    streaming = [s for s in seen if s["thinking"] and not s["answer"]]
    assert streaming and all(s["expanded"] == "true" and s["shown"] for s in streaming), seen
    assert len({s["thinking"] for s in streaming}) > 3  # it grew piece by piece, live
    assert streaming[-1]["thinking"] == reasoning
    answering = [s for s in seen if s["answer"]]
    assert answering and all(s["expanded"] == "false" and not s["shown"] for s in answering), seen

    turn = page.locator(".turn.assistant").last
    toggle = turn.locator(".thinking-toggle")
    assert toggle.get_attribute("aria-expanded") == "false" and "Thought for" in toggle.inner_text()
    assert toggle.get_attribute("aria-controls") == turn.locator(".thinking-body").get_attribute("id")
    assert turn.locator(".bubble").inner_text() == "Two and two make four."
    toggle.click()  # the user can open it again
    assert toggle.get_attribute("aria-expanded") == "true" and turn.locator(".thinking-body").inner_text() == reasoning
    shot(page, f"example-chat-reasoning-{demo.target}.png")

    chunks = [json.loads(line[6:]) for line in streams[0].text().splitlines() if line.startswith("data: {")]
    (signature,) = [c["providerMetadata"]["bedrock"]["signature"] for c in chunks if c.get("providerMetadata")]
    send(page, "And 3+3?")
    first, second = settled(demo, 2)
    assert [first["status"], second["status"]] == ["completed", "completed"]  # a changed signature is a 400
    answer = second["body"]["messages"][1]
    assert answer["role"] == "assistant"
    assert answer["content"] == [
        {"reasoningContent": {"reasoningText": {"text": reasoning, "signature": signature}}},
        {"text": "Two and two make four."},
    ]
    assert page.dialogs == [] and page.errors == []


def test_files_citations_usage_and_text_never_html(page: Any, demo: Demo) -> None:
    page.set_input_files("#attach", files=[
        {"name": "chart.png", "mimeType": "image/png", "buffer": PNG},
        {"name": "Q3 report.pdf", "mimeType": "application/pdf", "buffer": PDF},
    ])
    page.wait_for_function("document.querySelectorAll('#pending .file').length === 2")  # read by FileReader
    assert page.locator("#pending .file-name").all_inner_texts() == ["chart.png", "Q3 report.pdf"]
    assert page.locator("#pending .remove").first.get_attribute("aria-label") == "Remove chart.png"
    cited = "Remote work is allowed two days a week."
    question = f'[[emulator cite="{cited}" cite_title="Handbook {XSS}" text="You may work from home {XSS} twice a week."]] What do these show? {XSS}'
    send(page, question)

    user = page.locator(".turn.user").last
    assert user.locator(".bubble").inner_text() == question  # the markup shown as text
    assert user.locator(".attachments img").count() == 1  # the thumbnail, the only image on the turn
    assert user.locator(".file-name").all_inner_texts() == ["chart.png", "Q3 report.pdf"]
    assert page.locator("#pending .file").count() == 0

    turn = page.locator(".turn.assistant").last
    assert turn.locator(".bubble").inner_text() == f"[1]You may work from home {XSS} twice a week."
    assert turn.locator("sup.cite").all_inner_texts() == ["[1]"]
    assert turn.locator("sup.cite a").get_attribute("href") == "#m1-source-1"
    assert turn.locator(".source-list > li").count() == 1
    assert turn.locator(".source-title").inner_text() == f"Handbook {XSS}"
    assert turn.locator(".cited").inner_text() == cited
    assert page.locator("img[src='x']").count() == 0 and page.dialogs == [] and page.errors == []

    (record,) = settled(demo, 1)
    assert [(a["kind"], a["format"]) for a in record["attachments"]] == [("image", "png"), ("document", "pdf")]
    content = record["body"]["messages"][0]["content"]
    assert content[0] == {"image": {"format": "png", "source": {"bytes": base64.b64encode(PNG).decode()}}}
    assert content[1] == {"document": {"format": "pdf", "name": "Q3 report",
                                       "source": {"bytes": base64.b64encode(PDF).decode()}}}
    assert content[2]["text"].endswith(f"What do these show? {XSS}")

    first = stats(turn)
    assert first["model"] == "anthropic.claude-3-haiku-20240307-v1:0"
    assert int(first["input"]) > 0 and int(first["output"]) > 0
    assert first["cache-read"] == "0" and int(first["cache-write"]) > 0  # the system prompt, cached
    assert first["latency"].endswith(("ms", " s")) and first["total"].endswith(("ms", " s"))

    send(page, "Thanks!")
    second = stats(page.locator(".turn.assistant").last)
    assert second["cache-read"] == first["cache-write"] and second["cache-write"] == "0"  # a cache hit
    assert "hit" in page.locator(".turn.assistant").last.locator(".stat.cache").get_attribute("class")
    shot(page, f"example-chat-files-{demo.target}.png")
    assert page.dialogs == [] and page.errors == []


def test_files_are_checked_before_sending_and_a_refusal_gives_them_back(page: Any, demo: Demo) -> None:
    """Type, size and endpoint are checked in the browser with a message saying what is wrong; what
    only the server can see (a PDF named .png) comes back as its 400, with the message and files back
    in the composer to fix."""
    if demo.target != "demo":
        pytest.skip("the page's own checks; one server is enough")
    status = page.locator("#composer-status")
    big = {"name": "huge.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\n" + bytes(5 * 1024 * 1024)}
    page.set_input_files("#attach", files=[big, {"name": "clip.mp4", "mimeType": "video/mp4", "buffer": b"x" * 10}])
    assert "huge.png is 5.00 MB; images may be at most 3.75 MB." in status.inner_text()
    assert "clip.mp4: converse does not take this kind of file" in status.inner_text()
    assert page.locator("#pending .file").count() == 0

    page.select_option("#family", "llama3")
    assert page.locator("#attach").is_disabled() and "takes text only" in page.locator("#attach-label").get_attribute("title")
    page.select_option("#family", "converse")

    page.set_input_files("#attach", files=[{"name": "notes.pdf", "mimeType": "application/pdf", "buffer": PDF}])
    page.wait_for_function("document.querySelectorAll('#pending .file').length === 1")
    page.click("#send")  # a document needs a question beside it
    assert "Add a question about the document" in status.inner_text()

    page.click("#pending .remove")
    page.set_input_files("#attach", files=[{"name": "photo.png", "mimeType": "image/png", "buffer": PDF}])
    page.wait_for_function("document.querySelectorAll('#pending .file').length === 1")
    send(page, "What is in the photo?")
    error = page.locator(".turn.assistant .notice.error")
    assert "unsupported_media" in error.inner_text() and "photo.png" in error.inner_text()
    assert page.locator(".turn.user").last.locator(".who").text_content() == "You · not sent"
    assert page.input_value("#prompt") == "What is in the photo?"
    assert page.locator("#pending .file-name").all_inner_texts() == ["photo.png"]
    assert demo.requests() == []  # nothing reached the model
    shot(page, "example-chat-refused.png")
    assert page.dialogs == [] and page.errors == []


def ui_stream(*chunks: dict[str, Any]) -> str:
    return "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"


def test_citations_are_numbered_where_they_arrive_and_only_web_urls_are_links(page: Any, demo: Demo) -> None:
    """Several citations, one cited twice, a web source with its URL and one whose "URL" is script: the
    page's rendering of a stream the emulator cannot make (it cites one document per answer)."""
    if demo.target != "demo":
        pytest.skip("the page's own rendering; one server is enough")
    one_off(page)
    meta = {"bedrock": {"citedText": "The Nile is 6,650 km long."}}
    body = ui_stream(
        {"type": "start", "messageId": "m"}, {"type": "start-step"},
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "The Nile is the longest river."},
        {"type": "source-url", "sourceId": "source-1", "url": "https://example.org/nile", "title": "Nile",
         "providerMetadata": meta},
        {"type": "text-delta", "id": "t", "delta": " The Amazon carries the most water."},
        {"type": "source-document", "sourceId": "source-2", "mediaType": "text/plain", "title": "Atlas"},
        {"type": "source-url", "sourceId": "source-3", "url": "javascript:alert(1)", "title": "Trap"},
        {"type": "text-delta", "id": "t", "delta": " Both are long."},
        {"type": "source-url", "sourceId": "source-1", "url": "https://example.org/nile", "title": "Nile"},
        {"type": "text-end", "id": "t"}, {"type": "finish-step"},
        {"type": "finish", "messageMetadata": {"finishReason": "stop", "usage": {
            "inputTokens": 10, "outputTokens": 20, "cacheReadTokens": 5, "cacheWriteTokens": 0}}},
    )
    page.route("**/bedrock/converse/?protocol=ui", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=body))
    send(page, "Rivers?")
    turn = page.locator(".turn.assistant").last
    assert turn.locator(".bubble").inner_text() == (
        "The Nile is the longest river.[1] The Amazon carries the most water.[2][3] Both are long.[1]")
    assert turn.locator(".source-number").all_inner_texts() == ["[1]", "[2]", "[3]"]
    assert turn.locator(".source-title").all_inner_texts() == ["Nile", "Atlas", "Trap"]
    links = turn.locator(".source-list a")
    assert links.count() == 1 and links.get_attribute("href") == "https://example.org/nile"
    assert turn.locator(".source-url").all_inner_texts() == ["https://example.org/nile", "javascript:alert(1)"]
    assert turn.locator(".cited").all_inner_texts() == ["The Nile is 6,650 km long."]
    assert stats(turn)["cache-read"] == "5"
    turn.locator("sup.cite a").last.click()
    shot(page, "example-chat-sources.png")
    assert page.dialogs == [] and page.errors == [] and demo.requests() == []


# -- tools -------------------------------------------------------------------------------------------

TOOLS = "/demo/converse-tools/"


def posts(page: Any) -> list[dict[str, Any]]:
    """The JSON bodies the page posts to the tools endpoint, collected from now on."""
    bodies: list[dict[str, Any]] = []
    page.on("request", lambda request: bodies.append(json.loads(request.post_data))
            if TOOLS in request.url and request.method == "POST" else None)
    return bodies


def ask(page: Any, text: str, until: str) -> None:
    """Send ``text`` on the tools endpoint and wait until the JS condition ``until`` holds and nothing
    streams (the page may post the conversation again by itself, so one answer is not the end)."""
    page.select_option("#family", "converse-tools")
    page.fill("#prompt", text)
    page.click("#send")
    page.wait_for_function(f"({until}) && !document.querySelector('.turn[aria-busy=true]')")


def card(page: Any, n: int = 0) -> dict[str, Any]:
    """What the n-th tool call card of the last message shows."""
    tool = page.locator(".turn.assistant").last.locator(".tool").nth(n)
    result = tool.locator(".tool-result")
    return {
        "name": tool.locator(".tool-name").inner_text(),
        "where": tool.locator(".tool-where").inner_text(),
        "status": tool.locator(".tool-status").inner_text(),
        "input": tool.locator(".tool-input").inner_text(),
        "result": result.locator("pre").inner_text() if result.is_visible() else None,
        "result_label": result.locator(".tool-label").text_content() if result.is_visible() else None,
        "buttons": tool.locator(".tool-actions button:visible").all_inner_texts(),
    }


def flow(page: Any) -> list[tuple[str, str]]:
    """The last message's flow, in order: ("text", bubble text) and ("tool", tool name)."""
    return [tuple(item) for item in page.evaluate("""() => [...[...document.querySelectorAll('.turn.assistant')].pop()
        .querySelector('.flow').children].map(n => n.classList.contains('tool')
            ? ['tool', n.querySelector('.tool-name').textContent] : [n.className, n.textContent])""")]


def tool_messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's messages after the user's question: the model's calls and the results it read."""
    return record["body"]["messages"][1:]


# Each change of the newest tool card's input box and status, as the user saw it.
RECORD_TOOL = """() => {
  window.toolSeen = [];
  new MutationObserver(() => {
    const tool = document.querySelector('.turn.assistant:last-child .tool');
    if (!tool) return;
    const seen = {input: tool.querySelector('.tool-input').textContent, status: tool.querySelector('.tool-status').textContent};
    const last = window.toolSeen[window.toolSeen.length - 1];
    if (!last || last.input !== seen.input || last.status !== seen.status) window.toolSeen.push(seen);
  }).observe(document.getElementById('transcript'), {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def test_a_server_tool_runs_between_two_steps_of_one_message(page: Any, demo: Demo) -> None:
    """Two calculator calls stream their input live; the server runs them (one fails: its input is
    markup, shown as text) and the next step, in the same message, quotes the results."""
    one_off(page)
    sent = posts(page)
    page.evaluate(RECORD_TOOL)
    calls = [{"name": "calculator", "input": {"expression": "(17 + 25) * 3"}},
             {"name": "calculator", "input": {"expression": XSS}}]
    ask(page, f'[[emulator tools={json.dumps(calls)} text="Let me work that out." delay_ms=20]] What is (17 + 25) * 3?',
        "document.querySelectorAll('.tool[data-state^=output]').length === 2 && /Result of/.test("
        "document.querySelector('.turn.assistant:last-child').textContent)")

    assert page.locator(".turn.assistant").count() == 1  # both steps in one message
    answer = f"Result of calculator: 126\nError from calculator: Not an arithmetic expression: '{XSS}'."
    assert flow(page) == [("bubble", "Let me work that out."), ("tool", "calculator"), ("tool", "calculator"),
                          ("bubble", answer)]
    first, second = card(page, 0), card(page, 1)
    assert first == {"name": "calculator", "where": "runs on the server", "status": "Done",
                     "input": json.dumps(calls[0]["input"], indent=2), "result": "126", "result_label": "Result",
                     "buttons": []}
    assert second["status"] == "Error" and second["result_label"] == "Error"
    assert second["result"] == f"Not an arithmetic expression: '{XSS}'."
    assert json.loads(second["input"]) == calls[1]["input"]
    inputs = [seen["input"] for seen in page.evaluate("window.toolSeen")]
    raw = json.dumps(calls[0]["input"])  # as the emulator streams it, in pieces
    assert len([i for i in inputs if i and raw.startswith(i) and i != raw]) > 2, inputs  # grew piece by piece
    turn = page.locator(".turn.assistant").last
    assert turn.locator(".badge").inner_text() == "completed · stop"
    shot(page, f"example-chat-tool-server-{demo.target}.png")

    first_turn, second_turn = settled(demo, 2)
    assert [first_turn["status"], second_turn["status"]] == ["completed", "completed"]
    offered = [t["toolSpec"]["name"] for t in second_turn["body"]["toolConfig"]["tools"]]
    assert offered == ["calculator", "local_time", "send_email"]
    _, results = tool_messages(second_turn)[-2:]
    assert [(r["toolResult"]["status"], r["toolResult"]["content"]) for r in results["content"]] == [
        ("success", [{"text": "126"}]), ("error", [{"text": f"Not an arithmetic expression: '{XSS}'."}])]
    assert len(sent) == 1  # the server ran the tools: the page posted once
    assert page.locator("img[src='x']").count() == 0 and page.dialogs == [] and page.errors == []


def test_a_browser_tool_runs_in_the_page_and_its_output_goes_back(page: Any, demo: Demo) -> None:
    """local_time has no execute: the stream ends with the signed call, the page runs it and posts the
    conversation again with the tool part answered, as useChat does; the answer continues the message."""
    one_off(page)
    sent = posts(page)
    ask(page, "[[emulator tool=local_time]] What time is it where I am?", "/Result of local_time/.test("
        "document.querySelector('.turn.assistant:last-child').textContent)")

    assert page.locator(".turn.assistant").count() == 1
    shown = card(page)
    assert (shown["name"], shown["where"], shown["status"], shown["input"]) == (
        "local_time", "runs in your browser", "Done", "{}")
    output = json.loads(shown["result"])
    assert output["timeZone"] == TIME_ZONE and output["utcOffsetMinutes"] == 525 and "GMT+0845" in output["localTime"]
    assert flow(page) == [("tool", "local_time"), ("bubble", f"Result of local_time: {json.dumps(output)}")]
    shot(page, f"example-chat-tool-browser-{demo.target}.png")

    # The second post: the same assistant message, its tool part answered in the AI SDK's shape.
    assert len(sent) == 2
    assistant = sent[1]["messages"][-1]
    assert assistant["role"] == "assistant" and [p["type"] for p in assistant["parts"]] == ["step-start", "tool-local_time"]
    part = assistant["parts"][1]
    assert part["state"] == "output-available" and part["output"] == output and part["input"] == {}
    assert part["callProviderMetadata"]["bedrock"]["signature"]
    # ... and the model read the browser's output.
    first_turn, second_turn = settled(demo, 2)
    assert second_turn["status"] == "completed"
    calls, results = tool_messages(second_turn)
    (use,) = calls["content"]
    assert use["toolUse"]["name"] == "local_time" and use["toolUse"]["toolUseId"] == part["toolCallId"]
    (result,) = results["content"]
    assert result["toolResult"]["status"] == "success"
    assert json.loads(result["toolResult"]["content"][0]["text"]) == output
    assert page.dialogs == [] and page.errors == []


EMAIL = {"to": "ada@example.com", "subject": "Lunch on Friday", "body": f"Noon? {XSS}"}
EMAIL_PROMPT = f"[[emulator tool=send_email tool_input={json.dumps(EMAIL)}]] Email Ada about lunch."


def test_an_approved_call_runs_and_a_denied_one_is_told_to_the_model(page: Any, demo: Demo) -> None:
    one_off(page)
    sent = posts(page)
    ask(page, EMAIL_PROMPT, "document.querySelector('.tool[data-state=approval-requested]')")
    waiting = card(page)
    assert (waiting["status"], waiting["buttons"], waiting["result"]) == ("Waiting for your approval", ["Approve", "Deny"], None)
    assert waiting["where"] == "runs on the server · asks you first" and json.loads(waiting["input"]) == EMAIL
    assert page.locator(".turn.assistant .badge").inner_text() == "waiting · tool-calls"
    shot(page, f"example-chat-tool-approval-{demo.target}.png")
    (asked,) = settled(demo, 1)  # nothing ran yet: the model was asked once

    page.click(".tool .approve")
    page.wait_for_function("/Result of send_email/.test(document.querySelector('.turn.assistant:last-child').textContent)"
                           " && !document.querySelector('.turn[aria-busy=true]')")
    approved = card(page)
    assert approved["status"] == "Done" and approved["buttons"] == []
    assert json.loads(approved["result"]) == {"status": "sent", "to": EMAIL["to"], "subject": EMAIL["subject"],
                                              "note": "Demo only: no email left the server."}
    assert page.locator(".turn.assistant").count() == 1
    part = sent[1]["messages"][-1]["parts"][-1]
    assert part["state"] == "approval-responded" and part["approval"]["approved"] is True
    _, told = settled(demo, 2)
    (result,) = tool_messages(told)[-1]["content"]
    assert result["toolResult"]["status"] == "success" and '"status": "sent"' in result["toolResult"]["content"][0]["text"]
    shot(page, f"example-chat-tool-approved-{demo.target}.png")

    page.click("#new-chat")
    ask(page, EMAIL_PROMPT, "document.querySelector('.tool[data-state=approval-requested]')")
    page.click(".tool .deny")
    page.wait_for_function("/Error from send_email/.test(document.querySelector('.turn.assistant:last-child').textContent)"
                           " && !document.querySelector('.turn[aria-busy=true]')")
    denied = card(page)
    assert (denied["status"], denied["result_label"], denied["buttons"]) == ("Denied", "Outcome", [])
    assert denied["result"] == "You denied this call; the model was told."
    assert flow(page) == [("tool", "send_email"), ("bubble", "Error from send_email: The user denied this tool call.")]
    part = sent[-1]["messages"][-1]["parts"][-1]
    assert part["state"] == "approval-responded" and part["approval"]["approved"] is False
    records = settled(demo, 4)
    (result,) = tool_messages(records[3])[-1]["content"]
    assert result["toolResult"] == {"toolUseId": part["toolCallId"], "status": "error",
                                    "content": [{"text": "The user denied this tool call."}]}
    shot(page, f"example-chat-tool-denied-{demo.target}.png")
    assert page.locator("img[src='x']").count() == 0 and page.dialogs == [] and page.errors == []


def test_an_answer_the_server_refuses_is_taken_back_and_the_chat_goes_on(page: Any, demo: Demo) -> None:
    """A refused approval (here forged on its way out) shows the server's error; the call goes back to
    unanswered, which the server leaves out, so the next message is accepted."""
    if demo.target != "demo":
        pytest.skip("the page's own handling; one server is enough")
    one_off(page)
    sent = posts(page)

    def forge(route: Any) -> None:
        body = json.loads(route.request.post_data)
        for part in body["messages"][-1].get("parts", []):
            if part.get("state") == "approval-responded":
                part["approval"]["id"] = "forged"
        route.continue_(post_data=json.dumps(body))

    page.route(f"**{TOOLS}?protocol=ui", forge)
    ask(page, EMAIL_PROMPT, "document.querySelector('.tool[data-state=approval-requested]')")
    page.click(".tool .approve")
    page.wait_for_function("document.querySelector('.turn.assistant .notice.error')"
                           " && !document.querySelector('.turn[aria-busy=true]')")
    error = page.locator(".turn.assistant .notice.error").inner_text()
    assert error.startswith("invalid_tool_call: ") and "send_email" in error
    refused = card(page)
    assert refused["status"] == "Not sent: the server refused the answer" and refused["buttons"] == []
    assert page.locator(".turn.assistant .badge").inner_text() == "completed · tool-calls"  # waits no more
    assert len(demo.requests()) == 1  # the forged approval never reached the model

    page.unroute(f"**{TOOLS}?protocol=ui")
    ask(page, "Never mind.", "document.querySelectorAll('.turn.assistant').length === 2")
    assert page.locator(".turn.assistant").last.locator(".notice.error").count() == 0
    part = sent[-1]["messages"][-2]["parts"][-1]
    assert part["state"] == "approval-requested" and "approved" not in part["approval"]  # taken back
    assert [r["status"] for r in settled(demo, 2)] == ["completed", "completed"]
    shot(page, "example-chat-tool-refused.png")

    # The model asked again (the marker is still in the conversation); writing something else instead
    # leaves that call unanswered.
    assert card(page)["buttons"] == ["Approve", "Deny"]
    ask(page, "No email, thanks.", "document.querySelectorAll('.turn.assistant').length === 3")
    skipped = page.locator(".turn.assistant").nth(1)
    assert skipped.locator(".tool-status").inner_text() == "Not answered"
    assert skipped.locator(".tool-actions button:visible").count() == 0
    assert skipped.locator(".badge").inner_text() == "completed · tool-calls"
    assert sent[-1]["messages"][-2]["parts"][-1]["state"] == "approval-requested"
    assert [r["status"] for r in settled(demo, 3)] == ["completed"] * 3
    assert page.dialogs == [] and page.errors == []


# -- saved chats ---------------------------------------------------------------------------------------

#: An answer paced for the reload and stop tests: 24 words, 120 ms apart (about 3 s).
SLOW_TEXT = " ".join(f"word{n}" for n in range(1, 25))
SLOW_PROMPT = f'[[emulator text="{SLOW_TEXT}" delay_ms=120]] Tell me something long.'


def api(page: Any, path: str, method: str = "GET") -> dict[str, Any]:
    """The package's chat endpoint ``/bedrock/<path>`` as the page's session sees it: status and JSON."""
    return page.evaluate("""async ([path, method]) => {
        const response = await fetch('/bedrock/' + path, {method});
        return {status: response.status, json: response.status === 200 ? await response.json() : null};
    }""", [path, method])


def open_chat_id(page: Any) -> str:
    page.wait_for_function("new URLSearchParams(location.search).get('chat')")
    return str(page.evaluate("new URLSearchParams(location.search).get('chat')"))


def answer_text(page: Any) -> str:
    return str(page.locator(".turn.assistant").last.locator(".bubble").inner_text())


def start_slow_answer(page: Any) -> str:
    """Send :data:`SLOW_PROMPT` and wait until its answer is partly shown; the chat's id."""
    page.fill("#prompt", SLOW_PROMPT)
    page.click("#send")
    page.wait_for_function("(document.querySelector('.turn.assistant .bubble') || {}).textContent"
                           "?.split(' ').length >= 4")
    assert page.locator(".turn.assistant").last.get_attribute("aria-busy") == "true"
    return open_chat_id(page)


def resumable_or_skip(page: Any) -> None:
    if "No Redis found" in page.locator("#resume-note").inner_text():
        pytest.skip("resuming needs Redis on 127.0.0.1:6379 (or BEDROCK_STREAM_REDIS_URL)")


def test_a_saved_chat_is_listed_opened_renamed_and_deleted_and_only_its_owner_sees_it(
    page: Any, demo: Demo, browser: Any
) -> None:
    if demo.target != "demo":
        pytest.skip("the page's sidebar; one server is enough (resume and stop run on both)")
    assert page.locator("#mode").input_value() == "chat" and page.locator("#sidebar").is_visible()
    assert page.locator(".chat-item").count() == 0
    page.evaluate(RECORD)
    question = f'[[emulator text="Saved on the server, {XSS} as text." delay_ms=30]] Keep this {XSS}'
    send(page, question)
    answers = {s["answer"] for s in page.evaluate("window.seen") if s["answer"]}
    assert len(answers) > 3  # it streamed, piece by piece
    assert answer_text(page) == f"Saved on the server, {XSS} as text."
    chat_id = open_chat_id(page)
    page.wait_for_function("document.querySelectorAll('.chat-item').length === 1")
    link = page.locator(".chat-item .chat-link")
    assert link.inner_text() == question and link.get_attribute("aria-current") == "page"
    assert link.get_attribute("href") == f"?chat={chat_id}"

    # Reloaded (or bookmarked), the chat is read back from the server: both messages, usage, no stream.
    page.reload()
    page.wait_for_function("document.querySelectorAll('.turn.assistant[aria-busy=false]').length === 1")
    assert page.locator(".turn.user .bubble").inner_text() == question
    assert answer_text(page) == f"Saved on the server, {XSS} as text."
    assert page.locator(".turn.assistant .badge").inner_text() == "completed · stop"
    assert int(stats(page.locator(".turn.assistant"))["output"]) > 0
    send(page, "And one more.")  # the server has the history: only the new message is posted
    first, second = settled(demo, 2)
    assert [m["role"] for m in second["body"]["messages"]] == ["user", "assistant", "user"]

    page.click(".chat-item .rename")
    page.fill(".chat-title-input", f"Renamed {XSS}")
    page.press(".chat-title-input", "Enter")
    page.wait_for_function("document.querySelector('.chat-link')?.textContent.startsWith('Renamed')")
    assert link.inner_text() == f"Renamed {XSS}"
    assert api(page, "chats/")["json"]["chats"][0]["title"] == f"Renamed {XSS}"
    shot(page, "example-chat-saved.png")

    # Another visitor (another session) sees none of it, not even by its URL.
    other = browser.new_context()
    try:
        stranger = other.new_page()
        stranger.goto(f"{demo.url}/?chat={chat_id}")
        stranger.wait_for_function("document.querySelector('.chat-none')")
        assert "No such chat" in stranger.locator("#transcript").inner_text()
        assert stranger.locator(".chat-item").count() == 0 and api(stranger, f"chat/{chat_id}/")["status"] == 404
    finally:
        other.close()

    page.click(".chat-item .delete")
    page.click(".chat-item .confirm-delete")
    page.wait_for_function("document.querySelector('.chat-none')")
    assert page.locator(".turn").count() == 0 and "chat=" not in page.url
    assert api(page, f"chat/{chat_id}/")["status"] == 404
    assert page.locator("img[src='x']").count() == 0 and page.dialogs == [] and page.errors == []


def test_a_reload_mid_answer_picks_the_answer_up_where_it_is(page: Any, demo: Demo) -> None:
    resumable_or_skip(page)
    chat_id = start_slow_answer(page)
    page.reload()
    page.wait_for_selector(".turn.assistant.resumed")
    assert page.locator(".turn.assistant").last.get_attribute("aria-busy") == "true"  # still streaming, live
    assert page.locator("#stop").is_visible()
    page.wait_for_function("document.querySelector('.turn.assistant[aria-busy=false]')")
    assert answer_text(page) == SLOW_TEXT
    assert page.locator(".turn.assistant").count() == 1 and page.locator(".turn.user").count() == 1
    assert page.locator(".turn.assistant .badge").inner_text() == "completed · stop"
    shot(page, f"example-chat-resumed-{demo.target}.png")
    (record,) = settled(demo, 1)  # the model was asked once: the reload did not ask again
    assert record["status"] == "completed"
    stored = api(page, f"chat/{chat_id}/")["json"]["messages"]
    assert [part["text"] for part in stored[-1]["parts"] if part["type"] == "text"] == [SLOW_TEXT]
    assert page.dialogs == [] and page.errors == []


def test_stop_ends_the_answer_on_the_server_and_keeps_it_as_cancelled(page: Any, demo: Demo) -> None:
    chat_id = start_slow_answer(page)
    stops: list[str] = []
    page.on("request", lambda request: stops.append(request.method) if request.url.endswith("/stop/") else None)
    page.click("#stop")
    page.wait_for_function("document.querySelector('.turn.assistant[aria-busy=false]')")
    turn = page.locator(".turn.assistant")
    assert turn.locator(".badge").inner_text() == "cancelled"
    assert "Stopped" in turn.locator(".stopped-note").inner_text()
    assert stops == ["POST"] and page.locator("#stop").is_hidden()
    shown = answer_text(page)
    assert shown and SLOW_TEXT.startswith(shown) and shown != SLOW_TEXT
    (message,) = [m for m in api(page, f"chat/{chat_id}/")["json"]["messages"] if m["role"] == "assistant"]
    assert [part["text"] for part in message["parts"] if part["type"] == "text"] == [shown]
    assert message["metadata"]["status"] == "cancelled"
    with sqlite3.connect(demo.db) as db:
        (status,) = db.execute("SELECT status FROM django_bedrock_stream_chatmessage WHERE id = ?",
                               [message["id"]]).fetchone()
    assert status == "cancelled"
    page.reload()  # stored so: the partial answer, cancelled
    page.wait_for_function("document.querySelector('.turn.assistant[aria-busy=false]')")
    assert answer_text(page) == shown and page.locator(".turn.assistant .badge").inner_text().startswith("cancelled")
    assert "Stopped" in turn.locator(".stopped-note").inner_text()
    shot(page, f"example-chat-stopped-{demo.target}.png")
    assert page.dialogs == [] and page.errors == []
