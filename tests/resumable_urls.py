"""Minimal chat endpoints over the resumable layer (``tests/test_resumable.py``), independent of the
chat models: a stream view whose runner answers the chat in the URL, resume and stop; and the
package's own (``bedrock/chat/``…)."""

from typing import Any

from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from django_bedrock_stream import resumable
from django_bedrock_stream.runner import StreamRunner
from django_bedrock_stream.views import ConverseStreamView


class ChatView(ConverseStreamView):
    """POST <chat id>/: a Converse stream that is the chat's running stream."""

    stream_protocol = "ui"

    def make_runner(self, request: HttpRequest, *args: Any, **kwargs: Any) -> StreamRunner:
        runner = super().make_runner(request, *args, **kwargs)
        runner.chat_id = self.kwargs["chat_id"]
        return runner


async def resume(request: HttpRequest, chat_id: str) -> HttpResponseBase:
    return await resumable.resume_response(chat_id)


async def stop(request: HttpRequest, chat_id: str) -> HttpResponseBase:
    return JsonResponse({"stopped": await resumable.request_stop(chat_id)})


stop.csrf_exempt = True  # type: ignore[attr-defined]  # Django 4.2's csrf_exempt would make it sync


def resume_sync(request: HttpRequest, chat_id: str) -> HttpResponseBase:
    return resumable.resume_response_sync(chat_id)


@csrf_exempt
def stop_sync(request: HttpRequest, chat_id: str) -> HttpResponseBase:
    return JsonResponse({"stopped": resumable.request_stop_sync(chat_id)})


urlpatterns = [
    path("bedrock/", include("django_bedrock_stream.urls")),  # the package's chat endpoints
    path("chat/<str:chat_id>/", ChatView.as_view()),
    path("chat/<str:chat_id>/stream/", resume),
    path("chat/<str:chat_id>/stop/", stop),
    path("sync/chat/<str:chat_id>/stream/", resume_sync),
    path("sync/chat/<str:chat_id>/stop/", stop_sync),
]
