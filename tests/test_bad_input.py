"""Bad input never reaches Bedrock: every malformed body is a 400/413 JSON error naming the problem.

Hypothesis throws generated malformed bodies (lone surrogates included) at all eight endpoints of
both flavours (the plain views and the DRF ``APIView`` for each family, routed by this module's
``urlpatterns``), through Django's ``Client`` (WSGI) and ``AsyncClient`` (ASGI), with any ``Accept``
a stream client sends, and checks: the status is 400 or 413, the body is JSON labelled
``application/json`` (``{"error": {"type", "message"}}`` from the plain views, DRF's ``{"detail"}``
or per-field errors from the DRF flavour), the emulator saw no request, no ``Completion`` row exists.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.test import AsyncClient, Client, override_settings
from django.urls import include, path, reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_bedrock_stream.drf import api_view_for
from django_bedrock_stream.families import FAMILIES as FAMILY_REGISTRY
from django_bedrock_stream.models import Completion
from django_bedrock_stream.serializers import ROLES

FAMILIES = list(FAMILY_REGISTRY)  # every family the package routes
#: URL names of every stream view: the plain views (the package's URLconf) and the DRF flavour.
VIEWS = [f"django_bedrock_stream:{family}" for family in FAMILIES] + [f"api-{family}" for family in FAMILIES]
VIEWS.append("django_bedrock_stream:chat")  # the chat endpoint ({id, message}) takes the same attacks
#: What clients send: fetch() with no preference, JSON, the event-stream and text protocols.
ACCEPTS = [None, "*/*", "application/json", "text/event-stream", "text/plain"]

def csrf_token(request: HttpRequest) -> HttpResponse:
    """Sets the CSRF cookie and answers the token, as a page with a form would."""
    return HttpResponse(get_token(request))


urlpatterns = [
    path("csrf/", csrf_token),
    path("bedrock/", include("django_bedrock_stream.urls")),
    *[path(f"api/{family}/", api_view_for(family).as_view(), name=f"api-{family}") for family in FAMILIES],
]
MAX_MESSAGES = 4
MAX_INPUT_CHARS = 200
MAX_TOKENS = 512
LIMITS = {
    "ALLOW_ANONYMOUS": True,
    "MAX_MESSAGES": MAX_MESSAGES,
    "MAX_INPUT_CHARS": MAX_INPUT_CHARS,
    "MAX_TOKENS": MAX_TOKENS,
    "ALLOWED_MODELS": ["mistral.mistral-large-2402-v1:0"],
}


def examples(n: int) -> settings:
    # No example database: the run must not write a .hypothesis/ directory into the checkout.
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("limits"), pytest.mark.urls(__name__)]


@pytest.fixture
def limits() -> Any:
    with override_settings(BEDROCK_STREAM=LIMITS):
        yield


# -- building blocks -------------------------------------------------------------------------

#: A string holding a lone surrogate, which JSON can carry (``"\ud800"``) but UTF-8 cannot encode.
with_surrogate = st.builds(
    lambda before, surrogate, after: before + surrogate + after,
    st.text(max_size=5),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.text(max_size=5),
)
short_text = st.text(max_size=20) | with_surrogate
user_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30).filter(
    lambda s: s.strip()
)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | short_text
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(short_text, children, max_size=4),
    max_leaves=12,
)
non_string = json_values.filter(lambda v: not isinstance(v, str))
non_list = json_values.filter(lambda v: not isinstance(v, list))
non_dict = json_values.filter(lambda v: not isinstance(v, dict))
good_message = st.builds(lambda text: {"role": "user", "content": text}, user_text)
garbage_keys = st.dictionaries(
    short_text.filter(lambda k: k not in ("messages", "model", "max_tokens")), json_values, max_size=3
)


def body(messages: Any = None, **extra: Any) -> dict[str, Any]:
    data = dict(extra)
    if messages is not None:
        data["messages"] = messages
    return data


def with_bad(messages: list[Any], bad: Any, position: int) -> list[Any]:
    return [*messages[:position], bad, *messages[position:]]


def invocation(state: Any) -> dict[str, Any]:
    """An AI SDK 4 tool invocation, well formed but for its ``state``."""
    return {"state": state, "step": 0, "toolCallId": "t1", "toolName": "local_time", "args": {}, "result": {}}


@st.composite
def bad_message_lists(draw: st.DrawFn) -> list[Any]:
    """A list of messages, at least one of which is malformed, inserted among good ones."""
    good = draw(st.lists(good_message, max_size=2))
    bad = draw(
        st.one_of(
            non_dict,  # not an object
            st.builds(lambda role, text: {"role": role, "content": text},
                      json_values.filter(lambda r: r not in ROLES), user_text),  # unknown role
            st.builds(lambda role, content: {"role": role, "content": content},
                      st.sampled_from(ROLES), non_string),  # non-string content
            st.builds(lambda role: {"role": role}, st.sampled_from(ROLES)),  # no content, no parts
            st.builds(lambda text: {"content": text}, user_text),  # no role
            st.builds(lambda role, parts: {"role": role, "parts": parts},
                      st.sampled_from(ROLES), non_list.filter(lambda v: v is not None)),  # parts not a list
            st.builds(lambda role, part: {"role": role, "parts": [part]},
                      st.sampled_from(ROLES), non_dict),  # a part that is not an object
            st.builds(lambda role, text: {"role": role, "parts": [{"type": "text", "text": text}]},
                      st.sampled_from(ROLES), non_string.filter(lambda v: v is not None)),  # part text not a string
            # AI SDK 4's shapes (serializers.from_ai_sdk_4), malformed
            st.builds(lambda role, value: {"role": role, "content": "hi", "toolInvocations": value},
                      st.sampled_from(ROLES), non_list.filter(lambda v: v is not None)),  # not a list
            st.builds(lambda role, value: {"role": role, "content": "hi", "toolInvocations": [value]},
                      st.sampled_from(ROLES), json_values),  # no state, name and call id of a tool invocation
            st.builds(lambda role, value: {"role": role, "parts": [{"type": "tool-invocation", "toolInvocation": value}]},
                      st.sampled_from(ROLES), json_values),
            st.builds(lambda role, state, listed: {"role": role, "content": "hi", **(
                {"toolInvocations": [invocation(state)]} if listed
                else {"parts": [{"type": "tool-invocation", "toolInvocation": invocation(state)}]})},
                st.sampled_from(ROLES), json_values.filter(lambda v: v not in ("partial-call", "call", "result")),
                st.booleans()),  # a tool invocation whose state is anything but one of AI SDK 4's
            st.builds(lambda role, value: {"role": role, "content": "hi", "experimental_attachments": value},
                      st.sampled_from(ROLES), non_list.filter(lambda v: v is not None)),  # not a list
            st.builds(lambda role, value: {"role": role, "content": "hi", "experimental_attachments": [value]},
                      st.sampled_from(ROLES), non_dict),  # an attachment that is not an object
            st.builds(lambda role, value: {"role": role, "parts": [
                {"type": "reasoning", "reasoning": "r", "details": [value]}]},
                st.sampled_from(ROLES), non_dict),  # reasoning details that are not objects
        )
    )
    return with_bad(good, bad, draw(st.integers(0, len(good))))


@st.composite
def surrogate_bodies(draw: st.DrawFn) -> str | bytes:
    """A valid request but for one lone surrogate in one of the string fields the views read."""
    text = draw(with_surrogate)
    field = draw(st.sampled_from(["role", "content", "part type", "part text", "model", "max_tokens"]))
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    extra = {field: text} if field in ("model", "max_tokens") else {}
    if not extra:
        bad = {
            "role": {"role": text, "content": "hi"},
            "content": {"role": draw(st.sampled_from(ROLES)), "content": text},
            "part type": {"role": "user", "parts": [{"type": text, "text": "hi"}]},
            "part text": {"role": "user", "parts": [{"type": "text", "text": text}]},
        }[field]
        messages = with_bad(messages, bad, draw(st.integers(0, 1)))
    data = body(messages, **extra)
    if draw(st.booleans()):
        return json.dumps(data)  # escaped: "\ud800", valid JSON
    return json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")  # raw: not valid UTF-8


no_user_turn = st.lists(
    st.one_of(
        st.builds(lambda role, text: {"role": role, "content": text}, st.sampled_from(["system", "assistant"]), user_text),
        st.builds(lambda text: {"role": "user", "content": text}, st.text(alphabet=" \t\n\r", max_size=5)),
    ),
    min_size=1,
    max_size=MAX_MESSAGES,
)

#: (strategy of bodies, expected error type) — every body here is invalid for one stated reason.
MALFORMED: dict[str, Any] = {
    "not JSON": st.binary(max_size=60).filter(lambda raw: not _is_json_object(raw)),
    "JSON, not an object": json_values.filter(lambda v: not isinstance(v, dict)).map(json.dumps),
    "no messages": garbage_keys.map(json.dumps),
    "messages not a list": st.builds(lambda m, extra: body(m, **extra), non_list.filter(lambda v: v is not None),
                                     garbage_keys).map(json.dumps),
    "messages null": st.just(json.dumps({"messages": None})),
    "empty messages": st.just(json.dumps({"messages": []})),
    "malformed message": bad_message_lists().map(lambda m: json.dumps(body(m))),
    "no non-empty user turn": no_user_turn.map(lambda m: json.dumps(body(m))),
    "too many messages": st.lists(good_message, min_size=MAX_MESSAGES + 1, max_size=MAX_MESSAGES + 6).map(
        lambda m: json.dumps(body(m))
    ),
    "too much text": st.builds(
        lambda n, extra: json.dumps(body([{"role": "user", "content": "x" * n}, *extra])),
        st.integers(MAX_INPUT_CHARS + 1, MAX_INPUT_CHARS * 3),
        st.lists(good_message, max_size=2),
    ),
    "model not allowed": st.builds(
        lambda m, model: json.dumps(body([m], model=model)),
        good_message,
        st.one_of(short_text.filter(lambda s: s not in LIMITS["ALLOWED_MODELS"] and "." not in s),
                  st.sampled_from(["anthropic.claude-3-opus-20240229-v1:0", "meta.llama3-70b-instruct-v1:0",
                                   "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-text-express-v1"]),
                  non_string.filter(lambda v: v is not None)),
    ),
    "max_tokens out of range": st.builds(
        lambda m, value: json.dumps(body([m], max_tokens=value)),
        good_message,
        st.one_of(st.integers(max_value=0), st.integers(min_value=MAX_TOKENS + 1),
                  st.floats(allow_nan=False).filter(lambda f: not f.is_integer()),
                  st.text(max_size=6).filter(lambda s: not s.strip().lstrip("+-").isdigit()),
                  st.booleans(), st.lists(st.integers(), max_size=2), st.dictionaries(short_text, st.integers(), max_size=2)),
    ),
    "non-finite max_tokens": st.builds(
        lambda m, value: f'{{"messages": {json.dumps([m])}, "max_tokens": {value}}}',
        good_message,
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"]),
    ),
    "lone surrogate": surrogate_bodies(),
    "nested garbage": st.builds(
        lambda m, garbage: json.dumps(body([{**m, "content": garbage}])), good_message,
        st.recursive(st.lists(json_values, max_size=3),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(short_text, c, max_size=3), max_leaves=20),
    ),
}


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False


def post(view: str, data: str | bytes, use_async: bool, accept: str | None = None) -> Any:
    url, headers = reverse(view), {"Accept": accept} if accept else {}
    if use_async:
        return async_to_sync(AsyncClient().post)(url, data, content_type="application/json", headers=headers)
    return Client().post(url, data, content_type="application/json", headers=headers)


def _texts(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [text for item in value.values() for text in _texts(item)]
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    return [value] if isinstance(value, str) and value else []


def assert_rejected(response: Any, emulator: Any, statuses: tuple[int, ...] = (400, 413)) -> dict[str, Any]:
    """The refusal of bad input, in the flavour's format; returns the plain views' ``error`` object
    (or DRF's whole body)."""
    assert response.status_code in statuses, (response.status_code, response.content[:500])
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    data = json.loads(response.content)
    assert emulator.requests == []
    assert not Completion.objects.exists()
    if "error" not in data:  # the DRF flavour: {"detail": "..."} or per-field errors
        assert isinstance(data, dict) and _texts(data), data
        return data
    error = data["error"]
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["message"], str) and error["message"]
    return error


