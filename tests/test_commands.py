"""``bedrock_chat`` (against the emulator, also in a real pseudo-terminal) and ``bedrock_usage``."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from django_bedrock_stream.emulator import BedrockEmulator
from django_bedrock_stream.management.commands.bedrock_usage import parse_since, render_table
from django_bedrock_stream.models import Completion

REPO = Path(__file__).resolve().parent.parent


def chat(*args: str, stdin: str | None = None) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    options: dict[str, Any] = {"stdout": out, "stderr": err}
    if stdin is not None:
        options["stdin"] = io.StringIO(stdin)
    call_command("bedrock_chat", *args, **options)
    return out.getvalue(), err.getvalue()


def body_text(record: dict[str, Any]) -> str:
    return json.dumps(record["body"])


# -- bedrock_chat --once -----------------------------------------------------------------------


def test_once_streams_the_reply_and_reports_usage(bedrock_emulator: BedrockEmulator) -> None:
    out, err = chat("--once", "[[emulator text=\"Hello there, friend.\"]] hi")
    assert out == "Hello there, friend.\n"
    (record,) = bedrock_emulator.requests
    assert record["operation"] == "converse-stream"  # the default family
    assert record["model_id"] == "anthropic.claude-3-haiku-20240307-v1:0"
    usage = re.search(r"\[input (\d+) · output (\d+) tokens · stop (\S+) · first token ([\d.]+) s · [\d.]+ s\]", err)
    assert usage, err
    assert int(usage.group(1)) > 0 and int(usage.group(2)) == 3 and usage.group(3) == "end_turn"
    assert "\r" not in err  # no live counter when stderr is not a terminal


@pytest.mark.parametrize(
    ("family", "operation", "model"),
    [
        ("llama2", "invoke-with-response-stream", "meta.llama2-13b-chat-v1"),
        ("titan", "invoke-with-response-stream", None),
        ("anthropic-messages", "invoke-with-response-stream", None),
    ],
)
def test_once_per_family(bedrock_emulator: BedrockEmulator, family: str, operation: str, model: str | None) -> None:
    from django_bedrock_stream.families import FAMILIES

    out, err = chat("--family", family, "--once", "[[emulator tokens=4]] hi")
    (record,) = bedrock_emulator.requests
    assert record["operation"] == operation
    assert record["model_id"] == (model or FAMILIES[family].default_model_id)
    assert out.strip() == record["text"].strip()
    assert "[input" in err


def test_once_options_reach_the_request(bedrock_emulator: BedrockEmulator) -> None:
    chat("--family", "llama2", "--model", "meta.llama2-70b-chat-v1", "--max-tokens", "77", "--system", "Be terse.",
         "--once", "hi")
    (record,) = bedrock_emulator.requests
    assert record["model_id"] == "meta.llama2-70b-chat-v1"
    assert record["body"]["max_gen_len"] == 77
    assert "Be terse." in record["body"]["prompt"] and "hi" in record["body"]["prompt"]


def test_once_converse_system_prompt(bedrock_emulator: BedrockEmulator) -> None:
    chat("--system", "Be terse.", "--max-tokens", "12", "--once", "hi")
    (record,) = bedrock_emulator.requests
    assert record["body"]["system"] == [{"text": "Be terse."}]
    assert record["body"]["inferenceConfig"] == {"maxTokens": 12}


def test_once_error_before_the_stream_exits_non_zero(bedrock_emulator: BedrockEmulator) -> None:
    err = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("bedrock_chat", "--once", "[[emulator fail=ThrottlingException]] hi", stdout=io.StringIO(),
                     stderr=err)
    assert info.value.returncode == 1
    assert "ThrottlingException" in str(info.value)
    assert "error: ThrottlingException: Too many requests" in err.getvalue()
    assert "retry after" in err.getvalue()


def test_once_error_mid_stream_keeps_the_partial_text(bedrock_emulator: BedrockEmulator) -> None:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("bedrock_chat", "--family", "cohere", "--once", "[[emulator tokens=8 error_at=3]] hi",
                     stdout=out, stderr=err)
    assert info.value.returncode == 1
    assert "modelStreamErrorException" in err.getvalue()
    assert out.getvalue().endswith("\n") and len(out.getvalue().split()) == 3


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("[[emulator fail=ThrottlingException]] hi", "error: ThrottlingException: "),
        ("[[emulator tokens=8 error_at=3]] hi", "error: modelStreamErrorException: "),
    ],
    ids=["before-the-stream", "mid-stream"],
)
def test_once_on_the_command_line_prints_the_error_once(
    bedrock_emulator: BedrockEmulator, prompt: str, message: str
) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "django", "bedrock_chat", "--once", prompt],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False,
    )
    assert done.returncode == 1
    code = message.split(": ")[1]
    assert done.stderr.count(code) == 1, done.stderr
    assert message in done.stderr and "CommandError" not in done.stderr


def test_once_rejects_an_empty_prompt_and_bad_options(bedrock_emulator: BedrockEmulator) -> None:
    with pytest.raises(CommandError):
        chat("--once", "   ")
    with pytest.raises(CommandError):
        chat("--family", "gpt", "--once", "hi")
    with pytest.raises(CommandError):
        chat("--max-tokens", "0", "--once", "hi")
    assert bedrock_emulator.requests == []


def test_no_credentials_is_a_clear_error(bedrock_emulator: BedrockEmulator, monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CommandError) as info:
        chat("--once", "hi")
    assert "NoCredentialsError" in str(info.value)


# -- bedrock_chat interactive ------------------------------------------------------------------


def test_interactive_keeps_history_across_turns(bedrock_emulator: BedrockEmulator) -> None:
    out, err = chat(
        "--family", "converse", "--system", "sys",
        stdin="[[emulator text=\"First answer.\"]] one\n\n[[emulator text=\"Second answer.\"]] two\n",
    )
    assert out == "First answer.\nSecond answer.\n"
    first, second = bedrock_emulator.requests
    assert [m["role"] for m in first["body"]["messages"]] == ["user"]
    turns = second["body"]["messages"]
    assert [m["role"] for m in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [{"text": "First answer."}]
    assert second["body"]["system"] == [{"text": "sys"}]
    # stderr reads as a transcript: prompt + echoed line, then the usage line, per turn.
    assert err.count("> ") == 4 and err.count("[input") == 2  # a prompt per line (one blank) and at EOF
    assert "> [[emulator text=\"First answer.\"]] one\n" in err


def test_interactive_reset_and_exit(bedrock_emulator: BedrockEmulator) -> None:
    out, err = chat("--family", "llama3", stdin="first\n/reset\nsecond\n/exit\nnever sent\n")
    first, second = bedrock_emulator.requests
    assert "first" not in body_text(second) and "second" in body_text(second)
    assert "[conversation cleared]" in err
    assert len(bedrock_emulator.requests) == 2


def test_interactive_error_continues_and_drops_the_failed_turn(bedrock_emulator: BedrockEmulator) -> None:
    out, err = chat(
        "--family", "llama3",
        stdin="[[emulator fail=AccessDeniedException]] doomed\n[[emulator tokens=2]] fine\n",
    )
    assert "error: AccessDeniedException" in err
    failed, ok = bedrock_emulator.requests
    assert "doomed" not in body_text(ok)
    assert out.strip() == ok["text"].strip()


def test_keyboard_interrupt_cancels_the_reply(bedrock_emulator: BedrockEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from django_bedrock_stream.management.commands import bedrock_chat

    calls = {"n": 0}
    real_text = bedrock_chat.StatusLine.text

    def interrupt_after_two(self: Any, text: str) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real_text(self, text)

    monkeypatch.setattr(bedrock_chat.StatusLine, "text", interrupt_after_two)
    closed: list[bool] = []
    real_close = bedrock_chat.BedrockStream.close

    def close(self: Any) -> None:
        closed.append(True)
        real_close(self)

    monkeypatch.setattr(bedrock_chat.BedrockStream, "close", close)
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("bedrock_chat", "--once", "[[emulator tokens=30 delay_ms=20]] hi", stdout=out, stderr=err)
    assert info.value.returncode == 130
    assert closed == [True]
    assert "[cancelled]" in err.getvalue()
    assert len(out.getvalue().split()) == 2


# -- bedrock_chat in a real terminal -----------------------------------------------------------


def _read_until(fd: int, buffer: bytearray, pattern: bytes, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while pattern not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out waiting for {pattern!r}; got {bytes(buffer)!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"terminal closed before {pattern!r}; got {bytes(buffer)!r}")
            buffer.extend(chunk)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_in_a_real_pseudo_terminal(bedrock_emulator: BedrockEmulator) -> None:
    import pty

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    main, child = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "bedrock_chat", "--family", "llama3"],
        stdin=child, stdout=child, stderr=child, env=env, cwd=REPO, close_fds=True,
    )
    os.close(child)
    screen = bytearray()
    try:
        _read_until(main, screen, b"> ")
        assert b"Chatting with meta.llama3-8b-instruct-v1:0" in screen
        os.write(main, b'[[emulator text="one two three four five six" ttfb_ms=300 delay_ms=60]] hello\n')
        _read_until(main, screen, b"[input")
        _read_until(main, screen, b"]\r\n> ")
        os.write(main, b"\x04")  # Ctrl-D at the prompt quits
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)
    text = screen.decode()
    # The live counter: drawn dimmed after the cursor (ESC 7 ... ESC 8) and ticking while waiting.
    counters = re.findall(r"\x1b7 \x1b\[2m\[(\d+) tokens? · ([\d.]+) s\]\x1b\[0m\x1b8", text)
    assert counters and counters[0][0] == "0"
    assert any(n == "0" and float(t) >= 0.1 for n, t in counters)  # the clock moved before the first token
    assert max(int(n) for n, _ in counters) >= 3
    # With every escape sequence removed, the terminal shows the reply and then the usage line.
    plain = re.sub(r"\x1b(\[[0-9;]*[A-Za-z]|[78])", "", text)
    plain = re.sub(r"\s?\[\d+ tokens? · [\d.]+ s\]", "", plain)
    assert "one two three four five six\r\n[input" in plain
    assert re.search(r"\[input \d+ · output 6 tokens · stop stop · first token 0\.[3-9]\d s", plain)
    assert bedrock_emulator.requests[-1]["status"] == "completed"


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_piped_stdout_keeps_the_counter_on_the_terminal(bedrock_emulator: BedrockEmulator, tmp_path: Path) -> None:
    import pty

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(REPO)}
    main, child = pty.openpty()
    reply = tmp_path / "reply.txt"
    with reply.open("w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "django", "bedrock_chat", "--once", "[[emulator tokens=5 delay_ms=120]] hi"],
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=child, env=env, cwd=REPO,
        )
        os.close(child)
        screen = bytearray()
        try:
            _read_until(main, screen, b"stop end_turn")
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            os.close(main)
    assert reply.read_text() == bedrock_emulator.requests[-1]["text"] + "\n"
    assert re.search(rb"\r\[[1-4] tokens? \xc2\xb7 [\d.]+ s\]\x1b\[K", screen)


# -- bedrock_usage -----------------------------------------------------------------------------


def make(created_at: dt.datetime | None = None, **fields: Any) -> Completion:
    completion = Completion.objects.create(**{"model_id": "m-a", "status": "completed", **fields})
    if created_at is not None:
        Completion.objects.filter(pk=completion.pk).update(created_at=created_at)
    return completion


@pytest.fixture
def usage_rows(db: None) -> dict[str, User]:
    alice = User.objects.create_user("alice")
    bob = User.objects.create_user("bob")
    now = timezone.now()
    make(model_id="m-a", user=alice, input_tokens=10, output_tokens=100)
    make(model_id="m-a", user=bob, input_tokens=5, output_tokens=None, status="failed")
    make(model_id="m-b", user=alice, input_tokens=1, output_tokens=2, status="cancelled")
    make(model_id="m-b", input_tokens=1000, output_tokens=2000, created_at=now - dt.timedelta(days=10))
    return {"alice": alice, "bob": bob}


def usage(*args: str) -> str:
    out = io.StringIO()
    call_command("bedrock_usage", *args, stdout=out)
    return out.getvalue()


def test_usage_by_model_table(usage_rows: dict[str, User]) -> None:
    lines = usage().splitlines()
    assert lines[0].split() == ["model", "completions", "input_tokens", "output_tokens", "total_tokens", "failed",
                                "cancelled"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split() == ["m-a", "2", "15", "100", "115", "1", "0"]
    assert lines[3].split() == ["m-b", "2", "1001", "2002", "3003", "0", "1"]
    assert lines[5].split() == ["TOTAL", "4", "1016", "2102", "3118", "1", "1"]
    # Aligned: numbers right-aligned under their header.
    widths = {len(line) for line in lines}
    assert len(widths) == 1, lines
    assert lines[0].index("completions") + len("completions") == lines[2].index("2") + 1


def test_usage_by_user(usage_rows: dict[str, User]) -> None:
    rows = list(csv.reader(io.StringIO(usage("--by", "user", "--format", "csv"))))
    assert rows[0] == ["user", "completions", "input_tokens", "output_tokens", "total_tokens", "failed", "cancelled"]
    by_user = {row[0]: row[1:] for row in rows[1:]}
    assert by_user == {
        "alice": ["2", "11", "102", "113", "0", "1"],
        "bob": ["1", "5", "0", "5", "1", "0"],
        "(anonymous)": ["1", "1000", "2000", "3000", "0", "0"],
    }


def test_usage_by_day_since(usage_rows: dict[str, User]) -> None:
    rows = list(csv.reader(io.StringIO(usage("--by", "day", "--since", "7d", "--format", "csv"))))
    assert rows[1:] == [[timezone.localdate().isoformat(), "3", "16", "102", "118", "1", "1"]]
    all_days = list(csv.reader(io.StringIO(usage("--by", "day", "--format", "csv"))))
    assert [row[0] for row in all_days[1:]] == sorted(row[0] for row in all_days[1:]) and len(all_days) == 3


def test_usage_since_date_and_empty(usage_rows: dict[str, User]) -> None:
    tomorrow = (timezone.localdate() + dt.timedelta(days=1)).isoformat()
    assert usage("--since", tomorrow) == "No completions.\n"
    assert usage("--since", tomorrow, "--format", "csv").splitlines() == [
        "model,completions,input_tokens,output_tokens,total_tokens,failed,cancelled"
    ]


def test_usage_bad_since(db: None) -> None:
    with pytest.raises(CommandError):
        usage("--since", "last tuesday")
    with pytest.raises(CommandError):
        usage("--by", "planet")


@pytest.mark.parametrize(
    ("value", "delta"),
    [("30m", dt.timedelta(minutes=30)), ("12h", dt.timedelta(hours=12)), ("7d", dt.timedelta(days=7)),
     ("2w", dt.timedelta(weeks=2)), (" 3D ", dt.timedelta(days=3))],
)
def test_parse_since_relative(value: str, delta: dt.timedelta) -> None:
    assert abs((timezone.now() - parse_since(value)) - delta) < dt.timedelta(seconds=5)


def test_parse_since_absolute() -> None:
    moment = parse_since("2024-05-01")
    assert timezone.is_aware(moment) and timezone.localtime(moment).date() == dt.date(2024, 5, 1)
    assert parse_since("2024-05-01T10:00:00+00:00") == dt.datetime(2024, 5, 1, 10, tzinfo=dt.timezone.utc)


def test_render_table_alignment() -> None:
    table = render_table(("k", "n"), [("long-key", 1), ("x", 12345)])
    assert table.splitlines() == ["k             n", "--------  -----", "long-key      1", "x         12345"]
