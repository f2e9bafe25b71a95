"""Usage totals of completions, whole or grouped per user, model or day.

The admin's changelist totals, its usage dashboard and ``bedrock_usage`` all read them from here: one
aggregate query per table, with the sums defined once in :func:`~.models.usage_aggregates`.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import F, QuerySet
from django.db.models.functions import TruncDate

from .models import Completion, usage_aggregates

#: The groupings, in the order the dashboard offers them.
GROUPINGS = ("day", "user", "model")
#: The key of the group of completions made without a logged-in user.
ANONYMOUS = "(anonymous)"


def usage_totals(queryset: QuerySet[Completion]) -> dict[str, Any]:
    """The :func:`~.models.usage_aggregates` of ``queryset`` plus ``total_tokens`` (one query)."""
    totals = queryset.aggregate(**usage_aggregates())
    totals["total_tokens"] = totals["input_tokens"] + totals["output_tokens"]
    return totals


def group_usage(queryset: QuerySet[Completion], by: str) -> list[dict[str, Any]]:
    """The totals of ``queryset`` per ``"user"``, ``"model"`` or ``"day"`` (one query).

    Each row is :func:`usage_totals`'s dict plus ``key``: the username (:data:`ANONYMOUS` for rows
    without a user, listed last), the model id, or the ``datetime.date`` in the current time zone.
    Rows are sorted by key; ``"user"`` rows also carry ``user_id``.
    """
    grouped: Any  # a values() queryset whose row shape depends on the grouping
    if by == "user":
        grouped = queryset.values("user_id", key=F(f"user__{get_user_model().USERNAME_FIELD}"))
    elif by == "model":
        grouped = queryset.values(key=F("model_id"))
    elif by == "day":
        grouped = queryset.values(key=TruncDate("created_at"))
    else:
        raise ValueError(f"unknown grouping {by!r}")
    rows: list[dict[str, Any]] = list(grouped.annotate(**usage_aggregates()).order_by(F("key").asc(nulls_last=True)))
    for row in rows:
        row["total_tokens"] = row["input_tokens"] + row["output_tokens"]
        if by == "user" and row["user_id"] is None:
            row["key"] = ANONYMOUS
    return rows
