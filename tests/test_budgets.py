"""Per-user budgets (issue 13, item 1): checked before Bedrock is called, reserved atomically, settled to
the real usage however a stream ends.

Every test drives the real views (Django's ``Client`` / ``AsyncClient``, or real uvicorn) against the
emulator, whose request log says whether Bedrock was called. The concurrency test runs here and, from
the SQLite run, on PostgreSQL in a subprocess (:func:`test_budgets_on_postgresql`).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest import mock

import django
import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import AsyncClient, Client, override_settings
from django.urls import include, path

from django_bedrock_stream import budgets
from django_bedrock_stream.budgets import Budget, BudgetExceeded
from django_bedrock_stream.models import BudgetUsage, Completion, UserBudget
from django_bedrock_stream.tools import tool
from django_bedrock_stream.views import ConverseStreamView, Llama2StreamView
from tests.postgres import on_postgresql, run_on_postgresql, skip_unless_writers_wait
from tests.resumable_servers import redis_unreachable, start_workers
from tests.servers import UvicornThread
from tests.test_reliability import (  # noqa: F401 - uvicorn_server is a fixture
    Recorder,
    chat,
    needs_asgi_cancellation,
    read_then_drop,
    settled_row,
    uvicorn_server,
    wait_until,
)

LLAMA = "/bedrock/llama2/"
API_LLAMA = "/api/llama2/"
FAST_HASHER = ["django.contrib.auth.hashers.MD5PasswordHasher"]
#: Redis database of the two-worker test (tests/test_resumable.py has 11, tests/test_chat_load.py 12).
REDIS_DB = 13
PRICE = {"meta.llama2-13b-chat-v1": {"input": "0.75", "output": "1.00"}}


def settings_with(budgets_setting: Any = None, **extra: Any) -> Any:
    return override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "BUDGETS": budgets_setting, **extra})


@pytest.fixture
def user(db: Any) -> User:
    return User.objects.create_user("ada", password="pw")


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def usage_row(user: User) -> BudgetUsage:
    return BudgetUsage.objects.get(user=user)


def real_tokens(row: Completion) -> int:
    return (row.input_tokens or 0) + (row.output_tokens or 0)


def body(prompt: str = "[[emulator tokens=6]] hello", max_tokens: int = 100) -> bytes:
    return chat(prompt, max_tokens=max_tokens)


def reservation_of(user: User, prompt: str = "[[emulator tokens=6]] hello", max_tokens: int = 100) -> int:
    """What one request reserves (measured through the view, then released by its settlement)."""
    with settings_with({"users": {user.username: {"tokens": 10**9, "period": "day"}}}):
        response = signed_in(user).post(LLAMA, body(prompt, max_tokens), content_type="application/json")
        b"".join(response.streaming_content)
    row = Completion.objects.filter(user=user).latest("id")
    reserved = row.budget_reservation["reserved"]
    Completion.objects.filter(pk=row.pk).delete()
    BudgetUsage.objects.filter(user=user).delete()
    return reserved


def spend(user: User, amount: int, budget: Budget, now: datetime | None = None) -> None:
    """Put ``amount`` of settled usage on the user's current period row."""
    start, _ = budget.bounds(now or django.utils.timezone.now())
    BudgetUsage.objects.update_or_create(
        user=user, unit=budget.unit, period=budget.period, period_start=start, defaults={"used": amount}
    )


# -- over budget: 429, nothing sent upstream ----------------------------------------------------------
def assert_budget_429(response: Any, *, limit: Any, used: Any) -> dict[str, Any]:
    assert response.status_code == 429, response.content
    error = json.loads(response.content)["error"]
    assert error["type"] == "budget_exceeded"
    assert (error["limit"], error["used"]) == (limit, used)
    assert error["message"] and error["resets_at"].endswith("Z")
    resets_at = datetime.fromisoformat(error["resets_at"].replace("Z", "+00:00"))
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= 31 * 86_400  # at most the longest period (a month: 31 days on the 1st)
    assert abs((resets_at - django.utils.timezone.now()).total_seconds() - retry_after) <= 2
    return error


@pytest.mark.django_db
def test_over_budget_wsgi_is_429_and_bedrock_is_not_called(bedrock_emulator: Any, user: User) -> None:
    budget = {"tokens": 1_000, "period": "day"}
    spend(user, 950, Budget.parse(budget))  # type: ignore[arg-type]
    with settings_with({"default": budget}), Recorder("stream_started", "stream_finished") as recorder:
        response = signed_in(user).post(LLAMA, body(), content_type="application/json")
    assert_budget_429(response, limit=1_000, used=950)
    assert bedrock_emulator.requests == []
    assert not Completion.objects.exists() and recorder.calls == []  # no row, no signal
    assert usage_row(user).reserved == 0


@pytest.mark.django_db(transaction=True)
async def test_over_budget_asgi_is_429_and_bedrock_is_not_called(bedrock_emulator: Any) -> None:
    from asgiref.sync import sync_to_async

    def setup() -> User:
        user = User.objects.create_user("ada", password="pw")
        spend(user, 999, Budget(tokens=1_000))
        return user

    user = await sync_to_async(setup)()
    client = AsyncClient()
    await client.aforce_login(user) if hasattr(client, "aforce_login") else await sync_to_async(client.force_login)(user)
    with settings_with({"default": {"tokens": 1_000, "period": "day"}}):
        response = await client.post(LLAMA, body(), content_type="application/json")
    assert_budget_429(response, limit=1_000, used=999)
    assert bedrock_emulator.requests == []
    assert not await Completion.objects.aexists()


