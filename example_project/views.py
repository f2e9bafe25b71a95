"""The example site's pages: the chat page (its script, static/example/chat.js, reads the AI SDK UI
message stream: reasoning, citations, files, tool calls and usage), its endpoints (saved chats per
family, the demo tools), and the history of past completions."""

from __future__ import annotations

import functools
import mimetypes
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.contrib.staticfiles import finders
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

from django_bedrock_stream import urls as stream_urls
from django_bedrock_stream.chats import ChatStreamView
from django_bedrock_stream.conf import stream_settings
from django_bedrock_stream.families.base import BedrockFamily
from django_bedrock_stream.media import FORMAT_MEDIA_TYPES, IMAGE_FORMATS, Attachment, FileRefused
from django_bedrock_stream.models import Completion
from django_bedrock_stream.tools import Tool
from django_bedrock_stream.views import ConverseStreamView

from .models import SessionCompletion
from .tools import DEMO_TOOLS

#: Set in an anonymous visitor's session by the chat page, the one time that session is written.
HISTORY_FLAG = "example_history"

#: The chat page's system message, sent first with every turn. Under the emulator the settings turn on
#: prompt caching after the system prompt, so the first request writes it to the cache and every later
#: one reads it back (the cache counts under each answer).
SYSTEM_PROMPT = (
    "You are the assistant of the django-bedrock-stream demo. Answer briefly and plainly. When the user "
    "attaches images or documents, describe what they show and cite the documents you quote."
)

#: File name extensions the picker offers for a Bedrock file format (the format's name otherwise).
EXTENSIONS = {"jpeg": ("jpg", "jpeg"), "html": ("html", "htm"), "md": ("md", "markdown")}


class ToolsChatView(ConverseStreamView):
    """The chat page's ``converse-tools`` endpoint: Converse with the demo tools (``tools.py``): the
    calculator runs here between two model turns, the browser answers ``local_time``, and
    ``send_email`` waits for the user's approval."""

    tools = DEMO_TOOLS
    max_steps = 4
    #: The model ``/bedrock/converse/`` defaults to (Claude 3 Haiku calls tools), pinned (W003).
    model_id = ConverseStreamView.family_class.default_model_id


#: The page's name for :class:`ToolsChatView` in its endpoint list.
TOOLS_ENDPOINT = "converse-tools"


class DemoChatView(ChatStreamView):
    """The page's saved chats (``/demo/chat/<endpoint>/``): the library's chat view, which keeps the
    history on the server, with the page's system prompt first (the plain endpoints get it from the
    page). One subclass per endpoint of the picker (:data:`CHAT_VIEWS`); the chats themselves are
    listed, read, renamed, deleted, resumed and stopped by the library's ``/bedrock/chat…`` endpoints."""

    def get_messages(self, request: HttpRequest) -> list[dict[str, Any]]:
        return [{"role": "system", "content": SYSTEM_PROMPT}, *super().get_messages(request)]


def _chat_view(name: str, view_class: Any) -> type[DemoChatView]:
    """The saved-chat twin of a plain endpoint: its family, model and tools."""
    attrs = {attr: getattr(view_class, attr) for attr in ("family_class", "model_id", "tools", "max_steps")}
    if attrs["model_id"] is None and issubclass(view_class.family_class, ConverseStreamView.family_class):
        attrs["model_id"] = view_class.family_class.default_model_id  # pinned, as ToolsChatView (W003)
    class_name = "".join(word.capitalize() for word in name.replace("-", " ").split()) + "DemoChatView"
    return type(class_name, (DemoChatView,), {**attrs, "__module__": __name__})


#: The plain endpoints of ``django_bedrock_stream.urls``, by name: one per family.
PLAIN_VIEWS: dict[str, Any] = {
    pattern.name: view
    for pattern in stream_urls.urlpatterns
    if hasattr(view := pattern.callback.view_class, "family_class") and not issubclass(view, ChatStreamView)
}
#: The saved-chat view of each endpoint of the picker (the families and the tools), by name.
CHAT_VIEWS: dict[str, type[DemoChatView]] = {
    name: _chat_view(name, view) for name, view in [*PLAIN_VIEWS.items(), (TOOLS_ENDPOINT, ToolsChatView)]
}


def remember_completion(sender: type, request: HttpRequest, completion: Completion, **kwargs: Any) -> None:
    """``stream_started`` receiver: link an anonymous completion to the visitor's session.

    Reads only the session key from the cookie (no session load, no session save): the chat page gave
    the visitor a session; an API client without one has no history to keep.
    """
    session = getattr(request, "session", None)
    key = session.session_key if session is not None else None
    if completion.pk is None or completion.user_id is not None or not key:  # PERSIST off, a user's, no session
        return
    SessionCompletion.objects.create(completion=completion, session_key=key)


def visible_completions(request: HttpRequest) -> QuerySet[Completion]:
    """Staff see every row; a logged-in user their own; an anonymous visitor this session's."""
    rows = Completion.objects.select_related("user")
    user = request.user
    if user.is_authenticated:
        return rows if getattr(user, "is_staff", False) else rows.filter(user=user)
    # Loading the session drops a key the server does not know (expired, or made up in the cookie).
    if not request.session.get(HISTORY_FLAG):
        return rows.none()
    started_here = SessionCompletion.objects.filter(session_key=request.session.session_key).values("completion")
    return rows.filter(pk__in=started_here, user__isnull=True)


@functools.cache
def accepted_files(family_class: type[BedrockFamily]) -> dict[str, str]:
    """The files a family's request format takes, as ``{".ext": media type}``, asked of the family
    itself: its ``build_body`` refuses (``FileRefused``) the formats it cannot send, so the page's file
    picker follows the package instead of repeating its rules."""
    family = family_class()
    accepted: dict[str, str] = {}
    for fmt, media_type in FORMAT_MEDIA_TYPES.items():
        kind = "image" if fmt in IMAGE_FORMATS else "document"
        probe = Attachment(kind, fmt, media_type, b"probe", f"probe.{fmt}")
        try:
            family.build_body([{"role": "user", "content": "probe", "attachments": [probe]}], max_tokens=1)
        except FileRefused:
            continue
        accepted.update({f".{ext}": media_type for ext in EXTENSIONS.get(fmt, (fmt,))})
    return accepted


def endpoint(name: str, path: str, view_class: Any, label: str = "") -> dict[str, Any]:
    """What the page needs of one endpoint: its URL, default model id, the files and tools it takes."""
    return {
        "name": name,
        "label": label or name,
        "path": path,
        "chat_path": reverse(f"demo-chat-{name}"),
        "model_id": view_class.model_id or view_class.family_class.default_model_id,
        "accept": accepted_files(view_class.family_class),
        "tools": [describe_tool(t) for t in view_class.tools],
    }


def describe_tool(item: Tool) -> dict[str, Any]:
    """A tool as the page's help lists it: where it runs and whether it asks the user first."""
    return {
        "name": item.name,
        "description": item.description,
        "runs": "browser" if item.client_side else "server",
        "approval": item.needs_approval is not False,
    }


def families() -> list[dict[str, Any]]:
    """Every endpoint of ``django_bedrock_stream.urls``, with the example's tools endpoint after
    ``converse``, each with its default model id and the files and tools it takes."""
    out = []
    for pattern in stream_urls.urlpatterns:
        view_class = pattern.callback.view_class
        if pattern.name not in PLAIN_VIEWS:
            continue  # token/ mints tokens for GET streams; chat/ and its siblings are the saved chats
        out.append(endpoint(pattern.name, f"/bedrock/{pattern.pattern}", view_class))
        if view_class.family_class is ToolsChatView.family_class:
            out.append(endpoint(TOOLS_ENDPOINT, reverse("converse-tools"), ToolsChatView, "converse + tools"))
    return out


def emulator_reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_emulator/health", timeout=1) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


@ensure_csrf_cookie
@require_GET
def chat(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated and not request.session.get(HISTORY_FLAG):
        request.session[HISTORY_FLAG] = True  # the visitor's session, made once here rather than per stream
    uses_emulator = getattr(settings, "EXAMPLE_USES_EMULATOR", False)
    emulator_url = getattr(settings, "EXAMPLE_EMULATOR_URL", "")
    endpoints = families()
    context = {
        "families": endpoints,
        "uses_emulator": uses_emulator,
        "emulator_url": emulator_url,
        "emulator_down": uses_emulator and not emulator_reachable(emulator_url),
        "emulator_port": emulator_url.rsplit(":", 1)[-1] if emulator_url.count(":") == 2 else "8787",
        "system_prompt": SYSTEM_PROMPT,
        "demo_tools": [describe_tool(t) for t in ToolsChatView.tools],
        "tools_endpoint": TOOLS_ENDPOINT,
        "resumable": bool(stream_settings.RESUMABLE),
        # What chat.js needs, as JSON (json_script): the files each endpoint takes and the server's
        # limits, checked in the browser first so the user gets a clear message before uploading.
        "config": {
            "system": SYSTEM_PROMPT,
            "accept": {f["name"]: f["accept"] for f in endpoints},
            "tools": {f["name"]: f["tools"] for f in endpoints if f["tools"]},
            "toolsEndpoint": TOOLS_ENDPOINT,
            # The package's chat endpoints (chats/, chat/<id>/, …/stream/, …/stop/) live under this path.
            "chatApi": reverse("django_bedrock_stream:chats").removesuffix("chats/"),
            "limits": {
                "maxImages": stream_settings.MAX_IMAGES,
                "maxImageBytes": stream_settings.MAX_IMAGE_BYTES,
                "maxDocuments": stream_settings.MAX_DOCUMENTS,
                "maxDocumentBytes": stream_settings.MAX_DOCUMENT_BYTES,
                "maxBodyBytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
            },
        },
    }
    return render(request, "example/chat.html", context)


@require_GET
def history(request: HttpRequest) -> HttpResponse:
    completions = visible_completions(request)[:100]
    return render(request, "example/history.html", {"completions": completions})


def static_file(request: HttpRequest, path: str) -> HttpResponse:
    """Serve the demo's static files under uvicorn (``runserver`` serves them itself).

    A plain response, not ``django.views.static.serve``'s ``FileResponse``: under ASGI a sync file
    iterator would be consumed through a thread with a warning. Only wired in when ``DEBUG``.
    """
    found = finders.find(path)
    if not found or isinstance(found, list):
        raise Http404(path)
    content_type = mimetypes.guess_type(found)[0] or "application/octet-stream"
    with open(found, "rb") as fh:
        return HttpResponse(fh.read(), content_type=content_type)
