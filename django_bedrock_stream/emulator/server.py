"""The emulator's HTTP/1.1 server (asyncio, no third-party dependencies) and :class:`BedrockEmulator`.

Point an unmodified boto3 ``bedrock-runtime`` client at it with
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:PORT`` (dummy credentials, any region). Started with
an API key, it requires ``Authorization: Bearer <key>`` and refuses anything else as Bedrock does.
It serves HTTPS too (:class:`EmulatorTLS`): botocore 1.44+ sends a bearer token over HTTPS only.

No Django imports here.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from .eventstream import corrupt_crc, decode_message, encode_exception, split_messages
from .scenarios import (
    CONVERSE,
    ERROR_MESSAGES,
    HTTP_ERRORS,
    InvalidRequest,
    Plan,
    Scenario,
    ScenarioError,
    cached_prefix,
    estimate_tokens,
    extract_text,
    invoke_family,
    make_plan,
    parse_markers,
)

__all__ = ["BedrockEmulator", "EmulatorServer", "EmulatorState", "EmulatorTLS", "MissingExtra", "default_replay_dir"]

_MODEL_PATH_RE = re.compile(r"^/model/(.+)/(invoke|invoke-with-response-stream|converse|converse-stream)$")
_STREAMING_OPS = ("invoke-with-response-stream", "converse-stream")
_ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
_FLUSH_BYTES = 64 * 1024
_MAX_HEADER_BYTES = 64 * 1024
#: How Bedrock refuses a request its API key check does not pass: (x-amzn-ErrorType, JSON body).
#: AWS's request layer answers these (hence the coral.service namespace); a bad bearer token gets
#: AccessDeniedException with a capitalised "Message", a SigV4 signature from credentials it does not
#: know UnrecognizedClientException, no Authorization header MissingAuthenticationTokenException.
_AUTH_ERROR_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.coral.service/"
_BAD_API_KEY = ("AccessDeniedException", {"Message": "Authentication failed: Please make sure your API Key is valid."})
_NOT_BEARER = ("UnrecognizedClientException", {"message": "The security token included in the request is invalid."})
_NO_AUTH = ("MissingAuthenticationTokenException", {"message": "Missing Authentication Token"})


def default_replay_dir() -> Path | None:
    """``$BEDROCK_EMULATOR_REPLAY_DIR``, else none: an installed package never looks outside itself."""
    env = os.environ.get("BEDROCK_EMULATOR_REPLAY_DIR")
    return Path(env) if env else None


class _BadRequest(Exception):
    pass


class _Disconnected(Exception):
    pass


_date_cache: list = [0, ""]


def _http_date() -> str:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = email.utils.formatdate(now, usegmt=True)
    return _date_cache[1]


def _response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", f"Date: {_http_date()}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# ----------------------------------------------------------------------------------------------
# State shared between the server (event-loop thread) and the Python API (any thread)


class EmulatorState:
    """Scenario defaults, the request log, the throttle counters and the API key model requests
    must carry (``None``: any request is accepted, as SigV4 with dummy credentials)."""

    def __init__(
        self,
        defaults: Scenario | None = None,
        replay_dir: str | Path | None = None,
        log_limit: int | None = 100_000,
        api_key: str | None = None,
    ):
        self.api_key = api_key
        self.initial_defaults = defaults or Scenario()
        self.defaults = self.initial_defaults
        self.replay_dir = Path(replay_dir) if replay_dir else default_replay_dir()
        #: Oldest records are dropped beyond ``log_limit`` (a long benchmark run must not grow without bound).
        self._log: collections.deque[dict[str, Any]] = collections.deque(maxlen=log_limit)
        self._lock = threading.Lock()
        self._throttle: dict[tuple, int] = {}
        self._cache: set[bytes] = set()

    def set_scenario(self, **values: Any) -> Scenario:
        self.defaults = self.defaults.merged(values)
        return self.defaults

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self._throttle.clear()
            self._cache.clear()
        self.defaults = self.initial_defaults

    def add_record(self, rec: dict[str, Any]) -> None:
        with self._lock:
            self._log.append(rec)

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._log]

    def cache(self, prefix: str) -> bool:
        """Remember a prompt-cache prefix; whether it was cached already."""
        key = hashlib.sha256(prefix.encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            hit = key in self._cache
            self._cache.add(key)
            return hit

    def throttle_attempt(self, key: tuple) -> int:
        with self._lock:
            n = self._throttle.get(key, 0) + 1
            self._throttle[key] = n
            return n

    def resolve_replay(self, name: str) -> Path:
        p = Path(name)
        candidates = []
        if p.is_absolute():
            candidates.append(p)
        else:
            if self.replay_dir is not None:
                candidates += [self.replay_dir / name, self.replay_dir / (name + ".eventstream")]
            candidates.append(p)
        for c in candidates:
            if c.is_file():
                return c
        raise InvalidRequest(f"emulator replay file not found: {name!r} (replay dir: {self.replay_dir})")


# ----------------------------------------------------------------------------------------------
# Connection


class _Conn:
    __slots__ = ("active", "buf", "closed", "keep_alive", "reader", "task", "watcher", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.closed = False
        self.active = False
        self.task: asyncio.Task | None = None
        self.keep_alive = True
        self.watcher: asyncio.Task | None = None

    async def _fill(self) -> bool:
        data = await self.reader.read(65536)
        if not data:
            return False
        self.buf += data
        return True

    async def read_request(self) -> tuple[str, str, str, dict[str, str], bytes] | None:
        buf = self.buf
        while True:
            idx = buf.find(b"\r\n\r\n")
            if idx >= 0:
                break
            if len(buf) > _MAX_HEADER_BYTES:
                raise _BadRequest("headers too large")
            if not await self._fill():
                return None
        head = bytes(buf[:idx]).decode("latin-1")
        del buf[: idx + 4]
        lines = head.split("\r\n")
        while lines and not lines[0]:
            lines.pop(0)
        try:
            method, target, version = lines[0].split(" ", 2)
        except (ValueError, IndexError):
            raise _BadRequest("bad request line") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if headers.get("expect", "").lower() == "100-continue":
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked()
        else:
            try:
                n = int(headers.get("content-length", "0") or 0)
            except ValueError:
                raise _BadRequest("bad content-length") from None
            body = await self._read_exact(n)
        return method.upper(), target, version, headers, body

    async def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self._fill():
                raise _Disconnected()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def _read_line(self) -> bytes:
        while True:
            idx = self.buf.find(b"\r\n")
            if idx >= 0:
                line = bytes(self.buf[:idx])
                del self.buf[: idx + 2]
                return line
            if not await self._fill():
                raise _Disconnected()

    async def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = await self._read_line()
            try:
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            except ValueError:
                raise _BadRequest("bad chunk size") from None
            if size == 0:
                while await self._read_line():  # trailers
                    pass
                return b"".join(parts)
            parts.append(await self._read_exact(size))
            await self._read_exact(2)

    async def watch_eof(self) -> None:
        """Runs while a response is in progress: notices the client hanging up, even mid-sleep."""
        try:
            while await self._fill():
                pass
        except asyncio.CancelledError:
            raise
        except Exception:
            pass
        self.closed = True
        if self.active and self.task is not None:
            self.task.cancel()


class _BodyWriter:
    """Collects eventstream messages and writes them as HTTP chunks."""

    __slots__ = ("corrupt_at", "index", "parts", "size", "writer")

    def __init__(self, writer: asyncio.StreamWriter, corrupt_at: int | None):
        self.writer = writer
        self.parts: list[bytes] = []
        self.size = 0
        self.index = 0
        self.corrupt_at = corrupt_at

    def add(self, msg: bytes) -> None:
        if self.index == self.corrupt_at:
            msg = corrupt_crc(msg)
        self.index += 1
        self.parts.append(msg)
        self.size += len(msg)

    def write_pending(self) -> None:
        if self.size:
            data = b"".join(self.parts) if len(self.parts) > 1 else self.parts[0]
            self.writer.write(b"%x\r\n" % len(data) + data + b"\r\n")
            self.parts.clear()
            self.size = 0

    async def flush(self) -> None:
        self.write_pending()
        await self.writer.drain()

    async def finish(self) -> None:
        self.write_pending()
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()


# ----------------------------------------------------------------------------------------------
# Server


def base_url(host: str, port: int, tls: bool = False) -> str:
    """The URL clients use for a listening address (a wildcard host is reached on loopback)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


