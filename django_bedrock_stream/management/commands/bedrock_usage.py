"""``manage.py bedrock_usage``: completions and token totals per model, user or day.

    manage.py bedrock_usage                       # per model, all time, aligned table
    manage.py bedrock_usage --by day --since 7d   # last 7 days, one row per day (current time zone)
    manage.py bedrock_usage --by user --format csv > usage.csv
    manage.py bedrock_usage --cost                # plus the cost and the count of unpriced completions
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from ...conf import stream_settings
from ...models import Completion
from ...pricing import format_cost
from ...usage import GROUPINGS, group_usage

COLUMNS = ("completions", "input_tokens", "output_tokens", "total_tokens", "failed", "cancelled")
#: Added by ``--cost``: the sum of the known costs, and the completions it leaves out (no price).
COST_COLUMNS = ("cost", "unpriced")
_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str) -> dt.datetime:
    """``30m``, ``12h``, ``7d``, ``2w`` (ago), or an ISO date / datetime (in the current time zone)."""
    match = _RELATIVE.match(value)
    if match:
        amount, unit = int(match.group(1)), match.group(2).lower()
        return timezone.now() - dt.timedelta(**{_UNITS[unit]: amount})
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise argparse.ArgumentTypeError(
                f"{value!r} is neither a duration (30m, 12h, 7d, 2w) nor a date (YYYY-MM-DD)"
            )
        moment = dt.datetime.combine(day, dt.time.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


class Command(BaseCommand):
    help = "Show completion counts and token totals grouped by model, user or day."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--by", choices=GROUPINGS, default="model", help="Grouping (default: model)."
        )
        parser.add_argument(
            "--since", type=parse_since, help="Only completions created since: 30m, 12h, 7d, 2w, or YYYY-MM-DD."
        )
        parser.add_argument(
            "--format", choices=("table", "csv"), default="table", help="Output format (default: table)."
        )
        parser.add_argument(
            "--cost", action="store_true",
            help="Add cost_<PRICE_CURRENCY> (the sum of the known costs) and unpriced (the completions it leaves out).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        columns = (*COLUMNS, *COST_COLUMNS) if options["cost"] else COLUMNS
        rows = usage_rows(options["by"], options["since"], columns)
        cost = (f"cost_{stream_settings.PRICE_CURRENCY}", "unpriced") if options["cost"] else ()
        header = (options["by"], *COLUMNS, *cost)
        if options["format"] == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(header)
            writer.writerows([_cell(value, "") for value in row] for row in rows)
            self.stdout.write(buffer.getvalue(), ending="")
            return
        if not rows:
            self.stdout.write("No completions.")
            return
        totals = ("TOTAL", *(_total(row[i] for row in rows) for i in range(1, len(header))))
        cells = [[_cell(value, "-") for value in row] for row in [*rows, totals]]
        self.stdout.write(render_table(header, cells, footer=True))


def usage_rows(by: str, since: dt.datetime | None = None, columns: Sequence[str] = COLUMNS) -> list[tuple[Any, ...]]:
    """``(key, *columns)`` per group, keys in order: by default ``(key, completions, input, output,
    total, failed, cancelled)``; a ``cost`` is a Decimal, or None when no completion's cost is known."""
    queryset = Completion.objects.all()
    if since is not None:
        queryset = queryset.filter(created_at__gte=since)
    return [(str(row["key"]), *(row[column] for column in columns)) for row in group_usage(queryset, by)]


def _total(values: Iterable[Any]) -> Any:
    """The sum of a column, None (unknown) only where no value is known (a cost column)."""
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def _cell(value: Any, unknown: str) -> Any:
    """A cost as ``format_cost`` writes it, ``unknown`` for None; anything else as it is."""
    if value is None:
        return unknown
    return format_cost(value) if isinstance(value, Decimal) else value


def render_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, footer: bool = False) -> str:
    """Left-align the first column and right-align the numbers; a rule under the header (and above
    the last row when ``footer``)."""
    cells = [[str(value) for value in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = (value.rjust(width) for value, width in zip(row[1:], widths[1:]))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * width for width in widths)
    lines = [line(cells[0]), rule, *(line(row) for row in cells[1:])]
    if footer:
        lines.insert(len(lines) - 1, rule)
    return "\n".join(lines)
