"""The example site: each user sees only their own history; anonymous visitors only their session's,
kept without writing the session during a stream. Its tools endpoint and the calculator's safe
evaluator. And ``make demo``, stopped with Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import call_command
from django.test import AsyncClient, Client, modify_settings, override_settings

from django_bedrock_stream.signals import stream_started
from django_bedrock_stream.tools import ToolError
from example_project.tools import calculator, evaluate

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.urls("example_project.urls"),
]
REPO = Path(__file__).resolve().parent.parent
EXAMPLE = modify_settings(INSTALLED_APPS={"append": ["django.contrib.staticfiles", "example_project"]})
SITE = override_settings(STATIC_URL="/static/", BEDROCK_STREAM={"ALLOW_ANONYMOUS": True})


@pytest.fixture(scope="module", autouse=True)
def _example_app(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """The example app, installed with its table for this module (the suite's settings do not list it)."""
    with EXAMPLE:
        with django_db_blocker.unblock():
            call_command("migrate", "example_project", verbosity=0)
        yield
        with django_db_blocker.unblock():
            call_command("migrate", "example_project", "zero", verbosity=0)


@pytest.fixture(autouse=True)
def _example_receiver() -> Iterator[None]:
    """The example app's stream_started receiver, connected by its ``ready()`` for each test only: it must
    not outlive these tests (later streams would write to the example's table, which exists only here)."""
    apps.get_app_config("example_project").ready()
    yield
    stream_started.disconnect(dispatch_uid="example_remember_completion")


@pytest.fixture
def session_saves(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The session key of every session save, in order (creating a session saves twice)."""
    saves: list[str] = []
    save = SessionStore.save

    def counting_save(self: SessionStore, must_create: bool = False) -> None:
        save(self, must_create)
        saves.append(str(self.session_key))

    monkeypatch.setattr(SessionStore, "save", counting_save)
    return saves


def body(prompt: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": f"[[emulator tokens=3]] {prompt}"}]})


def ask(client: Client, prompt: str) -> str:
    response = client.post("/bedrock/llama3/", body(prompt), content_type="application/json")
    assert response.status_code == 200
    assert "sessionid" not in response.cookies  # the stream did not modify the session
    return b"".join(response.streaming_content).decode()


@SITE
def test_history_is_per_user_and_per_session(bedrock_emulator: Any) -> None:
    users = get_user_model().objects
    ada, bob = users.create_user("ada", password="pw"), users.create_user("bob", password="pw")
    admin = users.create_user("root", password="pw", is_staff=True)
    clients = {name: Client() for name in ("ada", "bob", "anon1", "anon2", "root")}
    clients["ada"].force_login(ada)
    clients["bob"].force_login(bob)
    clients["root"].force_login(admin)
    for client in clients.values():
        assert client.get("/").status_code == 200  # the chat page, where a visitor starts
    for name in ("ada", "bob", "anon1"):
        ask(clients[name], f"question from {name}")

    def history(name: str) -> str:
        response = clients[name].get("/history/")
        assert response.status_code == 200
        return response.content.decode()

    assert "question from ada" in history("ada") and "question from bob" not in history("ada")
    assert "question from bob" in history("bob") and "question from ada" not in history("bob")
    assert "question from anon1" in history("anon1") and "question from ada" not in history("anon1")
    assert "question from" not in history("anon2")
    assert all(f"question from {n}" in history("root") for n in ("ada", "bob", "anon1"))


@SITE
def test_a_stream_does_not_write_the_session(bedrock_emulator: Any, session_saves: list[str]) -> None:
    """The session is made once, by the chat page; streams only read its key from the cookie (saving it
    from a stream held a database connection per ASGI stream, and 500s under load)."""
    from example_project.models import SessionCompletion

    client = Client()
    assert client.get("/").status_code == 200
    key = client.cookies["sessionid"].value
    assert set(session_saves) == {key}
    saved = len(session_saves)
    assert client.get("/").status_code == 200 and len(session_saves) == saved  # made once, not per page
    for n in range(3):
        ask(client, f"question {n}")
    assert len(session_saves) == saved
    assert SessionCompletion.objects.filter(session_key=key).count() == 3
    page = client.get("/history/").content.decode()
    assert all(f"question {n}" in page for n in range(3))


@SITE
def test_a_made_up_session_cookie_sees_no_history(bedrock_emulator: Any, session_saves: list[str]) -> None:
    """A session key the server never issued (the stream may record it) never shows any history."""
    client = Client()
    client.cookies["sessionid"] = "x" * 32
    response = client.post("/bedrock/llama3/", body("from a made-up session"), content_type="application/json")
    assert response.status_code == 200 and b"".join(response.streaming_content)
    client.cookies["sessionid"] = "x" * 32
    assert "from a made-up session" not in client.get("/history/").content.decode()
    assert session_saves == []


@pytest.mark.django_db(transaction=True)
@SITE
async def test_an_asgi_stream_does_not_write_the_session(bedrock_emulator: Any, session_saves: list[str]) -> None:
    client = AsyncClient()
    assert (await client.get("/")).status_code == 200
    saved = len(session_saves)
    assert saved and set(session_saves) == {client.cookies["sessionid"].value}
    for n in range(2):
        response = await client.post("/bedrock/llama3/", body(f"async question {n}"), content_type="application/json")
        assert response.status_code == 200 and "sessionid" not in response.cookies
        assert [chunk async for chunk in response.streaming_content]
    assert len(session_saves) == saved
    page = (await client.get("/history/")).content.decode()
    assert "async question 0" in page and "async question 1" in page


def test_example_migrations_match_the_models() -> None:
    call_command("makemigrations", "example_project", "--check", "--dry-run", verbosity=0)


@SITE
@override_settings(EXAMPLE_USES_EMULATOR=True)
def test_chat_page_says_it_uses_the_emulator(bedrock_emulator: Any) -> None:
    with override_settings(EXAMPLE_EMULATOR_URL=bedrock_emulator.url):
        page = Client().get("/").content.decode()
    assert "built-in Bedrock emulator" in page and "llama3" in page


@override_settings(
    STATIC_URL="/static/", BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "MAX_IMAGE_BYTES": 1000, "MAX_DOCUMENTS": 2},
    DATA_UPLOAD_MAX_MEMORY_SIZE=123456,
)
def test_chat_page_tells_its_script_the_files_each_endpoint_takes_and_the_limits() -> None:
    """The file picker follows the families' own rules (asked of their request builders) and the
    server's limits, so the browser's checks say what the server would."""
    html = Client().get("/").content.decode()
    config = demo_config(html)
    accept = config["accept"]
    assert accept["converse"][".pdf"] == "application/pdf" and accept["converse"][".jpg"] == "image/jpeg"
    assert ".docx" in accept["converse"] and ".docx" not in accept["anthropic-messages"]
    assert ".pdf" in accept["anthropic-messages"]
    assert set(accept["nova"].values()) == {"image/png", "image/jpeg", "image/gif", "image/webp"}
    assert accept["llama3"] == {} and accept["titan"] == {}
    assert config["limits"] == {"maxImages": 20, "maxImageBytes": 1000, "maxDocuments": 2,
                                "maxDocumentBytes": 4_718_592, "maxBodyBytes": 123456}
    assert config["system"] and config["system"] in html  # the system prompt is shown on the page


def demo_config(html: str) -> dict[str, Any]:
    found = re.search(r'<script id="demo-config" type="application/json">(.*?)</script>', html, re.S)
    assert found, html
    config: dict[str, Any] = json.loads(found.group(1))
    return config


# -- tools ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [("(17 + 25) * 3", 126), ("84 / 2", 42), ("7 / 2", 3.5), ("-2 ** 10", -1024), ("10 ** -3", 0.001),
     ("17 // 5 % 3", 0), ("2 ** 4000 // 2 ** 3999", 2), ("((((1))))", 1)],
)
def test_the_calculator_computes_arithmetic(expression: str, value: float) -> None:
    result = calculator.validate_input({"expression": expression})
    assert calculator.invoke(result) == value and type(calculator.invoke(result)) is type(value)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ('__import__("os").system("id")', "Only numbers"),
        ("().__class__", "Only numbers"),
        ("x + 1", "Only numbers"),
        ("'a' * 3", "Only numbers"),
        ("True + 1", "Only numbers"),
        ("[1, 2]", "Only numbers"),
        ("1 < 2", "Only numbers"),
        ("(lambda: 1)()", "Only numbers"),
        ("1 +", "Not an arithmetic expression"),
        ("1; 2", "Not an arithmetic expression"),
        ("1 / 0", "Division by zero."),
        ("5 % 0", "Division by zero."),
        ("9 ** 9 ** 9", "too large"),  # refused before it is computed
        ("(2 ** 4000) * (2 ** 4000)", "too large"),
        ("1e308 * 10", "too large"),
        ("2.5 ** 100000", "too large"),
        ("(-8) ** 0.5", "not a real number"),
        ("1" + " + 1" * 60, "longer than 200 characters"),
    ],
)
def test_the_calculator_refuses_everything_else_with_a_message_for_the_model(expression: str, message: str) -> None:
    """An ``ast`` whitelist, never ``eval``: names, calls, attributes, strings and huge numbers are
    refused with a ToolError (the model reads its message), in microseconds."""
    started = time.perf_counter()
    with pytest.raises(ToolError, match=message):
        evaluate(expression)
    assert time.perf_counter() - started < 1  # nothing expensive was computed


def ui_chunks(response: Any) -> list[dict[str, Any]]:
    text = b"".join(response.streaming_content).decode()
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


@SITE
def test_the_tools_endpoint_runs_the_calculator_between_two_model_turns(bedrock_emulator: Any) -> None:
    prompt = '[[emulator tool=calculator tool_input={"expression": "6 * 7"}]] What is 6 * 7?'
    response = Client().post("/demo/converse-tools/?protocol=ui", json.dumps({"messages": [{"role": "user", "content": prompt}]}),
                             content_type="application/json")
    assert response.status_code == 200
    chunks = ui_chunks(response)
    assert {"type": "tool-output-available", "toolCallId": chunks[3]["toolCallId"], "output": 42} in chunks
    text = "".join(c["delta"] for c in chunks if c["type"] == "text-delta")
    assert text == "Result of calculator: 42" and chunks[-1]["messageMetadata"]["finishReason"] == "stop"
    first, second = bedrock_emulator.requests
    offered = [t["toolSpec"]["name"] for t in first["body"]["toolConfig"]["tools"]]
    assert offered == ["calculator", "local_time", "send_email"]
    assert second["body"]["messages"][-1]["content"][0]["toolResult"]["content"] == [{"text": "42"}]


@SITE
def test_the_tools_endpoint_refuses_the_text_protocol_and_the_families_have_no_tools(bedrock_emulator: Any) -> None:
    """The text protocol cannot carry the calls the browser answers; the package's endpoints stay as
    they are (the page's other families offer no tools)."""
    body = json.dumps({"messages": [{"role": "user", "content": "[[emulator tool=calculator tokens=3]] Hi"}]})
    refused = Client().post("/demo/converse-tools/?protocol=text", body, content_type="application/json")
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_protocol"
    assert bedrock_emulator.requests == []
    response = Client().post("/bedrock/converse/?protocol=ui", body, content_type="application/json")
    assert response.status_code == 200 and not any(c["type"].startswith("tool-") for c in ui_chunks(response))
    (record,) = bedrock_emulator.requests
    assert "toolConfig" not in record["body"]


@SITE
@override_settings(EXAMPLE_USES_EMULATOR=True)
def test_chat_page_offers_the_tools_endpoint_and_describes_its_tools(bedrock_emulator: Any) -> None:
    with override_settings(EXAMPLE_EMULATOR_URL=bedrock_emulator.url):
        html = Client().get("/").content.decode()
    config = demo_config(html)
    assert config["toolsEndpoint"] == "converse-tools"
    assert config["tools"] == {"converse-tools": [
        {"name": "calculator", "description": "Evaluate an arithmetic expression exactly; use it for any computation.",
         "runs": "server", "approval": False},
        {"name": "local_time", "description": "The user's current local date, time and time zone, read from their browser.",
         "runs": "browser", "approval": False},
        {"name": "send_email", "description": "Send an email on the user's behalf. The user approves or denies each email first.",
         "runs": "server", "approval": True},
    ]}
    assert config["accept"]["converse-tools"] == config["accept"]["converse"]
    assert '<option value="converse-tools" data-path="/demo/converse-tools/"' in html
    assert html.count('data-family="converse-tools"') == 3  # the tool demo prompts


# -- make demo ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _session_processes(sid: int) -> list[str]:
    """Command lines of the live processes in session ``sid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(cmdline)
    return found


def demo_env(tmp_path: Path) -> dict[str, str]:
    """The environment ``make demo`` runs in: the example's own settings with a database of its own (the
    checkout's example DB is left alone), and no AWS or Bedrock variables of ours."""
    (tmp_path / "demo_settings.py").write_text(
        "from example_project.settings import *  # noqa: F403\n"
        f"DATABASES = {{'default': {{'ENGINE': 'django.db.backends.sqlite3', 'NAME': {str(tmp_path / 'db.sqlite3')!r}}}}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BEDROCK_", "DJANGO_", "MAKE"))}
    env.update(DJANGO_SETTINGS_MODULE="demo_settings", PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}", TERM="dumb")
    return env


def make_demo(target: str, tmp_path: Path, port: int, emulator_port: int) -> dict[str, Any]:
    """``subprocess`` arguments for ``make <target>`` on the given ports, in :func:`demo_env`."""
    venv = Path(sys.executable).parent.parent
    # -o: never (re)install the package from a test, whatever the stamp's age.
    args = ["make", "--no-print-directory", "-o", f"{venv}/.installed", target, f"VENV={venv}", f"PORT={port}",
            f"EMULATOR_PORT={emulator_port}", "EMULATOR_ARGS=--tokens 3"]
    return {"args": args, "cwd": REPO, "env": demo_env(tmp_path)}


needs_make = pytest.mark.skipif(
    not Path("/proc/self/stat").exists() or shutil.which("make") is None,
    reason="needs make, a POSIX pseudo-terminal and /proc",
)


@needs_make
def test_make_demo_stops_at_once_when_the_emulator_port_is_taken(tmp_path: Path) -> None:
    port = _free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        emulator_port = busy.getsockname()[1]
        done = subprocess.run(
            **make_demo("demo", tmp_path, port, emulator_port),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
        )
    assert done.returncode == 2, done.stderr
    assert f"bedrock_emulator: port {emulator_port} is already in use" in done.stderr
    assert "make demo EMULATOR_PORT=N" in done.stderr and "Traceback" not in done.stderr
    assert "Demo:" not in done.stdout and not _listening(port)


@needs_make
@pytest.mark.parametrize("target", ["demo", "demo-asgi"])
def test_make_demo_stops_cleanly_on_ctrl_c(tmp_path: Path, target: str) -> None:
    """Ctrl-C in the terminal stops the site and the emulator, and make exits 0 (no "Error 130")."""
    import fcntl
    import pty
    import termios

    port, emulator_port = _free_port(), _free_port()
    main, child = pty.openpty()
    process = subprocess.Popen(
        **make_demo(target, tmp_path, port, emulator_port),
        stdin=child, stdout=child, stderr=child, close_fds=True,
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # the pty is make's terminal, as in a shell
    )
    os.close(child)
    screen = bytearray()

    def read(timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([main], [], [], 0.1)[0]:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # the terminal is gone: every process left
                    return
                if not chunk:
                    return
                screen.extend(chunk)
            elif process.poll() is not None:
                return

    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            assert process.poll() is None and time.monotonic() < deadline, screen.decode(errors="replace")
            read(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            assert page.status == 200 and b"built-in Bedrock emulator" in page.read()
        assert _listening(emulator_port)
        os.write(main, b"\x03")  # Ctrl-C
        read(30)
        status = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
        os.close(main)
    text = screen.decode(errors="replace")
    assert status == 0, text
    assert "Error" not in text and "Traceback" not in text, text
    assert not _listening(port) and not _listening(emulator_port)
    assert _session_processes(process.pid) == []