# -- the generated attack ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_bodies_are_rejected_at_every_endpoint(bedrock_emulator: Any, kind: str) -> None:
    # 15 kinds x 40 examples = 600 generated bodies, each at a random view of either flavour, WSGI or ASGI.
    @examples(40)
    @given(data=MALFORMED[kind], view=st.sampled_from(VIEWS), use_async=st.booleans(), accept=st.sampled_from(ACCEPTS))
    def attack(data: str | bytes, view: str, use_async: bool, accept: str | None) -> None:
        assert_rejected(post(view, data, use_async, accept), bedrock_emulator)

    attack()


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("use_async", [False, True], ids=["wsgi", "asgi"])
def test_oversized_body_is_413(bedrock_emulator: Any, view: str, use_async: bool) -> None:
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000):
        valid_but_big = json.dumps({"messages": [{"role": "user", "content": "y" * 2000}]})
        error = assert_rejected(post(view, valid_but_big, use_async), bedrock_emulator, (413,))
        assert error.get("type") == "payload_too_large" or error.get("detail") == "The request body is too large."
        assert_rejected(post(view, b"\xff" * 5000, use_async), bedrock_emulator, (413,))


@examples(40)
@given(size=st.integers(1001, 20_000), view=st.sampled_from(VIEWS), use_async=st.booleans())
def test_any_body_over_the_limit_is_413(bedrock_emulator: Any, size: int, view: str, use_async: bool) -> None:
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000):
        assert_rejected(post(view, b"{" + b" " * (size - 2) + b"}", use_async), bedrock_emulator, (413,))


