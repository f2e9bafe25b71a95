"""``path("bedrock/", include("django_bedrock_stream.urls"))``: one endpoint per family, and
``token/`` (name ``token``), which mints the tokens that GET streams (``allow_get``) accept, and the
chat endpoints (``chat/``, ``chats/``, ``chat/<id>/``, ``chat/<id>/stream/``, ``chat/<id>/stop/``)."""

from django.urls import path

from .access import StreamTokenView
from .chats import ChatDetailView, ChatListView, ChatResumeView, ChatStopView, ChatStreamView
from .families import FAMILIES
from .views import stream_view_for

app_name = "django_bedrock_stream"

#: One endpoint per registered family (``families.FAMILIES``), named after it: ``llama2/``…
urlpatterns = [path(f"{name}/", stream_view_for(name).as_view(), name=name) for name in FAMILIES]
urlpatterns.append(path("token/", StreamTokenView.as_view(), name="token"))
#: Chats kept on the server (``chats.py``); other code depends on these paths.
urlpatterns += [
    path("chat/", ChatStreamView.as_view(), name="chat"),
    path("chats/", ChatListView.as_view(), name="chats"),
    path("chat/<str:chat_id>/", ChatDetailView.as_view(), name="chat-detail"),
    path("chat/<str:chat_id>/stream/", ChatResumeView.as_view(), name="chat-stream"),
    path("chat/<str:chat_id>/stop/", ChatStopView.as_view(), name="chat-stop"),
]
