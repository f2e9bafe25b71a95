from django.urls import include, path

from benchmarks.floors import floor_view
from benchmarks.handwritten import stream_view
from benchmarks.timeline import timed, times_view
from django_bedrock_stream.views import stream_view_for

urlpatterns = [
    path("bedrock/", include("django_bedrock_stream.urls")),
    path("hand/llama2/", stream_view),
    path("floor/django/", floor_view),
    # benchmarks/timeline.py: both views with their times noted.
    path("timed/hand/", timed("handwritten", stream_view)),
    path("timed/library/", timed("library", stream_view_for("llama2").as_view())),
    path("timed/log/", times_view),
]
