"""The ASGI fast paths must not change behaviour: the serializer shortcut accepts only what
``ChatRequestSerializer`` accepts (with equal data), and ``check_access`` runs on the event loop only
when it provably does no I/O (here with the ORM's async guard on: a query would raise)."""

from __future__ import annotations

import json
import re
from typing import Any

import django
import pytest
from django.test import AsyncRequestFactory, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_bedrock_stream.drf import BedrockStreamAPIView
from django_bedrock_stream.families import Llama2Family
from django_bedrock_stream.serializers import ROLES, ChatRequestSerializer, fast_validated_data
from django_bedrock_stream.views import Llama2StreamView

ALLOWED = ["meta.llama2-13b-chat-v1", "other.model-v1", " spaced ", ""]
CAP = 1000

# -- the validation shortcut -------------------------------------------------------------------------
texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "hi", " hi ", "a\x00b", "\ud800", "é ✓", "\t\n", "Hello world"]),
)
any_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), texts)
roles = st.one_of(st.sampled_from([*ROLES, "User", "tool", ""]), any_scalar)
parts = st.lists(st.dictionaries(st.sampled_from(["type", "text"]), st.one_of(st.just("text"), any_scalar)), max_size=2)
messages = st.fixed_dictionaries(
    {},
    optional={"role": roles, "content": st.one_of(texts, any_scalar), "parts": st.one_of(parts, any_scalar),
              "extra": any_scalar},
)
message_lists = st.one_of(st.lists(messages, max_size=4), any_scalar, st.just([]))
bodies = st.fixed_dictionaries(
    {},
    optional={
        "messages": message_lists,
        "model": st.one_of(st.sampled_from([*ALLOWED, "meta.llama2-13b-chat-v1 ", "nope"]), any_scalar),
        "max_tokens": st.one_of(st.integers(-2, CAP + 2), st.sampled_from([1, CAP, 2**70, True, "5", 5.0]), any_scalar),
        "id": any_scalar,
    },
)


def drf(data: Any) -> tuple[bool, Any]:
    serializer = ChatRequestSerializer(data=data, context={"allowed_models": ALLOWED, "max_tokens_cap": CAP})
    valid = serializer.is_valid()
    return valid, serializer.validated_data if valid else serializer.errors


def same_types(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_types(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_types(x, y) for x, y in zip(a, b))
    return bool(a == b)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(bodies, any_scalar))
def test_fast_validation_never_accepts_what_the_serializer_rejects(data: Any) -> None:
    fast = fast_validated_data(data, ALLOWED, CAP)
    if fast is not None:
        valid, validated = drf(data)
        assert valid, (data, validated)
        assert same_types(fast, validated), (fast, validated)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": st.text(max_size=20)}), max_size=4),
    st.sampled_from([None, *ALLOWED]),
    st.one_of(st.none(), st.integers(1, CAP)),
)
def test_fast_validation_accepts_the_plain_requests(msgs: list[dict[str, str]], model: Any, max_tokens: Any) -> None:
    data: dict[str, Any] = {"messages": msgs}
    if model is not None:
        data["model"] = model
    if max_tokens is not None:
        data["max_tokens"] = max_tokens
    fast = fast_validated_data(data, ALLOWED, CAP)
    valid, validated = drf(data)
    if fast is not None:
        assert valid and same_types(fast, validated)
    plain = all("\x00" not in m["content"] and not any(0xD800 <= ord(c) <= 0xDFFF for c in m["content"]) for m in msgs)
    if valid and plain and model not in (" spaced ", ""):
        assert fast is not None, data  # the shortcut is taken for every ordinary valid request


def test_fast_validation_limits_follow_the_settings() -> None:
    data = {"messages": [{"role": "user", "content": "x" * 50}, {"role": "user", "content": "y"}]}
    assert fast_validated_data(data, ALLOWED, CAP) == drf(data)[1]
    with override_settings(BEDROCK_STREAM={"MAX_MESSAGES": 1}):
        assert fast_validated_data(data, ALLOWED, CAP) is None and not drf(data)[0]
    with override_settings(BEDROCK_STREAM={"MAX_INPUT_CHARS": 50}):
        assert fast_validated_data(data, ALLOWED, CAP) is None and not drf(data)[0]


# -- check_access hop ------------------------------------------------------------------------------
def request(**headers: Any) -> Any:
    return AsyncRequestFactory().post("/", b"{}", content_type="application/json", headers=headers)


def test_plain_view_always_hops_for_access_checks() -> None:
    """DRF authenticators may query the database: the plain view always checks on the request thread."""
    view = type("View", (Llama2StreamView,), {"authentication_classes": []})()
    assert not view._access_check_is_io_free(request())


