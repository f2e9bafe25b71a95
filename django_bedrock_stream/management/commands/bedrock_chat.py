"""``manage.py bedrock_chat``: chat with a Bedrock model in the terminal, streaming the reply.

Interactive by default (a ``> `` prompt, the conversation kept across turns; ``/reset`` forgets it,
``/exit`` or Ctrl-D quits, Ctrl-C stops a reply). ``--once "prompt"`` sends one prompt and exits
non-zero on error, for scripts. The reply goes to stdout as it arrives; everything else (the prompt,
the live ``[12 tokens · 0.8 s]`` counter, the final usage line, errors) goes to stderr, so
``bedrock_chat --once hi > reply.txt`` captures only the reply.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
import unicodedata
from typing import IO, Any, NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from ...conf import stream_settings
from ...exceptions import BedrockStreamError, wrap_botocore_error
from ...families import FAMILIES, BedrockFamily
from ...streams import BedrockStream

DEFAULT_FAMILY = "converse"


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return number


def _width(text: str) -> int:
    """Terminal columns taken by ``text`` (wide East Asian characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


class StatusLine:
    """Writes the reply to stdout and keeps a live ``[N tokens · T s]`` counter on stderr.

    The counter is drawn only when stderr is a terminal. When stdout goes elsewhere (a pipe, a file)
    the counter owns the stderr line and is redrawn in place with ``\\r``. When both are the same
    terminal it trails the cursor, dimmed, after the reply text: saved and restored with ``ESC 7`` /
    ``ESC 8`` and erased (``ESC [K``) before each piece of text, so the reply itself is never
    overwritten; it is skipped while the cursor is too close to the right margin to fit. A ticker
    thread keeps the clock moving while the model has not answered yet.
    """

    TICK = 0.1  # seconds between redraws

    def __init__(self, stdout: OutputWrapper, stderr: OutputWrapper, *, enabled: bool) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.enabled = enabled
        self.inline = enabled and _isatty(stdout)
        self.tokens = 0
        self.started = time.monotonic()
        self.column = 0
        self.visible = False
        self.last_draw = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> StatusLine:
        if self.enabled:
            self._draw()
            self._ticker = threading.Thread(target=self._tick, name="bedrock-chat-status", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self._erase()

    def text(self, text: str) -> None:
        """Print one piece of the reply and refresh the counter."""
        with self._lock:
            self.tokens += 1
            if self.inline:  # the counter trails the cursor on the same terminal: clear it first
                self._erase()
            self.stdout.write(text, ending="")
            self.stdout.flush()
            if "\n" in text:
                self.column = _width(text.rsplit("\n", 1)[1])
            else:
                self.column += _width(text)
            if self.enabled and time.monotonic() - self.last_draw >= self.TICK / 2:
                self._draw()

    def _tick(self) -> None:
        while not self._stop.wait(self.TICK):
            with self._lock:
                if time.monotonic() - self.last_draw >= self.TICK:
                    self._draw()

    def _err(self, text: str) -> None:
        self.stderr.write(text, ending="")
        self.stderr.flush()

    def _erase(self) -> None:
        if self.visible:
            self._err("\x1b[K" if self.inline else "\r\x1b[K")
            self.visible = False

    def _draw(self) -> None:
        self.last_draw = time.monotonic()
        label = f"[{self.tokens} token{'s' if self.tokens != 1 else ''} · {self.last_draw - self.started:.1f} s]"
        if self.inline:
            columns = shutil.get_terminal_size().columns
            self.column %= max(columns, 1)
            if self.column + len(label) + 2 >= columns:
                self._erase()
                return
            self._err(f"\x1b[K\x1b7 \x1b[2m{label}\x1b[0m\x1b8")
        else:
            self._err(f"\r{label}\x1b[K")
        self.visible = True


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Command(BaseCommand):
    help = "Chat with a Bedrock model in the terminal, streaming the reply as it is generated."
    # call_command(..., stdin=io.StringIO(...)) feeds the interactive loop (tests, scripts).
    stealth_options = ("stdin",)
    # A terminal tool: keep its screen for the conversation (run `manage.py check` for the checks).
    requires_system_checks: list[str] = []
    #: Set when run as ``manage.py bedrock_chat`` rather than through ``call_command``.
    from_command_line = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--family",
            choices=sorted(FAMILIES),
            default=DEFAULT_FAMILY,
            help=f"Model family (request/response format). Default: {DEFAULT_FAMILY}.",
        )
        parser.add_argument("--model", help="Model id. Default: the family's default model.")
        parser.add_argument(
            "--max-tokens", type=_positive_int, help="Maximum tokens per reply. Default: BEDROCK_STREAM['MAX_TOKENS']."
        )
        parser.add_argument("--system", help="System prompt for the whole conversation.")
        parser.add_argument("--once", metavar="PROMPT", help="Send one prompt, print the reply and exit.")
        parser.add_argument(
            "--no-status", action="store_true", help="Do not draw the live token counter even on a terminal."
        )

    def run_from_argv(self, argv: list[str]) -> None:
        self.from_command_line = True
        super().run_from_argv(argv)

    def handle(self, *args: Any, **options: Any) -> None:
        # BaseCommand paints all of stderr red on a terminal; only errors should be.
        self.stderr.style_func = None
        self.family: BedrockFamily = FAMILIES[options["family"]]()
        self.model_id: str = options["model"] or self.family.default_model_id
        self.max_tokens: int = options["max_tokens"] or int(stream_settings.MAX_TOKENS)
        self.show_status: bool = not options["no_status"] and _isatty(self.stderr)
        self.history: list[dict[str, str]] = []
        if options["system"]:
            self.history.append({"role": "system", "content": options["system"]})

        if options["once"] is not None:
            prompt = options["once"].strip()
            if not prompt:
                raise CommandError("--once needs a non-empty prompt.")
            outcome = self.turn(prompt)
            if isinstance(outcome, BedrockStreamError):
                self.fail(_describe(outcome), returncode=1)
            if outcome == "cancelled":
                self.fail("cancelled", returncode=130)
            return
        self.repl(options.get("stdin"))

    def fail(self, message: str, returncode: int) -> NoReturn:
        """End ``--once`` unsuccessfully. :meth:`turn` has already printed why on stderr, so the command
        line just exits (Django would print the :class:`CommandError` a second time);
        ``call_command`` callers get the :class:`CommandError`."""
        if self.from_command_line:
            sys.exit(returncode)
        raise CommandError(message, returncode=returncode)

    # -- the interactive loop -------------------------------------------------------------------
    def repl(self, stdin: IO[str] | None) -> None:
        use_input = stdin is None and _isatty(sys.stdin)
        if use_input:
            try:
                import readline  # noqa: F401 - line editing and arrow-key history for input()
            except ImportError:
                pass
            self.stderr.write(
                f"Chatting with {self.model_id} ({self.family.name}). /reset forgets the conversation, "
                "/exit or Ctrl-D quits, Ctrl-C stops a reply."
            )
        source = stdin or sys.stdin
        while True:
            try:
                line = self.read_line(source, use_input)
            except KeyboardInterrupt:
                self.stderr.write("")
                return
            if line is None:
                if use_input:
                    self.stderr.write("")
                return
            prompt = line.strip()
            if not prompt:
                continue
            if prompt in ("/exit", "/quit"):
                return
            if prompt == "/reset":
                self.history = [m for m in self.history if m["role"] == "system"]
                self.stderr.write("[conversation cleared]")
                continue
            self.turn(prompt)

    def read_line(self, source: IO[str], use_input: bool) -> str | None:
        if use_input:
            try:
                return input("> ")
            except EOFError:
                return None
        self.stderr.write("> ", ending="")
        line = source.readline()
        # Nothing echoed a piped line: repeat it after the prompt so stderr reads as a transcript.
        self.stderr.write(line.rstrip("\n") if line else "")
        return line or None

    # -- one turn ---------------------------------------------------------------------------------
    def turn(self, prompt: str) -> str | BedrockStreamError:
        """Send ``prompt`` with the history and stream the reply; return the outcome."""
        messages = [*self.history, {"role": "user", "content": prompt}]
        try:
            body = self.family.build_body(messages, max_tokens=self.max_tokens)
            self.family.request_kwargs(self.model_id, body)  # refuses what the call would refuse
        except (TypeError, ValueError) as err:  # the family refused the conversation
            self.stderr.write(self.style.ERROR(f"error: {err}"))
            return BedrockStreamError(str(err), code="ValidationException", model_id=self.model_id)
        stream: BedrockStream | None = None
        started = time.monotonic()
        try:
            with StatusLine(self.stdout, self.stderr, enabled=self.show_status) as status:
                try:
                    source = self.family.open(self.model_id, body)
                except Exception as err:
                    raise wrap_botocore_error(err, model_id=self.model_id, started=False) from err
                stream = BedrockStream(source, self.family.parse_event, model_id=self.model_id)
                for text in stream:
                    status.text(text)
        except BedrockStreamError as err:
            self.end_reply(stream)
            self.stderr.write(self.style.ERROR(f"error: {_describe(err)}"))
            if err.retry_after:
                self.stderr.write(f"(retry after {err.retry_after} s)")
            return err
        except KeyboardInterrupt:
            if stream is not None:
                stream.close()  # stop generation (and billing) upstream now
            self.end_reply(stream)
            self.stderr.write(self.style.WARNING("[cancelled]"))
            self.remember(prompt, stream.text if stream is not None else "")
            return "cancelled"
        self.end_reply(stream)
        self.stderr.write(self.usage_line(stream, started))
        self.remember(prompt, stream.text)
        return "completed"

    def end_reply(self, stream: BedrockStream | None) -> None:
        """End the reply's last line on stdout (the reply text never ends with our newline)."""
        if stream is not None and stream.text:
            self.stdout.write("")
            self.stdout.flush()

    def remember(self, prompt: str, reply: str) -> None:
        self.history.append({"role": "user", "content": prompt})
        if reply.strip():
            self.history.append({"role": "assistant", "content": reply})
        else:
            # Families expect alternating turns; a turn with no reply is dropped.
            self.history.pop()

    def usage_line(self, stream: BedrockStream, started: float) -> str:
        usage = stream.usage
        elapsed = time.monotonic() - started
        first = f"{stream.first_token_at - started:.2f} s" if stream.first_token_at is not None else "-"
        return (
            f"[input {usage['input_tokens']} · output {usage['output_tokens']} tokens · "
            f"stop {stream.stop_reason or '-'} · first token {first} · {elapsed:.2f} s]"
        )


def _describe(err: BedrockStreamError) -> str:
    return f"{err.code}: {err.message}"
