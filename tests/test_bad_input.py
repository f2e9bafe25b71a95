"""Bad input never reaches Bedrock: every malformed body is a 400/413 JSON error naming the problem.

Hypothesis throws generated malformed bodies at all eight endpoints, through Django's ``Client``
(WSGI) and ``AsyncClient`` (ASGI), and checks: the status is 400 or 413, the body is
``{"error": {"type", "message"}}``, the emulator saw no request, no ``Completion`` row exists.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client, override_settings
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_bedrock_stream.models import Completion
from django_bedrock_stream.serializers import ROLES

FAMILIES = ["anthropic", "anthropic-messages", "cohere", "llama2", "llama3", "mistral", "titan", "converse"]
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

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("limits")]


@pytest.fixture
def limits() -> Any:
    with override_settings(BEDROCK_STREAM=LIMITS):
        yield


# -- building blocks -------------------------------------------------------------------------

short_text = st.text(max_size=20)
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
        )
    )
    return with_bad(good, bad, draw(st.integers(0, len(good))))


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


def post(family: str, data: str | bytes, use_async: bool, **kwargs: Any) -> Any:
    url = reverse(f"django_bedrock_stream:{family}")
    if use_async:
        return async_to_sync(AsyncClient().post)(url, data, content_type="application/json", **kwargs)
    return Client().post(url, data, content_type="application/json", **kwargs)


def assert_rejected(response: Any, emulator: Any, statuses: tuple[int, ...] = (400, 413)) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.content[:500])
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    error = json.loads(response.content)["error"]
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["message"], str) and error["message"]
    assert emulator.requests == []
    assert not Completion.objects.exists()
    return error


# -- the generated attack ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_bodies_are_rejected_at_every_endpoint(bedrock_emulator: Any, kind: str) -> None:
    # 14 kinds x 40 examples = 560 generated bodies, each at a random endpoint, WSGI or ASGI.
    @examples(40)
    @given(data=MALFORMED[kind], family=st.sampled_from(FAMILIES), use_async=st.booleans())
    def attack(data: str | bytes, family: str, use_async: bool) -> None:
        assert_rejected(post(family, data, use_async), bedrock_emulator)

    attack()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("use_async", [False, True], ids=["wsgi", "asgi"])
def test_oversized_body_is_413(bedrock_emulator: Any, family: str, use_async: bool) -> None:
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000):
        valid_but_big = json.dumps({"messages": [{"role": "user", "content": "y" * 2000}]})
        error = assert_rejected(post(family, valid_but_big, use_async), bedrock_emulator, (413,))
        assert error["type"] == "payload_too_large"
        assert_rejected(post(family, b"\xff" * 5000, use_async), bedrock_emulator, (413,))


@examples(40)
@given(size=st.integers(1001, 20_000), family=st.sampled_from(FAMILIES), use_async=st.booleans())
def test_any_body_over_the_limit_is_413(bedrock_emulator: Any, size: int, family: str, use_async: bool) -> None:
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000):
        assert_rejected(post(family, b"{" + b" " * (size - 2) + b"}", use_async), bedrock_emulator, (413,))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "head"])
def test_wrong_method_is_405(bedrock_emulator: Any, family: str, method: str) -> None:
    url = reverse(f"django_bedrock_stream:{family}")
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
    assert_rejected(post("llama2", data, use_async), bedrock_emulator, (400,))


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
    ],
    ids=["latin-1", "bom-garbage", "huge-int", "lone-surrogate-model", "nul-content", "surrogate-content"],
)
def test_odd_encodings_are_400(bedrock_emulator: Any, data: bytes, use_async: bool) -> None:
    assert_rejected(post("converse", data, use_async), bedrock_emulator, (400,))