class MissingExtra(ImportError):
    """An optional dependency of the emulator is missing (the emulator does not import Django, so
    this is not :class:`django_bedrock_stream.exceptions.MissingExtraError`; same message)."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f'{package} is not installed; install it with: pip install "django-bedrock-stream[{extra}]"')


#: The names a self-signed certificate is made for, besides the host the emulator listens on.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class EmulatorTLS:
    """How the emulator serves HTTPS: the server's ``ssl.SSLContext`` and, for a self-signed
    certificate, ``ca_file``, the PEM file of the throwaway CA that clients must trust
    (``AWS_CA_BUNDLE``, or boto3's ``verify=``).

    Why HTTPS at all: botocore 1.44+ refuses to send a Bedrock API key (bearer token) over plain HTTP.
    """

    def __init__(self, context: ssl.SSLContext, ca_file: Path | None = None) -> None:
        self.context = context
        self.ca_file = ca_file
        self._cleanup: weakref.finalize | None = None

    @classmethod
    def from_files(cls, certfile: str | Path, keyfile: str | Path | None = None) -> EmulatorTLS:
        """Serve your own certificate chain (PEM); ``keyfile`` when the key is not in ``certfile``.
        Raises ``OSError``/``ssl.SSLError`` for a file that cannot be read or a key that does not match."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile, keyfile)
        return cls(context)

    @classmethod
    def self_signed(cls, hosts: Sequence[str] = ()) -> EmulatorTLS:
        """A new CA and a server certificate for ``hosts`` and the loopback names, made by trustme
        (the ``tls`` extra). The CA's certificate is written to a private temporary directory,
        removed by :meth:`close` (or at exit); the CA's key is never written."""
        try:
            import trustme
        except ImportError:
            raise MissingExtra("trustme", "tls") from None
        ca = trustme.CA(organization_name="django-bedrock-stream emulator")
        names = list(dict.fromkeys([*(h for h in hosts if h not in ("", "0.0.0.0", "::")), *LOOPBACK_NAMES]))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(context)
        directory = tempfile.mkdtemp(prefix="bedrock-emulator-tls-")
        ca_file = Path(directory) / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        tls = cls(context, ca_file)
        tls._cleanup = weakref.finalize(tls, shutil.rmtree, directory, True)
        return tls

    def close(self) -> None:
        """Remove the self-signed CA file (nothing to do for your own certificate)."""
        if self._cleanup is not None:
            self._cleanup()


class EmulatorServer:
    """The asyncio server. Use :meth:`start` inside a running loop, :meth:`close` to stop.

    ``ssl_context``: serve HTTPS with it (see :class:`EmulatorTLS`); ``None`` (the default) is plain HTTP.
    """

    def __init__(
        self,
        state: EmulatorState | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.state = state or EmulatorState()
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Conn] = set()

    @property
    def url(self) -> str:
        return base_url(self.host, self.port, tls=self.ssl_context is not None)

    async def start(self) -> EmulatorServer:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, backlog=2048, limit=1 << 20, reuse_address=True, ssl=self.ssl_context
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        return self

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # Close the client transports: idle handlers see EOF, streaming ones are interrupted by
        # their EOF watcher; both then finish normally. Cancel whatever is left after a grace period.
        # A TLS close would wait for the client's close_notify (up to 30 s), which an idle keep-alive
        # client never sends, and outlive the loop: TLS connections are aborted instead.
        for conn in list(self._conns):
            try:
                if self.ssl_context is not None:
                    conn.writer.transport.abort()
                else:
                    conn.writer.close()
            except Exception:
                pass
        tasks = [c.task for c in self._conns if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=2)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except (asyncio.TimeoutError, Exception):
                pass
            self._server = None

    # -- connection loop ----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        conn = _Conn(reader, writer)
        conn.task = task
        self._conns.add(conn)
        try:
            while not conn.closed:
                try:
                    req = await conn.read_request()
                except _BadRequest as e:
                    writer.write(self._json_response(400, {"message": str(e)}, keep_alive=False))
                    await writer.drain()
                    break
                if req is None:
                    break
                method, target, version, headers, body = req
                conn_hdr = headers.get("connection", "").lower()
                keep_alive = conn_hdr != "close" if version.upper() == "HTTP/1.1" else conn_hdr == "keep-alive"
                conn.keep_alive = keep_alive
                ok = await self._dispatch(conn, method, target, headers, body, keep_alive)
                if conn.watcher is not None:
                    # Let the cancelled EOF watcher unwind before reading the next request.
                    await asyncio.wait((conn.watcher,))
                    conn.watcher = None
                if not ok or not keep_alive:
                    break
        except asyncio.CancelledError:
            # Top-level connection task: end quietly (asyncio's start_server callback would log a
            # cancelled task as an error).
            pass
        except (_Disconnected, ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(conn)
            try:
                writer.close()
            except Exception:
                pass

    def _json_response(
        self,
        status: int,
        payload: Any,
        keep_alive: bool = True,
        extra: list[tuple[str, str]] | None = None,
    ) -> bytes:
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("x-amzn-RequestId", str(uuid.uuid4())),
            ("Connection", "keep-alive" if keep_alive else "close"),
        ]
        if extra:
            headers.extend(extra)
        return _response_head(status, headers) + body

    def _error_response(self, name: str, status: int, message: str, keep_alive: bool) -> bytes:
        return self._json_response(
            status, {"message": message}, keep_alive, [("x-amzn-ErrorType", name + _ERROR_TYPE_SUFFIX)]
        )

    async def _dispatch(
        self, conn: _Conn, method: str, target: str, headers: dict, body: bytes, keep_alive: bool
    ) -> bool:
        path = target.split("?", 1)[0]
        if path.startswith("http://") or path.startswith("https://"):
            path = "/" + path.split("/", 3)[-1]
        writer = conn.writer
        if path.startswith("/_emulator/"):
            status, payload = self._control(method, path, body)
            writer.write(self._json_response(status, payload, keep_alive))
            await writer.drain()
            return True
        m = _MODEL_PATH_RE.match(path)
        if m is None or method != "POST":
            writer.write(
                self._json_response(
                    404,
                    {"message": f"Unknown operation: {method} {path}"},
                    keep_alive,
                    [("x-amzn-ErrorType", "UnknownOperationException")],
                )
            )
            await writer.drain()
            return True
        model_id = unquote(m.group(1))
        op = m.group(2)
        authorization = headers.get("authorization", "")
        return await self._model_request(conn, op, model_id, body, keep_alive, authorization, headers)

    # -- control API --------------------------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        st = self.state
        if path == "/_emulator/health":
            return 200, {"status": "ok", "requests": len(st._log)}
        if path == "/_emulator/requests" and method == "GET":
            return 200, st.requests()
        if path == "/_emulator/reset" and method == "POST":
            st.reset()
            return 200, {"status": "reset", "scenario": st.defaults.to_dict()}
        if path == "/_emulator/scenario":
            if method == "GET":
                return 200, st.defaults.to_dict()
            if method == "POST":
                try:
                    values = json.loads(body or b"{}")
                    if not isinstance(values, dict):
                        raise ValueError("scenario body must be a JSON object")
                    st.set_scenario(**values)
                except (ValueError, TypeError) as e:
                    return 400, {"message": str(e)}
                return 200, st.defaults.to_dict()
        return 404, {"message": f"unknown emulator control endpoint {method} {path}"}

    # -- model requests -----------------------------------------------------------------------

    def _auth_refusal(self, authorization: str) -> tuple[str, dict[str, str]] | None:
        """Why Bedrock would refuse this ``Authorization`` header, or ``None`` to accept it."""
        if self.state.api_key is None:
            return None
        scheme, _, credential = authorization.partition(" ")
        if not authorization:
            return _NO_AUTH
        if scheme.lower() != "bearer":
            return _NOT_BEARER
        if hmac.compare_digest(credential.strip().encode(), self.state.api_key.encode()):
            return None
        return _BAD_API_KEY

    async def _model_request(
        self,
        conn: _Conn,
        op: str,
        model_id: str,
        raw: bytes,
        keep_alive: bool,
        authorization: str = "",
        headers: dict[str, str] | None = None,
    ) -> bool:
        st = self.state
        t0 = time.monotonic()
        request_id = str(uuid.uuid4())
        body_text = raw.decode("utf-8", "replace")
        try:
            body: Any = json.loads(body_text) if body_text.strip() else None
            bad_json = not isinstance(body, dict)
        except ValueError:
            body, bad_json = None, True
        rec: dict[str, Any] = {
            "id": request_id,
            "operation": op,
            "model_id": model_id,
            "body": body,
            "status": "streaming",
            "http_status": None,
            "chunks_sent": 0,
            "text": "",
            "started_at": time.time(),
            "ended_at": None,
            "scenario": None,
            "error": None,
            # How the request authenticated (the scheme only, never the credential).
            "auth": "bearer" if authorization[:7].lower() == "bearer " else "sigv4" if authorization else None,
        }
        st.add_record(rec)
        writer = conn.writer
        sent_tokens: list[str] = []
        watcher = conn.watcher = asyncio.get_running_loop().create_task(conn.watch_eof())
        conn.active = True

        def fail(name: str, status: int, message: str | None = None) -> bool:
            rec["http_status"] = status
            rec["error"] = name
            _close_record(rec, "failed", sent_tokens)
            writer.write(self._error_response(name, status, message or ERROR_MESSAGES.get(name, name), keep_alive))
            return True

        try:
            refusal = self._auth_refusal(authorization)
            if refusal is not None:
                name, payload = refusal
                rec["http_status"], rec["error"] = 403, name
                _close_record(rec, "failed", sent_tokens)
                suffix = [("x-amzn-ErrorType", name + _AUTH_ERROR_SUFFIX)]
                writer.write(self._json_response(403, payload, keep_alive, suffix))
                await writer.drain()
                return True
            try:
                overrides = Scenario.coerce(parse_markers(body_text))
                scenario = st.defaults.merged(overrides)
                rec["scenario"] = overrides
            except ScenarioError as e:
                fail("ValidationException", 400, str(e))
                await writer.drain()
                return True
            if scenario.ttfb_ms:
                await asyncio.sleep(scenario.ttfb_ms / 1000.0)
            if bad_json:
                fail("ValidationException", 400, "Malformed input request, please reformat your input and try again.")
            elif scenario.fail:
                fail(scenario.fail, HTTP_ERRORS[scenario.fail], scenario.message)
            elif scenario.throttle and st.throttle_attempt((op, model_id, raw)) <= scenario.throttle:
                fail("ThrottlingException", 429)
            else:
                try:
                    if scenario.replay and op in _STREAMING_OPS:
                        path = st.resolve_replay(scenario.replay)
                        await self._replay(conn, rec, path, scenario, request_id, sent_tokens)
                        return True
                    family = CONVERSE if op.startswith("converse") else invoke_family(model_id, body)
                    plan = make_plan(family, model_id, body, scenario, headers)
                    rec["attachments"] = plan.attachments
                    self._prompt_cache(plan, body)
                except InvalidRequest as e:
                    fail("ValidationException", 400, str(e))
                else:
                    if op in _STREAMING_OPS:
                        await self._stream(conn, rec, plan, scenario, request_id, t0, sent_tokens)
                    else:
                        await self._non_stream(conn, rec, plan, scenario, op, request_id, t0, keep_alive, sent_tokens)
            await writer.drain()
            return True
        except asyncio.CancelledError:
            if conn.closed:  # cancelled by the EOF watcher: the client hung up
                return False
            raise
        except (ConnectionError, OSError, _Disconnected):
            conn.closed = True
            return False
        finally:
            conn.active = False
            watcher.cancel()
            if rec["ended_at"] is None:
                _close_record(rec, rec["status"] if rec["status"] != "streaming" else "disconnected", sent_tokens)

    def _prompt_cache(self, plan: Plan, body: Any) -> None:
        """A request with a cache point writes its prefix to the cache, an identical prefix later
        reads it (its tokens leave ``inputTokens``), unless a marker set the counts."""
        if plan.cache_read or plan.cache_write or "cache" not in plan.family.features:
            return
        prefix = cached_prefix(body)
        if prefix is None:
            return
        tokens = estimate_tokens(prefix)
        if self.state.cache(prefix):
            plan.cache_read = tokens
        else:
            plan.cache_write = tokens
        plan.input_tokens = max(1, plan.input_tokens - tokens)

    def _stream_head(self, request_id: str, keep_alive: bool) -> bytes:
        return _response_head(
            200,
            [
                ("Content-Type", "application/vnd.amazon.eventstream"),
                ("Transfer-Encoding", "chunked"),
                ("x-amzn-RequestId", request_id),
                ("x-amzn-bedrock-content-type", "application/json"),
                ("Connection", "keep-alive" if keep_alive else "close"),
            ],
        )

    async def _stream(
        self,
        conn: _Conn,
        rec: dict,
        plan: Plan,
        sc: Scenario,
        request_id: str,
        t0: float,
        sent: list[str],
    ) -> None:
        writer = conn.writer
        writer.write(self._stream_head(request_id, conn.keep_alive))
        rec["http_status"] = 200
        out = _BodyWriter(writer, sc.corrupt_crc_at)
        fam = plan.family
        tokens = plan.tokens
        n = len(tokens)
        # The events before the text (reasoning, signature pieces, citations) are paced and counted
        # like token events: error_at / drop_at can cut a stream inside its reasoning.
        lead = plan.lead
        n_lead = len(lead)
        steps = n_lead + n
        error_at = None if sc.error_at is None else min(sc.error_at, steps)
        merge_last = fam.merges_last and error_at is None and n > 0
        delay = sc.delay_ms / 1000.0
        sleep = asyncio.sleep
        first_byte: int | None = None
        for m in fam.head(plan):
            out.add(m)
        if plan.opening:
            out.add(plan.opening)
        add = out.add
        append = sent.append
        token = fam.token
        monotonic = time.monotonic
        t_first = 0.0
        done = 0
        for g in range(steps):
            if g == error_at:
                break
            if g == sc.drop_at:  # hang up mid-body
                await out.flush()
                raise _Disconnected()
            if delay and g:
                await out.flush()
                # Absolute schedule: event g goes out at t_first + g*delay, so per-token overhead
                # (and a busy loop with many streams) does not stretch the stream.
                await sleep(max(0.0, t_first + g * delay - monotonic()))
            if first_byte is None:
                t_first = monotonic()
                first_byte = int((t_first - t0) * 1000)
            if g < n_lead:
                add(lead[g])
            else:
                i = g - n_lead
                tok = tokens[i]
                if merge_last and i == n - 1:
                    lat = int((time.monotonic() - t0) * 1000)
                    add(token(plan, tok, i, _metrics(plan, n, lat, first_byte)))
                else:
                    add(token(plan, tok, i, None))
                append(tok)
            done = g + 1
            rec["chunks_sent"] = done
            if out.size >= _FLUSH_BYTES:
                await out.flush()
                await sleep(0)
        if delay and error_at != 0 and steps:
            await out.flush()
        if error_at is not None:
            if delay and error_at:
                await sleep(delay)
            name = sc.error or "modelStreamErrorException"
            out.add(encode_exception(name, sc.message or ERROR_MESSAGES.get(name, name)))
            rec["error"] = name
            status = "error"
        else:
            lat = int((time.monotonic() - t0) * 1000)
            fb = first_byte if first_byte is not None else lat
            for m in fam.tail(plan, len(sent), merge_last, _metrics(plan, len(sent), lat, fb)):
                add(m)
            status = "completed"
        rec["chunks_sent"] = done
        _close_record(rec, status, sent)
        await out.finish()

    async def _replay(self, conn: _Conn, rec: dict, path: Path, sc: Scenario, request_id: str, sent: list[str]) -> None:
        data = path.read_bytes()
        writer = conn.writer
        writer.write(self._stream_head(request_id, conn.keep_alive))
        rec["http_status"] = 200
        out = _BodyWriter(writer, sc.corrupt_crc_at)
        delay = sc.delay_ms / 1000.0
        chunks = 0
        for i, msg in enumerate(split_messages(data)):
            if delay and i:
                await out.flush()
                await asyncio.sleep(delay)
            out.add(msg)
            try:
                headers, payload = decode_message(msg)
            except ValueError:
                continue
            if headers.get(":event-type") in ("chunk", "contentBlockDelta"):
                chunks += 1
                rec["chunks_sent"] = chunks
            t = extract_text(headers, payload)
            if t:
                sent.append(t)
        rec["chunks_sent"] = chunks
        _close_record(rec, "completed", sent)
        await out.finish()

    async def _non_stream(
        self,
        conn: _Conn,
        rec: dict,
        plan: Plan,
        sc: Scenario,
        op: str,
        request_id: str,
        t0: float,
        keep_alive: bool,
        sent: list[str],
    ) -> None:
        n = len(plan.tokens)
        if sc.delay_ms and n > 1:
            await asyncio.sleep(sc.delay_ms * (n - 1) / 1000.0)
        if sc.error_at is not None:
            name = sc.error or "modelStreamErrorException"
            http_name = name[:1].upper() + name[1:]
            rec["http_status"] = HTTP_ERRORS.get(http_name, 500)
            rec["error"] = http_name
            _close_record(rec, "failed", sent)
            http_status = HTTP_ERRORS.get(http_name, 500)
            conn.writer.write(self._error_response(http_name, http_status, ERROR_MESSAGES.get(name, name), keep_alive))
            return
        lat = int((time.monotonic() - t0) * 1000)
        payload = plan.family.invoke_body(plan, lat)
        extra = [("x-amzn-RequestId", request_id)]
        if op == "invoke":
            extra = [
                ("X-Amzn-Bedrock-Invocation-Latency", str(lat)),
                ("X-Amzn-Bedrock-Input-Token-Count", str(plan.input_tokens)),
                ("X-Amzn-Bedrock-Output-Token-Count", str(n)),
            ]
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("x-amzn-RequestId", request_id),
            ("Connection", "keep-alive" if keep_alive else "close"),
        ] + (extra if op == "invoke" else [])
        rec["http_status"] = 200
        sent.extend(plan.tokens)
        rec["chunks_sent"] = n
        _close_record(rec, "completed", sent)
        conn.writer.write(_response_head(200, headers) + body)