@pytest.mark.django_db
def test_over_budget_drf_keeps_the_type_and_retry_after(bedrock_emulator: Any, user: User) -> None:
    spend(user, 1_000, Budget(tokens=1_000))
    with settings_with({"default": {"tokens": 1_000, "period": "day"}}):
        response = signed_in(user).post(API_LLAMA, body(), content_type="application/json")
    error = assert_budget_429(response, limit=1_000, used=1_000)
    assert json.loads(response.content)["detail"] == error["message"]  # DRF's own key too
    assert bedrock_emulator.requests == []


@pytest.mark.django_db
def test_budgets_off_by_default_and_for_anonymous_users(bedrock_emulator: Any, user: User) -> None:
    for client in (signed_in(user), Client()):
        response = client.post(LLAMA, body(), content_type="application/json")
        assert response.status_code == 200
        b"".join(response.streaming_content)
    with settings_with({"default": {"tokens": 1, "period": "day"}}):  # no user, no budget
        response = Client().post(LLAMA, body(), content_type="application/json")
        assert response.status_code == 200
        b"".join(response.streaming_content)
    assert not BudgetUsage.objects.exists()
    assert all(row.budget_reservation is None for row in Completion.objects.all())


# -- settling to the real usage -------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("prompt", "status"),
    [
        ("[[emulator tokens=7]] fine", "completed"),
        ("[[emulator tokens=9 error_at=4 error=modelStreamErrorException]] breaks", "failed"),
        ("[[emulator throttle=5]] refused before the first byte", "failed"),
    ],
)
def test_usage_settles_to_the_real_counts(bedrock_emulator: Any, user: User, prompt: str, status: str) -> None:
    with settings_with({"default": {"tokens": 100_000, "period": "day"}}):
        response = signed_in(user).post(LLAMA, body(prompt), content_type="application/json")
        if response.streaming:
            b"".join(response.streaming_content)
    row = Completion.objects.get()
    assert row.status == status
    assert row.budget_reservation["reserved"] > 0
    usage = usage_row(user)
    assert (usage.used, usage.reserved) == (real_tokens(row), 0)


@pytest.mark.django_db(transaction=True)  # closing the response closes the connection too
@pytest.mark.parametrize("chunks_read", [0, 1])
def test_a_closed_response_settles_too(bedrock_emulator: Any, user: User, chunks_read: int) -> None:
    """WSGI: a response closed before it was read (a middleware's replacement, a client gone at
    once) or after its first chunk (a client gone mid-stream)."""
    with settings_with({"default": {"tokens": 100_000, "period": "day"}}):
        response = signed_in(user).post(LLAMA, body("[[emulator tokens=40 delay_ms=5]] bye"), content_type="application/json")
        for _, _chunk in zip(range(chunks_read), response.streaming_content):
            pass
        response.close()
    row = Completion.objects.get()
    assert row.status == "cancelled"
    usage = usage_row(user)
    assert (usage.used, usage.reserved) == (real_tokens(row), 0)
    assert usage.used > 0 if chunks_read else True  # (unread: the row records no usage, nor does the budget)


@pytest.mark.django_db
def test_a_start_row_that_cannot_be_stored_releases_the_reservation(bedrock_emulator: Any, user: User) -> None:
    from django.db import DatabaseError

    with settings_with({"default": {"tokens": 100_000, "period": "day"}}), \
            mock.patch.object(Completion, "save", side_effect=DatabaseError("down")):
        response = signed_in(user).post(LLAMA, body(), content_type="application/json")
    assert response.status_code == 503
    assert bedrock_emulator.requests == []
    assert (usage_row(user).used, usage_row(user).reserved) == (0, 0)


@needs_asgi_cancellation
@pytest.mark.django_db(transaction=True)
def test_a_cancelled_stream_settles_to_what_was_generated(
    bedrock_emulator: Any, uvicorn_server: UvicornThread  # noqa: F811
) -> None:
    with override_settings(PASSWORD_HASHERS=FAST_HASHER):
        user = User.objects.create_user("ada", password="pw")
    with settings_with({"default": {"tokens": 100_000, "period": "day"}}), override_settings(PASSWORD_HASHERS=FAST_HASHER):
        status, _ = read_then_drop_as(uvicorn_server.url, user, "[[emulator tokens=60 delay_ms=40]] drop me", reads=2)
        assert status == 200
        row = settled_row()
        wait_until(lambda: usage_row(user).reserved == 0, message="the reservation to settle")
    assert row.status == "cancelled" and row.output_tokens and row.output_tokens < 60
    assert usage_row(user).used == real_tokens(row)


def basic_auth(user: User) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user.username}:pw".encode()).decode()}


def read_then_drop_as(server_url: str, user: User, prompt: str, *, reads: int) -> tuple[int, bytes]:
    from tests import servers

    real = servers.raw_request
    with mock.patch("tests.test_reliability.raw_request",
                    lambda url, p, b: real(url, p, b, headers=basic_auth(user))):
        return read_then_drop(server_url, LLAMA, body(prompt), reads=reads)


