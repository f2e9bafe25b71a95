from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from . import views

urlpatterns = [
    path("", views.chat, name="chat"),
    path("history/", views.history, name="history"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="example/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("bedrock/", include("django_bedrock_stream.urls")),
    # The chat page's endpoint with the demo tools (example_project/tools.py).
    path("demo/converse-tools/", views.ToolsChatView.as_view(), name="converse-tools"),
    # The page's saved chats, one endpoint per family (and the tools), as ChatStreamViews.
    *(path(f"demo/chat/{name}/", view.as_view(), name=f"demo-chat-{name}") for name, view in views.CHAT_VIEWS.items()),
]

if settings.DEBUG:
    # runserver serves static files before URL routing; uvicorn needs this route.
    urlpatterns.append(re_path(r"^static/(?P<path>.+)$", views.static_file))