def _close_record(rec: dict, status: str, sent: list[str]) -> None:
    """Finalise a request record. Called *before* the last bytes go out, so that a client which has
    read the whole response always sees the final record."""
    rec["text"] = "".join(sent)
    rec["status"] = status
    rec["ended_at"] = time.time()


def _metrics(plan: Plan, output_tokens: int, latency: int, first_byte: int) -> dict[str, int]:
    metrics = {
        "inputTokenCount": plan.input_tokens,
        "outputTokenCount": output_tokens,
        "invocationLatency": latency,
        "firstByteLatency": first_byte,
    }
    if plan.cache_read or plan.cache_write or plan.family.cache_metrics:
        metrics["cacheReadInputTokenCount"] = plan.cache_read
        metrics["cacheWriteInputTokenCount"] = plan.cache_write
    return metrics


# ----------------------------------------------------------------------------------------------
# In-process form


class BedrockEmulator:
    """The emulator running in a daemon thread::

        with BedrockEmulator(port=0, tokens=5) as emu:
            os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = emu.url
            ...
            emu.wait_for(lambda reqs: reqs and reqs[-1]["status"] == "completed")
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        replay_dir: str | Path | None = None,
        api_key: str | None = None,
        tls: bool = False,
        certfile: str | Path | None = None,
        keyfile: str | Path | None = None,
        **scenario: Any,
    ):
        """``api_key``: require ``Authorization: Bearer <api_key>`` on model requests (a wrong or
        missing key gets Bedrock's 403); ``None`` accepts any request. ``tls=True``: serve HTTPS with a
        self-signed certificate made at :meth:`start` (trustme, the ``tls`` extra), its CA in
        :attr:`ca_file`; ``certfile`` (and ``keyfile``): serve HTTPS with that certificate. Plain HTTP
        otherwise. ``scenario``: the defaults."""
        if keyfile is not None and certfile is None:
            raise ValueError("keyfile needs certfile")
        defaults = Scenario().merged(scenario)
        self.state = EmulatorState(defaults, replay_dir, api_key=api_key)
        self.host = host
        self.port = port
        self.tls = tls or certfile is not None
        self._certfile = certfile
        self._keyfile = keyfile
        self._tls: EmulatorTLS | None = None
        self._server: EmulatorServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _make_tls(self) -> EmulatorTLS | None:
        if self._certfile is not None:
            return EmulatorTLS.from_files(self._certfile, self._keyfile)
        return EmulatorTLS.self_signed([self.host]) if self.tls else None

    # lifecycle
    def start(self) -> BedrockEmulator:
        if self._thread is not None:
            return self
        self._tls = self._make_tls()
        ready = threading.Event()
        errors: list[BaseException] = []
        context = self._tls.context if self._tls is not None else None

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._server = EmulatorServer(self.state, self.host, self.port, context)
                loop.run_until_complete(self._server.start())
                self.port = self._server.port
            except BaseException as e:  # pragma: no cover - reported to the caller
                errors.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                try:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                finally:
                    loop.close()

        self._thread = threading.Thread(target=run, name="bedrock-emulator", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            self._thread = None
            self._close_tls()
            raise errors[0]
        return self

    def _close_tls(self) -> None:
        if self._tls is not None:
            self._tls.close()
            self._tls = None

    def stop(self) -> None:
        loop, thread, server = self._loop, self._thread, self._server
        if loop is None or thread is None:
            return
        if server is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(server.close(), loop)
            try:
                fut.result(5)
            except Exception:
                pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        self._thread = self._loop = self._server = None
        self._close_tls()

    def __enter__(self) -> BedrockEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # API
    @property
    def url(self) -> str:
        return base_url(self.host, self.port, tls=self.tls)

    @property
    def ca_file(self) -> Path | None:
        """While a ``tls=True`` emulator runs: the PEM file of its CA, for ``AWS_CA_BUNDLE`` or boto3's
        ``verify=`` (a new CA at each start, the file removed at stop). ``None`` otherwise."""
        return self._tls.ca_file if self._tls is not None else None

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A copy of the request log (oldest first)."""
        return self.state.requests()

    @property
    def scenario(self) -> Scenario:
        """The current scenario defaults."""
        return self.state.defaults

    @property
    def replay_dir(self) -> Path | None:
        return self.state.replay_dir

    def reset(self) -> None:
        """Clear the request log and throttle counters; scenario defaults back to the constructor's."""
        self.state.reset()

    def set_scenario(self, **values: Any) -> Scenario:
        """Change scenario defaults (merged over the current ones); ``key=None`` clears a control."""
        return self.state.set_scenario(**values)

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], Any], timeout: float = 5.0, interval: float = 0.01
    ) -> list[dict[str, Any]]:
        """Poll the request log until ``predicate(requests)`` is true; return the log, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            reqs = self.requests
            if predicate(reqs):
                return reqs
            if time.monotonic() >= deadline:
                raise TimeoutError(f"emulator request log did not satisfy the predicate within {timeout}s: {reqs!r}")
            time.sleep(interval)

    def __repr__(self) -> str:
        return f"<BedrockEmulator {self.url} running={self._thread is not None}>"
