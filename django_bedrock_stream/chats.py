"""Chats kept on the server: :class:`ChatStreamView` and the chat endpoints (list, read, rename,
delete, resume, stop).

The chat view is the plain stream flow (:class:`~.views.BedrockStreamView`: access, parsing, tools,
runner) with the history read from the database instead of the request: the client sends the new
message only (``{id, message}``), or the AI SDK's whole ``{id, messages}`` of which only the last
message is new (the stored history wins where they differ). The user message is stored when the
stream starts, the assistant message (its ``UIMessage`` parts built from the stream's parts) when it
ends, linked to its :class:`~.models.Completion`.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Max, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.utils.decorators import classonlymethod
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from . import parts as p
from . import resumable
from .access import AccessMixin
from .exceptions import BedrockStreamError, StorageUnavailable
from .families import ConverseFamily
from .models import Chat, ChatMessage, Completion
from .parsing import RequestRejected, read_request_data
from .protocols import ui_message_metadata, ui_source_chunk
from .receivers import FINAL_WRITE_BACKOFF, retrying_write
from .runner import COMPLETED, StreamRunner, release_connections
from .signals import stream_finished, stream_started
from .views import BedrockStreamView

__all__ = [
    "ChatDetailView",
    "ChatListView",
    "ChatResumeView",
    "ChatStopView",
    "ChatStreamView",
    "UIMessageBuilder",
    "chats_of",
    "new_message_id",
]

#: What a chat id may be: ``useChat`` makes 16 letters and digits; UUIDs and slugs fit too.
CHAT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Longest chat title (PATCH).
TITLE_MAX = 200
#: Starts the ERROR line that carries an assistant message the database would not take (JSON after it).
UNSAVED_MESSAGE_MARKER = "bedrock_stream.unsaved_chat_message"

logger = logging.getLogger("django_bedrock_stream")


def new_message_id() -> str:
    """A message id made by the server (the ui protocol's own form)."""
    return "msg_" + uuid.uuid4().hex


def _not_found() -> RequestRejected:
    return RequestRejected(404, "not_found", "No such chat.")


def chats_of(request: HttpRequest) -> QuerySet[Chat]:
    """The chats ``request`` may see: the user's own; an anonymous visitor's (``ALLOW_ANONYMOUS``) are
    bound to the session. Runs in sync code (an anonymous visitor's session may be saved)."""
    user = getattr(request, "user", None)
    if getattr(user, "is_authenticated", False):
        return Chat.objects.filter(owner=user)
    session = getattr(request, "session", None)
    if session is None:
        raise RequestRejected(403, "permission_denied", "Chats need a signed-in user or a session.")
    if session.session_key is None:
        session.save()
    return Chat.objects.filter(owner=None, session_key=session.session_key)


def _owner_fields(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if getattr(user, "is_authenticated", False):
        return {"owner": user, "session_key": ""}
    return {"owner": None, "session_key": request.session.session_key or ""}


def get_chat(request: HttpRequest, chat_id: str) -> Chat:
    """The chat, if ``request`` owns it; else :class:`RequestRejected` 404 (another user's chat
    looks exactly like a chat that does not exist)."""
    if not CHAT_ID.fullmatch(chat_id or ""):
        raise _not_found()
    chat = chats_of(request).filter(pk=chat_id).first()
    if chat is None:
        raise _not_found()
    return chat


# -- the assistant message, as the AI SDK builds it from the ui stream ------------------------------

def _is_tool_part(part: Mapping[str, Any]) -> bool:
    kind = str(part.get("type", ""))
    return kind.startswith("tool-") or kind == "dynamic-tool"


class UIMessageBuilder:
    """The ``parts`` of an assistant ``UIMessage`` from a stream's typed parts: what the AI SDK's
    ``useChat`` makes of the ui protocol's chunks (text and reasoning blocks, sources, files, tool
    parts with their states, a ``step-start`` per model turn), so a reloaded chat shows what streamed."""

    def __init__(self, parts: Sequence[Mapping[str, Any]] = ()) -> None:
        self.parts: list[dict[str, Any]] = [dict(part) for part in parts]
        self._open: dict[str, Any] | None = None  # the text or reasoning part deltas go to
        self._tools = {part["toolCallId"]: part for part in self.parts if _is_tool_part(part) and "toolCallId" in part}

    def start_step(self) -> None:
        self._open = None
        self.parts.append({"type": "step-start"})

    def _block(self, kind: str) -> dict[str, Any]:
        if self._open is None or self._open["type"] != kind:
            self._open = {"type": kind, "text": "", "state": "done"}
            self.parts.append(self._open)
        return self._open

    def _tool(self, call_id: str, name: str = "") -> dict[str, Any]:
        part = self._tools.get(call_id)
        if part is None:
            part = self._tools[call_id] = {"type": f"tool-{name}", "toolCallId": call_id}
            self.parts.append(part)
        return part

    def add(self, part: p.Part) -> None:
        if isinstance(part, p.TextDelta):
            self._block("text")["text"] += part.text
        elif isinstance(part, p.ReasoningDelta):
            if part.redacted:
                self._open = None
                block = self._block("reasoning")
                block["providerMetadata"] = {"bedrock": {"redactedData": part.redacted}}
                self._open = None
                return
            block = self._block("reasoning")
            block["text"] += part.text
            if part.signature:  # it completes its block
                block["providerMetadata"] = {"bedrock": {"signature": part.signature}}
                self._open = None
        elif isinstance(part, p.Source):
            self.parts.append(ui_source_chunk(part))
        elif isinstance(part, p.File):
            self.parts.append({"type": "file", "mediaType": part.media_type,
                               "url": f"data:{part.media_type};base64,{part.data}"})
        elif isinstance(part, p.ToolCallStart):
            self._open = None
            tool = self._tool(part.id, part.name)
            tool.update(state="input-streaming", input=None)
            if part.provider_executed:
                tool["providerExecuted"] = True
        elif isinstance(part, p.ToolCall):
            self._open = None
            tool = self._tool(part.id, part.name)
            tool.update(state="output-error" if part.error else "input-available", input=part.input)
            if part.error:
                tool["errorText"] = part.error
            if part.signature:
                tool["callProviderMetadata"] = {"bedrock": {"signature": part.signature}}
            if part.provider_executed:
                tool["providerExecuted"] = True
        elif isinstance(part, p.ToolResult):
            tool = self._tool(part.id, part.name)
            if part.error:
                tool.update(state="output-error", errorText=part.error)
            else:
                tool.update(state="output-available", output=part.output)
        elif isinstance(part, p.ToolDenied):
            self._tool(part.call_id).update(state="output-denied")
        elif isinstance(part, p.ToolApprovalRequest):
            self._tool(part.call_id).update(state="approval-requested", approval={"id": part.approval_id})
        elif isinstance(part, p.StepFinish):
            self.start_step()


class ChatTurn:
    """One request's turn of a chat: what it adds to the history, stored by the signal receivers
    below (the user message when the stream starts, the assistant message when it ends)."""

    def __init__(self, request: HttpRequest, chat_id: str, chat: Chat | None) -> None:
        self.chat_id = chat_id
        self.chat = chat
        self.owner = _owner_fields(request)
        #: New messages of the request (the user's), stored when the stream starts.
        self.new_messages: list[dict[str, Any]] = []
        #: Stored assistant messages a regeneration replaces.
        self.replaced: list[str] = []
        #: The stored assistant message this stream continues (after tool outputs or approvals).
        self.continued: str | None = None
        self.builder = UIMessageBuilder()
        self.message_id = ""
        #: The assistant message's metadata, set when the stream settles.
        self.metadata: dict[str, Any] = {}
        #: Whether the chat and the request's messages were stored (``stream_started``): else no answer.
        self.stored = False
        #: The chat read for this turn was deleted meanwhile (and its id perhaps taken by someone else's
        #: new chat): nothing of this turn may be written into that one. The view answers 404.
        self.gone = False
        #: A stop of the chat came after the turn was stored, before its stream could hear one.
        self.stop_requested = False
        #: The chat's earlier stop flag in Redis was cleared as the turn began (see _watch_early_stop).
        self.stop_flag_cleared = False
        self._unregister_early: Callable[[], None] | None = None

    def _same_chat(self) -> QuerySet[Chat]:
        """The very chat this turn read or made: its id alone may by now name another chat (deleted,
        then made again by another user or session)."""
        assert self.chat is not None
        return Chat.objects.filter(pk=self.chat.pk, created_at=self.chat.created_at, **self._owned())

    def _owned(self) -> dict[str, Any]:
        """The owner lookup of :func:`chats_of`: a signed-in user's chats whatever their session key."""
        return {"owner": self.owner["owner"]} if self.owner["owner"] is not None else self.owner

    def store_start(self) -> None:
        self.stored = False
        with transaction.atomic():
            if self.chat is None:
                title = next((_text_of(m)[:TITLE_MAX] for m in self.new_messages if m["role"] == "user"), "")
                try:
                    with transaction.atomic():
                        self.chat = Chat.objects.create(id=self.chat_id, title=title, **self.owner)
                except IntegrityError:  # made by a request at the same time: ours only if the same owner
                    self.chat = Chat.objects.filter(pk=self.chat_id, **self._owned()).first()
                    if self.chat is None:
                        self.gone = True
                        return
            elif not self._same_chat().select_for_update().exists():
                self.gone = True
                return
            ChatMessage.objects.filter(chat=self.chat, pk__in=self.replaced).delete()
            position = self._next_position()
            for offset, message in enumerate(self.new_messages):
                ChatMessage.objects.create(
                    id=message["id"], chat=self.chat, role=message["role"], parts=message["parts"],
                    metadata=message.get("metadata") or {}, position=position + offset,
                )
        self.stored = True
        self._watch_early_stop()

    def _watch_early_stop(self) -> None:
        """From now until the stream reads, a stop of the chat is noted here (the runner stops as soon
        as it listens itself): the user may press Stop while Bedrock has not answered yet. An earlier
        stream's stop flag in Redis is cleared now, so that a stop sent from now on, from any worker,
        is this stream's (the stream's watcher reads the flag when it subscribes)."""

        def stop() -> None:  # any thread
            self.stop_requested = True

        self._unregister_early = resumable.register_local(self.chat_id, stop)
        self.stop_flag_cleared = resumable.clear_stop_sync(self.chat_id)

    def end_early_stop_watch(self) -> bool:
        """Stop noting stops here (the runner listens now, or the turn ended); whether one came."""
        if self._unregister_early is not None:
            self._unregister_early()
            self._unregister_early = None
        return self.stop_requested

    def _next_position(self) -> int:
        last = ChatMessage.objects.filter(chat=self.chat).aggregate(last=Max("position"))["last"]
        return 0 if last is None else last + 1

    def store_end(self, completion: Completion, status: str) -> None:
        """The assistant message, written like the completion's final UPDATE: retried on a fresh
        connection, and if the database stays away, logged whole (:data:`UNSAVED_MESSAGE_MARKER`)
        so the answer can be recovered, never silently lost."""
        if self.chat is None or not self.stored:  # the turn was never stored (503 before Bedrock)
            return
        message = ChatMessage(id=self.message_id, chat=self.chat)
        try:
            retrying_write(message, FINAL_WRITE_BACKOFF, lambda alias: self._write_end(completion, status))
        except DatabaseError:
            record = {"chat": self.chat.pk, "id": self.continued or self.message_id, "status": status,
                      "parts": self.builder.parts, "metadata": self.metadata, "completion": completion.pk}
            logger.exception("%s %s", UNSAVED_MESSAGE_MARKER, json.dumps(record, ensure_ascii=True, default=str))

    def _write_end(self, completion: Completion, status: str) -> None:
        assert self.chat is not None
        fields = {
            "parts": self.builder.parts,
            "metadata": self.metadata,
            "status": status,
            "completion": completion if completion.pk is not None else None,
        }
        with transaction.atomic():
            if not self._same_chat().select_for_update().exists():  # deleted meanwhile: the answer goes with it
                return
            if self.continued and ChatMessage.objects.filter(pk=self.continued, chat=self.chat).update(**fields):
                pass
            else:
                ChatMessage.objects.create(
                    id=self.message_id, chat=self.chat, role="assistant", position=self._next_position(), **fields
                )
            Chat.objects.filter(pk=self.chat.pk).update(updated_at=completion.finished_at or completion.created_at)


def _text_of(message: Mapping[str, Any]) -> str:
    return "".join(str(part.get("text", "")) for part in message.get("parts") or () if part.get("type") == "text")


def _turn_of(completion: Any) -> ChatTurn | None:
    return getattr(completion, "_bedrock_chat_turn", None)


def _store_start(sender: Any, completion: Any = None, **kwargs: Any) -> None:
    turn = _turn_of(completion)
    if turn is not None:  # (before or after the Completion's INSERT: receivers keep no order)
        turn.store_start()


def _store_end(sender: Any, completion: Any = None, status: str = "", **kwargs: Any) -> None:
    turn = _turn_of(completion)
    if turn is not None:
        turn.store_end(completion, status)


def _connect_storage(view: type) -> None:
    """Store the chats of this view class: receivers for it only, so other views' streams send no
    signal nobody else listens to (``PERSIST`` off: no thread hop for them)."""
    uid = f"django_bedrock_stream.chats.{view.__module__}.{view.__qualname__}"
    stream_started.connect(_store_start, sender=view, weak=False, dispatch_uid=uid + ".start")
    stream_finished.connect(_store_end, sender=view, weak=False, dispatch_uid=uid + ".end")


# -- the history: stored, plus what the request may add ----------------------------------------------

def _merge_answers(stored: Mapping[str, Any], sent: Mapping[str, Any]) -> dict[str, Any]:
    """The stored assistant message with the browser's answers to its open tool calls (an output,
    an error, an approval): only those fields of those parts are taken; everything else is the
    stored one. What they claim is verified later (:func:`~.parsing.replay_tool_parts`)."""
    sent_parts = sent.get("parts")
    if not isinstance(sent_parts, list):
        raise RequestRejected(400, "invalid_request", "messages: the continued message's parts must be a list.")
    answers = {
        part["toolCallId"]: part
        for part in sent_parts
        if isinstance(part, Mapping) and _is_tool_part(part) and isinstance(part.get("toolCallId"), str)
    }
    parts = []
    for part in stored["parts"]:
        answer = answers.get(part.get("toolCallId")) if _is_tool_part(part) else None
        if answer is not None and answer.get("type") == part["type"] and part.get("state") in (
            "input-available", "approval-requested"
        ):
            part = {**part, **{k: answer[k] for k in ("state", "output", "errorText", "approval") if k in answer}}
        parts.append(part)
    return {**stored, "parts": parts}


def _user_message(sent: Mapping[str, Any]) -> dict[str, Any]:
    parts = sent.get("parts")
    if not isinstance(parts, list):
        raise RequestRejected(400, "invalid_request", "message.parts: must be a list of parts.")
    kept = [part for part in parts if isinstance(part, Mapping) and part.get("type") in ("text", "file")]
    if not kept:
        raise RequestRejected(400, "invalid_request", "message.parts: a user message needs a text or file part.")
    return {"id": new_message_id(), "role": "user", "parts": kept}


def build_turn(request: HttpRequest, data: Mapping[str, Any]) -> tuple[ChatTurn, list[dict[str, Any]]]:
    """The turn of this request and the conversation for the model: the stored history (the chat
    is the caller's, else 404) plus the request's new message; or, for a chat the server does not
    have yet, the messages the request sent."""
    chat_id = data.get("id")
    if chat_id is None:
        chat_id = uuid.uuid4().hex
    if not isinstance(chat_id, str) or not CHAT_ID.fullmatch(chat_id):
        raise RequestRejected(400, "invalid_request", "id: up to 64 letters, digits, '-' or '_'.")
    if "message" in data:
        sent = [data["message"]]
    elif isinstance(data.get("messages"), list):
        sent = list(data["messages"])
    else:
        raise RequestRejected(400, "invalid_request", "Send the new 'message' (or 'messages').")
    if not sent or not all(isinstance(m, Mapping) and m.get("role") in ("user", "assistant") for m in sent):
        raise RequestRejected(400, "invalid_request", "Each message needs a role: user or assistant.")
    chat: Chat | None = chats_of(request).filter(pk=chat_id).first()  # (an anonymous visitor's session is saved)
    if chat is None and Chat.objects.filter(pk=chat_id).exists():
        raise _not_found()  # someone else's
    turn = ChatTurn(request, chat_id, chat)
    stored = [m.as_ui_message() for m in chat.messages.all()] if chat is not None else []
    last = sent[-1]
    if data.get("trigger") == "regenerate-message":
        while stored and stored[-1]["role"] == "assistant":
            turn.replaced.append(stored.pop()["id"])
        if not stored:
            raise RequestRejected(400, "invalid_request", "There is no message to answer again.")
        return turn, stored
    if chat is None and last["role"] == "user":
        # A new chat: what the browser had is its start (its tool parts are verified as ever).
        earlier = [{**m, "id": new_message_id()} for m in sent[:-1] if isinstance(m.get("parts"), list)]
        turn.new_messages = [*earlier, _user_message(last)]
        return turn, turn.new_messages
    if last["role"] == "user":
        turn.new_messages = [_user_message(last)]
        return turn, [*stored, *turn.new_messages]
    # The browser answered the open tool calls of the last assistant message: that message goes on.
    if not stored or stored[-1]["role"] != "assistant" or stored[-1]["id"] != last.get("id"):
        raise RequestRejected(400, "invalid_request", "Only the chat's last assistant message can be continued.")
    merged = _merge_answers(stored[-1], last)
    turn.continued = merged["id"]
    turn.builder = UIMessageBuilder(merged["parts"])
    return turn, [*stored[:-1], merged]


# -- the stream view ---------------------------------------------------------------------------------

class ChatRunner(StreamRunner):
    """The runner of a chat stream: resumable and stoppable (``chat_id``, see :mod:`~.resumable`), and
    building the assistant message from the parts it streams."""

    def __init__(self, *, turn: ChatTurn, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.turn = turn
        self.chat_id = turn.chat_id

    def _encode(self, parts: list[p.Part]) -> str:
        builder = self.turn.builder
        if not self._step_started:  # the protocol's start (ui: start, start-step) went before these
            self._step_started = True
            builder.start_step()
        for part in parts:
            builder.add(part)
        return super()._encode(parts)

    _step_started = False

    def stop_requested_early(self) -> bool:
        return self.turn.end_early_stop_watch()

    def stop_flag_cleared(self) -> bool:
        return self.turn.stop_flag_cleared

    def settle(self, status: str, error: BedrockStreamError | None = None) -> list[tuple[Any, dict[str, Any]]]:
        self.turn.end_early_stop_watch()  # (a turn that ends before its stream reads: Bedrock refused it)
        if not self._step_started and self._state == "read":  # started, but not one part came
            self._step_started = True
            self.turn.builder.start_step()
        sends = super().settle(status, error)
        if sends:  # the message's metadata: what the ui protocol's finish chunk carries
            completion = self.completion
            usage = {"input_tokens": completion.input_tokens or 0, "output_tokens": completion.output_tokens or 0,
                     "cache_read_tokens": completion.cache_read_tokens or 0,
                     "cache_write_tokens": completion.cache_write_tokens or 0}
            metadata = ui_message_metadata(self.stream.stop_reason, usage, self.finish_metadata())
            if status != COMPLETED:
                metadata["status"] = status
            self.turn.metadata = metadata
        return sends


class ChatStreamView(BedrockStreamView):
    """POST ``chat/``: a chat kept on the server. Subclass it like the plain views (``family_class``,
    ``tools``, ``model_id``…); Converse and the ui protocol by default (every protocol works).

    The body is ``{id, message}`` (the new message only) or the AI SDK's ``{id, messages, trigger,
    messageId}``, of which only the last message is read once the chat exists: a forged turn in
    ``messages`` never reaches the model. The assistant message's id (made here) is the ``start``
    part's ``messageId``."""

    family_class = ConverseFamily
    stream_protocol = "ui"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _connect_storage(cls)

    def get_request_data(self, request: HttpRequest) -> dict[str, Any]:
        """The request's options, with the conversation read from the database (:func:`build_turn`)."""
        data = read_request_data(request)
        self.turn, messages = build_turn(request, data)
        kept = {k: v for k, v in data.items() if k not in ("id", "message", "messages", "trigger", "messageId")}
        return {**kept, "messages": messages}

    def new_completion(self, request: HttpRequest) -> Completion:
        completion = super().new_completion(request)
        self.turn.message_id = self.protocol.message_id
        completion._bedrock_chat_turn = self.turn  # type: ignore[attr-defined]  # for the receivers above
        return completion

    def start_was_stored(self, completion: Completion) -> bool:
        """The chat turn (the chat and the new message) is a precondition like the start row: without
        it the answer could not be kept, so the view answers 503 before Bedrock is called."""
        return super().start_was_stored(completion) and self.turn.stored

    def error_response(self, error: BedrockStreamError) -> HttpResponseBase:
        """A turn not stored because its chat went meanwhile (deleted, or made by someone else at the
        same time) is the 404 of a chat that does not exist, not a 503 to retry."""
        turn: ChatTurn | None = getattr(self, "turn", None)
        if isinstance(error, StorageUnavailable) and turn is not None and turn.gone:
            return _not_found().response()
        return super().error_response(error)

    def make_runner(self, request: HttpRequest, stream: Any, completion: Completion, started_at: float) -> StreamRunner:
        return ChatRunner(
            turn=self.turn, sender=type(self), request=request, stream=stream, completion=completion,
            protocol=self.protocol, started_at=started_at,
        )


_connect_storage(ChatStreamView)


# -- the JSON endpoints ------------------------------------------------------------------------------

def chat_json(chat: Chat) -> dict[str, Any]:
    return {
        "id": chat.id,
        "title": chat.title,
        "created_at": chat.created_at.isoformat(),
        "updated_at": chat.updated_at.isoformat(),
    }


class ChatAPIView(AccessMixin, View):
    """The chat endpoints' base: the stream views' access control (DRF authentication, permissions,
    throttles; CSRF by ``SessionAuthentication``), JSON refusals. Their GETs only read."""

    get_runs_model = False

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            self.check_access(request)
            return super().dispatch(request, *args, **kwargs)
        except RequestRejected as rejection:
            return rejection.response()

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        allowed = ", ".join(self._allowed_methods())  # type: ignore[attr-defined]
        message = f"Method {request.method} is not allowed; use {allowed}."
        raise RequestRejected(405, "method_not_allowed", message, headers={"Allow": allowed})

    @classonlymethod
    def as_view(cls, **initkwargs: Any) -> Any:
        return csrf_exempt(super().as_view(**initkwargs))


class ChatListView(ChatAPIView):
    """GET ``chats/``: the caller's chats, most recently updated first (``?limit=``, at most 200)."""

    http_method_names = ["get", "options"]

    def get(self, request: HttpRequest) -> HttpResponseBase:
        try:
            limit = min(max(int(request.GET.get("limit", 50)), 1), 200)
        except ValueError:
            raise RequestRejected(400, "invalid_request", "limit: must be a number.") from None
        return JsonResponse({"chats": [chat_json(chat) for chat in chats_of(request)[:limit]]})


class ChatDetailView(ChatAPIView):
    """GET ``chat/<id>/`` (the chat and its messages as ``UIMessage``s), PATCH (``{"title"}``),
    DELETE (its running stream is stopped first)."""

    http_method_names = ["get", "patch", "delete", "options"]

    def get(self, request: HttpRequest, chat_id: str) -> HttpResponseBase:
        chat = get_chat(request, chat_id)
        messages = [message.as_ui_message() for message in chat.messages.all()]
        return JsonResponse({**chat_json(chat), "messages": messages})

    def patch(self, request: HttpRequest, chat_id: str) -> HttpResponseBase:
        chat = get_chat(request, chat_id)
        title = read_request_data(request).get("title")
        if not isinstance(title, str) or len(title) > TITLE_MAX or not title.isprintable():
            raise RequestRejected(400, "invalid_request", f"title: text of at most {TITLE_MAX} characters.")
        chat.title = title.strip()
        chat.save(update_fields=["title", "updated_at"])
        return JsonResponse(chat_json(chat))

    def delete(self, request: HttpRequest, chat_id: str) -> HttpResponseBase:
        chat = get_chat(request, chat_id)
        resumable.request_stop_sync(chat.id)
        chat.delete()
        return HttpResponse(status=204)


class ChatStopView(ChatAPIView):
    """POST ``chat/<id>/stop/``: stop the chat's running stream (owner only); ``{"stopped": bool}``."""

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest, chat_id: str) -> HttpResponseBase:
        chat = get_chat(request, chat_id)
        stopped = resumable.request_stop_sync(chat.id)
        return JsonResponse({"id": chat.id, "stopped": stopped})


class ChatResumeView(ChatAPIView):
    """GET ``chat/<id>/stream/``: the chat's running stream from its start, then live (``useChat``'s
    ``resume``); 204 when nothing is running or ``RESUMABLE`` is off."""

    http_method_names = ["get", "options"]

    def get(self, request: HttpRequest, chat_id: str) -> HttpResponseBase:
        chat = get_chat(request, chat_id)
        release_connections()  # a resume lasts as long as the answer: no database connection held meanwhile
        return resumable.resume_response_for(request, chat.id)