BROWSER_BODIES = {
    "oversized": (json.dumps({"messages": [{"role": "user", "content": "y" * 20_000}]}), 413),
    "not JSON": ("{nope", 400),
    "deeply nested": ("[" * (sys.getrecursionlimit() + 10) + "]" * (sys.getrecursionlimit() + 10), 400),
    "surrogate role": ('{"messages": [{"role": "\\ud800", "content": "hi"}]}', 400),
}


@pytest.mark.parametrize("kind", sorted(BROWSER_BODIES))
@pytest.mark.parametrize("view", ["django_bedrock_stream:llama2", "api-llama2"])
@pytest.mark.parametrize("use_async", [False, True], ids=["wsgi", "asgi"])
@override_settings(BEDROCK_STREAM={**LIMITS, "ALLOW_ANONYMOUS": False}, DATA_UPLOAD_MAX_MEMORY_SIZE=10_000)
def test_bad_input_from_a_signed_in_browser(bedrock_emulator: Any, kind: str, view: str, use_async: bool) -> None:
    """A session user's request goes through ``SessionAuthentication``'s CSRF check first, which in
    the DRF flavour makes DRF read and parse the body: still the same 4xx JSON, never Django's
    HTML 400 or a 500."""
    client = AsyncClient(enforce_csrf_checks=True) if use_async else Client(enforce_csrf_checks=True)
    client.force_login(get_user_model().objects.create_user("eve", password="pw"))
    as_sync = async_to_sync if use_async else (lambda call: call)
    headers = {"X-CSRFToken": as_sync(client.get)("/csrf/").content.decode()}
    data, status = BROWSER_BODIES[kind]
    response = as_sync(client.post)(reverse(view), data, content_type="application/json", headers=headers)
    assert_rejected(response, bedrock_emulator, (status,))
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    assert as_sync(client.post)(reverse(view), good, content_type="application/json").status_code == 403  # no token
    ok = as_sync(client.post)(reverse(view), good, content_type="application/json", headers=headers)
    assert ok.status_code == 200


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "head"])
def test_wrong_method_is_405(bedrock_emulator: Any, view: str, method: str) -> None:
    url = reverse(view)
    response = getattr(Client(), method)(url)
    assert response.status_code == 405
    assert "POST" in response["Allow"]
    response = async_to_sync(getattr(AsyncClient(), method))(url)
    assert response.status_code == 405
    assert bedrock_emulator.requests == [] and not Completion.objects.exists()


