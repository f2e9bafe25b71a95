"""Class-based views that stream Bedrock output, one per model family.

One adaptive class serves both servers: the handler is ``async`` (so under ASGI it runs on the event
loop and never holds Django's shared thread-sensitive thread while Bedrock thinks), and under WSGI it
hands the request back to the request's own thread, which calls boto3 and returns a *sync* body.
Either way the response iterator has the flavour the server consumes without buffering.

The flow lives here; access control in :mod:`~.access`, request parsing in :mod:`~.parsing`. The
request lifecycle, and the hooks to override:

1. :meth:`check_access` — DRF ``authentication_classes`` / ``permission_classes`` /
   ``throttle_classes`` (set those rather than overriding); anonymous users are refused unless
   ``ALLOW_ANONYMOUS``.
2. Parse and validate the JSON body (:class:`~.serializers.ChatRequestSerializer`) — 400/413 on bad
   input, nothing sent upstream; the tool calls the browser sent back are verified against
   :meth:`get_tools` (:func:`~.parsing.replay_tool_parts`).
3. :meth:`get_messages` — may override to add a system prompt, trim history, etc.
4. :meth:`get_model_id`, :meth:`get_max_tokens` — should not need overriding; set the class
   attributes ``model_id``, ``allowed_models``, ``max_tokens`` instead.
5. :meth:`build_body` — may override for custom request bodies (temperature, tools…).
6. ``stream_started`` → the calls the user just approved run (:meth:`run_approved_tools`) →
   Bedrock call → errors before the first byte become JSON (429/400/5xx).
7. Stream through the negotiated protocol; ``stream_completed`` / ``failed`` / ``cancelled``, then
   ``stream_finished``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIRequest
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.decorators import classonlymethod
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from .access import AccessMixin, stream_permission_classes
from .budgets import Budget, BudgetRefused, budget_for, reserve, reserve_for, step_reserver
from .callbacks import StreamCallbacks
from .conf import stream_settings
from .exceptions import BedrockStreamError, StorageUnavailable
from .families import (
    FAMILIES,
    AnthropicFamily,
    AnthropicMessagesFamily,
    BedrockFamily,
    CohereFamily,
    ConverseFamily,
    Llama2Family,
    Llama3Family,
    MistralFamily,
    NovaFamily,
    TitanFamily,
)
from .media import FileRefused
from .models import Completion
from .options import REQUEST_OPTIONS, ConverseOptions
from .parsing import (
    PREPARE_ON_LOOP_MAX_BYTES,
    RequestRejected,
    continued_message_id,
    read_request_data,
    release_approvals,
    replay_tool_parts,
    request_size,
    result_entry,
    validate_chat_request,
)
from .parts import ToolResult
from .protocols import get_protocol, negotiate_protocol
from .receivers import connect_budget_settle
from .responses import STREAM_HEADERS
from .runner import AsyncBody, StreamRunner, SyncBody, asend_all, release_connections, send, upstream_error
from .serializers import FILE_REJECTIONS, stored_messages
from .signals import stream_started, tool_called
from .streams import BedrockStream
from .toolflow import ToolLoop
from .tools import TOOL_FORMATS, Tool, ToolRun, run_tools, run_tools_sync

logger = logging.getLogger("django_bedrock_stream")


class BedrockStreamMixin:
    """The stream flow, shared by :class:`BedrockStreamView` and the DRF flavour (``drf.py``)."""

    #: Must set: the model family (a :class:`~.families.BedrockFamily` subclass).
    family_class: ClassVar[type[BedrockFamily]]
    #: Model used unless the request picks another allowed one. Default: the family's.
    model_id: str | None = None
    #: Extra model ids a request's ``"model"`` may choose. Default: ``BEDROCK_STREAM["ALLOWED_MODELS"]``.
    allowed_models: Sequence[str] | None = None
    #: Default and cap for ``max_tokens``. Default: ``BEDROCK_STREAM["MAX_TOKENS"]``.
    max_tokens: int | None = None
    #: Output protocol unless the request asks for another: "text" | "data" | "ui" | "sse".
    stream_protocol: str = "text"
    #: Per-view callbacks (or override :meth:`get_callbacks`).
    callbacks: StreamCallbacks | None = None
    #: Tools the model may call (:mod:`~.tools`): server tools run here, client-side ones in the
    #: browser. Or override :meth:`get_tools`. Converse, Anthropic Messages and Nova only.
    tools: Sequence[Tool] = ()
    #: ``"auto"`` (the model decides), ``"any"`` (it must call one) or a tool's name.
    tool_choice: str = "auto"
    #: Most model turns in one run with tools; when they run out the stream ends with the last
    #: turn's text and finish reason ``tool-calls``.
    max_steps: int = 5
    #: Model options merged over ``BEDROCK_STREAM["CONVERSE"]`` (temperature, reasoning_budget,
    #: guardrail…; see :meth:`get_converse_options`).
    converse_options: Mapping[str, Any] | None = None
    #: Option names a request may set in its body (``temperature``, ``top_p``, ``stop_sequences``,
    #: ``reasoning_budget``, ``reasoning_effort``, ``latency``, ``service_tier``); others are ignored.
    request_options: Sequence[str] = ()
    #: Budgets for this view, in the shape of ``BEDROCK_STREAM["BUDGETS"]`` (which they replace
    #: here), or override :meth:`get_budget`. Usage is counted per user across views.
    budgets: Mapping[str, Any] | None = None

    # -- hooks --------------------------------------------------------------------------------
    def get_family(self) -> BedrockFamily:
        """Should not need overriding."""
        family_class = getattr(self, "family_class", None)
        if family_class is None:
            raise NotImplementedError(f"{type(self).__name__} must define the class attribute 'family_class'")
        return family_class()

    def check_access(self, request: HttpRequest) -> None:
        """May override: refuse the request by raising :class:`RequestRejected`. Runs in sync code."""

    def _access_check_is_io_free(self, request: HttpRequest) -> bool:
        """True when :meth:`check_access` provably does no I/O (no database, no cache) for this
        request, so the ASGI path may run it on the event loop instead of hopping to the request's
        thread. Here: only when it is this class's no-op (DRF's ``APIView`` checks access itself)."""
        return type(self).check_access is BedrockStreamMixin.check_access

    def get_messages(self, request: HttpRequest) -> list[dict[str, Any]]:
        """May override: the chat messages to send (default: the validated request messages:
        ``role``, ``content``, and ``attachments`` / ``reasoning`` / ``tool_calls`` / ``tool_results``
        when the parts had them, see :mod:`~.prompts`)."""
        return list(self.validated_data["messages"])

    def get_request_options(self) -> Sequence[str]:
        """Should not need overriding: :attr:`request_options`, checked."""
        unknown = [name for name in self.request_options if name not in REQUEST_OPTIONS]
        if unknown:
            raise ImproperlyConfigured(
                f"{type(self).__name__}.request_options: {', '.join(unknown)} cannot come from a request; "
                f"allowed: {', '.join(REQUEST_OPTIONS)}."
            )
        return self.request_options

    def get_converse_options(self, request: HttpRequest) -> ConverseOptions:
        """May override: the model options of this request: ``BEDROCK_STREAM["CONVERSE"]``, then
        :attr:`converse_options`, then the request's fields that :attr:`request_options` allows."""
        values = {**stream_settings.CONVERSE, **(self.converse_options or {})}
        sent = self.validated_data
        values.update({name: sent[name] for name in self.get_request_options() if name in sent})
        metadata = self.get_request_metadata(request) if values.pop("request_metadata", False) else None
        return ConverseOptions.from_values(values, metadata)

    def get_request_metadata(self, request: HttpRequest) -> dict[str, str]:
        """May override: Converse ``requestMetadata`` for cost attribution (default: the user id,
        ``anonymous`` without one, and the view's dotted class name)."""
        user = getattr(request, "user", None)
        user_id = str(getattr(user, "pk", "")) if getattr(user, "is_authenticated", False) else "anonymous"
        return {"user_id": user_id, "view": f"{type(self).__module__}.{type(self).__qualname__}"}

    def get_allowed_models(self) -> list[str]:
        allowed = self.allowed_models if self.allowed_models is not None else stream_settings.ALLOWED_MODELS
        return [self.get_default_model_id(), *[m for m in allowed if m != self.get_default_model_id()]]

    def get_default_model_id(self) -> str:
        return self.model_id or self.get_family().default_model_id

    def get_model_id(self) -> str:
        """Should not need overriding: the request's ``model`` if allowed, else ``model_id``."""
        return self.validated_data.get("model") or self.get_default_model_id()

    def get_max_tokens_cap(self) -> int:
        return int(self.max_tokens or stream_settings.MAX_TOKENS)

    def get_max_tokens(self) -> int:
        return int(self.validated_data.get("max_tokens") or self.get_max_tokens_cap())

    def get_reserved_tokens(self) -> int:
        """The output tokens a budget reserves: the body's ``max_tokens``, which for families that take
        options includes the reasoning budget (thinking is billed as output). Nova takes options but sends
        no thinking budget: reserved for it anyway, over rather than under what it may spend."""
        max_tokens = self.get_max_tokens()
        return self.resolved_options.max_tokens(max_tokens) if self.family.takes_options else max_tokens

    def build_body(self, messages: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        """May override: the family's native body. Call ``super()`` and add parameters."""
        return self.family.body_for(messages, max_tokens=self.get_max_tokens(), options=self.resolved_options)

    def get_tools(self, request: HttpRequest) -> Sequence[Tool]:
        """May override: the tools offered for this request (default: :attr:`tools`)."""
        return list(self.tools)

    def get_callbacks(self) -> StreamCallbacks | None:
        """May override: callbacks for this request's stream."""
        return self.callbacks

    def get_response_headers(self) -> dict[str, str]:
        """May override: headers for the streaming response."""
        return dict(STREAM_HEADERS)

    def get_budget(self, request: HttpRequest) -> Budget | Mapping[str, Any] | None:
        """May override: the budget this request counts against (a :class:`~.budgets.Budget` or its
        settings form), or None for no limit. Runs in sync code, after :meth:`prepare`, for signed-in
        users only. Default: the user's ``UserBudget`` (admin), else :attr:`budgets` (or
        ``BEDROCK_STREAM["BUDGETS"]``) by username, groups and default (:func:`~.budgets.budget_for`)."""
        return budget_for(request.user, self.budgets if self.budgets is not None else stream_settings.BUDGETS)

    # -- the flow -------------------------------------------------------------------------------
    async def handle_async(self, request: HttpRequest) -> HttpResponseBase:
        """The ASGI path: nothing here blocks the event loop or holds Django's shared thread
        while Bedrock works. The start is one hop to the request's thread (the access checks, which
        may query the database, the budget reservation and the INSERT of ``stream_started``); the end
        is one more (``stream_finished``)."""
        try:
            if self._access_check_is_io_free(request) and request_size(request) <= PREPARE_ON_LOOP_MAX_BYTES:
                self.check_access(request)  # provably no database or cache: skip the thread hop
                self.prepare(request)
                completion = self.new_completion(request)
                await sync_to_async(self.start)(request, completion)
            else:
                # The access checks may query the database, and validating a large body is CPU work
                # that would freeze every other stream of this worker: all of it goes to the request's
                # thread, with the reservation and the INSERT, in one hop.
                completion = await sync_to_async(self._check_and_start)(request)
        except RequestRejected as rejection:
            return self.reject(rejection)
        except (BudgetRefused, StorageUnavailable) as refusal:  # by reserve_budget: nothing started, no signals
            await sync_to_async(self.release_approvals)()
            return self.error_response(refusal)
        except asyncio.CancelledError:
            # The client left during the start hop, which runs on regardless: once it is over (the
            # request's thread runs one thing at a time), settle what it started.
            await asyncio.shield(sync_to_async(self._cancel_start)(request))
            raise
        # Settles the row when no stream starts: Bedrock refused, or the client left first.
        empty = BedrockStream([], self.family.parse_event)
        unstarted = self.make_runner(request, empty, completion, time.monotonic())
        failure: BedrockStreamError | None = None
        try:
            if not self.start_was_stored(completion):
                failure = StorageUnavailable(model_id=completion.model_id)
                await sync_to_async(self.release_approvals)()
                await asyncio.shield(unstarted._end_async(Completion.Status.FAILED, failure))
            else:
                await self.arun_approved_tools(request, completion)
                started_at = time.monotonic()
                source = await self.open_stream_async()
        except asyncio.CancelledError:
            # The client left while Bedrock was still thinking (Django cancels the view); the
            # upstream call is abandoned (see open_stream_async). Settle the row, then re-raise.
            await asyncio.shield(unstarted._end_async(Completion.Status.CANCELLED, None))
            raise
        except Exception as err:
            failure = upstream_error(err, completion.model_id)
            await asyncio.shield(unstarted._end_async(Completion.Status.FAILED, failure))
        if failure is not None:
            # Outside the try: the DRF flavour's error_response raises its APIException.
            return self.error_response(failure)
        stream = self.tool_run(self.make_stream(source), request, completion)
        runner = self.make_runner(request, stream, completion, started_at)
        return self.make_response(AsyncBody(runner), runner)

    def handle_sync(self, request: HttpRequest) -> HttpResponseBase:
        """The WSGI path; the same steps as :meth:`handle_async`, blocking."""
        try:
            self.check_access(request)
            self.prepare(request)
        except RequestRejected as rejection:
            return self.reject(rejection)
        completion = self.new_completion(request)
        try:
            self.start(request, completion)
        except (BudgetRefused, StorageUnavailable) as refusal:
            self.release_approvals()
            return self.error_response(refusal)
        started_at = time.monotonic()
        unstarted = self.make_runner(request, BedrockStream([], self.family.parse_event), completion, started_at)
        if not self.start_was_stored(completion):
            error: BedrockStreamError = StorageUnavailable(model_id=completion.model_id)
            self.release_approvals()
            unstarted._end_sync(Completion.Status.FAILED, error)
            return self.error_response(error)
        try:
            self.run_approved_tools(request, completion)
            source = self.open_stream()
        except Exception as err:
            error = upstream_error(err, completion.model_id)
            unstarted._end_sync(Completion.Status.FAILED, error)
            return self.error_response(error)
        stream = self.tool_run(self.make_stream(source), request, completion)
        runner = self.make_runner(request, stream, completion, started_at)
        return self.make_response(SyncBody(runner), runner)

    def _check_and_start(self, request: HttpRequest) -> Completion:
        """ASGI, in one hop: the access checks, :meth:`prepare` and :meth:`start`."""
        self.check_access(request)
        self.prepare(request)
        completion = self.new_completion(request)
        self.start(request, completion)
        return completion

    def start(self, request: HttpRequest, completion: Completion) -> None:
        """Should not need overriding: reserve the budget (when one may apply) and send
        ``stream_started`` (whose receiver INSERTs the row, unless the reservation did), then give
        back this thread's connections: none is held for the length of the stream."""
        try:
            if self._budget_may_apply(completion):
                self.reserve_budget(request, completion)
            send(stream_started, type(self), request=request, model_id=completion.model_id, completion=completion)
            self._started = completion
        finally:
            release_connections()

    #: The completion :meth:`start` started (for :meth:`_cancel_start`).
    _started: Completion | None = None

    def _cancel_start(self, request: HttpRequest) -> None:
        """Settle as cancelled what a start hop whose client left started (runs after that hop)."""
        self.release_approvals()
        completion = self._started
        if completion is not None:
            empty = BedrockStream([], self.family.parse_event)
            try:
                self.make_runner(request, empty, completion, time.monotonic())._end_sync(
                    Completion.Status.CANCELLED, None)
            finally:
                release_connections()

    def _budget_may_apply(self, completion: Completion) -> bool:
        """No I/O: a signed-in user, and budgets configured or this view has its own."""
        return completion.user_id is not None and (
            stream_settings.BUDGETS is not None
            or self.budgets is not None
            or type(self).get_budget is not BedrockStreamMixin.get_budget
        )

    def reserve_budget(self, request: HttpRequest, completion: Completion) -> None:
        """Should not need overriding: reserve :meth:`get_reserved_tokens` plus the input's estimate
        against the user's budget (:meth:`get_budget`) before Bedrock is called, on ``completion``
        (settled by the ``stream_finished`` receivers; with ``PERSIST``, usually INSERTed with the
        reservation). Raises :class:`~.budgets.BudgetExceeded` (429), or
        :class:`~.exceptions.StorageUnavailable` (503) when the database cannot say."""
        insert = completion if stream_settings.PERSIST and completion.pk is None else None
        args = (self.resolved_model_id, self.body, self.get_reserved_tokens())
        try:
            if type(self).get_budget is BedrockStreamMixin.get_budget:  # the default: no row read per request
                budgets = self.budgets if self.budgets is not None else stream_settings.BUDGETS
                reservation = reserve_for(request.user, budgets, *args, insert=insert)
            else:
                budget = Budget.parse(self.get_budget(request), f"{type(self).__name__}.get_budget()")
                reservation = None if budget is None else reserve(completion.user_id, budget, *args, insert=insert)
        except DatabaseError:
            logger.exception("Could not check the budget of a Bedrock stream for %s", completion.model_id)
            raise StorageUnavailable(model_id=completion.model_id) from None
        if reservation is None:
            return
        completion.budget_reservation = reservation
        connect_budget_settle()

    def start_was_stored(self, completion: Completion) -> bool:
        """Should not need overriding: False when persistence is on but the start row could not be
        written (the database is unreachable); the view then answers 503 without calling Bedrock."""
        return not stream_settings.PERSIST or completion.pk is not None

    def prepare(self, request: HttpRequest) -> None:
        """Parse, validate and build the upstream request; raise :class:`RequestRejected` on bad input."""
        self.family = self.get_family()
        data = self.get_request_data(request)
        self.validated_data = validate_chat_request(
            data, self.get_allowed_models(), self.get_max_tokens_cap(), self.get_request_options()
        )
        try:
            self.protocol_name = negotiate_protocol(
                request.GET.get("protocol"), request.headers.get("Accept"), self.stream_protocol
            )
            self.protocol = get_protocol(self.protocol_name)(continued_message_id(data))
        except ValueError as err:
            raise RequestRejected(400, "invalid_protocol", str(err)) from None
        self.tool_list = list(self.get_tools(request))
        # The tool calls the browser sent back, checked before anything else happens.
        self.tool_replay = replay_tool_parts(self.validated_data["messages"], self.tool_list, request)
        try:
            self._prepare_body(request)
        except RequestRejected:
            self.release_approvals()
            raise

    def _prepare_body(self, request: HttpRequest) -> None:
        self.validated_data["messages"] = self.tool_replay.messages
        self.messages = self.get_messages(request)
        self.resolved_options = self.get_converse_options(request)
        try:
            self.body = self.build_body(self.messages)
        except FileRefused as err:
            raise RequestRejected(*FILE_REJECTIONS.get(err.code, (400, "invalid_request")), str(err)) from None
        except (TypeError, ValueError) as err:
            raise RequestRejected(400, "invalid_request", str(err)) from None
        self.resolved_model_id = self.get_model_id()
        if self.tool_list:
            self._offer_tools()

    def release_approvals(self) -> None:
        """Should not need overriding: the request is refused before the calls the user approved in it
        ran (a 400, 429 or 503), so their approvals stay usable (:func:`~.parsing.release_approvals`)."""
        replay = getattr(self, "tool_replay", None)
        if replay is not None:
            release_approvals(replay)

    def _offer_tools(self) -> None:
        if self.family.name not in TOOL_FORMATS:
            raise ImproperlyConfigured(
                f"{type(self).__name__} offers tools, but the {self.family.name!r} family cannot call them; "
                f"use one of {', '.join(sorted(TOOL_FORMATS))}"
            )
        if self.protocol_name == "text" and any(t.client_side or t.needs_approval for t in self.tool_list):
            message = "This endpoint's tools run in the browser or need approval: use the ui, data or sse protocol."
            raise RequestRejected(400, "invalid_protocol", message)
        if self.protocol_name == "data" and any(t.needs_approval for t in self.tool_list):
            # AI SDK 4's data stream has no approval request: the client could never answer one.
            message = "This endpoint's tools need approval, which the data protocol cannot ask for: use ui or sse."
            raise RequestRejected(400, "invalid_protocol", message)
        self.body = {**self.body, **ToolLoop.request_fragment(self.family, self.tool_list, self.tool_choice)}

    def reject(self, rejection: RequestRejected) -> HttpResponseBase:
        """Should not need overriding: the JSON answer to a refused or invalid request."""
        return rejection.response()

    def get_request_data(self, request: HttpRequest) -> dict[str, Any]:
        """Should not need overriding: the JSON body, or for GET the query string."""
        return read_request_data(request)

    def new_completion(self, request: HttpRequest) -> Completion:
        user = getattr(request, "user", None)
        messages, attachments = stored_messages(self.messages)  # files as metadata, never their bytes
        return Completion(
            model_id=self.resolved_model_id,
            family=self.family.name,
            messages=messages,
            parts={"attachments": attachments} if attachments else {},
            user=user if getattr(user, "is_authenticated", False) else None,
        )

    def open_stream(self) -> Any:
        """Should not need overriding: call Bedrock (blocking) through the family."""
        return self.family.open(self.resolved_model_id, self.body)

    async def open_stream_async(self) -> Any:
        """Should not need overriding: call Bedrock without blocking the loop, through the family."""
        return await self.family.aopen(self.resolved_model_id, self.body)

    def make_stream(self, source: Any) -> BedrockStream:
        return BedrockStream(source, self.family.parse_event, self.get_callbacks(), model_id=self.resolved_model_id)

    def tool_run(self, stream: BedrockStream, request: HttpRequest, completion: Completion) -> BedrockStream:
        """Should not need overriding: with tools offered, the stream continues after each model turn
        that calls them (:class:`~.toolflow.ToolLoop`), up to ``max_steps`` turns. It opens with the
        outcome of the calls the user answered in this request (run, or denied)."""
        if self.tool_list:
            loop = self._tool_loop(request, completion)
            stream.prepare_call, stream.continuation, stream.acontinuation = loop.prepare_call, loop.next, loop.anext
            loop.before_step = step_reserver(completion, self.resolved_model_id, self.get_reserved_tokens())
            stream.opening = [*self.approved_results, *self.tool_replay.denied]
        return stream

    def _tool_loop(self, request: HttpRequest, completion: Completion) -> ToolLoop:
        if getattr(self, "_loop", None) is None:
            self._loop = ToolLoop(
                sender=type(self), request=request, completion=completion, family=self.family,
                model_id=self.resolved_model_id, body=self.body, tools=self.tool_list, max_steps=self.max_steps,
            )
        return self._loop

    #: The results of the calls the user approved in this request, once they ran.
    approved_results: Sequence[ToolResult] = ()

    def run_approved_tools(self, request: HttpRequest, completion: Completion) -> None:
        """Should not need overriding: run the calls the user approved in this request (WSGI), after
        the start row is stored and before the model is called, which then reads their results."""
        calls = self.tool_replay.approved
        if calls:
            runs = run_tools_sync(calls, self.tool_list, request=request)
            for kwargs in self._resume(runs, request, completion):
                send(tool_called, type(self), **kwargs)
            release_connections()  # what the receivers opened: not held for the stream

    async def arun_approved_tools(self, request: HttpRequest, completion: Completion) -> None:
        """Should not need overriding: :meth:`run_approved_tools` under ASGI (async tools on the loop,
        sync ones on the tool pool)."""
        calls = self.tool_replay.approved
        if calls:
            runs = await run_tools(calls, self.tool_list, request=request)
            sends = [(tool_called, kwargs) for kwargs in self._resume(runs, request, completion)]
            await asend_all(sends, type(self), then=release_connections)

    def _resume(self, runs: list[ToolRun], request: HttpRequest, completion: Completion) -> list[dict[str, Any]]:
        """Put the approved calls' results where the request held their place (the messages, and the
        body built from them); record the runs; the ``tool_called`` kwargs."""
        loop = self._tool_loop(request, completion)
        result_blocks = TOOL_FORMATS[self.family.name].result_blocks
        for run in runs:
            entry = self.tool_replay.pending[run.call.id]
            placeholder = result_blocks([ToolResult(entry["id"], entry["name"])])[0]
            entry.update(result_entry(run.result))
            if not _replace_block(self.body, placeholder, result_blocks([run.result])[0]):
                logger.error("build_body() dropped the result of the approved tool call %r", run.call.id)
        self.approved_results = [run.result for run in runs]
        return [loop.record(run, 0) for run in runs]

    def make_runner(
        self, request: HttpRequest, stream: BedrockStream, completion: Completion, started_at: float
    ) -> StreamRunner:
        return StreamRunner(
            sender=type(self),
            request=request,
            stream=stream,
            completion=completion,
            protocol=self.protocol,
            started_at=started_at,
        )

    def make_response(self, body: SyncBody | AsyncBody, runner: StreamRunner) -> StreamingHttpResponse:
        headers = {**self.get_response_headers(), **self.protocol.headers()}
        response = StreamingHttpResponse(body, content_type=self.protocol.content_type, headers=headers)
        response.completion = runner.completion  # type: ignore[attr-defined]
        runner.watch(runner.request)
        return response

    def error_response(self, error: BedrockStreamError) -> HttpResponseBase:
        """Should not need overriding: the answer to a Bedrock error before the first byte."""
        response = JsonResponse(error.as_json(), status=error.status_code)
        if error.retry_after is not None:
            response["Retry-After"] = str(error.retry_after)
        return response


def _replace_block(body: Mapping[str, Any], old: Mapping[str, Any], new: dict[str, Any]) -> bool:
    """Replace the content block equal to ``old`` in the body's messages (in place); whether found."""
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):
            for index, block in enumerate(content):
                if block == old:
                    content[index] = new
                    return True
    return False


