"""A TCP proxy in front of PostgreSQL that a test can cut and restore: the database "goes away".

Servers under test connect to ``proxy.port`` instead of PostgreSQL's. :meth:`DBProxy.cut` closes
every live connection (both ends, as a network failure or a restarted server would) and, until
:meth:`DBProxy.restore`, accepts new connections only to close them at once, so a client fails fast
with "server closed the connection unexpectedly" instead of hanging. :meth:`DBProxy.cut_on` arms a
one-shot cut that fires when a client sends a given SQL fragment, before it reaches the server: a
fault at an exact statement (e.g. the final ``UPDATE`` of a stream).
"""

from __future__ import annotations

import socket
import threading
from typing import Any


def _drop(sock: socket.socket) -> None:
    """Close a socket and wake any thread blocked reading it (``close()`` alone does not)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class DBProxy:
    """``with DBProxy() as proxy: ... proxy.port ... proxy.cut() ... proxy.restore()``."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(512)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: dict[socket.socket, socket.socket] = {}  # client socket -> upstream socket
        self._cut = False
        self._trigger: bytes | None = None
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        #: Set when a cut happens (by :meth:`cut` or a fired :meth:`cut_on` trigger).
        self.cut_happened = threading.Event()
        #: Connections accepted (and forwarded) so far, and refused while cut.
        self.accepted = 0
        self.refused = 0

    # -- control --------------------------------------------------------------------------------
    def cut(self) -> None:
        """Close every live connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            self._cut = True
            self._trigger = None
            links, self._links = self._links, {}
        for client, upstream in links.items():
            _drop(client)
            _drop(upstream)
        self.cut_happened.set()

    def cut_on(self, fragment: bytes) -> None:
        """Cut (as :meth:`cut`) as soon as a client sends ``fragment``; that data is not forwarded."""
        with self._lock:
            self._trigger = fragment

    def restore(self) -> None:
        """Forward new connections again (the ones cut stay closed, as after a real outage)."""
        with self._lock:
            self._cut = False
            self._trigger = None
        self.cut_happened.clear()

    @property
    def live_connections(self) -> int:
        """How many client connections are open through the proxy right now."""
        with self._lock:
            return len(self._links)

    # -- plumbing -------------------------------------------------------------------------------
    def start(self) -> DBProxy:
        self._thread = threading.Thread(target=self._accept_loop, name="db-proxy", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(5)
        self._listener.close()
        with self._lock:
            links, self._links = self._links, {}
        for client, upstream in links.items():
            _drop(client)
            _drop(upstream)

    def __enter__(self) -> DBProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                cut = self._cut
            if cut:
                self.refused += 1
                _drop(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _drop(client)
                continue
            with self._lock:
                if self._cut:  # cut while we were connecting
                    self.refused += 1
                    _drop(client)
                    _drop(upstream)
                    continue
                self._links[client] = upstream
                self.accepted += 1
            for src, dst, watch in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(client, src, dst, watch), daemon=True).start()

    def _pump(self, client: socket.socket, src: socket.socket, dst: socket.socket, watch: bool) -> None:
        tail = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if watch:
                    trigger = self._trigger
                    if trigger is not None:
                        window = tail + data  # the fragment may straddle two reads
                        if trigger in window:
                            self.cut()
                            return
                        tail = window[-len(trigger):]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                upstream = self._links.pop(client, None)
            if upstream is not None:
                _drop(client)
                _drop(upstream)
