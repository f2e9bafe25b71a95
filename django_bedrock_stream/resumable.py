"""Resumable chat streams and stop on Redis (``BEDROCK_STREAM["RESUMABLE"]``).

A chat's running stream is teed, chunk by encoded chunk (one Redis stream entry per network read),
into a Redis stream with a TTL and a cap; a resume request on any worker replays it with ``XREAD``
from the start and then follows it with ``XREAD BLOCK`` until the end marker. A stop request sets a
flag key and publishes on the chat's channel; the runner of that chat, wherever it runs, listens on
the channel (and checks the flag once subscribed, so a stop sent before it subscribed is not lost).

Keys (``prefix`` defaults to ``bedrock-stream:``): ``<prefix>running:<chat id>`` -> the stream key of
the chat's running stream; ``<prefix>stream:<chat id>:<random>`` the stream itself (fields ``d``: an
encoded chunk, ``end``: the outcome, last); ``<prefix>stop:<chat id>`` the stop flag and channel.

Connections: each worker process (each event loop) listens for stops on one pub/sub connection
(``PSUBSCRIBE <prefix>stop:*``) shared by all its running streams; the others are pooled, one per
command in flight (a resumer holds one for its blocking read).

Redis is never on the critical path of the connected client: an error there is logged once, the
stream goes on without the store, and a resume answers 204.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from .conf import stream_settings

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponseBase

    from .protocols import StreamProtocol

logger = logging.getLogger("django_bedrock_stream")

PREFIX = "bedrock-stream:"
#: Field names of a stream entry.
DATA, END, BEGIN = "d", "end", "begin"
#: Seconds without a chunk after which a running stream is given up (its runner died or hangs), when
#: ``RESUME_TTL`` is shorter: a busy worker's event loop may stall for seconds, and a stream expired
#: under a live runner would lose its start.
RUNNING_TTL_FLOOR = 60
#: The errors that mean "Redis is not there" (redis-py's, and the sockets' below them).
try:
    from redis.exceptions import RedisError

    REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
except ImportError:  # pragma: no cover - the [redis] extra is not installed
    REDIS_ERRORS = (OSError, asyncio.TimeoutError)


def disconnect_policy() -> str:
    """``"cancel"`` or ``"continue"``: what a chat stream does when its client leaves."""
    value = stream_settings.DISCONNECT
    if value is None:
        return "continue" if stream_settings.RESUMABLE else "cancel"
    return str(value)


class StreamStore:
    """The Redis side of resumable streams and stop, on redis-py's asyncio client.

    A redis-py asyncio client belongs to the event loop that made its connections, so one client is
    kept per loop (a worker's loop, or a test's).
    """

    def __init__(self, url: str, *, prefix: str = PREFIX, ttl: int = 600, maxlen: int = 10_000) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl = int(ttl)
        #: How long a running stream (and its running marker) lives without a new chunk: at least
        #: :data:`RUNNING_TTL_FLOOR`, so a short ``ttl`` never expires a stream whose runner is only slow.
        self.running_ttl = max(self.ttl, RUNNING_TTL_FLOOR)
        self.maxlen = int(maxlen)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _StopListener] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def client(self) -> Any:
        """This loop's ``redis.asyncio.Redis``; short timeouts, so a Redis gone away fails fast."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(
                self.url,
                socket_connect_timeout=2,
                socket_timeout=5,
                health_check_interval=30,
                max_connections=MAX_CONNECTIONS,
            )
            self._clients[loop] = client
        return client

    def running_key(self, chat_id: str) -> str:
        return f"{self.prefix}running:{chat_id}"

    def stop_key(self, chat_id: str) -> str:
        return f"{self.prefix}stop:{chat_id}"

    # -- writing ------------------------------------------------------------------------------------
    async def start(self, chat_id: str, *, clear_stop: bool = True) -> str:
        """A new stream key for the chat, marked as its running stream (for ``RESUME_TTL`` at most: a
        runner that died leaves no marker for longer); clears a stop flag left by an earlier stream,
        unless the turn did so already (``clear_stop=False``: the flag is then a stop of this one)."""
        stream_key = f"{self.prefix}stream:{chat_id}:{secrets.token_hex(8)}"
        async with self.client.pipeline(transaction=True) as pipe:
            _start_commands(self, pipe, chat_id, stream_key, clear_stop)
            await pipe.execute()
        return stream_key

    async def append(self, stream_key: str, chunks: list[str], chat_id: str | None = None) -> None:
        """One entry for these chunks (what arrived in one network read), capped at ``maxlen`` entries
        (a longer stream loses its start: keep it above a long answer's number of reads). With the
        ``chat_id``, its running marker lives on for ``ttl`` too."""
        if not chunks:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            _append_commands(self, pipe, stream_key, "".join(chunks), chat_id)
            await pipe.execute()

    async def finish(self, stream_key: str, chat_id: str | None = None, status: str = "completed") -> None:
        """The end marker; the stream then expires after the TTL. Clears the chat's running marker if
        it still names this stream."""
        async with self.client.pipeline(transaction=False) as pipe:
            _finish_commands(self, pipe, stream_key, status)
            await pipe.execute()
        if chat_id is not None:
            # Compare-and-delete: a newer stream of the same chat keeps its marker.
            await self.client.eval(_DELETE_IF_EQUAL, 1, self.running_key(chat_id), stream_key)

    # -- reading ------------------------------------------------------------------------------------
    async def running(self, chat_id: str) -> str | None:
        """The stream key of the chat's running stream, or None."""
        value = await self.client.get(self.running_key(chat_id))
        return value.decode() if isinstance(value, bytes) else value

    async def follow(
        self, stream_key: str, block_seconds: float | None = 15, first: Any = None
    ) -> AsyncIterator[str]:
        """Every chunk from the start, then the live ones until the end marker (``XREAD BLOCK``: no
        polling). Yields ``""`` after ``block_seconds`` without news (the caller's keep-alive), and
        ends when the stream is gone (expired, or its runner died and the TTL passed). ``first``: the
        reply of an ``XREAD`` from the start already made (:func:`resume` decides 200 or 204 on it)."""
        last = "0-0"
        block = max(1, int((block_seconds or 15) * 1000))
        client = self.client
        while True:
            reply, first = first or await client.xread({stream_key: last}, count=1000, block=block), None
            if not reply:
                if not await client.exists(stream_key):
                    return
                yield ""
                continue
            for _key, entries in reply:
                for entry_id, fields in entries:
                    last = entry_id
                    if END.encode() in fields:
                        return
                    data = fields.get(DATA.encode())
                    if data:
                        yield data.decode()

    # -- stop ---------------------------------------------------------------------------------------
    async def request_stop(self, chat_id: str) -> int:
        """Ask the chat's runner to stop, wherever it runs: a flag (read by a runner not subscribed
        yet, and by WSGI runners at their next read) and a message on the chat's channel, which every
        worker's listener hears; returns 1 when the chat has a running stream, else 0."""
        async with self.client.pipeline(transaction=True) as pipe:
            _stop_commands(self, pipe, chat_id)
            _ok, _heard, running = await pipe.execute()
        return int(running)

    async def wait_stop(self, chat_id: str) -> None:
        """Return when a stop is requested for the chat (pub/sub, so it arrives within milliseconds),
        through this loop's one listener."""
        loop = asyncio.get_running_loop()
        listener = self._listeners.get(loop)
        if listener is None:
            listener = self._listeners[loop] = _StopListener(self)
        await listener.wait(chat_id)

    # -- maintenance --------------------------------------------------------------------------------
    async def reap(self) -> int:
        """Delete the streams no runner will end (no end marker, and not the running stream of their
        chat, whose marker expires with its runner); returns how many."""
        client = self.client
        removed = 0
        async for raw in client.scan_iter(match=f"{self.prefix}stream:*", count=500):
            key = raw.decode()
            chat_id = key[len(self.prefix) + len("stream:"):].rsplit(":", 1)[0]
            last = await client.xrevrange(key, count=1)
            if last and END.encode() in last[0][1]:
                continue  # finished: expires with its TTL
            if await self.running(chat_id) == key:
                continue  # its runner is alive (or died less than the TTL ago)
            removed += await client.delete(key)
        return removed

    async def aclose(self) -> None:
        listener = self._listeners.pop(asyncio.get_running_loop(), None)
        if listener is not None:
            await listener.aclose()
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await (client.aclose() if hasattr(client, "aclose") else client.close())  # redis-py < 5.0.1: close()


