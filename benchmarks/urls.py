from django.urls import include, path

from benchmarks.floors import floor_view
from benchmarks.handwritten import stream_view

urlpatterns = [
    path("bedrock/", include("django_bedrock_stream.urls")),
    path("hand/llama2/", stream_view),
    path("floor/django/", floor_view),
]
