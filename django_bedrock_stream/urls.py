"""``path("bedrock/", include("django_bedrock_stream.urls"))``: one endpoint per family, and
``token/`` (name ``token``), which mints the tokens that GET streams (``allow_get``) accept."""

from django.urls import path

from .access import StreamTokenView
from .families import FAMILIES
from .views import stream_view_for

app_name = "django_bedrock_stream"

#: One endpoint per registered family (``families.FAMILIES``), named after it: ``llama2/``…
urlpatterns = [path(f"{name}/", stream_view_for(name).as_view(), name=name) for name in FAMILIES]
urlpatterns.append(path("token/", StreamTokenView.as_view(), name="token"))
