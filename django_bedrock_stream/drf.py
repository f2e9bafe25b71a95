"""The Django REST framework flavour: an ``APIView`` that streams.

DRF's ``APIView`` is sync-only; a sync view under ASGI would hold Django's shared thread while
Bedrock works. :class:`BedrockStreamAPIView` keeps DRF's whole lifecycle (``initialize_request``,
``initial`` — content negotiation, authentication, permissions, throttles — ``handle_exception``,
``finalize_response``) but runs it from an async ``dispatch`` under ASGI, and DRF's own sync
``dispatch`` under WSGI. Errors are rendered the DRF way (``{"detail": ...}`` / serializer errors).

Secure by default, like the plain views: unless the view sets its own ``permission_classes``, it
enforces the project's ``DEFAULT_PERMISSION_CLASSES`` with ``IsAuthenticated`` first (dropped when
``BEDROCK_STREAM["ALLOW_ANONYMOUS"]`` is true) rather than DRF's permissive ``AllowAny`` default.
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
from rest_framework.parsers import BaseParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from .access import stream_permission_classes
from .budgets import BudgetRefused
from .exceptions import BedrockStreamError
from .families import FAMILIES
from .parsing import RequestRejected
from .serializers import ChatRequestSerializer
from .views import BedrockStreamMixin, keep_async


class SafeJSONRenderer(JSONRenderer):
    """DRF's ``JSONRenderer`` that never fails on text it cannot encode.

    DRF echoes bad input into error messages (``'"\\ud800" is not a valid choice.'``), and with
    ``UNICODE_JSON`` (the default) a lone surrogate then makes the UTF-8 encode raise: a 500 instead
    of the 400. Such bodies are rendered ``\\u``-escaped (``ensure_ascii``) instead; others unchanged.
    """

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            self.ensure_ascii = True
            return super().render(data, accepted_media_type, renderer_context)


class _StreamRenderer(BaseRenderer):
    """Lets ``Accept: text/event-stream`` / ``text/plain`` pass content negotiation (no 406).

    The stream itself is a ``StreamingHttpResponse`` that DRF passes through untouched; this renderer
    only renders error bodies for such clients: as JSON, labelled ``application/json`` (as the plain
    views do), so that a client never tries to read an error as an event stream.
    """

    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = SafeJSONRenderer.media_type
        return SafeJSONRenderer().render(data)


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
        if isinstance(error, BudgetRefused):  # DRF's "detail", and the plain views' body with its figures
            self.detail = {"detail": error.message, **error.as_json()}


class RejectedRequestError(exceptions.APIException):
    """A refused request (e.g. 413 for an oversized body) as a DRF exception with its own status."""

    def __init__(self, rejection: RequestRejected) -> None:
        super().__init__(detail=rejection.message, code=rejection.error_type)
        self.status_code = rejection.status


def api_exception(rejection: RequestRejected) -> exceptions.APIException:
    """The DRF exception for a refused request: per-field errors, a parse error, or its own status."""
    if rejection.details is not None:
        return exceptions.ValidationError(rejection.details)
    if rejection.status == 400:
        return exceptions.ParseError(rejection.message, code=rejection.error_type)
    return RejectedRequestError(rejection)


class StreamJSONParser(BaseParser):
    """JSON bodies, parsed exactly as the stream flow parses them (``get_request_data``).

    DRF reads the body on its own whenever ``request.data`` or ``request.POST`` is touched, and
    ``SessionAuthentication``'s CSRF check touches ``request.POST`` for every signed-in browser,
    before the view runs. Through DRF's ``JSONParser`` that read has other limits and errors than
    the stream's (an oversized body became Django's HTML 400, a deeply nested one a 500); through
    this parser it gives the same 400/413 JSON, and ``request.data`` the same dict.
    """

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        view, request = parser_context["view"], parser_context["request"]
        try:
            return view.get_request_data(request)
        except RequestRejected as rejection:
            raise api_exception(rejection) from None


def sets_own_permission_classes(view: Any) -> bool:
    """Whether ``permission_classes`` was chosen for this view rather than inherited from ``APIView``.

    Chosen means: passed to ``as_view()``, or assigned in the body of the view's class or of any
    class that comes before ``APIView`` in its MRO (a project base class counts). ``APIView``'s own
    value is DRF's ``DEFAULT_PERMISSION_CLASSES`` read once at import, which is ``AllowAny`` unless the
    project says otherwise: exactly the default that must not open a stream view to everyone.
    """
    if "permission_classes" in vars(view):
        return True
    for klass in type(view).__mro__:
        if klass is APIView:
            return False
        if "permission_classes" in vars(klass):
            return True
    return False


class BedrockStreamAPIMixin(BedrockStreamMixin):
    """Adds the stream flow to an ``APIView``. Combine with ``APIView`` (as
    :class:`BedrockStreamAPIView` does) and set ``family_class``."""

    #: Annotation only (no value): ``APIView``'s attribute must stay the inherited one, see
    #: :func:`sets_own_permission_classes`.
    permission_classes: Any

    renderer_classes = [SafeJSONRenderer, EventStreamRenderer, PlainTextStreamRenderer]
    parser_classes = [StreamJSONParser]
    #: For drf-spectacular and the browsable API: the request body schema.
    serializer_class = ChatRequestSerializer

    def get_serializer(self, *args: Any, **kwargs: Any) -> ChatRequestSerializer:
        kwargs.setdefault("context", {"allowed_models": [], "max_tokens_cap": 1})
        return self.serializer_class(*args, **kwargs)

    def get_permissions(self) -> list[BasePermission]:
        """The view's own ``permission_classes`` as given; otherwise what the plain views enforce
        (the project's default, with ``IsAuthenticated`` first unless ``ALLOW_ANONYMOUS``)."""
        classes = self.permission_classes if sets_own_permission_classes(self) else stream_permission_classes(None)
        return [permission() for permission in classes]

    def reject(self, rejection: RequestRejected) -> HttpResponseBase:
        raise api_exception(rejection)

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
