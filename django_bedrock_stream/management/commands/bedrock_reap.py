"""``python manage.py bedrock_reap --older-than 10m``: settle rows a dead worker left ``streaming``.

A ``Completion`` row is inserted when a stream starts and updated once when it ends. If the worker
process is killed in between (OOM, deploy, ``SIGKILL``), nothing ends it: the row stays
``streaming`` forever. Run this command from cron (or a periodic task) with a threshold longer than
your longest legitimate stream; every ``streaming`` row created before the threshold becomes
``failed`` (or ``cancelled`` with ``--status cancelled``) with ``error_code="Reaped"``, in one
``UPDATE``; a reaped row that holds a budget reservation is settled like a failed stream (counted at
an estimate of its input and of the text stored; ``budget_threshold_reached`` is sent for a crossing).
It also deletes the ``BudgetUsage`` rows of budget periods that ended (rolling-window buckets that
left their window; a row still holding a reservation is kept ``--older-than`` longer). With
``RESUMABLE`` on, it also deletes the Redis streams whose runner is gone (no end marker, and no longer
their chat's running stream) rather than leave them to their TTL.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone

from django_bedrock_stream import resumable, signals
from django_bedrock_stream.budgets import prune_usage, settle_reaped
from django_bedrock_stream.models import Completion

REAPED_CODE = "Reaped"
REAPED_MESSAGE = "Reaped: the worker stopped before the stream finished"

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$", re.IGNORECASE)


def parse_duration(value: str) -> timedelta:
    """``"30s"``, ``"10m"``, ``"2h"``, ``"1d"`` -> ``timedelta``; anything else raises ``ValueError``."""
    match = _DURATION_RE.match(value or "")
    if match is None:
        raise ValueError(f"{value!r} is not a duration; use a whole number and a unit: 30s, 10m, 2h, 1d")
    amount, unit = int(match.group(1)), match.group(2).lower()
    return timedelta(**{_UNITS[unit]: amount})


class Command(BaseCommand):
    help = (
        "Mark Bedrock completions still 'streaming' after a threshold as failed (or cancelled): "
        "their worker stopped before the stream finished."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            required=True,
            metavar="DURATION",
            help="Reap rows created longer ago than this: 30s, 10m, 2h, 1d. Pick more than your longest stream.",
        )
        parser.add_argument(
            "--status",
            choices=[Completion.Status.FAILED, Completion.Status.CANCELLED],
            default=Completion.Status.FAILED,
            help="Terminal status to give reaped rows (default: failed).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Only count the rows that would be reaped.")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Database alias (default: default).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            age = parse_duration(options["older_than"])
        except ValueError as err:
            raise CommandError(str(err)) from None
        now = timezone.now()
        stale = Completion.objects.using(options["database"]).filter(
            status=Completion.Status.STREAMING, created_at__lt=now - age
        )
        status = options["status"]
        database = options["database"]
        if options["dry_run"]:
            count = stale.count()
            age_text = options["older_than"]
            self.stdout.write(f"Would reap {count} streaming completion(s) older than {age_text} (as {status}).")
            pruned = prune_usage(now, age, using=database, dry_run=True)
            self.stdout.write(f"Would delete {pruned} budget usage row(s) of ended periods.")
            return
        reaped = {"status": status, "error": REAPED_MESSAGE, "error_code": REAPED_CODE, "finished_at": now}
        count = stale.filter(budget_reservation__isnull=True).update(**reaped)
        released = 0
        fields = ("user_id", "model_id", "messages", "text", "budget_reservation")
        for row in list(stale.filter(budget_reservation__isnull=False).only(*fields)):
            # One by one, so that a row whose stream ended meanwhile is neither reaped nor settled twice.
            if Completion.objects.using(database).filter(pk=row.pk, status=Completion.Status.STREAMING).update(
                    **reaped):
                count += 1
                for threshold, budget, used in settle_reaped(row):
                    signals.budget_threshold_reached.send_robust(
                        type(self), user=row.user, budget=budget, used=budget.amount(used),
                        limit=budget.amount(budget.limit), threshold=threshold,
                    )
                released += 1
        self.stdout.write(f"Reaped {count} streaming completion(s) older than {options['older_than']} (as {status}); "
                          f"released the budget reservations of {released}.")
        pruned = prune_usage(now, age, using=database)
        self.stdout.write(f"Deleted {pruned} budget usage row(s) of ended periods.")
        store = resumable.get_store()
        if store is not None:
            try:
                removed = asyncio.run(_reap_streams(store))
            except resumable.REDIS_ERRORS as err:
                self.stderr.write(f"Redis unavailable, its streams were left to their TTL: {err}")
            else:
                self.stdout.write(f"Removed {removed} Redis stream(s) whose runner is gone.")


async def _reap_streams(store: resumable.StreamStore) -> int:
    try:
        return await store.reap()
    finally:
        await store.aclose()