#: The most connections of a store's pool per event loop: one per command in flight, so every running
#: stream's append and every resumer's blocking read at once (redis-py >= 6 caps a pool at 100 by
#: default, which a worker's 100th concurrent stream would hit: "Too many connections").
MAX_CONNECTIONS = 10_000


class _StopListener:
    """A loop's one pub/sub connection for stops, shared by the streams it runs: ``PSUBSCRIBE`` to
    every chat's stop channel, each message handed to the waiters of its chat. A Redis error fails the
    waiters of the moment (each logs it and can then be stopped on its own worker only); the next
    wait connects again."""

    def __init__(self, store: StreamStore) -> None:
        self.store = store
        self.waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Future[None] | None = None

    async def wait(self, chat_id: str) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(chat_id, set()).add(waiter)
        try:
            if self._task is None or self._task.done():
                self._subscribed = asyncio.get_running_loop().create_future()
                self._subscribed.add_done_callback(_retrieve)  # (when its waiter was cancelled meanwhile)
                self._task = asyncio.ensure_future(self._listen(self._subscribed))
            assert self._subscribed is not None
            await asyncio.shield(self._subscribed)  # from here on no message of the chat is missed
            if await self.store.client.exists(self.store.stop_key(chat_id)):
                return  # requested before that
            await waiter
        finally:
            waiters = self.waiters.get(chat_id, set())
            waiters.discard(waiter)
            if not waiters:
                self.waiters.pop(chat_id, None)

    async def _listen(self, subscribed: asyncio.Future[None]) -> None:
        channel_prefix = self.store.stop_key("")
        pubsub = self.store.client.pubsub()
        error: BaseException = ConnectionError("the stop listener was closed")
        try:
            await pubsub.psubscribe(re.sub(r"([*?\[\]\\])", r"\\\1", channel_prefix) + "*")
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                if message.get("type") == "psubscribe" and not subscribed.done():
                    subscribed.set_result(None)
                elif message.get("type") == "pmessage":
                    channel = message["channel"]
                    chat_id = (channel.decode() if isinstance(channel, bytes) else channel)[len(channel_prefix):]
                    for waiter in self.waiters.get(chat_id, ()):
                        if not waiter.done():
                            waiter.set_result(None)
        except REDIS_ERRORS as err:
            error = err
        finally:
            for future in [subscribed, *(w for ws in self.waiters.values() for w in ws)]:
                if not future.done():
                    future.set_exception(error)
            try:
                await asyncio.shield(pubsub.aclose() if hasattr(pubsub, "aclose") else pubsub.reset())
            except REDIS_ERRORS:
                pass

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _start_commands(store: StreamStore, pipe: Any, chat_id: str, stream_key: str, clear_stop: bool) -> None:
    """Make the stream (its first entry carries no chunk), mark it as the chat's running stream and
    clear an earlier stream's stop flag, unless the turn cleared it when it began
    (:func:`clear_stop_sync`): a stop sent since is this stream's (sync or async pipe)."""
    pipe.xadd(stream_key, {BEGIN: "1"})
    pipe.expire(stream_key, store.running_ttl)
    pipe.set(store.running_key(chat_id), stream_key, ex=store.running_ttl)
    if clear_stop:
        pipe.delete(store.stop_key(chat_id))


