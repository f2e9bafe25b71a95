from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path

from django_bedrock_stream.drf import api_view_for
from django_bedrock_stream.views import Llama2StreamView

from . import user_views

EVENTSOURCE_PAGE = """<!doctype html><meta charset="utf-8"><title>sse</title><script>
window.result = new Promise((resolve) => {
  const tokens = []; const ids = [];
  const source = new EventSource(new URLSearchParams(location.search).get('stream'));
  source.addEventListener('token', (e) => { tokens.push(JSON.parse(e.data).text); ids.push(e.lastEventId); });
  source.addEventListener('done', (e) => { source.close(); resolve({tokens, ids, done: JSON.parse(e.data)}); });
  source.addEventListener('error', (e) => { source.close(); resolve({tokens, error: e.data || 'connection error'}); });
});
</script>"""


def eventsource_page(request: HttpRequest) -> HttpResponse:
    """A page whose script reads ``?stream=<url>`` with a real EventSource (browser test)."""
    return HttpResponse(EVENTSOURCE_PAGE)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("bedrock/", include("django_bedrock_stream.urls")),
    path("api/llama2/", api_view_for("llama2").as_view(), name="api-llama2"),
    path("api/converse/", api_view_for("converse").as_view(), name="api-converse"),
    path("get/llama2/", Llama2StreamView.as_view(allow_get=True), name="get-llama2"),
    path("sse-page/", eventsource_page),
    path("user/sync-llama2/", user_views.sync_llama2),
    path("user/async-llama2/", user_views.async_llama2),
]
