"""The budget statements' CPU per request: compiled by the ORM each time vs the compiled shape reused.

``python benchmarks/statements.py`` (SQLite in memory, no server): builds the reservation UPDATE of a
signed-in user (the assumed ``UserBudget`` row checked in the statement) and the settlement UPDATE,
``--n`` times each way, side by side in one process, and prints the CPU per request and the ratio.
Nothing is executed: this is the Python the database thread runs before the round trip.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django  # noqa: E402

django.setup()

from django.db.models import F  # noqa: E402
from django.db.models.lookups import LessThanOrEqual  # noqa: E402
from django.utils import timezone  # noqa: E402

from django_bedrock_stream import budgets  # noqa: E402
from django_bedrock_stream.models import BudgetUsage  # noqa: E402


def orm(budget: budgets.Budget, start: object, amount: int) -> None:
    """What every request did before: build the querysets and compile them."""
    rows = BudgetUsage.objects.filter(user_id=7, unit=budget.unit, period=budget.period, period_start=start)
    fits = LessThanOrEqual(F("used") + F("reserved"), budget.limit - amount)
    budgets._update_sql(rows.filter(fits, budgets._row_guard(7, None)), "default", reserved=F("reserved") + amount)
    budgets._update_sql(rows, "default", used=F("used") + amount, reserved=F("reserved") + -amount)


def cached(budget: budgets.Budget, start: object, amount: int) -> None:
    budgets._reservation("default", 7, budget, start, amount, row_check=True)
    budgets._period_update("default", 7, budget, start, (("used", amount), ("reserved", -amount)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    budget = budgets.Budget(tokens=100_000)
    start = budget.bounds(timezone.now())[0]
    cached(budget, start, 1)  # the first request compiles each shape
    times: dict[str, list[float]] = {"orm": [], "cached": []}
    for _ in range(args.runs):  # alternately, so both see the same machine
        for label, func in (("orm", orm), ("cached", cached)):
            t0 = time.process_time()
            for i in range(args.n):
                func(budget, start, 100 + i)
            times[label].append((time.process_time() - t0) / args.n * 1e6)
    o, c = statistics.median(times["orm"]), statistics.median(times["cached"])
    print(f"reservation + settlement statements per request: ORM compile {o:.0f} µs, compiled shape {c:.0f} µs "
          f"(median of {args.runs} runs of {args.n}; ratio {o / c:.1f}x)")


if __name__ == "__main__":
    main()
