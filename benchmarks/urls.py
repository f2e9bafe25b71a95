from django.urls import include, path

urlpatterns = [path("bedrock/", include("django_bedrock_stream.urls"))]
