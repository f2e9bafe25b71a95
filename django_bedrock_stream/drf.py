"""The Django REST framework flavour: an ``APIView`` that streams.

DRF's ``APIView`` is sync-only; a sync view under ASGI would hold Django's shared thread while
Bedrock works. :class:`BedrockStreamAPIView` keeps DRF's whole lifecycle (``initialize_request``,
``initial`` — content negotiation, authentication, permissions, throttles — ``handle_exception``,
``finalize_response``) but runs it from an async ``dispatch`` under ASGI, and DRF's own sync
``dispatch`` under WSGI. Errors are rendered the DRF way (``{"detail": ...}`` / serializer errors).
"""

from __future__ import annotations

import functools
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.decorators import classonlymethod
from rest_framework import exceptions
from rest_framework.parsers import JSONParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from .exceptions import BedrockStreamError
from .families import FAMILIES
from .serializers import ChatRequestSerializer
from .views import BedrockStreamMixin, RequestRejected, keep_async


class _StreamRenderer(BaseRenderer):
    """Lets ``Accept: text/event-stream`` / ``text/plain`` pass content negotiation (no 406).

    The stream itself is a ``StreamingHttpResponse`` that DRF passes through untouched; this renderer
    only renders error bodies for such clients, as JSON text.
    """

    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return JSONRenderer().render(data)


class EventStreamRenderer(_StreamRenderer):
    media_type = "text/event-stream"
    format = "sse"


class PlainTextStreamRenderer(_StreamRenderer):
    media_type = "text/plain"
    format = "txt"


class BedrockUpstreamError(exceptions.APIException):
    """A Bedrock error before the first byte, as a DRF exception (status from the error table)."""

    def __init__(self, error: BedrockStreamError) -> None:
        super().__init__(detail=error.message, code=error.error_type)
        self.status_code = error.status_code
        self.wait = error.retry_after


class BedrockStreamAPIMixin(BedrockStreamMixin):
    """Adds the stream flow to an ``APIView``. Combine with ``APIView`` (as
    :class:`BedrockStreamAPIView` does) and set ``family_class``."""

    renderer_classes = [JSONRenderer, EventStreamRenderer, PlainTextStreamRenderer]
    parser_classes = [JSONParser]
    #: For drf-spectacular and the browsable API: the request body schema.
    serializer_class = ChatRequestSerializer

    def get_serializer(self, *args: Any, **kwargs: Any) -> ChatRequestSerializer:
        kwargs.setdefault("context", {"allowed_models": [], "max_tokens_cap": 1})
        return self.serializer_class(*args, **kwargs)

    def reject(self, rejection: RequestRejected) -> HttpResponseBase:
        if rejection.details is not None:
            raise exceptions.ValidationError(rejection.details)
        if rejection.status == 413:
            raise exceptions.APIException(rejection.message, code=rejection.error_type)
        raise exceptions.ParseError(rejection.message, code=rejection.error_type)

    def error_response(self, error: BedrockStreamError) -> HttpResponseBase:
        raise BedrockUpstreamError(error)


class BedrockStreamAPIView(BedrockStreamAPIMixin, APIView):
    """An ``APIView`` that streams Bedrock output; set ``family_class`` (and DRF's usual
    ``authentication_classes``, ``permission_classes``, ``throttle_classes``)."""

    http_method_names = ["post", "options"]

    @classonlymethod
    def as_view(cls, **initkwargs: Any) -> Any:
        return keep_async(super().as_view(**initkwargs))

    async def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not isinstance(request, ASGIRequest):
            return await sync_to_async(self.dispatch_sync)(request, *args, **kwargs)
        self.args, self.kwargs = args, kwargs
        drf_request = self.initialize_request(request, *args, **kwargs)
        self.request = drf_request
        self.headers = self.default_response_headers
        try:
            await sync_to_async(self.initial)(drf_request, *args, **kwargs)
            if drf_request.method == "POST":
                response = await self.handle_async(drf_request)
            else:
                response = await sync_to_async(self._other_method)(drf_request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(drf_request, response, *args, **kwargs)
        return self.response

    def dispatch_sync(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        """WSGI: DRF's own sync ``dispatch``, with the handlers bound to their blocking forms."""
        self.post = self.handle_sync  # type: ignore[method-assign,assignment]
        self.options = functools.partial(APIView.options, self)  # type: ignore[method-assign]
        return APIView.dispatch(self, request, *args, **kwargs)

    def _other_method(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        handler = getattr(APIView, request.method.lower(), None)
        if request.method.lower() not in self.http_method_names or handler is None:
            return self.http_method_not_allowed(request, *args, **kwargs)
        return handler(self, request, *args, **kwargs)

    async def post(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponseBase:
        return await self.handle_async(request)

    async def options(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponseBase:
        return await sync_to_async(APIView.options)(self, request, *args, **kwargs)


def _describe_for_drf_spectacular() -> None:
    """With drf-spectacular installed, describe the 200 response as a stream, not as the request body."""
    try:
        from drf_spectacular.types import OpenApiTypes
        from drf_spectacular.utils import extend_schema
    except ImportError:
        return
    stream = {(200, media_type): OpenApiTypes.STR for media_type in ("text/plain", "text/event-stream")}
    BedrockStreamAPIView.post = extend_schema(  # type: ignore[method-assign]
        request=ChatRequestSerializer, responses=stream, description="Streams the model's reply."
    )(BedrockStreamAPIView.post)


_describe_for_drf_spectacular()


def api_view_for(family: str) -> type[BedrockStreamAPIView]:
    """A ready DRF view class for a family name (``"llama2"``, ``"converse"``…)."""
    family_class = FAMILIES[family]
    name = "".join(part.title() for part in family.split("-")) + "StreamAPIView"
    return type(name, (BedrockStreamAPIView,), {"family_class": family_class})