def _append_commands(store: StreamStore, pipe: Any, stream_key: str, data: str, chat_id: str | None) -> None:
    """One entry, and the running stream's (and marker's) life extended. ``NOMKSTREAM``: a stream that
    expired under a stalled runner is not made anew from its middle, which a resumer would replay as
    if it were the whole answer."""
    pipe.xadd(stream_key, {DATA: data}, maxlen=store.maxlen, approximate=False, nomkstream=True)
    pipe.expire(stream_key, store.running_ttl)
    if chat_id is not None:
        pipe.expire(store.running_key(chat_id), store.running_ttl)


def _finish_commands(store: StreamStore, pipe: Any, stream_key: str, status: str) -> None:
    """The end marker; from now on the stream is kept ``ttl`` seconds for late resumers."""
    pipe.xadd(stream_key, {END: status}, maxlen=store.maxlen, approximate=False, nomkstream=True)
    pipe.expire(stream_key, store.ttl)


def _stop_commands(store: StreamStore, pipe: Any, chat_id: str) -> None:
    """The stop flag, the message, and whether the chat has a running stream (sync or async pipe)."""
    key = store.stop_key(chat_id)
    pipe.set(key, "1", ex=store.ttl)
    pipe.publish(key, "stop")
    pipe.exists(store.running_key(chat_id))


_DELETE_IF_EQUAL = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

_stores: dict[tuple[str, int, int], StreamStore] = {}