def keep_async(view: Any) -> Any:
    """Django 4.2's decorators wrap an async view in a sync function; mark it async again."""
    if not iscoroutinefunction(view):
        markcoroutinefunction(view)
    return view


class BedrockStreamView(AccessMixin, BedrockStreamMixin, View):
    """Base view. Subclasses must set ``family_class``; everything else has defaults.

    Access control (:class:`~.access.AccessMixin`) reuses Django REST framework's classes:
    ``authentication_classes``, ``permission_classes`` and ``throttle_classes`` default to the
    project's ``REST_FRAMEWORK`` settings, and unless ``BEDROCK_STREAM["ALLOW_ANONYMOUS"]`` is true,
    ``IsAuthenticated`` is required too. As with DRF's ``APIView``, CSRF is enforced by
    ``SessionAuthentication`` for session-authenticated browsers (token clients need no token).
    """

    #: Also accept ``GET ?prompt=…`` (or ``?messages=<json>``), for browsers' ``EventSource``, which
    #: cannot POST. Off by default: a GET is not CSRF-protected, so only enable it behind
    #: authentication (Django's default ``SameSite=Lax`` session cookie is not sent on cross-site
    #: ``EventSource`` requests) or for endpoints that are fine to be triggered by any page.
    allow_get: bool = False

    http_method_names = ["get", "post", "options"]

    def setup(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        super().setup(request, *args, **kwargs)
        if not self.allow_get:
            self.http_method_names = ["post", "options"]

    async def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        return await self.post(request, *args, **kwargs)

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        """405 as JSON, like every other refusal (Django's own is an empty HTML page)."""
        allowed = ", ".join(self._allowed_methods())  # type: ignore[attr-defined]
        message = f"Method {request.method} is not allowed; use {allowed}."
        response = RequestRejected(405, "method_not_allowed", message, headers={"Allow": allowed}).response()

        async def respond() -> HttpResponseBase:  # the handlers are async, so Django awaits this
            return response

        return respond()

    @classonlymethod
    def as_view(cls, **initkwargs: Any) -> Any:
        # Like DRF's APIView: CSRF is checked by SessionAuthentication, only for session users.
        return keep_async(csrf_exempt(super().as_view(**initkwargs)))

    async def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if isinstance(request, ASGIRequest):
            return await self.handle_async(request)
        # WSGI: Django awaited us through async_to_sync; thread_sensitive=True runs the sync path
        # back on the request's own thread, where blocking on boto3 is what WSGI expects.
        return await sync_to_async(self.handle_sync)(request)

_FAMILY_VIEWS: dict[str, type[BedrockStreamView]] = {}


def stream_view_for(name: str) -> type[BedrockStreamView]:
    """The view for a family name (what ``urls.py`` routes): its named class below when it has one
    (``Llama2StreamView``…), else one made from the family registry, so a new family needs no view
    of its own."""
    if name not in _FAMILY_VIEWS:
        for view in (v for v in globals().values() if isinstance(v, type) and issubclass(v, BedrockStreamView)):
            if "family_class" in view.__dict__:
                _FAMILY_VIEWS.setdefault(view.family_class.name, view)
    if name not in _FAMILY_VIEWS:
        family = FAMILIES[name]
        view_name = family.__name__.removesuffix("Family") + "StreamView"
        _FAMILY_VIEWS[name] = type(view_name, (BedrockStreamView,), {"family_class": family, "__module__": __name__})
    return _FAMILY_VIEWS[name]


class AnthropicStreamView(BedrockStreamView):
    """Claude text completions, prompt built by ``build_anthropic_prompt``."""

    family_class = AnthropicFamily


class AnthropicMessagesStreamView(BedrockStreamView):
    family_class = AnthropicMessagesFamily


class CohereStreamView(BedrockStreamView):
    family_class = CohereFamily


class Llama2StreamView(BedrockStreamView):
    family_class = Llama2Family


class Llama3StreamView(BedrockStreamView):
    family_class = Llama3Family


class MistralStreamView(BedrockStreamView):
    family_class = MistralFamily


class TitanStreamView(BedrockStreamView):
    family_class = TitanFamily


class NovaStreamView(BedrockStreamView):
    """Amazon Nova through its native invoke format (``schemaVersion: messages-v1``)."""

    family_class = NovaFamily


class ConverseStreamView(BedrockStreamView):
    """Any model through the Converse API; list the models requests may pick in ``allowed_models``."""

    family_class = ConverseFamily


__all__ = [  # RequestRejected and stream_permission_classes live in parsing.py / access.py; kept importable here
    "AnthropicMessagesStreamView",
    "AnthropicStreamView",
    "BedrockStreamMixin",
    "BedrockStreamView",
    "CohereStreamView",
    "ConverseStreamView",
    "Llama2StreamView",
    "Llama3StreamView",
    "MistralStreamView",
    "NovaStreamView",
    "RequestRejected",
    "TitanStreamView",
    "keep_async",
    "stream_permission_classes",
    "stream_view_for",
]
