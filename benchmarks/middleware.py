"""``X-Bench-User: <n>`` → ``request.user`` is the benchmark user ``bench<n>`` (created by ``run.py``).

Budgets only count authenticated users; a session + ``AuthenticationMiddleware`` would add the same two
queries to the library's view and the hand-written one, so the benchmark uses an async middleware that
builds the user from its id, with no query and no thread hop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest, HttpResponse

#: The benchmark users' ids are this plus the header's number.
FIRST_ID = 1


def user_for(request: HttpRequest) -> Any:
    header = request.headers.get("X-Bench-User")
    if header is None:
        return AnonymousUser()
    n = int(header)
    return User(id=FIRST_ID + n, username=f"bench{n}")


class HeaderUserMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        request.user = user_for(request)  # type: ignore[assignment]
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        request.user = user_for(request)  # type: ignore[assignment]
        return await self.get_response(request)


class HeaderUserAuthentication:
    """DRF authentication: the user the middleware set (``SessionAuthentication`` would also enforce CSRF,
    which the load generator does not send)."""

    def authenticate(self, request: Any) -> tuple[Any, None] | None:
        user = getattr(request._request, "user", None)
        return (user, None) if user is not None and user.is_authenticated else None

    def authenticate_header(self, request: Any) -> str:
        return "X-Bench-User"
