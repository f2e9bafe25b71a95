"""Who may run a prompt from a ``GET`` query string (views with ``allow_get``, for ``EventSource``).

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
from rest_framework.authentication import (
    BaseAuthentication,
    BasicAuthentication,
    RemoteUserAuthentication,
    SessionAuthentication,
)

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


@method_decorator(csrf_exempt, name="dispatch")  # as on the stream views: SessionAuthentication checks CSRF
class StreamTokenView(View):
    """``POST {"url": "/sse/?prompt=…"}`` answers ``{"token": …, "url": "/sse/?prompt=…&token=…"}``.

    ``url`` must route to a stream view with ``allow_get``, and the request must pass that view's own
    access checks (throttles excepted: the stream is throttled when it runs). Should not need
    subclassing."""

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        from .views import BedrockStreamView, RequestRejected  # views.py imports this module

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