# -- periods ---------------------------------------------------------------------------------------------
def frozen(moment: datetime) -> Any:
    return mock.patch("django_bedrock_stream.budgets.timezone.now", return_value=moment)


@pytest.mark.django_db
def test_day_rollover_and_a_stream_settles_into_the_day_it_reserved_in(bedrock_emulator: Any, user: User) -> None:
    day = {"tokens": 2_000, "period": "day"}
    evening = datetime(2026, 3, 9, 23, 59, 58, tzinfo=dt_timezone.utc)
    client = signed_in(user)
    with settings_with({"default": day}), override_settings(TIME_ZONE="UTC"):
        spend(user, 1_990, Budget.parse(day), evening)  # type: ignore[arg-type]
        with frozen(evening):
            assert client.post(LLAMA, body(), content_type="application/json").status_code == 429
        with frozen(evening + timedelta(seconds=3)):  # the next day: a fresh row
            response = client.post(LLAMA, body(), content_type="application/json")
            assert response.status_code == 200
        with frozen(evening + timedelta(seconds=5)):
            b"".join(response.streaming_content)
    rows = {row.period_start: row for row in BudgetUsage.objects.all()}
    assert sorted(rows) == [datetime(2026, 3, 9, tzinfo=dt_timezone.utc), datetime(2026, 3, 10, tzinfo=dt_timezone.utc)]
    today = rows[datetime(2026, 3, 10, tzinfo=dt_timezone.utc)]
    assert (today.used, today.reserved) == (real_tokens(Completion.objects.get()), 0)
    assert rows[datetime(2026, 3, 9, tzinfo=dt_timezone.utc)].used == 1_990


def test_calendar_periods_follow_the_current_time_zone() -> None:
    moment = datetime(2026, 3, 31, 22, 30, tzinfo=dt_timezone.utc)  # already April 1st in Paris
    with override_settings(TIME_ZONE="UTC"):
        assert Budget(tokens=1, period="day").bounds(moment)[0] == datetime(2026, 3, 31, tzinfo=dt_timezone.utc)
        start, end = Budget(tokens=1, period="month").bounds(moment)
        assert (start, end) == (datetime(2026, 3, 1, tzinfo=dt_timezone.utc), datetime(2026, 4, 1, tzinfo=dt_timezone.utc))
    with override_settings(TIME_ZONE="Europe/Paris"):
        start, end = Budget(tokens=1, period="day").bounds(moment)
        assert start.isoformat() == "2026-04-01T00:00:00+02:00" and end.isoformat() == "2026-04-02T00:00:00+02:00"
        start, end = Budget(tokens=1, period="month").bounds(moment)
        assert start.isoformat() == "2026-04-01T00:00:00+02:00" and end.isoformat() == "2026-05-01T00:00:00+02:00"
        # the day DST starts is 23 hours long
        start, end = Budget(tokens=1, period="day").bounds(datetime(2026, 3, 29, 12, tzinfo=dt_timezone.utc))
        assert end.astimezone(dt_timezone.utc) - start.astimezone(dt_timezone.utc) == timedelta(hours=23)
    with override_settings(TIME_ZONE="UTC"):
        start, end = Budget(tokens=1, period="month").bounds(datetime(2026, 12, 5, tzinfo=dt_timezone.utc))
        assert end == datetime(2027, 1, 1, tzinfo=dt_timezone.utc)


@pytest.mark.django_db
def test_a_rolling_window_forgets_usage_bucket_by_bucket(user: User) -> None:
    window = Budget(tokens=1_000, period="24h")
    noon = datetime(2026, 5, 1, 12, 10, tzinfo=dt_timezone.utc)
    body_ = {"prompt": ""}
    reserve = budgets.reserve
    first = reserve(user.pk, window, "m", body_, 600, now=noon)
    with pytest.raises(BudgetExceeded) as refused:
        reserve(user.pk, window, "m", body_, 600, now=noon + timedelta(hours=5))
    assert refused.value.used == 600
    assert refused.value.resets_at == datetime(2026, 5, 2, 12, tzinfo=dt_timezone.utc)  # noon's bucket + 24 h
    assert refused.value.retry_after == int((refused.value.resets_at - noon - timedelta(hours=5)).total_seconds())
    # 24 hours after noon's bucket began, it is out of the window
    reserve(user.pk, window, "m", body_, 600, now=datetime(2026, 5, 2, 12, 0, tzinfo=dt_timezone.utc))
    assert first["start"] == "2026-05-01T12:00:00+00:00"
    assert BudgetUsage.objects.filter(user=user).count() == 3  # the refused attempt made its bucket's row


def test_period_and_budget_shapes_are_checked() -> None:
    from django.core.exceptions import ImproperlyConfigured

    assert Budget.parse({"tokens": 5}) == Budget(tokens=5, period="day")
    assert Budget.parse({"cost": "5.00", "period": "7d"}) == Budget(cost=Decimal("5.00"), period="7d")
    assert Budget(tokens=1, period="7d").rolling == timedelta(days=7)
    for bad in ({"tokens": 5, "period": "week"}, {"tokens": 5, "cost": "1"}, {"cost": 0.5}, {"tokens": -1},
                {"tokns": 5}, {"period": "day"}, {"tokens": 5, "period": "0h"}, 5):
        with pytest.raises(ImproperlyConfigured):
            Budget.parse(bad)