def test_drf_api_view_check_access_is_the_no_op() -> None:
    view = type("API", (BedrockStreamAPIView,), {"family_class": Llama2Family})()
    assert view._access_check_is_io_free(request())
    custom = type("API2", (BedrockStreamAPIView,), {"family_class": Llama2Family, "check_access": lambda s, r: None})()
    assert not custom._access_check_is_io_free(request())


# -- the memoised header parse -----------------------------------------------------------------------
def decode_all(buffer: Any, data: bytes) -> list[Any]:
    out: list[Any] = []
    try:
        for start in range(0, len(data), 7):
            buffer.add_data(data[start : start + 7])
            out.extend((m.headers, m.payload, m.crc) for m in buffer)
    except Exception as err:
        out.append((type(err), str(err)))
    return out


def test_header_memo_decodes_exactly_like_botocore() -> None:
    from botocore.eventstream import EventStreamBuffer

    from django_bedrock_stream.batches import _Buffer
    from django_bedrock_stream.emulator.eventstream import encode_chunk, encode_event, encode_exception

    good = b"".join(
        [encode_chunk(b'{"generation": "hi"}') for _ in range(3)]
        + [encode_event("messageStop", {"stopReason": "end_turn"}), encode_exception("throttlingException", "slow")]
    )
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2] ^= 0xFF
    for data in (good, bytes(corrupt), good[:-3]):
        for _ in range(2):  # second pass: served from the memo
            assert decode_all(_Buffer(), data) == decode_all(EventStreamBuffer(), data)
    assert issubclass(_Buffer, EventStreamBuffer)


# -- signals and close_old_connections in one hop ------------------------------------------------------
async def test_asend_all_runs_sync_receivers_and_then_in_one_hop_in_order() -> None:
    import threading

    from django.dispatch import Signal

    from django_bedrock_stream.runner import asend_all

    first, second = Signal(), Signal()
    seen: list[tuple[str, int]] = []

    def a(**kwargs: Any) -> None:
        seen.append(("a", threading.get_ident()))

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver failure is logged, not raised")

    def b(**kwargs: Any) -> None:
        seen.append(("b", threading.get_ident()))

    first.connect(a, weak=False)
    first.connect(broken, weak=False)
    second.connect(b, weak=False)
    await asend_all([(first, {}), (second, {})], object, then=lambda: seen.append(("then", threading.get_ident())))
    assert [name for name, _ in seen] == ["a", "b", "then"]
    assert len({ident for _, ident in seen}) == 1 and seen[0][1] != threading.get_ident()

    if django.VERSION < (5, 0):
        return  # async receivers need Django >= 5.0

    async def c(**kwargs: Any) -> None:
        seen.append(("c", threading.get_ident()))

    seen.clear()
    second.connect(c, weak=False)  # an async receiver: signals go one by one, as asend_robust does
    await asend_all([(first, {}), (second, {})], object, then=lambda: seen.append(("then", 0)))
    assert sorted(name for name, _ in seen) == ["a", "b", "c", "then"] and seen[-1][0] == "then"


# -- the round trips of the default configuration (issue 13, item 4) -------------------------------------
# PERSIST + BUDGETS on, a signed-in user whose period row exists (as after their first request of the day).
# On PostgreSQL the reservation rides in the INSERT and the settlement in the final UPDATE, one statement
# each (a CTE); elsewhere they are separate statements in one transaction each. These fail when someone
# adds a round trip or a thread hop.
_WRITE = re.compile(r'\b(INSERT INTO|UPDATE|DELETE FROM)\s+"?(\w+)"?')
_TABLE = re.compile(r'\bFROM\s+"?(\w+)"?')
BUDGET_RULES = {"ALLOW_ANONYMOUS": True, "BUDGETS": {"default": {"tokens": 100_000, "period": "day"}}}


def statements(sqls: list[str]) -> list[str]:
    """One label per statement sent: ``SELECT <table>``, ``INSERT <table>``, ``UPDATE <table>``; a
    statement with data-modifying CTEs names each write, the main one first (``INSERT a + UPDATE b``)."""
    out = []
    for sql in sqls:
        verb = sql.split()[0].upper()
        if verb in ("SAVEPOINT", "RELEASE", "BEGIN", "COMMIT"):
            continue
        if verb == "SELECT":
            table = _TABLE.search(sql)
            out.append(f"SELECT {table.group(1) if table else '-'}")
            continue
        writes = [f"{kind.split()[0]} {table}" for kind, table in _WRITE.findall(sql)]
        out.append(" + ".join(reversed(writes)) if verb == "WITH" else writes[0])
    return out


