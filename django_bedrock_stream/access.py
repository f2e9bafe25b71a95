"""Access control for the stream views: who may stream (DRF's authentication, permission and throttle
classes, :class:`AccessMixin`), and who may run a prompt from a ``GET`` query string (views with
``allow_get``, for ``EventSource``).

CSRF protection does not cover ``GET``, and a top-level navigation carries the browser's
``SameSite=Lax`` session cookie (and cached Basic credentials): any page could send a logged-in user
to ``/sse/?prompt=…`` and spend their tokens. So a GET that carries such *ambient* credentials must
prove that one of the site's own pages made it, with either

* ``Sec-Fetch-Site: same-origin``, which the browser sets itself (page scripts cannot), or
* ``?token=…`` from :class:`StreamTokenView`: a POST checked exactly like a stream POST
  (authentication, permissions, CSRF for session users), whose answer only same-origin scripts can
  read. The token is signed, expires after :data:`TOKEN_MAX_AGE` seconds, and is bound to the user
  (for anonymous visitors, the session), the stream URL's path and the query parameters that decide
  what is spent (:data:`BOUND_PARAMETERS`).

The decision functions do no I/O; :class:`StreamTokenView` is the endpoint around them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote, urlsplit

from django.core import signing
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse, QueryDict
from django.http.response import HttpResponseBase
from django.urls import Resolver404, ResolverMatch, get_script_prefix, resolve
from django.utils.crypto import constant_time_compare
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.authentication import (
    BaseAuthentication,
    BasicAuthentication,
    RemoteUserAuthentication,
    SessionAuthentication,
)
from rest_framework.parsers import BaseParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from .conf import stream_settings
from .parsing import RequestRejected

if TYPE_CHECKING:
    from .views import BedrockStreamView

#: Seconds a stream token stays valid: enough to open an ``EventSource`` right after minting it, short
#: enough that a leaked URL is soon useless (and a reconnecting ``EventSource`` stops instead of
#: starting the prompt again).
TOKEN_MAX_AGE = 60
#: The query parameters that decide what a GET stream spends; a token covers exactly these (others,
#: like ``protocol``, may change).
BOUND_PARAMETERS = ("prompt", "messages", "model", "max_tokens")
#: Authentication the browser attaches to any request by itself, cross-site navigations included.
AMBIENT_AUTHENTICATORS = (SessionAuthentication, BasicAuthentication, RemoteUserAuthentication)
CROSS_SITE_GET_MESSAGE = (
    "A GET stream must come from this site's own pages: the browser's Sec-Fetch-Site: same-origin "
    "header or a stream token is required."
)
_SALT = "django_bedrock_stream.access.stream-token"


def needs_same_origin_proof(request: HttpRequest, authenticator: BaseAuthentication | None) -> bool:
    """True when the GET carries credentials a browser attaches on its own: any cookie (a custom
    authenticator may read one; an anonymous visitor's session is theirs) or Session, Basic or
    remote-user authentication. A token or custom header, or no credential at all, needs no proof."""
    return isinstance(authenticator, AMBIENT_AUTHENTICATORS) or bool(request.COOKIES)


def has_same_origin_proof(request: HttpRequest, max_age: int = TOKEN_MAX_AGE) -> bool:
    """``Sec-Fetch-Site: same-origin`` or a valid ``?token=``. ``none`` (a typed or pasted URL) and
    ``same-site`` (a sibling subdomain) are not proof."""
    if request.headers.get("Sec-Fetch-Site") == "same-origin":
        return True
    token = request.GET.get("token")
    if not token:
        return False
    try:
        signed = signing.TimestampSigner(salt=_SALT).unsign(token, max_age=max_age)
    except signing.BadSignature:  # includes SignatureExpired
        return False
    return constant_time_compare(signed, _binding(request, request.path_info, request.GET))


def is_get_allowed(request: HttpRequest, authenticator: BaseAuthentication | None) -> bool:
    """Whether a GET stream may run its query's prompt; call after authentication (``request.user``)."""
    return not needs_same_origin_proof(request, authenticator) or has_same_origin_proof(request)


def make_stream_token(request: HttpRequest, path_info: str, query: QueryDict) -> str:
    """A token for a GET to ``path_info`` (without the script prefix) with ``query``, by this user."""
    return signing.TimestampSigner(salt=_SALT).sign(_binding(request, path_info, query))


def _binding(request: HttpRequest, path_info: str, query: QueryDict) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        subject = f"user:{user.pk}"
    else:
        subject = f"session:{getattr(getattr(request, 'session', None), 'session_key', None) or ''}"
    values = [subject, path_info, *(query.getlist(name) for name in BOUND_PARAMETERS)]
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()


class _IgnoreBody(BaseParser):
    media_type = "*/*"

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> dict[str, Any]:
        return {}


def stream_permission_classes(classes: Sequence[type[BasePermission]] | None) -> list[type[BasePermission]]:
    """What a stream view enforces by default: ``classes`` (``None``: the project's
    ``DEFAULT_PERMISSION_CLASSES``), with ``IsAuthenticated`` first unless ``ALLOW_ANONYMOUS``.
    Shared by both flavours so that neither is ever more permissive than the other."""
    result = list(api_settings.DEFAULT_PERMISSION_CLASSES if classes is None else classes)
    if not stream_settings.ALLOW_ANONYMOUS:
        result.insert(0, IsAuthenticated)
    return result


class AccessMixin:
    """Access control for the plain stream views, with Django REST framework's own classes:
    ``authentication_classes``, ``permission_classes`` and ``throttle_classes`` default to the
    project's ``REST_FRAMEWORK`` settings, and unless ``BEDROCK_STREAM["ALLOW_ANONYMOUS"]`` is true,
    ``IsAuthenticated`` is required too. As with DRF's ``APIView``, CSRF is enforced by
    ``SessionAuthentication`` for session-authenticated browsers (token clients need no token)."""

    #: DRF authentication classes; None: ``REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]``.
    authentication_classes: Sequence[type[BaseAuthentication]] | None = None
    #: DRF permission classes; None: ``REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"]``.
    permission_classes: Sequence[type[BasePermission]] | None = None
    #: DRF throttle classes; None: ``REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"]``.
    throttle_classes: Sequence[type[BaseThrottle]] | None = None
    #: A GET here calls the model (a stream view's ``allow_get``), so it must prove it came from this
    #: site; False for views whose GETs only read (the chat endpoints).
    get_runs_model: bool = True

    def get_authenticators(self) -> list[BaseAuthentication]:
        classes = self.authentication_classes
        return [auth() for auth in (api_settings.DEFAULT_AUTHENTICATION_CLASSES if classes is None else classes)]

    def get_permissions(self) -> list[BasePermission]:
        return [permission() for permission in stream_permission_classes(self.permission_classes)]

    def get_throttles(self) -> list[BaseThrottle]:
        classes = self.throttle_classes
        return [throttle() for throttle in (api_settings.DEFAULT_THROTTLE_CLASSES if classes is None else classes)]

    def check_access(self, request: HttpRequest) -> None:
        """Authenticate, check permissions and throttles the way DRF's ``APIView.initial`` does."""
        authenticators = self.get_authenticators()
        # The body is parsed by prepare(); DRF's CSRF check only needs the header token, so give it
        # a parser that reads nothing (with none at all, request.POST raises 415).
        drf_request = Request(request, parsers=[_IgnoreBody()], authenticators=authenticators)
        try:
            request.user = drf_request.user
            for permission in self.get_permissions():
                if not permission.has_permission(drf_request, self):
                    if drf_request.authenticators and not drf_request.successful_authenticator:
                        raise exceptions.NotAuthenticated()
                    raise exceptions.PermissionDenied(getattr(permission, "message", None))
            # A GET runs the query's prompt only if it proves it came from this site (see above);
            # checked before throttles, so a refused cross-site visit uses none of the user's quota.
            if (
                request.method == "GET"
                and self.get_runs_model
                and not is_get_allowed(request, drf_request.successful_authenticator)
            ):
                raise RequestRejected(403, "cross_site_get", CROSS_SITE_GET_MESSAGE)
            waits = [t.wait() for t in self.get_throttles() if not t.allow_request(drf_request, self)]
            if waits:
                raise exceptions.Throttled(max((w for w in waits if w is not None), default=None))
        except exceptions.APIException as exc:
            headers = {}
            status = exc.status_code
            if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
                header = authenticators[0].authenticate_header(drf_request) if authenticators else None
                if header:
                    headers["WWW-Authenticate"] = header
                else:
                    status = 403
            wait = getattr(exc, "wait", None)
            if wait is not None:
                headers["Retry-After"] = str(math.ceil(wait))
            raise RequestRejected(status, str(exc.default_code), str(exc.detail), headers=headers) from None


@method_decorator(csrf_exempt, name="dispatch")  # as on the stream views: SessionAuthentication checks CSRF
class StreamTokenView(View):
    """``POST {"url": "/sse/?prompt=…"}`` answers ``{"token": …, "url": "/sse/?prompt=…&token=…"}``.

    ``url`` must route to a stream view with ``allow_get``, and the request must pass that view's own
    access checks (throttles excepted: the stream is throttled when it runs). Should not need
    subclassing."""

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        from .views import BedrockStreamView  # views.py imports this module

        try:
            split = _local_url(request.body)
        except RequestDataTooBig:
            return RequestRejected(413, "payload_too_large", "The request body is too large.").response()
        routed = _route(unquote(split.path)) if split else None
        found = _get_stream_view(routed[1], BedrockStreamView) if routed else None
        if split is None or routed is None or found is None:
            message = 'Send {"url": "<path of a stream view that accepts GET>?<its query>"}.'
            return RequestRejected(400, "invalid_request", message).response()
        (path_info, match), (view_class, initkwargs) = routed, found
        view = view_class(**{**initkwargs, "throttle_classes": ()})
        view.setup(request, *match.args, **match.kwargs)
        try:
            view.check_access(request)
        except RequestRejected as rejection:
            return rejection.response()
        query = QueryDict(split.query, mutable=True)
        query.pop("token", None)
        token = make_stream_token(request, path_info, query)
        query["token"] = token
        return JsonResponse({"token": token, "url": f"{split.path}?{query.urlencode()}"})


def _local_url(body: bytes) -> SplitResult | None:
    """The body's ``"url"`` if it is a path on this site (no scheme, no host)."""
    try:
        data = json.loads(body or b"null")
        url = data.get("url") if isinstance(data, dict) else None
        split = urlsplit(url) if isinstance(url, str) else None
    except (ValueError, UnicodeDecodeError, RecursionError):  # urlsplit raises ValueError too ("//[")
        return None
    return split if split and split.path.startswith("/") and not (split.scheme or split.netloc) else None


def _get_stream_view(
    match: ResolverMatch, base: type[BedrockStreamView]
) -> tuple[type[BedrockStreamView], dict[str, Any]] | None:
    """The view class and ``as_view()`` arguments routed by ``match``, if it is a stream view with GET."""
    view_class = getattr(match.func, "view_class", None)
    initkwargs = getattr(match.func, "view_initkwargs", {})
    if isinstance(view_class, type) and issubclass(view_class, base):
        return (view_class, initkwargs) if initkwargs.get("allow_get", view_class.allow_get) else None
    return None


def _route(path: str) -> tuple[str, ResolverMatch] | None:
    """``path`` without the script prefix, and what it resolves to."""
    prefix = get_script_prefix()
    if not path.startswith(prefix):
        return None
    path_info = "/" + path[len(prefix) :]
    try:
        return path_info, resolve(path_info)
    except Resolver404:
        return None