# -- which budget -------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_default_groups_users_and_the_admin_row(user: User) -> None:
    rules = {
        "default": {"tokens": 100, "period": "day"},
        "groups": {"staff": {"tokens": 1_000, "period": "day"}, "ops": {"tokens": 5_000, "period": "month"},
                   "free": None},
        "users": {"grace": {"tokens": 7, "period": "day"}},
    }
    assert budgets.budget_for(user, rules) == Budget(tokens=100)
    user.groups.add(Group.objects.create(name="staff"))
    assert budgets.budget_for(user, rules) == Budget(tokens=1_000)
    user.groups.add(Group.objects.create(name="ops"))
    assert budgets.budget_for(user, rules) == Budget(tokens=5_000, period="month")  # the largest limit
    user.groups.add(Group.objects.create(name="free"))
    assert budgets.budget_for(user, rules) is None  # a group without limit
    grace = User.objects.create_user("grace")
    grace.groups.add(Group.objects.get(name="ops"))
    assert budgets.budget_for(grace, rules) == Budget(tokens=7)  # by username, before groups
    UserBudget.objects.create(user=grace, tokens=123_456, period="month")
    assert budgets.budget_for(grace, rules) == Budget(tokens=123_456, period="month")  # the admin row wins
    UserBudget.objects.filter(user=grace).update(tokens=None)
    assert budgets.budget_for(grace, rules) is None  # an empty row: no limit
    assert budgets.budget_for(User.objects.create_user("nobody"), {}) is None


@pytest.mark.django_db
def test_group_budget_refuses_through_the_view(bedrock_emulator: Any, user: User) -> None:
    user.groups.add(Group.objects.create(name="staff"))
    rules = {"default": {"tokens": 10**6, "period": "day"}, "groups": {"staff": {"tokens": 50, "period": "day"}}}
    with settings_with(rules):
        response = signed_in(user).post(LLAMA, body(max_tokens=100), content_type="application/json")
    assert response.status_code == 429 and json.loads(response.content)["error"]["limit"] == 50
    assert bedrock_emulator.requests == []


@pytest.mark.django_db
def test_the_admin_row_wins_through_the_view(bedrock_emulator: Any, user: User) -> None:
    UserBudget.objects.create(user=user, tokens=60)
    rules = {"default": {"tokens": 10**6, "period": "day"}, "users": {"ada": {"tokens": 10**6, "period": "day"}}}
    with settings_with(rules):
        response = signed_in(user).post(LLAMA, body(max_tokens=100), content_type="application/json")
    assert response.status_code == 429 and json.loads(response.content)["error"]["limit"] == 60
    assert bedrock_emulator.requests == []


def test_user_budget_admin_validation() -> None:
    from django.core.exceptions import ValidationError

    for bad in (UserBudget(tokens=5, cost=Decimal("1")), UserBudget(tokens=5, period="fortnight")):
        with pytest.raises(ValidationError):
            bad.clean()
    UserBudget(tokens=5, period="7d").clean()


@pytest.mark.django_db
@pytest.mark.parametrize("period", ["800000d", "99999999999h", "367d", "8785h"])
def test_a_rolling_period_longer_than_366_days_is_refused(period: str) -> None:
    """It would overflow dates: a 500 on every request, so the settings check (E003) and the admin refuse it."""
    from django.core.exceptions import ValidationError

    from django_bedrock_stream.checks import check_settings_values

    with override_settings(BEDROCK_STREAM={"BUDGETS": {"default": {"tokens": 100_000, "period": period}}}):
        errors = check_settings_values()
    assert [e.id for e in errors] == ["bedrock_stream.E003"] and "at most 366d" in errors[0].msg, errors
    with pytest.raises(ValidationError) as refused:
        UserBudget(tokens=100_000, period=period).clean()
    assert "period" in refused.value.message_dict
    for longest in ("366d", "8784h"):
        UserBudget(tokens=5, period=longest).clean()
        start, end = Budget(tokens=5, period=longest).bounds(django.utils.timezone.now())
        assert end - start == timedelta(hours=8784) / budgets.ROLLING_BUCKETS


class TightView(Llama2StreamView):
    budgets = {"default": {"tokens": 30, "period": "day"}}


class HookView(Llama2StreamView):
    def get_budget(self, request: Any) -> Any:
        return None if request.user.username == "vip" else {"tokens": 40, "period": "month"}


urlpatterns = [
    path("tight/", TightView.as_view()),
    path("hook/", HookView.as_view()),
    path("bedrock/", include("django_bedrock_stream.urls")),
]


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_per_view_budgets_and_the_get_budget_hook(bedrock_emulator: Any, user: User) -> None:
    client = signed_in(user)
    response = client.post("/tight/", body(max_tokens=100), content_type="application/json")
    assert response.status_code == 429 and json.loads(response.content)["error"]["limit"] == 30
    response = client.post("/hook/", body(max_tokens=100), content_type="application/json")
    error = json.loads(response.content)["error"]
    assert response.status_code == 429 and (error["limit"], error["period"]) == (40, "month")
    vip = signed_in(User.objects.create_user("vip"))
    response = vip.post("/hook/", body(max_tokens=100), content_type="application/json")
    assert response.status_code == 200
    b"".join(response.streaming_content)
    assert len(bedrock_emulator.requests) == 1