def get_store() -> StreamStore | None:
    """The store of the settings, or None when ``RESUMABLE`` is off (or ``REDIS_URL`` unset)."""
    if not stream_settings.RESUMABLE or not stream_settings.REDIS_URL:
        return None
    key = (str(stream_settings.REDIS_URL), int(stream_settings.RESUME_TTL), int(stream_settings.RESUME_MAXLEN))
    store = _stores.get(key)
    if store is None:
        store = _stores[key] = StreamStore(key[0], ttl=key[1], maxlen=key[2])
    return store


class Tee:
    """Copies a runner's encoded chunks to the store from a writer task of its own: what piled up
    while one ``XADD`` was in flight goes in the next, so Redis never slows the connected client."""

    def __init__(self, store: StreamStore, chat_id: str, clear_stop: bool = True) -> None:
        self.store = store
        self.chat_id = chat_id
        self.clear_stop = clear_stop  # see StreamStore.start
        self.stream_key: str | None = None
        self.broken = False
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        start = asyncio.ensure_future(self.store.start(self.chat_id, clear_stop=self.clear_stop))
        try:
            try:
                self.stream_key = await asyncio.shield(start)
            except asyncio.CancelledError:
                # A stop during the start: let the start finish, so that close() ends the stream it
                # began (its end marker, its running marker cleared) rather than leave it to resumers.
                with contextlib.suppress(*REDIS_ERRORS):
                    self.stream_key = await start
                raise
            finally:
                if self.stream_key is not None:
                    self._writer = asyncio.ensure_future(self._write_loop())
        except REDIS_ERRORS as err:
            self._broke(err)

    def write(self, data: str) -> None:
        if self.broken or self._writer is None or not data:
            return
        self._pending.append(data)
        self._wake.set()

    async def _write_loop(self) -> None:
        assert self.stream_key is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            chunks, self._pending = self._pending, []
            try:
                await self.store.append(self.stream_key, chunks, self.chat_id)
            except REDIS_ERRORS as err:
                self._broke(err)
                return
            if self._closing and not self._pending:
                return

    async def close(self, status: str) -> None:
        """Flush, then the end marker (a few seconds at most: the runner's end must not wait on Redis)."""
        if self._writer is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), 10)
            if not self.broken:
                assert self.stream_key is not None
                await asyncio.wait_for(self.store.finish(self.stream_key, self.chat_id, status), 10)
        except REDIS_ERRORS as err:
            self._broke(err)

    def _broke(self, err: BaseException) -> None:
        if not self.broken:
            self.broken = True
            logger.warning("Redis unavailable, chat %s is not resumable from here on: %r", self.chat_id, err)


# -- stop, wherever the stream runs ------------------------------------------------------------------
#: chat id -> the stop callbacks of this process's running streams of that chat (any thread).
_local: dict[str, list[Callable[[], None]]] = {}
_local_lock = threading.Lock()


def register_local(chat_id: str, stop: Callable[[], None]) -> Callable[[], None]:
    """Let :func:`request_stop` reach a stream of this process; returns the unregister function."""
    with _local_lock:
        _local.setdefault(chat_id, []).append(stop)

    def unregister() -> None:
        with _local_lock:
            stops = _local.get(chat_id, [])
            if stop in stops:
                stops.remove(stop)
            if not stops:
                _local.pop(chat_id, None)

    return unregister


def _stop_locally(chat_id: str) -> bool:
    """Stop the chat's streams running in this process; whether there was one."""
    with _local_lock:
        stops = list(_local.get(chat_id, ()))
    for stop in stops:
        stop()
    return bool(stops)


async def request_stop(chat_id: str) -> bool:
    """Stop the chat's running stream: in this process directly, on any worker through Redis when
    ``RESUMABLE``. Whether a runner was reached (Redis errors are logged and count as not)."""
    stopped = _stop_locally(chat_id)
    store = get_store()
    if store is None:
        return stopped
    try:
        heard = await store.request_stop(chat_id)
    except REDIS_ERRORS as err:
        logger.warning("Redis unavailable, the stop of chat %s reached this worker only: %r", chat_id, err)
        return stopped
    return stopped or heard > 0