# -- specific bodies that once broke parsers ------------------------------------------------------


@pytest.mark.parametrize("use_async", [False, True], ids=["wsgi", "asgi"])
@pytest.mark.parametrize(
    "data",
    [
        "[" * (sys.getrecursionlimit() + 10) + "]" * (sys.getrecursionlimit() + 10),
        '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"messages": [{"role": "user", "content": ' + '{"a":' * 50_000 + "1" + "}" * 50_000 + "}]}",
    ],
    ids=["deep-array", "deep-messages", "deep-content"],
)
def test_deeply_nested_json_is_400_not_500(bedrock_emulator: Any, data: str, use_async: bool) -> None:
    for view in ("django_bedrock_stream:llama2", "api-llama2"):
        assert_rejected(post(view, data, use_async), bedrock_emulator, (400,))


@pytest.mark.parametrize("use_async", [False, True], ids=["wsgi", "asgi"])
@pytest.mark.parametrize(
    "data",
    [
        b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',  # Latin-1, not UTF-8
        b'\xef\xbb\xbf{"messages": [{"role": "user", "content": "bom"}]}' + b"\xff",
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + b"9" * 5000 + b"}",
        b'{"messages": [{"role": "user", "content": "hi"}], "model": "\\ud800"}',
        # PostgreSQL cannot store NUL in text/jsonb: refused up front, so no row is silently lost.
        b'{"messages": [{"role": "user", "content": "nul \\u0000 here"}]}',
        b'{"messages": [{"role": "user", "content": "lone \\udc00 surrogate"}]}',
        b'{"messages": [{"role": "\\ud800", "content": "hi"}]}',  # DRF echoes the role into its message
    ],
    ids=["latin-1", "bom-garbage", "huge-int", "lone-surrogate-model", "nul-content", "surrogate-content",
         "surrogate-role"],
)
@pytest.mark.parametrize("accept", [None, "text/event-stream"])
def test_odd_encodings_are_400(bedrock_emulator: Any, data: bytes, use_async: bool, accept: str | None) -> None:
    for view in ("django_bedrock_stream:converse", "api-converse"):
        assert_rejected(post(view, data, use_async, accept), bedrock_emulator, (400,))
