"""The load generator: raw asyncio sockets (uvloop when installed), so it is never the bottleneck.

Run in its own process by ``run.py``: ``python benchmarks/loadgen.py '<json spec>'`` prints one JSON
summary on stdout. Each stream is one HTTP/1.1 POST on its own connection, either through the proxy
(``mode="proxy"``: the view's plain-text protocol) or straight to the emulator (``mode="direct"``: the
same prompt as the emulator's native ``invoke-with-response-stream``, the baseline).

Per token we record its arrival time (``time.monotonic``). Text tokens are the emulator's words, each
after the first with one leading space and chunked-encoding size lines hold no spaces, so counting
``b" "`` in each socket read dates every token; direct mode counts eventstream ``chunk`` headers.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

MODEL_ID = "meta.llama2-13b-chat-v1"
_CHUNK_HEADER = b":event-type\x07\x00\x05chunk"
_END = b"\r\n0\r\n\r\n"


def raise_nofile() -> int:
    """Raise the open-file limit to the hard limit (1,000 streams need ~2,000 sockets per process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
    return target


def messages_for(index: int, tokens: int, delay_ms: float, tag: str = "") -> list[dict[str, str]]:
    marker = f"[[emulator tokens={tokens} delay_ms={delay_ms:g}]]"
    return [{"role": "user", "content": f"Benchmark stream {tag}{index}, please. {marker}"}]


def expected_text(messages: list[dict[str, str]], tokens: int) -> str:
    from django_bedrock_stream.emulator.scenarios import generated_tokens
    from django_bedrock_stream.prompts import build_llama2_prompt

    return "".join(generated_tokens(build_llama2_prompt(messages), tokens))


def build_request(spec: dict[str, Any], index: int) -> tuple[bytes, list[dict[str, str]]]:
    messages = messages_for(index, spec["tokens"], spec["delay_ms"], spec.get("tag", ""))
    host = f"{spec['host']}:{spec['port']}"
    if spec["mode"] == "direct":
        from django_bedrock_stream.prompts import build_llama2_prompt

        path = f"/model/{MODEL_ID}/invoke-with-response-stream"
        body = json.dumps({"prompt": build_llama2_prompt(messages), "max_gen_len": spec["tokens"]}).encode()
        ctype = "application/json"
    else:
        path = spec.get("path", "/bedrock/llama2/")
        body = json.dumps({"messages": messages, "max_tokens": spec["tokens"]}).encode()
        ctype = "application/json"
    user = f"X-Bench-User: {index % spec['users']}\r\n" if spec.get("users") else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\nAccept: */*\r\n{user}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body, messages


@dataclass
class Stream:
    index: int
    messages: list[dict[str, str]]
    t0: float = 0.0
    t_end: float = 0.0
    status: int = 0
    arrivals: list[float] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    error: str | None = None
    reads: int = 0


class StreamProtocol(asyncio.Protocol):
    def __init__(self, stream: Stream, request: bytes, direct: bool, keep_body: bool, done: asyncio.Future) -> None:
        self.s = stream
        self.request = request
        self.direct = direct
        self.keep_body = keep_body
        self.done = done
        self.head = b""
        self.in_body = False
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.s.t0 = time.monotonic()
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        s = self.s
        if not self.in_body:
            self.head += data
            idx = self.head.find(b"\r\n\r\n")
            if idx < 0:
                return
            head, data = self.head[:idx], self.head[idx + 4 :]
            self.in_body = True
            try:
                s.status = int(head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                s.status = -1
            if s.status != 200:
                s.error = f"HTTP {s.status}: {data[:200]!r}"
                self._finish(now)
                return
            if not data:
                return
        s.reads += 1
        arrivals = s.arrivals
        if self.direct:
            n = data.count(_CHUNK_HEADER)
        else:
            n = data.count(b" ") + (0 if arrivals else 1)
        if n:
            arrivals.extend([now] * n)
        if self.keep_body:
            s.body.append(data)
        self.tail = (self.tail + data)[-7:] if len(data) < 7 else data[-7:]
        if self.tail == _END:
            self._finish(now)

    def _finish(self, now: float) -> None:
        self.s.t_end = now
        if not self.done.done():
            self.done.set_result(None)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.s.t_end = time.monotonic()
            self.s.error = self.s.error or f"connection lost before the end ({exc!r})"
            self.done.set_result(None)


def dechunk(raw: bytes) -> bytes:
    out, pos = [], 0
    while True:
        eol = raw.index(b"\r\n", pos)
        size = int(raw[pos:eol].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(raw[eol + 2 : eol + 2 + size])
        pos = eol + 2 + size + 2


async def one_stream(spec: dict[str, Any], index: int, keep_body: bool) -> Stream:
    loop = asyncio.get_running_loop()
    request, messages = build_request(spec, index)
    stream = Stream(index, messages)
    done = loop.create_future()
    try:
        transport, _ = await loop.create_connection(
            lambda: StreamProtocol(stream, request, spec["mode"] == "direct", keep_body, done),
            spec["host"],
            spec["port"],
        )
    except OSError as err:
        stream.error = f"connect: {err!r}"
        stream.t0 = stream.t_end = time.monotonic()
        return stream
    try:
        await asyncio.wait_for(done, spec.get("timeout", 120))
    except asyncio.TimeoutError:
        stream.error = "timeout"
        stream.t_end = time.monotonic()
        transport.close()
    return stream


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
    return values[k]


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    n, concurrency = spec["n"], spec.get("concurrency") or spec["n"]
    verify = spec.get("verify", False)
    keep_body = verify or spec["mode"] == "proxy" and spec.get("keep_body", False)
    sem = asyncio.Semaphore(concurrency)

    async def limited(i: int) -> Stream:
        async with sem:
            return await one_stream(spec, i, keep_body)

    start = time.monotonic()
    streams = await asyncio.gather(*(limited(i) for i in range(n)))
    wall = max(s.t_end for s in streams) - start
    delay = spec["delay_ms"] / 1000.0
    tokens = spec["tokens"]
    lateness: list[float] = []
    since_request: list[float] = []
    ttfb: list[float] = []
    durations: list[float] = []
    errors: list[str] = []
    chunks = reads = 0
    for s in streams:
        if s.error is None and len(s.arrivals) != tokens:
            s.error = f"expected {tokens} tokens, counted {len(s.arrivals)}"
        if s.error is None and verify and spec["mode"] == "proxy":
            text = dechunk(b"".join(s.body)).decode("utf-8")
            if text != expected_text(s.messages, tokens):
                s.error = f"text mismatch: {text[:80]!r}..."
        if s.error is not None:
            errors.append(s.error)
            continue
        chunks += len(s.arrivals)
        reads += s.reads
        durations.append(s.t_end - s.t0)
        arr = s.arrivals
        ttfb.append(arr[0] - s.t0)
        base = min(a - i * delay for i, a in enumerate(arr))
        lateness.extend(a - i * delay - base for i, a in enumerate(arr))
        since_request.extend(a - i * delay - s.t0 for i, a in enumerate(arr))
    ms = 1000.0
    summary = {
        "mode": spec["mode"],
        "n": n,
        "tokens": tokens,
        "delay_ms": spec["delay_ms"],
        "wall_s": wall,
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "chunks": chunks,
        "reads": reads,
        "ttfb_ms": {q: (pct(ttfb, q) or 0) * ms for q in (50, 90, 99)},
        "lateness_ms": {q: (pct(lateness, q) or 0) * ms for q in (50, 90, 99, 100)},
        "since_request_ms": {q: (pct(since_request, q) or 0) * ms for q in (50, 90, 99, 100)},
        "duration_s": {q: pct(durations, q) or 0 for q in (0, 50, 100)},
    }
    return summary


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    raise_nofile()
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    summary = asyncio.run(run(spec))
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