# -- money budgets -----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_money_budget_counts_the_cost_of_the_real_usage(bedrock_emulator: Any, user: User) -> None:
    from django_bedrock_stream.pricing import cost_of

    rules = {"default": {"cost": "1.00", "period": "month"}}
    with settings_with(rules, PRICES=PRICE):
        response = signed_in(user).post(LLAMA, body(max_tokens=100), content_type="application/json")
        b"".join(response.streaming_content)
        row = Completion.objects.get()
        expected = cost_of(row.model_id, {"input_tokens": row.input_tokens, "output_tokens": row.output_tokens})
        usage = usage_row(user)
        assert (usage.unit, usage.reserved) == ("cost", 0)
        assert usage.used * budgets.COST_UNIT == expected.quantize(budgets.COST_UNIT)  # type: ignore[union-attr]
        # the reservation: (input estimate * 0.75 + 100 * 1.00) / 1000, rounded up to a millionth
        estimate = budgets.estimate_input_tokens({"prompt": row.messages[0]["content"]})
        assert row.budget_reservation["reserved"] >= (estimate * 750 + 100_000)
        # spend it up: 429 with money figures
        BudgetUsage.objects.filter(pk=usage.pk).update(used=999_990)
        response = signed_in(user).post(LLAMA, body(max_tokens=100), content_type="application/json")
    error = assert_budget_429(response, limit="1", used="0.99999")
    assert error["unit"] == "cost"
    assert len(bedrock_emulator.requests) == 1


@pytest.mark.django_db
def test_money_budget_without_a_price_is_refused(bedrock_emulator: Any, user: User) -> None:
    with settings_with({"default": {"cost": "1.00", "period": "day"}}, PRICES={}):
        response = signed_in(user).post(LLAMA, body(), content_type="application/json")
    assert response.status_code == 403 and json.loads(response.content)["error"]["type"] == "budget_unpriced"
    assert bedrock_emulator.requests == []


@pytest.mark.django_db
@pytest.mark.parametrize("row", [{"tokens": 100_000}, {}])
def test_the_admin_row_wins_over_an_unpriced_money_default(bedrock_emulator: Any, user: User, row: Any) -> None:
    """A fresh process (nothing known of the user's row) must not refuse by the default before reading it."""
    UserBudget.objects.create(user=user, **row)
    with settings_with({"default": {"cost": "1.00", "period": "day"}}, PRICES={}):
        for _ in range(2):
            budgets._rows.clear()
            response = signed_in(user).post(LLAMA, body(), content_type="application/json")
            assert response.status_code == 200, response.content
            b"".join(response.streaming_content)
    reservations = [c.budget_reservation for c in Completion.objects.order_by("id")]
    assert reservations == ([None, None] if not row else [mock.ANY, mock.ANY])
    if row:
        assert {r["tokens"] for r in reservations} == {100_000}
        assert usage_row(user).unit == "tokens" and usage_row(user).reserved == 0
    assert len(bedrock_emulator.requests) == 2


# -- thresholds and cache writes -------------------------------------------------------------------------
CONVERSE = "/bedrock/converse/"


def converse_once(client: Client, prompt: str = "[[emulator tokens=6]] hello") -> Completion:
    response = client.post(CONVERSE, body(prompt), content_type="application/json")
    assert response.status_code == 200, response
    b"".join(response.streaming_content)
    return Completion.objects.latest("id")


@pytest.mark.django_db
@pytest.mark.parametrize("counted", [True, False])
def test_cache_writes_count_when_configured(bedrock_emulator: Any, user: User, counted: bool) -> None:
    with settings_with({"default": {"tokens": 100_000, "period": "day"}}, BUDGET_COUNTS_CACHE_WRITES=counted):
        row = converse_once(signed_in(user), "[[emulator tokens=6 cache_write=500 cache_read=70]] hi")
    assert (row.cache_write_tokens, row.cache_read_tokens) == (500, 70)
    assert usage_row(user).used == real_tokens(row) + (500 if counted else 0)  # cache reads never count