def expected_writes() -> list[str]:
    from django.db import connection

    completion, usage = "django_bedrock_stream_completion", "django_bedrock_stream_budgetusage"
    if connection.vendor == "postgresql":
        return [f"INSERT {completion} + UPDATE {usage}", f"UPDATE {completion} + UPDATE {usage}"]
    return [f"UPDATE {usage}", f"INSERT {completion}", f"UPDATE {usage}", f"UPDATE {completion}"]


def budget_user() -> Any:
    from django.contrib.auth.models import User
    from django.utils import timezone

    from django_bedrock_stream.budgets import Budget
    from django_bedrock_stream.models import BudgetUsage

    user = User.objects.create_user("perf")
    budget = Budget(tokens=100_000)
    BudgetUsage.objects.create(user=user, unit="tokens", period="day", period_start=budget.bounds(timezone.now())[0])
    return user


def chat_body() -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "[[emulator tokens=6]] hello"}],
                       "max_tokens": 100}).encode()


@pytest.mark.django_db
def test_statements_of_a_plain_completion_under_wsgi(bedrock_emulator: Any) -> None:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from django_bedrock_stream.models import BudgetUsage, Completion

    client = Client()
    client.force_login(budget_user())
    with override_settings(BEDROCK_STREAM=BUDGET_RULES), CaptureQueriesContext(connection) as queries:
        response = client.post("/bedrock/llama2/", chat_body(), content_type="application/json")
        b"".join(response.streaming_content)
    done = statements([q["sql"] for q in queries.captured_queries])
    print(f"\nWSGI, a plain completion with a budget ({connection.vendor}): {done}")
    assert done == ["SELECT django_session", "SELECT auth_user", *expected_writes()]  # access, then the writes
    row, usage = Completion.objects.get(), BudgetUsage.objects.get()
    assert row.status == "completed" and row.budget_reservation["reserved"] > 0
    assert (usage.used, usage.reserved) == (row.input_tokens + row.output_tokens, 0)


@pytest.mark.django_db(transaction=True)
async def test_statements_and_hops_of_a_plain_completion_under_asgi(bedrock_emulator: Any) -> None:
    """At most two hops to the request's thread: the start (access checks, validation, reservation and
    INSERT) and the end (``stream_finished``: the final UPDATE with the settlement)."""
    from unittest import mock

    from asgiref.sync import sync_to_async
    from django.db import connection
    from django.db.backends import utils
    from django.test import AsyncClient

    from django_bedrock_stream.models import BudgetUsage, Completion

    user = await sync_to_async(budget_user)()
    client = AsyncClient()
    await sync_to_async(client.force_login)(user)
    hops: list[str] = []
    sqls: list[str] = []
    real_execute = utils.CursorWrapper._execute

    def recording(self: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
        sqls.append(sql)  # every thread's queries (each ASGI request runs its sync code on its own)
        return real_execute(self, sql, *args, **kwargs)

    def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__qualname__", repr(func)))
        return sync_to_async(func, *args, **kwargs)

    with override_settings(BEDROCK_STREAM=BUDGET_RULES), \
            mock.patch.object(utils.CursorWrapper, "_execute", recording), \
            mock.patch("django_bedrock_stream.views.sync_to_async", counting), \
            mock.patch("django_bedrock_stream.runner.sync_to_async", counting):
        response = await client.post("/bedrock/llama2/", chat_body(), content_type="application/json")
        async for _ in response.streaming_content:
            pass
    done = statements(sqls)
    print(f"\nASGI, a plain completion with a budget ({connection.vendor}): {done}; thread hops: {hops}")
    assert [q for q in done if not q.startswith("SELECT")] == expected_writes()
    assert [q for q in done if q.startswith("SELECT")] == ["SELECT django_session", "SELECT auth_user"]
    assert hops == ["BedrockStreamMixin._check_and_start", "asend_all.<locals>.run"]
    row = await Completion.objects.aget()
    usage = await BudgetUsage.objects.aget()
    assert row.status == "completed" and (usage.used, usage.reserved) == (row.input_tokens + row.output_tokens, 0)


def test_performance_paths_on_postgresql() -> None:
    """On SQLite: run this module on PostgreSQL in a subprocess (skipped when PostgreSQL is unreachable)."""
    from tests.postgres import on_postgresql, run_on_postgresql

    if on_postgresql():
        pytest.skip("this run is on PostgreSQL: the tests of this module run in it directly")
    run_on_postgresql("tests/test_performance_paths.py", "perf_paths")
