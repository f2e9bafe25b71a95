"""``manage.py bedrock_reap``: rows a killed worker left ``streaming`` are settled in one UPDATE."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_bedrock_stream.management.commands.bedrock_reap import REAPED_CODE, REAPED_MESSAGE, parse_duration
from django_bedrock_stream.models import Completion

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
    assert len(queries) == 1 and queries[0]["sql"].lstrip().upper().startswith("UPDATE"), queries.captured_queries
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
    assert len(queries) == 1 and "UPDATE" not in queries[0]["sql"].upper()
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