async def resume(chat_id: str) -> AsyncIterator[str] | None:
    """The chunks of the chat's running (or just ended, within the TTL) stream to replay and follow,
    or None when there is none (the resume endpoint then answers 204). Redis errors: None, logged."""
    store = get_store()
    if store is None:
        return None
    try:
        stream_key = await store.running(chat_id)
    except REDIS_ERRORS as err:
        logger.warning("Redis unavailable, chat %s cannot be resumed: %r", chat_id, err)
        return None
    if stream_key is None:
        return None
    try:
        # What there is so far, read now: a started stream holds at least its start marker, so an empty
        # reply means its running marker outlived it (the stream expired, or its worker died before
        # clearing the marker), and there is nothing to replay: 204, not an empty 200.
        first = await store.client.xread({stream_key: "0-0"}, count=1000)
    except REDIS_ERRORS as err:
        logger.warning("Redis unavailable, chat %s cannot be resumed: %r", chat_id, err)
        return None
    if not first:
        return None
    return _guarded(store.follow(stream_key, stream_settings.KEEPALIVE_SECONDS or None, first), chat_id)


async def _guarded(chunks: AsyncIterator[str], chat_id: str) -> AsyncIterator[str]:
    """A resume that loses Redis midway ends (the client reconnects or reloads) with a warning."""
    try:
        async for chunk in chunks:
            yield chunk
    except REDIS_ERRORS as err:
        logger.warning("Redis unavailable while resuming chat %s: %r", chat_id, err)


_sync_clients: dict[str, Any] = {}


def sync_client(store: StreamStore) -> Any:
    """The process's ``redis.Redis`` for the store (thread-safe: one connection pool for all threads)."""
    client = _sync_clients.get(store.url)
    if client is None:
        import redis

        client = _sync_clients[store.url] = redis.Redis.from_url(store.url, socket_connect_timeout=2, socket_timeout=30)
    return client


class SyncTee:
    """:class:`Tee` for the WSGI body, on redis-py's sync client: one ``XADD`` per network read, in
    the request's thread (no thread of its own). The same round trip reads the stop flag, so a stop
    from another worker ends a WSGI stream at its next read (a stop in this process closes the
    upstream at once)."""

    def __init__(self, store: StreamStore, chat_id: str, clear_stop: bool = True) -> None:
        self.store = store
        self.chat_id = chat_id
        self.clear_stop = clear_stop  # see StreamStore.start
        self.stream_key: str | None = None
        self.broken = False
        self.client = sync_client(store)

    def open(self) -> None:
        store, chat_id = self.store, self.chat_id
        stream_key = f"{store.prefix}stream:{chat_id}:{secrets.token_hex(8)}"
        try:
            with self.client.pipeline(transaction=True) as pipe:
                _start_commands(store, pipe, chat_id, stream_key, self.clear_stop)
                pipe.execute()
        except REDIS_ERRORS as err:
            self._broke(err)
            return
        self.stream_key = stream_key

    def write(self, data: str) -> bool:
        """Append ``data``; whether a stop of the chat was requested meanwhile."""
        if self.broken or self.stream_key is None or not data:
            return False
        store = self.store
        try:
            with self.client.pipeline(transaction=False) as pipe:
                _append_commands(store, pipe, self.stream_key, data, self.chat_id)
                pipe.exists(store.stop_key(self.chat_id))
                *_, stopped = pipe.execute()
        except REDIS_ERRORS as err:
            self._broke(err)
            return False
        return bool(stopped)

    def close(self, status: str) -> None:
        if self.broken or self.stream_key is None:
            return
        store = self.store
        try:
            with self.client.pipeline(transaction=False) as pipe:
                _finish_commands(store, pipe, self.stream_key, status)
                pipe.execute()
            self.client.eval(_DELETE_IF_EQUAL, 1, store.running_key(self.chat_id), self.stream_key)
        except REDIS_ERRORS as err:
            self._broke(err)

    def _broke(self, err: BaseException) -> None:
        if not self.broken:
            self.broken = True
            logger.warning("Redis unavailable, chat %s is not resumable from here on: %r", self.chat_id, err)


async def resume_response(chat_id: str, protocol: type[StreamProtocol] | None = None) -> HttpResponseBase:
    """The answer to a resume request (``GET chat/<id>/stream/``, ASGI): the running stream of the
    chat replayed and followed in ``protocol`` (``ui`` by default: the chunks are the ones its runner
    encoded), with keep-alive comments while it is silent; 204 when nothing runs (or Redis is gone)."""
    from django.http import HttpResponse, StreamingHttpResponse

    from .protocols import UIMessageStreamProtocol
    from .responses import STREAM_HEADERS

    chunks = await resume(chat_id)
    if chunks is None:
        return HttpResponse(status=204)
    protocol_class = protocol or UIMessageStreamProtocol
    ping = protocol_class().ping()

    async def body() -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if chunk or ping:
                yield (chunk or ping).encode()

    return StreamingHttpResponse(
        body(),
        content_type=protocol_class.content_type,
        headers={**STREAM_HEADERS, **protocol_class().headers()},
    )


