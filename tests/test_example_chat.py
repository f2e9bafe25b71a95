"""The example site's chat page in Chromium, served as ``make demo`` (runserver) and ``make demo-asgi``
(uvicorn) serve it, with the built-in emulator: reasoning streams open and folds when the answer
starts, its signature goes back with the next turn, citations are numbered with their sources listed,
an image and a PDF arrive at the emulator as image/document blocks, usage shows the prompt cache, and
what the user or the model writes is only ever text.

Debian's ``chromium``, driven by Playwright through ``executable_path`` (no browser download).
Screenshots of each flow are written to ``$TMPDIR/example-chat-*.png``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
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


@pytest.fixture(autouse=True)
def _close_bedrock_clients() -> None:
    """Replaces the suite's async fixture of this name: these tests make no Bedrock client in-process
    (the site runs in a subprocess), and Playwright's sync API keeps an event loop running in this
    thread for the whole module, where an async fixture cannot run."""


class Demo:
    """A running ``make demo`` / ``make demo-asgi``: the site's URL and the emulator's control API."""

    def __init__(self, target: str, url: str, emulator: str) -> None:
        self.target, self.url, self.emulator = target, url, emulator

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
        yield Demo(target, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{emulator_port}")
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
    context = browser.new_context(viewport={"width": 1100, "height": 1000})
    tab = context.new_page()
    tab.dialogs, tab.errors = [], []
    tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    tab.set_default_timeout(30_000)
    tab.goto(demo.url + "/")
    tab.select_option("#family", "converse")
    yield tab
    context.close()


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