@pytest.mark.django_db
def test_threshold_signals_once_per_crossing(bedrock_emulator: Any, user: User) -> None:
    client = signed_in(user)
    with settings_with({"default": {"tokens": 10**9, "period": "day"}}):
        reserved = converse_once(client).budget_reservation["reserved"]
    BudgetUsage.objects.all().delete()
    limit = reserved * 10  # a reservation fits while at 80 %
    rules = {"default": {"tokens": limit, "period": "day"}}
    with settings_with(rules, BUDGET_COUNTS_CACHE_WRITES=True), Recorder("budget_threshold_reached") as rec:
        real = real_tokens(converse_once(client))
        assert rec.calls == []
        BudgetUsage.objects.update(used=limit * 80 // 100 - real)  # the next stream reaches 80 %
        converse_once(client)
        converse_once(client)  # still above 80 %: not again
        [crossed] = rec.of("budget_threshold_reached")
        assert (crossed["threshold"], crossed["limit"], crossed["user"]) == (80, limit, user)
        assert crossed["used"] == limit * 80 // 100 and crossed["budget"] == Budget(tokens=limit)
        # the reservation fits, but the prompt-cache write it could not foresee takes usage past the limit
        converse_once(client, f"[[emulator tokens=6 cache_write={limit}]] big prefix")
    assert [kw["threshold"] for kw in rec.of("budget_threshold_reached")] == [80, 100]
    assert usage_row(user).notified == 100


# -- tool runs reserve before each further turn ---------------------------------------------------------
@tool
def lookup(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


class ToolView(ConverseStreamView):
    tools = [lookup]


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_each_turn_of_a_tool_run_reserves(bedrock_emulator: Any, user: User) -> None:
    urlpatterns.append(path("tools/", ToolView.as_view()))  # noqa: F821 - this module's urlconf
    try:
        prompt = '[[emulator tool=lookup tool_input={"city":"Paris"}]] weather?'
        with settings_with({"default": {"tokens": 100_000, "period": "day"}}):
            response = signed_in(user).post("/tools/", body(prompt), content_type="application/json")
            b"".join(response.streaming_content)
        row = Completion.objects.get()
        assert len(bedrock_emulator.requests) == 2  # two model turns
        reserved = row.budget_reservation["reserved"]
        assert reserved > 2 * 100  # two reservations of max_tokens and more
        usage = usage_row(user)
        assert (usage.used, usage.reserved) == (real_tokens(row), 0)
        # a budget that covers the first turn only: the second is never sent
        Completion.objects.all().delete()
        BudgetUsage.objects.all().delete()
        with settings_with({"default": {"tokens": reserved // 2 + 10, "period": "day"}}):
            response = signed_in(user).post("/tools/", body(prompt), content_type="application/json")
            text = b"".join(response.streaming_content)
        assert len(bedrock_emulator.requests) == 3
        row = Completion.objects.get()
        assert (row.status, row.error_code) == ("failed", "BudgetExceeded"), text
        assert (usage_row(user).used, usage_row(user).reserved) == (real_tokens(row), 0)
    finally:
        urlpatterns.pop()


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_the_reservation_covers_the_reasoning_budget(bedrock_emulator: Any, user: User) -> None:
    """Thinking counts within the body's max_tokens (answer + reasoning budget): so does the reservation."""
    thinking = {"CONVERSE": {"reasoning_budget": 2_000}}
    prompt = "[[emulator tokens=1800]] hi"
    with settings_with({"default": {"tokens": 1_000, "period": "day"}}, **thinking):
        response = signed_in(user).post(CONVERSE, body(prompt, 100), content_type="application/json")
    assert_budget_429(response, limit=1_000, used=0)
    assert bedrock_emulator.requests == []
    with settings_with({"default": {"tokens": 100_000, "period": "day"}}, **thinking):
        row = converse_once(signed_in(user), prompt)
    assert bedrock_emulator.requests[-1]["body"]["inferenceConfig"]["maxTokens"] == 2_100
    assert row.budget_reservation["reserved"] > 2_100
    # each further turn of a tool run too
    Completion.objects.all().delete()
    BudgetUsage.objects.all().delete()
    urlpatterns.append(path("tools/", ToolView.as_view()))
    try:
        prompt = '[[emulator tool=lookup tool_input={"city":"Paris"}]] weather?'
        with settings_with({"default": {"tokens": 100_000, "period": "day"}}, **thinking):
            response = signed_in(user).post("/tools/", body(prompt), content_type="application/json")
            b"".join(response.streaming_content)
        assert Completion.objects.get().budget_reservation["reserved"] > 2 * 2_100
    finally:
        urlpatterns.pop()


# -- the cost of a budget in queries: tests/test_performance_paths.py counts them (and the hops) --------
@pytest.mark.django_db
def test_the_admin_row_is_seen_at_once_though_not_read_per_request(bedrock_emulator: Any, user: User) -> None:
    """The reservation assumes the UserBudget row this process last saw and checks it in its own
    statement: a row added, changed or deleted (by any process) applies to the very next request."""
    client = signed_in(user)

    def status() -> int:
        response = client.post(LLAMA, body(), content_type="application/json")
        b"".join(getattr(response, "streaming_content", [b""]))
        return response.status_code

    with settings_with({"default": {"tokens": 100_000, "period": "day"}}):
        assert status() == 200
        assert status() == 200  # the period row exists now: the one-statement path
        UserBudget.objects.create(user=user, tokens=1)
        assert status() == 429
        UserBudget.objects.filter(user=user).update(tokens=10**9)
        assert status() == 200
        assert status() == 200
        UserBudget.objects.filter(user=user).update(tokens=5)
        assert status() == 429
        UserBudget.objects.filter(user=user).update(tokens=None)  # the admin's "no limit"
        assert status() == 200
        UserBudget.objects.filter(user=user).delete()
        assert status() == 200
    with settings_with({"default": {"tokens": 1, "period": "day"}}):
        assert status() == 429
    statuses = list(Completion.objects.order_by("id").values_list("status", flat=True))
    assert statuses == ["completed"] * 6
    assert BudgetUsage.objects.filter(user=user, reserved__gt=0).count() == 0


def test_the_period_row_statements_equal_the_orms_and_are_compiled_once(user: User) -> None:
    """The reservation's and the settlement's UPDATEs are compiled by the ORM once per shape and then
    only given parameters: what each returns, compiled or not, is exactly what the ORM compiles for
    the same request, for every shape (token and money budgets, the assumed admin row or none)."""
    from django.db.models import F
    from django.db.models.lookups import LessThanOrEqual
    from django.utils import timezone

    budgets._STATEMENTS.clear()
    now = timezone.now()
    shapes = [  # (budget, row_check, assumed)
        (Budget(tokens=1000), True, None),
        (Budget(tokens=1000), True, Budget(tokens=50)),
        (Budget(cost=Decimal("2.50"), period="month"), True, Budget(cost=Decimal("2.50"), period="month")),
        (Budget(tokens=1000), False, None),
    ]
    for budget, row_check, assumed in shapes:
        start = budget.bounds(now)[0]
        for amount in (7, 9):  # the second call of each shape takes the compiled SQL
            rows = BudgetUsage.objects.filter(user_id=user.pk, unit=budget.unit, period=budget.period,
                                              period_start=start)
            fits = LessThanOrEqual(F("used") + F("reserved"), budget.limit - amount)
            rows = rows.filter(fits, budgets._row_guard(user.pk, assumed)) if row_check else rows.filter(fits)
            expected = budgets._update_sql(rows, "default", reserved=F("reserved") + amount)
            got = budgets._reservation("default", user.pk, budget, start, amount, row_check=row_check,
                                       assumed=assumed)
            assert got == expected
            settle_rows = BudgetUsage.objects.filter(user_id=user.pk, unit=budget.unit, period=budget.period,
                                                     period_start=start)
            settled = budgets._update_sql(settle_rows, "default", used=F("used") + amount,
                                          reserved=F("reserved") + -amount)
            assert budgets._period_update("default", user.pk, budget, start,
                                          (("used", amount), ("reserved", -amount))) == settled
    # every shape was kept: requests after the first build parameters only (none fell back to the ORM)
    assert len(budgets._STATEMENTS) == len(shapes) + 1  # + the settlement's


def test_requests_after_the_first_do_not_compile_the_budget_statements(bedrock_emulator: Any, user: User) -> None:
    client = signed_in(user)
    with settings_with({"default": {"tokens": 100_000, "period": "day"}}):
        for _ in range(2):  # the first creates the period row, the second compiles the one-statement path
            b"".join(client.post(LLAMA, body(), content_type="application/json").streaming_content)
        with mock.patch.object(budgets, "_update_sql", wraps=budgets._update_sql) as compiled:
            response = client.post(LLAMA, body(), content_type="application/json")
            b"".join(response.streaming_content)
    assert response.status_code == 200 and compiled.call_count == 0
    row = Completion.objects.order_by("-id")[0]
    usage = usage_row(user)
    assert row.status == "completed" and usage.reserved == 0
    assert usage.used == sum(real_tokens(r) for r in Completion.objects.all())


# -- concurrency: 20 at once, room for 5 ----------------------------------------------------------------
def post_as(server_url: str, user: User, payload: bytes) -> tuple[int, bytes]:
    host, port = server_url.rsplit("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", LLAMA, payload, {"Content-Type": "application/json", **basic_auth(user)})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


in_memory_sqlite = pytest.mark.skipif(
    connection.vendor == "sqlite" and connection.is_in_memory_db(),
    reason="an in-memory SQLite database is shared between threads with table locks (SQLITE_LOCKED, no busy "
           "timeout): test_twenty_concurrent_requests_on_a_sqlite_file re-runs this test on a file",
)


@in_memory_sqlite
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("period", ["day", "24h"])  # one row; a rolling window's sum over its buckets
def test_twenty_concurrent_requests_with_room_for_five(
    bedrock_emulator: Any, uvicorn_server: UvicornThread, period: str  # noqa: F811
) -> None:
    with override_settings(PASSWORD_HASHERS=FAST_HASHER):
        user = User.objects.create_user("ada", password="pw")
        prompt = "[[emulator tokens=12 delay_ms=250]] race"
        reserved = reservation_of(user, prompt)
        limit = 5 * reserved + reserved // 2  # five fit, a sixth does not
        measured = len(bedrock_emulator.requests)
        barrier = threading.Barrier(20)

        def one(_: int) -> tuple[int, bytes]:
            barrier.wait(10)
            return post_as(uvicorn_server.url, user, body(prompt))

        with settings_with({"default": {"tokens": limit, "period": period}}):
            with ThreadPoolExecutor(20) as pool:
                results = list(pool.map(one, range(20)))
            wait_until(lambda: not Completion.objects.filter(status="streaming").exists(), 20, "rows to settle")
            wait_until(lambda: usage_row(user).reserved == 0, 20, "the reservations to settle")
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 5 + [429] * 15, [(s, b[:200]) for s, b in results if s not in (200, 429)]
    assert len(bedrock_emulator.requests) - measured == 5  # the emulator's log: five upstream calls
    refusals = [json.loads(data)["error"] for status, data in results if status == 429]
    assert {error["type"] for error in refusals} == {"budget_exceeded"}
    assert usage_row(user).used == sum(real_tokens(row) for row in Completion.objects.filter(user=user))
    assert Completion.objects.filter(user=user, status="completed").count() == 5


def test_twenty_concurrent_requests_on_a_sqlite_file(tmp_path: Any) -> None:
    """From an in-memory SQLite run: the concurrency test on a SQLite file, in a subprocess."""
    if not (connection.vendor == "sqlite" and connection.is_in_memory_db()):
        pytest.skip("this run's database is not in memory: the test runs directly")
    env = {**os.environ, "BEDROCK_TEST_SQLITE": str(tmp_path / "budgets.sqlite3")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         "tests/test_budgets.py::test_twenty_concurrent_requests_with_room_for_five"],
        cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0 and " passed" in result.stdout, (result.stdout + result.stderr)[-8000:]


def test_budgets_on_postgresql() -> None:
    """On SQLite: run this module on PostgreSQL in a subprocess (skipped when PostgreSQL is unreachable)."""
    if on_postgresql():
        pytest.skip("this run is on PostgreSQL: the tests of this module run in it directly")
    run_on_postgresql("tests/test_budgets.py", "budgets")



@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_twenty_concurrent_requests_over_two_uvicorn_workers_with_room_for_five(
    database: str, tmp_path: Path, bedrock_emulator: Any, user: User
) -> None:
    """The same race across processes: two uvicorn workers sharing only their database (a SQLite file
    with the README's settings, or PostgreSQL), ten requests to each at once. No worker's memory can
    hold the count: five reach Bedrock, fifteen get 429, and the usage settles to the five rows."""
    if database == "postgresql" and not on_postgresql():
        pytest.skip("runs in this module's PostgreSQL run (CI's PostgreSQL leg, or test_budgets_on_postgresql)")
    if database == "sqlite":
        if on_postgresql():
            pytest.skip("runs in this module's SQLite run")
        if django.VERSION < (5, 1):
            pytest.skip("SQLite writers queue at BEGIN (transaction_mode IMMEDIATE) from Django 5.1")
    reason = redis_unreachable()
    if reason:
        pytest.skip(f"the workers' settings (tests.resumable_server_settings) need Redis: {reason}")
    prompt = "[[emulator tokens=12 delay_ms=250]] race across workers"
    reserved = reservation_of(user, prompt)  # the same computation in the workers: same body, same code
    limit = 5 * reserved + reserved // 2
    setting = json.dumps({"default": {"tokens": limit, "period": "day"}})
    name = f"test_bedrock_budget_workers_{os.getpid()}" if database == "postgresql" else ""
    with start_workers(tmp_path, REDIS_DB, gunicorn=False, redis_proxy=False, postgresql=name,
                       env={"BEDROCK_RESUME_BUDGETS": setting}) as workers:
        workers.manage("shell", "-c", "from django.contrib.auth.models import User; "
                                      f"User.objects.create_user({user.username!r}, password='pw')")
        measured = len(bedrock_emulator.requests)
        barrier = threading.Barrier(20)

        def one(i: int) -> tuple[int, bytes]:
            barrier.wait(10)
            return post_as((workers.a, workers.b)[i % 2].url, user, body(prompt))

        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(one, range(20)))

        def scalar(sql: str) -> Any:
            return workers.query(sql)[0][0]

        wait_until(lambda: scalar("SELECT count(*) FROM django_bedrock_stream_completion WHERE status = 'streaming'")
                   == 0, 20, "rows to settle")
        wait_until(lambda: scalar("SELECT sum(reserved) FROM django_bedrock_stream_budgetusage") == 0, 20,
                   "the reservations to settle")
        used = scalar("SELECT sum(used) FROM django_bedrock_stream_budgetusage")
        real, completed = workers.query("SELECT sum(input_tokens + output_tokens), count(*) "
                                        "FROM django_bedrock_stream_completion WHERE status = 'completed'")[0]
        rows = scalar("SELECT count(*) FROM django_bedrock_stream_completion")
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 5 + [429] * 15, [(s, b[:200]) for s, b in results if s not in (200, 429)]
    assert len(bedrock_emulator.requests) - measured == 5  # the emulator's log: five upstream calls
    assert {json.loads(data)["error"]["type"] for status, data in results if status == 429} == {"budget_exceeded"}
    assert (completed, rows) == (5, 5) and used == real > 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("period", ["day", "24h"])
def test_concurrent_reservations_never_overspend_at_the_database(period: str) -> None:
    """Twenty threads reserving at once against room for five, straight at the store (a rolling
    window once let eleven through on PostgreSQL: a row lock did not serialize the sum)."""
    from django.db import connections

    skip_unless_writers_wait("twenty reservations at once")
    store = budgets

    user = User.objects.create_user("race")
    budget = store.Budget.parse({"tokens": 55, "period": period})
    assert budget is not None
    now = datetime.now(dt_timezone.utc)
    start = budget.bounds(now)[0]
    granted: list[int] = []
    barrier = threading.Barrier(20)

    def one() -> None:
        barrier.wait(10)
        try:
            store._reserve(user.pk, budget, start, 10, now)
            granted.append(1)
        except store.BudgetExceeded:
            pass
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(granted) == 5