# -- the same for sync views (WSGI) ------------------------------------------------------------------
def request_stop_sync(chat_id: str) -> bool:
    """:func:`request_stop` for sync code (a WSGI view): no event loop made for it."""
    stopped = _stop_locally(chat_id)
    store = get_store()
    if store is None:
        return stopped
    try:
        with sync_client(store).pipeline(transaction=True) as pipe:
            _stop_commands(store, pipe, chat_id)
            _ok, _heard, running = pipe.execute()
    except REDIS_ERRORS as err:
        logger.warning("Redis unavailable, the stop of chat %s reached this worker only: %r", chat_id, err)
        return stopped
    return stopped or bool(running)


def clear_stop_sync(chat_id: str, store: StreamStore | None = None) -> bool:
    """Clear an earlier stream's stop flag of the chat, as a new turn begins (before Bedrock is
    called), so that only a stop sent from then on stops the new stream. Redis errors are logged: the
    turn goes on (stops then reach this worker only, as during any outage). ``store``: the settings'.
    Whether it was cleared (else the stream's start clears it, as ever)."""
    store = store or get_store()
    if store is None:
        return False
    try:
        sync_client(store).delete(store.stop_key(chat_id))
    except REDIS_ERRORS as err:
        logger.warning("Redis unavailable, could not clear the stop flag of chat %s: %r", chat_id, err)
        return False
    return True


def resume_response_sync(chat_id: str, protocol: type[StreamProtocol] | None = None) -> HttpResponseBase:
    """:func:`resume_response` for WSGI: a sync body (``XREAD BLOCK`` in the request's thread), which
    Django streams under WSGI, where it would buffer an async one to its end."""
    from django.http import HttpResponse, StreamingHttpResponse

    from .protocols import UIMessageStreamProtocol
    from .responses import STREAM_HEADERS

    store = get_store()
    if store is None:
        return HttpResponse(status=204)
    client = sync_client(store)
    try:
        stream_key = client.get(store.running_key(chat_id))
    except REDIS_ERRORS as err:
        logger.warning("Redis unavailable, chat %s cannot be resumed: %r", chat_id, err)
        return HttpResponse(status=204)
    if stream_key is None:
        return HttpResponse(status=204)
    try:
        first = client.xread({stream_key: "0-0"}, count=1000)  # as in resume(): none means it is gone
    except REDIS_ERRORS as err:
        logger.warning("Redis unavailable, chat %s cannot be resumed: %r", chat_id, err)
        return HttpResponse(status=204)
    if not first:
        return HttpResponse(status=204)
    protocol_class = protocol or UIMessageStreamProtocol
    ping = protocol_class().ping()
    block = max(1, min(20_000, int(float(stream_settings.KEEPALIVE_SECONDS or 15) * 1000)))  # < the socket timeout

    def body() -> Iterator[bytes]:
        last, pending = "0-0", first
        try:
            while True:
                reply, pending = pending or client.xread({stream_key: last}, count=1000, block=block), None
                if not reply:
                    if not client.exists(stream_key):
                        return
                    if ping:
                        yield ping.encode()
                    continue
                for _key, entries in reply:
                    for entry_id, fields in entries:
                        last = entry_id
                        if END.encode() in fields:
                            return
                        if fields.get(DATA.encode()):
                            yield fields[DATA.encode()]
        except REDIS_ERRORS as err:
            logger.warning("Redis unavailable while resuming chat %s: %r", chat_id, err)

    return StreamingHttpResponse(
        body(), content_type=protocol_class.content_type, headers={**STREAM_HEADERS, **protocol_class().headers()}
    )


def resume_response_for(
    request: HttpRequest, chat_id: str, protocol: type[StreamProtocol] | None = None
) -> HttpResponseBase:
    """The resume answer from a sync view, with the body flavour the server streams: async under
    ASGI (:func:`resume_response`, on the server's loop), sync under WSGI (:func:`resume_response_sync`)."""
    from asgiref.sync import async_to_sync
    from django.core.handlers.asgi import ASGIRequest

    if isinstance(getattr(request, "_request", request), ASGIRequest):
        return async_to_sync(resume_response)(chat_id, protocol)
    return resume_response_sync(chat_id, protocol)
