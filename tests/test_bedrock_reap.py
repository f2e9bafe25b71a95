"""``manage.py bedrock_reap``: rows a killed worker left ``streaming`` are settled in one UPDATE (one more
per row that holds a budget reservation, which is released); budget usage rows of ended periods go."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_bedrock_stream.budgets import Budget
from django_bedrock_stream.management.commands.bedrock_reap import REAPED_CODE, REAPED_MESSAGE, parse_duration
from django_bedrock_stream.models import BudgetUsage, Completion

pytestmark = pytest.mark.django_db


def row(age: timedelta, status: str = "streaming", **fields: object) -> Completion:
    completion = Completion.objects.create(model_id="m", status=status, **fields)
    # created_at is auto_now_add: move it back with an UPDATE.
    Completion.objects.filter(pk=completion.pk).update(created_at=timezone.now() - age)
    return completion


def reap(*args: str) -> str:
    out = StringIO()
    call_command("bedrock_reap", *args, stdout=out)
    return out.getvalue()


def test_reaps_only_old_streaming_rows_as_failed_in_one_update() -> None:
    old = [row(timedelta(minutes=11)), row(timedelta(hours=3))]
    young = row(timedelta(minutes=9))
    done = row(timedelta(days=2), status="completed", text="kept")
    failed = row(timedelta(days=2), status="failed", error="original", error_code="ThrottlingException")
    before = timezone.now()
    with CaptureQueriesContext(connection) as queries:
        output = reap("--older-than", "10m")
    writes = [q["sql"] for q in queries.captured_queries if not q["sql"].lstrip().upper().startswith("SELECT")]
    assert len(writes) == 1 and writes[0].lstrip().upper().startswith("UPDATE"), queries.captured_queries
    assert "Reaped 2 " in output
    for completion in old:
        completion.refresh_from_db()
        assert (completion.status, completion.error, completion.error_code) == ("failed", REAPED_MESSAGE, REAPED_CODE)
        assert completion.finished_at is not None and completion.finished_at >= before
    young.refresh_from_db()
    assert (young.status, young.finished_at, young.error_code) == ("streaming", None, "")
    done.refresh_from_db()
    failed.refresh_from_db()
    assert (done.status, done.text, done.error_code) == ("completed", "kept", "")
    assert (failed.status, failed.error, failed.error_code) == ("failed", "original", "ThrottlingException")
    # Idempotent: nothing left to reap.
    assert "Reaped 0 " in reap("--older-than", "10m")


def test_status_cancelled() -> None:
    completion = row(timedelta(hours=1))
    assert "Reaped 1 " in reap("--older-than", "30m", "--status", "cancelled")
    completion.refresh_from_db()
    assert (completion.status, completion.error_code) == ("cancelled", REAPED_CODE)


def test_dry_run_counts_and_changes_nothing() -> None:
    completion = row(timedelta(hours=1))
    with CaptureQueriesContext(connection) as queries:
        output = reap("--older-than", "59m", "--dry-run")
    assert "Would reap 1 " in output
    assert all(q["sql"].lstrip().upper().startswith("SELECT") for q in queries.captured_queries)
    completion.refresh_from_db()
    assert completion.status == "streaming" and completion.finished_at is None


@pytest.mark.parametrize(
    ("arg", "age_in", "age_out"),
    [
        ("30s", timedelta(seconds=40), timedelta(seconds=20)),
        ("10m", timedelta(minutes=11), timedelta(minutes=9)),
        ("2h", timedelta(hours=2, minutes=1), timedelta(hours=1, minutes=59)),
        ("1d", timedelta(days=1, hours=1), timedelta(hours=23)),
    ],
)
def test_units(arg: str, age_in: timedelta, age_out: timedelta) -> None:
    reaped, kept = row(age_in), row(age_out)
    assert "Reaped 1 " in reap("--older-than", arg)
    reaped.refresh_from_db()
    kept.refresh_from_db()
    assert (reaped.status, kept.status) == ("failed", "streaming")


def test_parse_duration() -> None:
    assert parse_duration("30s") == timedelta(seconds=30)
    assert parse_duration("10M") == timedelta(minutes=10)
    assert parse_duration(" 2h ") == timedelta(hours=2)
    assert parse_duration("1d") == timedelta(days=1)
    for bad in ("", "10", "m", "-5m", "1.5h", "10 minutes", "1w", "10m5s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.mark.parametrize("args", [["--older-than", "ten minutes"], ["--older-than", "10m", "--status", "completed"], []])
def test_bad_arguments_are_command_errors(args: list[str]) -> None:
    row(timedelta(days=1))
    with pytest.raises(CommandError):
        reap(*args)
    assert Completion.objects.get().status == "streaming"


def test_a_reaped_row_releases_its_budget_reservation_like_a_failed_stream() -> None:
    from django.contrib.auth.models import User

    user = User.objects.create_user("ada")
    budget = Budget(tokens=10_000)
    start = budget.bounds(timezone.now())[0]
    BudgetUsage.objects.create(user=user, unit="tokens", period="day", period_start=start, used=7, reserved=300)
    reservation = {**budget.as_dict(), "start": start.isoformat(), "reserved": 200}
    messages = [{"role": "user", "content": "x" * 40}]  # about 10 tokens
    reaped = row(timedelta(hours=1), user=user, messages=messages, text="y" * 8, budget_reservation=reservation)
    running = row(timedelta(minutes=1), user=user, budget_reservation={**reservation, "reserved": 100})
    assert "released the budget reservations of 1" in reap("--older-than", "10m")
    usage = BudgetUsage.objects.get()
    assert (usage.used, usage.reserved) == (7 + 10 + 2, 100)  # the running stream keeps its reservation
    reaped.refresh_from_db()
    running.refresh_from_db()
    assert (reaped.status, running.status) == ("failed", "streaming")
    assert "released the budget reservations of 0" in reap("--older-than", "10m")  # never twice
    assert (BudgetUsage.objects.get().used, BudgetUsage.objects.get().reserved) == (19, 100)


def test_budget_usage_of_ended_periods_is_pruned() -> None:
    from django.contrib.auth.models import User

    user = User.objects.create_user("ada")
    now = timezone.now()

    def usage(period: str, age: timedelta, reserved: int = 0) -> BudgetUsage:
        return BudgetUsage.objects.create(user=user, unit="tokens", period=period, period_start=now - age,
                                          used=5, reserved=reserved)

    kept = [usage("day", timedelta(hours=20)), usage("month", timedelta(days=20)), usage("24h", timedelta(hours=23)),
            usage("day", timedelta(days=2), reserved=50)]  # a stream of that day still holds a reservation
    gone = [usage("day", timedelta(days=2, hours=1)), usage("month", timedelta(days=40)), usage("24h", timedelta(hours=25)),
            usage("day", timedelta(days=3), reserved=50)]  # ... for longer than --older-than: leaked
    assert "Would delete 4 budget usage row(s)" in reap("--older-than", "1d", "--dry-run")
    assert BudgetUsage.objects.count() == 8
    assert "Deleted 4 budget usage row(s)" in reap("--older-than", "1d")
    assert sorted(BudgetUsage.objects.values_list("pk", flat=True)) == sorted(u.pk for u in kept)
    assert not BudgetUsage.objects.filter(pk__in=[u.pk for u in gone]).exists()
