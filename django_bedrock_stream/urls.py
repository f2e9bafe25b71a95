"""``path("bedrock/", include("django_bedrock_stream.urls"))``: one endpoint per family, and
``token/`` (name ``token``), which mints the tokens that GET streams (``allow_get``) accept."""

from django.urls import path

from . import views
from .access import StreamTokenView

app_name = "django_bedrock_stream"

urlpatterns = [
    path("anthropic/", views.AnthropicStreamView.as_view(), name="anthropic"),
    path("anthropic-messages/", views.AnthropicMessagesStreamView.as_view(), name="anthropic-messages"),
    path("cohere/", views.CohereStreamView.as_view(), name="cohere"),
    path("llama2/", views.Llama2StreamView.as_view(), name="llama2"),
    path("llama3/", views.Llama3StreamView.as_view(), name="llama3"),
    path("mistral/", views.MistralStreamView.as_view(), name="mistral"),
    path("titan/", views.TitanStreamView.as_view(), name="titan"),
    path("converse/", views.ConverseStreamView.as_view(), name="converse"),
    path("token/", StreamTokenView.as_view(), name="token"),
]
