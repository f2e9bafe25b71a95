"""``StreamRunner``: drives one :class:`BedrockStream` through a protocol encoder and the signals, as a
sync body (WSGI) or an async body (ASGI). It knows no model: it records the outcome on the
``completion`` it is given (``record_end``) and sends the signals; storing rows is the job of the
persistence receivers (``receivers.py``).

Every path ends in exactly one of ``completed`` / ``failed`` / ``cancelled``, settled once: the
signals for it are sent, then ``stream_finished``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import itertools
import logging
import math
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpRequest

from . import resumable, signals
from .conf import stream_settings
from .exceptions import BedrockStreamError, ResponseDiscarded, wrap_botocore_error
from .modelids import public_model_id
from .parts import Part, TextDelta
from .protocols import StreamProtocol
from .streams import BedrockStream

logger = logging.getLogger("django_bedrock_stream")

#: How a stream ends (the ``status`` of ``stream_finished``, and of the row).
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"


#: Pauses before listening for stops again after a Redis error (the last one repeats).
STOP_RETRY_SECONDS = (0.2, 1.0, 2.0, 5.0)


def send(signal: Any, sender: type, **kwargs: Any) -> None:
    signal.send_robust(sender, **kwargs)


async def asend_all(
    sends: list[tuple[Any, dict[str, Any]]], sender: type, then: Callable[[], Any] | None = None
) -> None:
    """Send these signals in order, then call ``then`` (sync), in one hop to the request's thread.

    ``send_robust`` there runs sync receivers as ``asend_robust`` would (and async ones through
    ``async_to_sync``), but one ``sync_to_async`` hop serves every signal of the batch instead of
    one per signal. A signal nobody listens to is not sent at all (the built-in persistence
    receivers are connected only while ``PERSIST`` is on), so with nothing to do there is no hop.
    """
    live = [(signal, kwargs) for signal, kwargs in sends if signal.has_listeners(sender)]
    if not live and then is None:
        return

    def run() -> None:
        for signal, kwargs in live:
            signal.send_robust(sender, **kwargs)
        if then is not None:
            then()

    await sync_to_async(run)()


class StreamRunner:
    def __init__(
        self,
        *,
        sender: type,
        request: HttpRequest,
        stream: BedrockStream,
        completion: Any,
        protocol: StreamProtocol,
        started_at: float,
    ) -> None:
        self.sender = sender
        self.request = request
        self.stream = stream
        self.completion = completion
        self.protocol = protocol
        self.started_at = started_at
        self.settled = False
        self.stream.model_id = completion.model_id
        #: The loop of an ASGI body, where its upstream stream must be closed.
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._state = "new"  # -> "read" (the server started the body) or "abandoned" (it never will)
        #: The chat this stream answers (set by the chat view): resumable, stoppable, DISCONNECT applies.
        self.chat_id: str | None = None
        self.status: str | None = None  # how it ended, once settled
        self.stopped = False  # ended by a stop request

    # -- the one place where a stream's end is decided ------------------------------------------
    def settle(self, status: str, error: BedrockStreamError | None = None) -> list[tuple[Any, dict[str, Any]]]:
        """Record the outcome on the completion and return the signals to send, in order. Idempotent."""
        if self.settled:
            return []
        self.settled = True
        self.status = status
        stream, completion = self.stream, self.completion
        text, usage, estimated = stream.text, stream.usage, False
        if status != COMPLETED and not usage["output_tokens"] and text:
            usage, estimated = estimate_usage(completion.messages, text, usage), True
        parts = {**completion.parts, **stream.summary()}  # keeps what the request recorded (attachments)
        ttft = None if stream.first_token_at is None else timedelta(seconds=stream.first_token_at - self.started_at)
        completion.record_end(
            status=status,
            text=text,
            stop_reason=stream.stop_reason or "",
            usage=usage,
            usage_estimated=estimated,
            parts=parts,
            error=error.message if error is not None else "",
            error_code=error.code if error is not None else "",
            time_to_first_token=ttft,
        )
        common = {"request": self.request, "model_id": completion.model_id, "text": text}
        if status == COMPLETED:
            completed = {"usage": usage, "stop_reason": stream.stop_reason, "parts": parts}
            first = (signals.stream_completed, {**common, **completed})
        elif status == FAILED:
            assert error is not None
            first = (signals.stream_failed, {**common, "error": error})
        else:
            first = (signals.stream_cancelled, common)
        first[1]["completion"] = completion
        return [first, (signals.stream_finished, {**common, "status": status, "completion": completion})]

    def _tokens_listened(self) -> bool:
        return signals.token_received.has_listeners(self.sender)

    def _send_token(self, text: str) -> None:
        send(signals.token_received, self.sender, request=self.request, token=text)

    async def _asend_token(self, text: str) -> None:
        await asend_all([(signals.token_received, {"request": self.request, "token": text})], self.sender)

    # -- WSGI -----------------------------------------------------------------------------------
    def sync_body(self) -> Generator[bytes, None, None]:
        if not self._begin():
            return
        release_connections()  # what middleware opened after the view (a new session saved): not held
        if self.chat_id is None:
            for data in self._produce_sync():
                yield data.encode()
            return
        yield from self._chat_sync_body(self.chat_id)

    def _produce_sync(self) -> Generator[str, None, None]:
        protocol, stream = self.protocol, self.stream
        encode = self._encode
        listened = self._tokens_listened()
        outcome: str = CANCELLED
        error: BedrockStreamError | None = None
        try:
            head = protocol.start()
            if head:
                yield head
            stopped_early = self.stopped  # stopped before the first read: nothing is read
            try:
                # One write per network read: parts that arrived together leave together.
                for parts in () if stopped_early else stream.iter_part_batches(self._send_token if listened else None):
                    data = encode(parts)
                    if data:
                        yield data
            except BedrockStreamError as err:
                # A stop closes the upstream under the read: that read's error is the stop.
                outcome, error = (CANCELLED, None) if self.stopped else (FAILED, err)
            else:
                outcome = CANCELLED if stopped_early else COMPLETED
            tail = self._end_sync(outcome, error)
            if tail:
                yield tail
        finally:
            if not self.settled:  # closed by the server (client gone) or an unexpected error
                stream.close()
                self._end_sync(CANCELLED, None)

    def _chat_sync_body(self, chat_id: str) -> Generator[bytes, None, None]:
        """A chat stream under WSGI: teed to the store, stoppable, and with ``DISCONNECT = "continue"``
        read to its end after the client left (in the request's thread, which it holds until then)."""
        store = resumable.get_store()
        tee = resumable.SyncTee(store, chat_id, not self.stop_flag_cleared()) if store is not None else None

        def stop() -> None:  # any thread: closing the upstream wakes the blocked read
            if not self.settled:
                self.stopped = True
                self.stream.close()

        unregister = resumable.register_local(chat_id, stop)
        if self.stop_requested_early():
            stop()
        if tee is not None:
            tee.open()
        inner = self._produce_sync()
        try:
            for data in inner:
                if tee is not None and tee.write(data):
                    stop()
                try:
                    yield data.encode()
                except GeneratorExit:
                    if resumable.disconnect_policy() != "continue":
                        raise
                    for data in inner:  # the client is gone: finish the answer for the store
                        if tee is not None and tee.write(data):
                            stop()
                    return
            abort = self.protocol.abort() if self.stopped and self.status == CANCELLED else ""
            if abort:
                if tee is not None:
                    tee.write(abort)
                yield abort.encode()
        finally:
            inner.close()
            unregister()
            if tee is not None:
                tee.close(self.status or CANCELLED)

    def _end_sync(self, status: str, error: BedrockStreamError | None) -> str:
        for signal, kwargs in self.settle(status, error):
            send(signal, self.sender, **kwargs)
        return self._tail(status, error)

    # -- ASGI -----------------------------------------------------------------------------------
    async def async_body(self) -> AsyncIterator[bytes]:
        if not self._begin():
            return
        if saves_session_after_view(self.request):
            await sync_to_async(release_connections)()  # on the thread that saved it: not held for the stream
        keepalive = float(stream_settings.KEEPALIVE_SECONDS or 0) if self.protocol.ping() else 0.0
        if self.chat_id is None and not keepalive:
            async for data in self._produce():
                yield data.encode()
            return
        async for chunk in self._relay(keepalive):
            yield chunk

    async def _produce(self) -> AsyncIterator[str]:
        protocol, stream = self.protocol, self.stream
        encode = self._encode
        listened = self._tokens_listened()
        outcome: str = CANCELLED
        error: BedrockStreamError | None = None
        try:
            head = protocol.start()
            if head:
                yield head
            stopped_early = self.stopped  # stopped before the first read: nothing is read
            try:
                if not stopped_early:
                    async for parts in stream.aiter_part_batches(self._asend_token if listened else None):
                        data = encode(parts)
                        if data:
                            yield data
            except BedrockStreamError as err:
                outcome, error = FAILED, err
            else:
                outcome = CANCELLED if stopped_early else COMPLETED
            # Settled now, before anything is awaited: a stop arriving from here on finds the stream
            # settled and leaves it alone, so its tail (the finish part) always follows. (Settled in
            # the end task instead, a stop landing before that task's first step cancelled this one
            # and the stream ended, stored as completed, without its finish part.)
            sends = self.settle(outcome, error)
            # The end's connections are given back in its own hop: a chat stream that outlived its
            # client (DISCONNECT "continue") ends after Django's request_finished closed them.
            end = asyncio.ensure_future(self._send_end(sends, outcome, error, then=release_connections))
            try:
                tail = await asyncio.shield(end)
            except asyncio.CancelledError:
                # The client left while the end signals ran (Django cancels us): they must all still
                # run -- stream_finished stores the row -- and before Django ends the request.
                await asyncio.shield(end)
                raise
            if tail:
                yield tail
        finally:
            await self._end_unsettled()  # Django cancelled us (client gone), a stop, or an unexpected error

    async def _relay(self, keepalive: float) -> AsyncIterator[bytes]:
        """The body read from a queue that a task of its own (:meth:`_pump`) fills: a keep-alive
        comment after ``keepalive`` seconds of silence, and a model that may outlive its client
        (``DISCONNECT = "continue"`` for a chat stream) or be stopped from any worker."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        pump = asyncio.ensure_future(self._pump(queue))
        try:
            while True:
                try:
                    data = await (asyncio.wait_for(queue.get(), keepalive) if keepalive else queue.get())
                except asyncio.TimeoutError:
                    ping = self.protocol.ping()
                    if ping:
                        yield ping.encode()
                    continue
                if data is None:
                    return
                chunks = [data]
                ended = False
                while not ended and not queue.empty():  # what piled up while the client was slow: one write
                    more = queue.get_nowait()
                    ended = more is None
                    if more is not None:
                        chunks.append(more)
                yield "".join(chunks).encode()
                if ended:
                    return
        finally:
            if not pump.done():
                if self.chat_id is not None and resumable.disconnect_policy() == "continue":
                    _background.add(pump)  # the answer finishes, is stored, and stays resumable
                    pump.add_done_callback(_background.discard)
                else:
                    pump.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(pump)

    async def _pump(self, queue: asyncio.Queue[str | None]) -> None:
        """Runs :meth:`_produce` into ``queue`` (``None`` last), teeing each chunk of a chat stream to
        the resumable store and watching for a stop of the chat from any worker."""
        tee: resumable.Tee | None = None
        watcher: asyncio.Future[None] | None = None
        unregister: Callable[[], None] | None = None
        try:
            if self.chat_id is not None:
                task = asyncio.current_task()
                assert task is not None
                loop = asyncio.get_running_loop()

                def stop() -> None:  # any thread
                    loop.call_soon_threadsafe(self.stop, task)

                unregister = resumable.register_local(self.chat_id, stop)
                if self.stop_requested_early():  # as under WSGI: nothing is read (bytes Bedrock already
                    self.stopped = True  # sent may be buffered: a cancel would land only after reading them)
                    self.stream.close()
                store = resumable.get_store()
                if store is not None:
                    tee = resumable.Tee(store, self.chat_id, not self.stop_flag_cleared())
                    await tee.open()  # a stop can land here, before anything is read
                    watcher = asyncio.ensure_future(self._watch_stop(store, task))
            async for data in self._produce():
                queue.put_nowait(data)
                if tee is not None:
                    tee.write(data)
        finally:
            await self._end_unsettled()  # stopped before _produce ran (its own finally ends every other case)
            if self.stopped and self.status == CANCELLED:
                abort = self.protocol.abort()  # resumers (and the client) learn it was stopped
                queue.put_nowait(abort)
                if tee is not None:
                    tee.write(abort)
            queue.put_nowait(None)
            if watcher is not None:
                watcher.cancel()
            if unregister is not None:
                unregister()
            if tee is not None:
                await asyncio.shield(tee.close(self.status or CANCELLED))

    async def _end_unsettled(self) -> None:
        """A stream that ended without settling (cancelled, stopped, or an unexpected error): close the
        upstream and settle it as cancelled, shielded so that a second cancel cannot skip the row."""
        if not self.settled:
            self.stream.close()
            await asyncio.shield(self._end_async(CANCELLED, None, then=release_connections))

    def stop_flag_cleared(self) -> bool:
        """Whether the chat's earlier stop flag in Redis was cleared when its turn began: the stream's
        start then leaves the flag, a stop of this stream sent while Bedrock had not answered yet."""
        return False

    def stop_requested_early(self) -> bool:
        """Whether a stop of the chat came before this runner could hear one (while Bedrock had not
        answered yet); called once the runner listens for stops itself."""
        return False

    def stop(self, task: asyncio.Future[Any]) -> None:
        """A stop request for this chat (on the loop): cancel the pump, which closes the upstream."""
        if not self.settled and not task.done():
            self.stopped = True
            task.cancel()

    async def _watch_stop(self, store: resumable.StreamStore, task: asyncio.Future[Any]) -> None:
        """Listen for a stop of the chat from any worker, for as long as the stream runs. When Redis
        fails (an outage, or a pooled connection an earlier outage left dead), listen again after a
        pause: the stop flag, checked on each new subscription, catches a stop sent meanwhile."""
        assert self.chat_id is not None
        failures = 0
        while True:
            try:
                await store.wait_stop(self.chat_id)
            except resumable.REDIS_ERRORS as err:
                if not failures:
                    logger.warning("Redis unavailable, chat %s can be stopped on this worker only until it is"
                                   " back: %r", self.chat_id, err)
                await asyncio.sleep(STOP_RETRY_SECONDS[min(failures, len(STOP_RETRY_SECONDS) - 1)])
                failures += 1
                continue
            self.stop(task)
            return

    async def _end_async(
        self, status: str, error: BedrockStreamError | None, then: Callable[[], Any] | None = None
    ) -> str:
        return await self._send_end(self.settle(status, error), status, error, then)

    async def _send_end(
        self, sends: list[tuple[Any, dict[str, Any]]], status: str, error: BedrockStreamError | None,
        then: Callable[[], Any] | None = None,
    ) -> str:
        """Send the signals of a settled stream (one hop) and return its tail."""
        await asend_all(sends, self.sender, then=then)
        return self._tail(status, error)

    def _encode(self, parts: list[Part]) -> str:
        """One write for a batch of parts: consecutive text joined into one delta."""
        protocol = self.protocol
        if len(parts) == 1 and type(parts[0]) is TextDelta:  # the usual batch: one token
            return protocol.delta(parts[0].text)
        out: list[str] = []
        texts: list[str] = []
        for part in parts:
            if type(part) is TextDelta:
                texts.append(part.text)
                continue
            if texts:
                out.append(protocol.delta("".join(texts)))
                texts = []
            out.append(protocol.part(part))
        if texts:
            out.append(protocol.delta("".join(texts)))
        return "".join(out)

    def finish_metadata(self) -> dict[str, Any]:
        """What the end of the stream tells the client besides the usage (``protocol.finish``)."""
        stream = self.stream
        return {
            "model_id": public_model_id(self.completion.model_id),
            "latency_ms": stream.latency_ms,
            "service_tier": stream.service_tier,
            "guardrail": stream.guardrail.action if stream.guardrail is not None else None,
        }

    def _tail(self, status: str, error: BedrockStreamError | None) -> str:
        if status == COMPLETED:
            stream = self.stream
            return self.protocol.finish(stream.stop_reason, stream.usage, self.finish_metadata())
        if status == FAILED and error is not None:
            logger.warning("Bedrock stream for %s failed: %s (%s)", self.completion.model_id, error.detail, error.code)
            return self.protocol.error(error.message)
        return ""

    def close_unstarted(self) -> None:
        """Response closed before its body was read: the client is gone, settle as cancelled. A body
        that was read settles itself (or, detached from its client, runs on: ``DISCONNECT``)."""
        with self._lock:
            if self.settled or self._state != "new":
                return
            self._state = "abandoned"
        self.stream.close()
        self._end_sync(CANCELLED, None)

    # -- a response nobody reads ------------------------------------------------------------------
    # Bedrock is called inside the view, but the row settles (and the upstream closes) only when the
    # server reads or closes the body. Django never closes a response that middleware threw away
    # (SessionMiddleware's 400 after a session was deleted, a 500 from a failed session save), so
    # Bedrock would generate the whole answer unread and the row would stay "streaming". The server
    # does close the response it sent instead, and with it the request (Django's handlers register
    # ``request.close`` on the final response): that is where an unread stream is abandoned. A
    # deadline for the server to start reading is the backstop (say, a client gone mid-middleware).
    def watch(self, request: HttpRequest) -> None:
        """Abandon this stream when ``request`` is closed, or after ``RESPONSE_START_TIMEOUT``,
        unless the server has started reading the body by then."""
        request = getattr(request, "_request", request)  # DRF's Request wraps Django's
        close_request = request.close

        def close() -> None:
            request.__dict__.pop("close", None)  # breaks the cycle request -> close -> runner -> request
            try:
                close_request()
            finally:
                self.abandon()

        request.close = close  # type: ignore[method-assign]
        _deadlines.add(float(stream_settings.RESPONSE_START_TIMEOUT), self)

    def _begin(self) -> bool:
        """The server started reading the body; False when the stream was abandoned first."""
        with self._lock:
            if self._state == "new":
                self._state = "read"
            return self._state == "read"

    def abandon(self) -> None:
        """Close the upstream and settle as ``cancelled`` unless the body was started. Any thread."""
        with self._lock:
            if self._state != "new" or self.settled:
                return
            self._state = "abandoned"
        logger.warning(
            "The response of a Bedrock stream for %s was never read (replaced by a middleware?): closing it",
            self.completion.model_id,
        )
        error = ResponseDiscarded(model_id=self.completion.model_id)
        if self.loop is not None and self.loop.is_running():
            try:
                self.loop.call_soon_threadsafe(self._abandon_on_loop, error)
                return
            except RuntimeError:  # the loop is closed: nothing async is left to close on it
                pass
        threading.Thread(target=self._abandon_in_thread, args=(error,), name="bedrock-stream-abandon").start()

    def _abandon_on_loop(self, error: BedrockStreamError) -> None:
        self.stream.close()  # an aiobotocore stream belongs to its loop
        task = asyncio.ensure_future(self._end_async(CANCELLED, error, then=release_connections))
        _background.add(task)
        task.add_done_callback(_background.discard)

    def _abandon_in_thread(self, error: BedrockStreamError) -> None:
        try:
            self.stream.close()
            self._end_sync(CANCELLED, error)
        finally:
            connections.close_all()  # this thread's own connections


_background: set[asyncio.Future[Any]] = set()
#: Django >= 4.1 can list only the connections this thread opened (cheaper than opening all).
_INITIALIZED_ONLY = "initialized_only" in inspect.signature(connections.all).parameters


class _Deadlines:
    """One daemon thread that abandons the streams whose response was not read in time.

    With one timeout for all, deadlines arrive in order: adding one is a heap push under a lock, and
    the thread is woken only when the heap was empty. It holds weak references, so a finished
    stream is not kept alive by it.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref[StreamRunner]]] = []
        self._ready = threading.Condition()
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, delay: float, runner: StreamRunner) -> None:
        order = next(self._order)
        with self._ready:
            heapq.heappush(self._heap, (time.monotonic() + delay, order, weakref.ref(runner)))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="bedrock-stream-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][1] == order:  # the new deadline comes first: wake the thread to wait less
                self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._heap:
                    self._ready.wait()
                due, _, ref = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._ready.wait(wait)
                    continue
                heapq.heappop(self._heap)
            runner = ref()
            if runner is not None:
                try:
                    runner.abandon()
                except Exception:  # the deadline thread must survive anything one stream does
                    logger.exception("Abandoning an unread Bedrock stream failed")


