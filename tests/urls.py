from django.contrib import admin
from django.urls import include, path

from django_bedrock_stream.drf import api_view_for

urlpatterns = [
    path("admin/", admin.site.urls),
    path("bedrock/", include("django_bedrock_stream.urls")),
    path("api/llama2/", api_view_for("llama2").as_view(), name="api-llama2"),
    path("api/converse/", api_view_for("converse").as_view(), name="api-converse"),
]
