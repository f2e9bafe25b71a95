"""Real HTTP servers for the reliability tests, running in threads of the test process.

In-process (rather than a subprocess) on purpose: the server shares the test's database (the test
database pytest-django created), Django's settings (``override_settings`` reaches it), the signal
registry (a test can connect a receiver and see what the server sent) and the ``bedrock-stream``
thread pool (a test can check that no thread stays blocked).

* :class:`UvicornThread` — uvicorn with its own event loop serving ``tests.asgi:application``.
* :class:`WSGIThread` — ``wsgiref`` with one thread per request serving Django's ``WSGIHandler``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class UvicornThread:
    """``with UvicornThread() as server: server.url`` — uvicorn serving Django on a free port."""

    def __init__(self, app: Any = None, **config: Any) -> None:
        self.app = app
        self.config = config
        self.sock = _listening_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._errors: list[BaseException] = []

    def start(self) -> UvicornThread:
        import uvicorn

        if self.app is None:
            from tests.asgi import application

            self.app = application
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            loop="asyncio",
            http="h11",
            timeout_keep_alive=5,
            backlog=2048,
            **self.config,
        )
        self._server = uvicorn.Server(config)

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            try:
                loop.run_until_complete(self._server.serve(sockets=[self.sock]))
            except BaseException as err:  # pragma: no cover - surfaced by wait_started
                self._errors.append(err)
            finally:
                from django_bedrock_stream.client import aclose_clients

                loop.run_until_complete(aclose_clients())  # this loop's aiobotocore clients
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="test-uvicorn", daemon=True)
        self._thread.start()
        for _ in range(500):
            if self._server.started or self._errors or not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not self._server.started:
            raise RuntimeError(f"uvicorn did not start: {self._errors!r}")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.sock.close()

    def __enter__(self) -> UvicornThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class WSGIThread:
    """``with WSGIThread() as server: server.url`` — Django's WSGIHandler behind a threaded wsgiref."""

    def __init__(self, app: Any = None) -> None:
        self.app = app
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> WSGIThread:
        if self.app is None:
            from django.core.handlers.wsgi import WSGIHandler

            self.app = WSGIHandler()
        self._server = make_server(
            "127.0.0.1", 0, self.app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-wsgi", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> WSGIThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def raw_request(url: str, path: str, body: bytes, *, headers: dict[str, str] | None = None) -> socket.socket:
    """Send one HTTP/1.1 POST on a fresh socket and return the socket, unread."""
    host, port = url.rsplit("//", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


def read_head(sock: socket.socket) -> tuple[int, bytes]:
    """Read up to the end of the response headers; return the status and any body bytes read after."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise ConnectionError(f"connection closed before the headers: {data!r}")
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest
