"""The example site's pages: the chat page, the history of past completions, and a JSON summary of the
newest one (what the chat script shows after a stream ends)."""

from __future__ import annotations

import json
import mimetypes
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.contrib.staticfiles import finders
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

from django_bedrock_stream import urls as stream_urls
from django_bedrock_stream.models import Completion

from .models import SessionCompletion

#: Set in an anonymous visitor's session by the chat page, the one time that session is written.
HISTORY_FLAG = "example_history"


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


def families() -> list[dict[str, str]]:
    """Every endpoint of ``django_bedrock_stream.urls`` with its default model id."""
    out = []
    for pattern in stream_urls.urlpatterns:
        view_class = pattern.callback.view_class
        if not hasattr(view_class, "family_class"):
            continue  # token/ mints tokens for GET streams; it is not a model endpoint
        out.append(
            {
                "name": pattern.name,
                "path": f"/bedrock/{pattern.pattern}",
                "model_id": view_class.model_id or view_class.family_class.default_model_id,
            }
        )
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
    context = {
        "families": families(),
        "families_json": json.dumps(families()),
        "uses_emulator": uses_emulator,
        "emulator_url": emulator_url,
        "emulator_down": uses_emulator and not emulator_reachable(emulator_url),
        "emulator_port": emulator_url.rsplit(":", 1)[-1] if emulator_url.count(":") == 2 else "8787",
    }
    return render(request, "example/chat.html", context)


@require_GET
def history(request: HttpRequest) -> HttpResponse:
    completions = visible_completions(request)[:100]
    return render(request, "example/history.html", {"completions": completions})


def summary(completion: Completion) -> dict[str, Any]:
    ttft = completion.time_to_first_token
    return {
        "id": completion.pk,
        "model_id": completion.model_id,
        "family": completion.family,
        "status": completion.status,
        "stop_reason": completion.stop_reason,
        "input_tokens": completion.input_tokens,
        "output_tokens": completion.output_tokens,
        "time_to_first_token_ms": round(ttft.total_seconds() * 1000) if ttft is not None else None,
        "error": completion.error,
        "error_code": completion.error_code,
        "created_at": completion.created_at.isoformat(),
        "finished_at": completion.finished_at.isoformat() if completion.finished_at else None,
    }


@require_GET
def latest(request: HttpRequest) -> JsonResponse:
    """The newest completion this visitor may see (staff: their own newest, not everyone's)."""
    rows = visible_completions(request)
    if request.user.is_authenticated and getattr(request.user, "is_staff", False):
        rows = rows.filter(user=request.user)
    completion = rows.first()
    if completion is None:
        return JsonResponse({"error": {"type": "not_found", "message": "No completion yet."}}, status=404)
    return JsonResponse(summary(completion))


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