_deadlines = _Deadlines()

#: Characters per token assumed by :func:`estimate_usage`.
CHARS_PER_TOKEN = 4


def estimate_usage(messages: Sequence[Mapping[str, Any]], text: str, known: Mapping[str, int]) -> dict[str, int]:
    """Token counts for a stream that ended before Bedrock reported them: about four characters a
    token (the usual rule of thumb for these models), keeping any count that Bedrock did report."""
    def tokens(chars: int) -> int:
        return max(1, math.ceil(chars / CHARS_PER_TOKEN))

    input_chars = sum(len(str(message.get("content", ""))) for message in messages)
    return {
        "input_tokens": known["input_tokens"] or tokens(input_chars),
        "output_tokens": known["output_tokens"] or tokens(len(text)),
    }



class SyncBody:
    """The WSGI body: a plain iterator whose ``close()`` also covers a body never started."""

    def __init__(self, runner: StreamRunner) -> None:
        self.runner = runner
        self._iterator = runner.sync_body()

    def __iter__(self) -> Iterator[bytes]:
        return self._iterator

    def close(self) -> None:
        self._iterator.close()
        self.runner.close_unstarted()


class AsyncBody:
    """The ASGI body: only ``__aiter__``, so Django streams it without a sync bridge."""

    def __init__(self, runner: StreamRunner) -> None:
        self.runner = runner
        runner.loop = asyncio.get_running_loop()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.runner.async_body()

    def close(self) -> None:
        self.runner.close_unstarted()


def saves_session_after_view(request: HttpRequest) -> bool:
    """Whether ``SessionMiddleware`` saves the session after the view returned (a new or changed
    session): that opens a database connection on the request's thread, after the view released
    its own, which the thread would otherwise hold until the stream ends (a pool drained by open
    streams). Other middleware that writes after the view does the same and is not seen here."""
    session = getattr(request, "session", None)
    return session is not None and (bool(getattr(session, "modified", False)) or settings.SESSION_SAVE_EVERY_REQUEST)


def release_connections() -> None:
    """Give back this thread's database connections (per ``CONN_MAX_AGE``) before a long stream,
    as ``close_old_connections`` does at the end of a request; never one inside a transaction
    (``ATOMIC_REQUESTS``, a test case): closing that would break its owner."""
    for connection in connections.all(initialized_only=True) if _INITIALIZED_ONLY else connections.all():
        if connection.in_atomic_block:
            continue
        try:
            connection.close_if_unusable_or_obsolete()
        except DatabaseError:  # closing a connection that already broke: it is gone either way
            pass


def upstream_error(err: BaseException, model_id: str) -> BedrockStreamError:
    return err if isinstance(err, BedrockStreamError) else wrap_botocore_error(err, model_id=model_id, started=False)
