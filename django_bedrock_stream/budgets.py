"""Per-user budgets, checked before Bedrock is called.

A budget is a limit in tokens or in money over a period::

    BEDROCK_STREAM = {"BUDGETS": {
        "default": {"tokens": 50_000, "period": "day"},
        "groups": {"staff": {"tokens": 500_000, "period": "month"}, "interns": {"cost": "5.00", "period": "7d"}},
        "users": {"alice": None},  # no limit for alice
    }}

Which budget a user gets (:func:`budget_for`): their :class:`~.models.UserBudget` row (the admin), else
``users[<username>]``, else the largest of their groups' budgets, else ``default``. ``None`` anywhere
means "no limit". Anonymous users have no budget.

Counting (:class:`~.models.BudgetUsage`, one row per user, unit, period kind and period): before the
call a stream reserves ``max_tokens`` plus an estimate of its input with one conditional ``UPDATE …
SET reserved = reserved + n WHERE used + reserved + n <= limit``; ``rowcount`` 0 means over budget
(429). When the stream ends, whatever happened, the ``stream_finished`` receivers (:func:`settle`)
trade the reservation for the real usage (input + output tokens, plus cache writes when
``BUDGET_COUNTS_CACHE_WRITES``; or its cost, see :mod:`~.pricing`). Each further model turn of a run
with tools reserves again before it is called.

Round trips: on PostgreSQL the reservation rides in the ``Completion`` INSERT and the settlement in its
final UPDATE, one statement each (``WITH r AS (UPDATE … RETURNING 1) INSERT … SELECT … WHERE EXISTS
(SELECT 1 FROM r)``; elsewhere they stay separate statements), and the user's ``UserBudget`` row is not
read per request: the reservation is made on the condition, checked in the same statement, that the
row is what this process last saw (usually: no row). Only when that condition or the budget fails is
the row read and the reservation retried the long way. (Group budgets read the user's groups.)

Periods: ``"day"`` and ``"month"`` are calendar periods in Django's current time zone (``TIME_ZONE``,
or the one activated for the request; UTC when ``USE_TZ`` is on and nothing else is said). ``"<n>h"``
and ``"<n>d"`` are rolling windows of at most 366 days (8784 hours), counted in 24 buckets (a "24h"
window forgets usage an hour at a time, a "7d" one seven hours at a time).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, router, transaction
from django.db.models import Exists, F, Field, Max, Min, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.db.models.lookups import LessThanOrEqual
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from .conf import stream_settings
from .exceptions import BedrockStreamError
from .models import BudgetUsage, UserBudget
from .runner import CHARS_PER_TOKEN, release_connections

#: Money is counted in millionths of the price table's currency (exact integers in the database).
COST_UNIT = Decimal("0.000001")
#: Percentages of the limit at which ``budget_threshold_reached`` is sent, once per crossing per period.
THRESHOLDS = (80, 100)
#: A rolling window is counted in this many buckets.
ROLLING_BUCKETS = 24
#: The longest rolling window: 366 days.
MAX_ROLLING_HOURS = 366 * 24
#: Keys of a request body whose strings are file bytes or signatures, not tokens of text.
_BINARY_KEYS = frozenset({"bytes", "data", "signature", "redactedContent"})

_ROLLING = re.compile(r"(\d+)([hd])\Z")


def _period(value: Any, where: str) -> str:
    if value in ("day", "month"):
        return str(value)
    match = _ROLLING.match(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) == 0:
        raise ImproperlyConfigured(f'{where}: period must be "day", "month" or a rolling window such as "24h" or '
                                   f'"7d", not {value!r}')
    hours = int(match.group(1)) * (24 if match.group(2) == "d" else 1)
    if hours > MAX_ROLLING_HOURS:  # a longer one overflows dates: a 500 on every request
        raise ImproperlyConfigured(f"{where}: a rolling period is at most {MAX_ROLLING_HOURS // 24}d "
                                   f"({MAX_ROLLING_HOURS}h), not {value!r}")
    return str(value)


@dataclass(frozen=True)
class Budget:
    """A limit per ``period``: ``tokens`` or ``cost`` (a Decimal in the price table's currency)."""

    tokens: int | None = None
    cost: Decimal | None = None
    period: str = "day"

    def __post_init__(self) -> None:
        if (self.tokens is None) == (self.cost is None):
            raise ImproperlyConfigured(f"A budget sets exactly one of 'tokens' and 'cost': {self!r}")
        _period(self.period, "budget")

    @classmethod
    def parse(cls, value: Any, where: str = "BEDROCK_STREAM['BUDGETS']") -> Budget | None:
        """A budget from its settings form (``{"tokens": 50_000, "period": "day"}`` or
        ``{"cost": "5.00", "period": "month"}``), a :class:`Budget`, or None (no limit)."""
        if value is None or isinstance(value, Budget):
            return value
        if not isinstance(value, Mapping):
            raise ImproperlyConfigured(f"{where}: a budget is a dict such as {{'tokens': 50000, 'period': 'day'}}")
        unknown = set(value) - {"tokens", "cost", "period"}
        if unknown:
            raise ImproperlyConfigured(f"{where}: unknown budget keys {sorted(unknown)} (tokens, cost, period)")
        tokens, cost = value.get("tokens"), value.get("cost")
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0):
            raise ImproperlyConfigured(f"{where}: 'tokens' must be a whole number >= 0, not {tokens!r}")
        if cost is not None:
            try:
                cost = Decimal(cost.strip() if isinstance(cost, str) else cost)
            except (InvalidOperation, TypeError):
                raise ImproperlyConfigured(f"{where}: 'cost' must be an amount such as '5.00', not {cost!r}") from None
            if isinstance(value.get("cost"), float) or not cost.is_finite() or cost < 0:
                raise ImproperlyConfigured(f"{where}: 'cost' must be a string or Decimal >= 0 such as '5.00'")
        if (tokens is None) == (cost is None):
            raise ImproperlyConfigured(f"{where}: a budget sets exactly one of 'tokens' and 'cost'")
        return cls(tokens=tokens, cost=cost, period=_period(value.get("period", "day"), where))

    @property
    def unit(self) -> str:
        return "tokens" if self.tokens is not None else "cost"

    @property
    def limit(self) -> int:
        """The limit in counting units: tokens, or millionths of the currency."""
        if self.tokens is not None:
            return self.tokens
        assert self.cost is not None
        return int((self.cost / COST_UNIT).to_integral_value(ROUND_FLOOR))

    def amount(self, units: int) -> int | Decimal:
        """An amount in counting units as tokens, or as money (a Decimal)."""
        return units if self.unit == "tokens" else units * COST_UNIT

    def display(self, units: int) -> int | str:
        """An amount in counting units as JSON shows it: tokens, or money as a string ("4.25")."""
        amount = self.amount(units)
        return amount if isinstance(amount, int) else f"{amount.normalize():f}"

    @property
    def rolling(self) -> timedelta | None:
        """The window of a rolling period, None for a calendar one."""
        match = _ROLLING.match(self.period)
        if match is None:
            return None
        return timedelta(hours=int(match.group(1)) * (24 if match.group(2) == "d" else 1))

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """``(start, end)`` of the period (a calendar one) or of the bucket (a rolling one) of ``now``."""
        window = self.rolling
        if window is not None:
            bucket = window / ROLLING_BUCKETS
            epoch = datetime(1970, 1, 1, tzinfo=dt_timezone.utc if timezone.is_aware(now) else None)
            start = epoch + bucket * ((now - epoch) // bucket)
            return start, start + bucket
        local = timezone.localtime(now) if timezone.is_aware(now) else now
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.period == "day":
            return start, start + timedelta(days=1)  # aware arithmetic is on the wall clock: DST-safe
        start = start.replace(day=1)
        return start, start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)

    def as_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "cost": None if self.cost is None else str(self.cost), "period": self.period}


class BudgetRefused(BedrockStreamError):
    """A request the user's budget does not allow; nothing was sent to Bedrock."""


class BudgetExceeded(BudgetRefused):
    """The user's budget cannot cover this request (429); nothing was sent to Bedrock."""

    def __init__(self, budget: Budget, used: int, resets_at: datetime, *, now: datetime) -> None:
        seconds = max(1, math.ceil((resets_at - now).total_seconds()))
        super().__init__(
            f"Your {budget.unit} budget for this period is used up; it frees up by {resets_at.isoformat()}.",
            code="BudgetExceeded",
            retry_after=seconds,
        )
        self.status_code, self.error_type = 429, "budget_exceeded"
        self.budget, self.used, self.resets_at = budget, used, resets_at

    def as_json(self) -> dict[str, Any]:
        return {"error": {
            "type": self.error_type,
            "message": self.message,
            "limit": self.budget.display(self.budget.limit),
            "used": self.budget.display(self.used),
            "unit": self.budget.unit,
            "period": self.budget.period,
            "resets_at": self.resets_at.astimezone(dt_timezone.utc).isoformat().replace("+00:00", "Z"),
        }}


class BudgetUnpriced(BudgetRefused):
    """A money budget applies, but the price table has no price for the model: refused (403)."""

    def __init__(self, model_id: str) -> None:
        super().__init__(
            "This model has no price, so a request cannot be counted against your budget.",
            code="BudgetUnpriced",
            model_id=model_id,
        )
        self.status_code, self.error_type = 403, "budget_unpriced"


# -- which budget ------------------------------------------------------------------------------------
def budget_for(user: Any, budgets: Mapping[str, Any] | None) -> Budget | None:
    """The budget of ``user`` under ``budgets`` (the ``BUDGETS`` shape): their :class:`UserBudget`
    row, else ``users``, else the largest of their ``groups``' budgets, else ``default``."""
    if not getattr(user, "is_authenticated", False):
        return None
    row = UserBudget.objects.filter(user_id=user.pk).first()
    _remember_row(user.pk, row)
    if row is not None:
        return row.as_budget()
    return _settings_budget(user, budgets)


def _settings_budget(user: Any, budgets: Mapping[str, Any] | None) -> Budget | None:
    """The budget of ``user`` by ``budgets`` alone (no ``UserBudget`` row)."""
    budgets = budgets or {}
    users = budgets.get("users") or {}
    username = user.get_username()
    if username in users:
        return Budget.parse(users[username], f"BUDGETS['users'][{username!r}]")
    groups = budgets.get("groups") or {}
    if groups:
        names = list(user.groups.filter(name__in=list(groups)).values_list("name", flat=True))
        if names:
            found = [Budget.parse(groups[name], f"BUDGETS['groups'][{name!r}]") for name in names]
            if None in found:
                return None
            # The largest limit; money budgets are compared among themselves and preferred.
            return max(found, key=lambda b: (b is not None and b.unit == "cost", b.limit if b is not None else 0))
    return Budget.parse(budgets.get("default"), "BUDGETS['default']")


def estimate_input_tokens(body: Any) -> int:
    """About four characters a token of the text in a request body (file bytes and signatures
    left out): the input part of a reservation."""
    chars = 0
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, Mapping):
            stack.extend(value for key, value in item.items() if key not in _BINARY_KEYS)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return math.ceil(chars / CHARS_PER_TOKEN)


def amount_for(budget: Budget, model_id: str, usage: Mapping[str, Any], *, ceiling: bool = True) -> int:
    """``usage`` in the budget's counting units: tokens (input + output, + cache writes when
    ``BUDGET_COUNTS_CACHE_WRITES``), or its cost (:func:`~.pricing.cost_of`), rounded up."""
    if budget.unit == "tokens":
        tokens = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
        if stream_settings.BUDGET_COUNTS_CACHE_WRITES:
            tokens += int(usage.get("cache_write_tokens") or 0)
        return tokens
    from .pricing import cost_of

    cost = cost_of(model_id, usage)
    if cost is None:
        raise BudgetUnpriced(model_id)
    return int((cost / COST_UNIT).to_integral_value(ROUND_CEILING))


# -- reserving -----------------------------------------------------------------------------------------
#: Stands for "a ``UserBudget`` row with no limit" in :data:`_rows`.
_UNLIMITED = object()
#: The ``UserBudget`` row this process last read per user who has one (its budget, or :data:`_UNLIMITED`);
#: a user not in it is assumed to have none. Only a guess: each reservation checks it in its own
#: statement (:func:`_row_guard`), so an edit in the admin (from any process) is seen at once.
_rows: dict[Any, Any] = {}
_ROWS_MAX = 10_000


def _remember_row(user_id: Any, row: UserBudget | None) -> None:
    if row is None:
        _rows.pop(user_id, None)
        return
    if len(_rows) >= _ROWS_MAX:
        _rows.clear()
    budget = row.as_budget()
    _rows[user_id] = _UNLIMITED if budget is None else budget


def _row_guard(user_id: Any, budget: Budget | None) -> Q:
    """True while the user's ``UserBudget`` row is as assumed: none (``budget`` None), or one with
    this budget."""
    return _assumed_row(user_id, None if budget is None else
                        {"tokens": budget.tokens, "cost": budget.cost, "period": budget.period})


def _assumed_row(user_id: Any, row: Mapping[str, Any] | None) -> Q:
    rows = UserBudget.objects.filter(user_id=user_id)
    return ~Q(Exists(rows)) if row is None else Q(Exists(rows.filter(**row)))


def reserve_for(
    user: Any, budgets: Mapping[str, Any] | None, model_id: str, body: Mapping[str, Any], max_tokens: int,
    *, insert: Any = None,
) -> dict[str, Any] | None:
    """:func:`budget_for` and :func:`reserve`, usually in one statement (with ``insert``, an unsaved
    ``Completion``: its INSERT too); the reservation, None when no budget applies, or
    :class:`BudgetExceeded`. The budget assumed from this process' last look at the user's
    ``UserBudget`` row is reserved on the condition that the row is still so; only when that (or the
    budget) fails is the row read."""
    if not getattr(user, "is_authenticated", False):
        return None
    known = _rows.get(user.pk)
    if known is not _UNLIMITED:
        budget = known if known is not None else _settings_budget(user, budgets)
        if budget is not None:
            try:
                reservation = _try_reserve(user.pk, budget, model_id, body, max_tokens, timezone.now(),
                                           row_check=True, assumed=known, insert=insert)
            except BudgetUnpriced:  # only a guess: the row, read below, may have a tokens limit or none
                reservation = None
            if reservation is not None:
                return reservation
    budget = budget_for(user, budgets)
    return None if budget is None else reserve(user.pk, budget, model_id, body, max_tokens)


def reserve(
    user_id: Any, budget: Budget, model_id: str, body: Mapping[str, Any], max_tokens: int,
    *, now: datetime | None = None, insert: Any = None,
) -> dict[str, Any]:
    """Reserve ``max_tokens`` plus the body's input estimate against the budget; the reservation
    (to store on the completion, for :func:`settle`), or :class:`BudgetExceeded`. With ``insert``
    (an unsaved ``Completion``), its INSERT goes with the reservation when the period row exists."""
    now = now or timezone.now()
    if insert is not None:
        reservation = _try_reserve(user_id, budget, model_id, body, max_tokens, now, insert=insert)
        if reservation is not None:
            return reservation
    amount = amount_for(budget, model_id, {"input_tokens": estimate_input_tokens(body), "output_tokens": max_tokens})
    start, _ = budget.bounds(now)
    _reserve(user_id, budget, start, amount, now)
    return {**budget.as_dict(), "start": start.isoformat(), "reserved": amount}


def _try_reserve(
    user_id: Any, budget: Budget, model_id: str, body: Mapping[str, Any], max_tokens: int, now: datetime,
    *, row_check: bool = False, assumed: Budget | None = None, insert: Any = None,
) -> dict[str, Any] | None:
    """The reservation in one conditional statement (with ``insert``, the completion's INSERT with it),
    or None with nothing written: no period row yet, over budget, or (``row_check``) the user's
    ``UserBudget`` row no longer as ``assumed`` (see :func:`_row_guard`)."""
    amount = amount_for(budget, model_id, {"input_tokens": estimate_input_tokens(body), "output_tokens": max_tokens})
    start, _ = budget.bounds(now)
    reservation = {**budget.as_dict(), "start": start.isoformat(), "reserved": amount}
    if insert is not None:
        insert.budget_reservation = reservation  # stored by the INSERT
    alias = router.db_for_write(BudgetUsage)
    statement = _reservation(alias, user_id, budget, start, amount, row_check=row_check, assumed=assumed)
    try:
        done = _reserve_once(alias, user_id, budget, statement, amount, insert)
    except DatabaseError:
        # Nothing was written (one statement, or one transaction): the long way, with its own retry
        # and 503, says what happens next.
        if insert is None or connections[alias].in_atomic_block:
            raise
        with suppress(DatabaseError):
            connections[alias].close()
        done = False
    if not done and insert is not None:
        insert.budget_reservation = None
    return reservation if done else None


def _reserve_once(
    alias: str, user_id: Any, budget: Budget, statement: tuple[str, list[Any]], amount: int, insert: Any
) -> bool:
    """The reservation ``statement`` (an UPDATE of the period row, :func:`_reservation`); with
    ``insert`` on PostgreSQL, ``insert``'s INSERT in the same statement (elsewhere the
    ``stream_started`` receiver inserts it: on SQLite, one transaction for both would hold the write
    lock across Python code, and concurrent streams would wait for it). False (nothing written) when
    the statement matched no row."""
    from . import receivers

    connection = connections[alias]
    postgresql = connection.vendor == "postgresql"
    raw = (
        insert is not None
        and postgresql
        and router.db_for_write(type(insert), instance=insert) == alias
        and receivers.raw_writes_allowed()
    )
    lock = budget.rolling is not None and postgresql
    with transaction.atomic(using=alias) if lock else nullcontext():
        if lock:
            _lock(connection, user_id, budget)
        sql, params = statement
        if not raw:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.rowcount > 0
        head, values, insert_params = receivers.insert_parts(insert, alias)
        pk = connection.ops.quote_name(str(type(insert)._meta.pk.column))
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH r AS ({sql} RETURNING 1) {head} SELECT {values} WHERE EXISTS (SELECT 1 FROM r) RETURNING {pk}",
                [*params, *insert_params],
            )
            row = cursor.fetchone()
        if row is None:
            return False
        receivers.inserted(insert, alias, row[0])
        return True


def _update_sql(rows: QuerySet[Any], alias: str, **values: Any) -> tuple[str, list[Any]]:
    """The SQL of ``rows.update(**values)``, to run inside another statement."""
    query = rows.query.chain(UpdateQuery)
    assert isinstance(query, UpdateQuery)
    query.add_update_values(values)
    sql, params = query.get_compiler(alias).as_sql()
    return sql, list(params)


#: The period row's UPDATEs by shape (see :func:`_period_update`): the SQL and, per parameter, the
#: input it is (a name, and the type the backend wraps it in, such as psycopg's ``Int4``) or a
#: constant the compiler added. A few entries.
_STATEMENTS: dict[tuple[Any, ...], tuple[str, list[tuple[str | None, Any]]]] = {}


def _period_update(
    alias: str, user_id: Any, budget: Budget, start: datetime, changes: Sequence[tuple[str, Any]],
    bound: Any = None, *, row_check: bool = False, assumed: Budget | None = None,
) -> tuple[str, list[Any]]:
    """``UPDATE`` of the period row: ``field = field + delta`` for each of ``changes``, where (with
    ``bound``) ``used + reserved <= bound`` and (with ``row_check``) :func:`_row_guard` holds.

    The ORM compiles each shape of it once per process: building and compiling the querysets cost
    more CPU than the statement itself, on every request (a quarter of a stream's database work).
    Afterwards a request only fills in the parameters, where a compile with a distinct stand-in for
    each input put them; a shape is kept only if that gave exactly the ORM's own parameters.
    """
    row = None if assumed is None else {"cost": assumed.cost, "period": assumed.period, "tokens": assumed.tokens}
    shape = (alias, tuple(name for name, _ in changes), bound is not None, row_check,
             None if row is None else tuple(row[name] is None for name in sorted(row)))  # None: IS NULL
    inputs = {"user_id": user_id, "unit": budget.unit, "period": budget.period, "period_start": start,
              "bound": bound, **{f"change.{name}": delta for name, delta in changes},
              **({} if row is None else {f"row.{name}": value for name, value in row.items()})}
    connection = connections[alias]
    cached = _STATEMENTS.get(shape)
    if cached is not None:
        sql, template = cached
        return sql, _fill(template, _adapted(inputs, connection))
    sql, compiled = _compile_period_update(alias, inputs, changes, row_check, row is not None)
    raw = {name: _stand_in(value, index) for index, (name, value) in enumerate(inputs.items())}
    _, marked = _compile_period_update(alias, raw, changes, row_check, row is not None)
    stand_ins = _adapted(raw, connection)
    slots = {_key(value): name for name, value in stand_ins.items() if value is not None}
    template = []
    for value in marked:
        slot = slots.get(_key(value))
        wrap = type(value) if slot is not None and type(value) is not type(stand_ins[slot]) else None
        template.append((slot, wrap) if slot is not None else (None, value))
    filled = _fill(template, _adapted(inputs, connection))
    if [(type(v), v) for v in filled] == [(type(v), v) for v in compiled] and len(_STATEMENTS) < 64:
        _STATEMENTS[shape] = (sql, template)
    return sql, compiled


def _fill(template: list[tuple[str | None, Any]], values: Mapping[str, Any]) -> list[Any]:
    return [(values[slot] if extra is None else extra(values[slot])) if slot is not None else extra
            for slot, extra in template]


def _compile_period_update(alias: str, inputs: Mapping[str, Any], changes: Sequence[tuple[str, Any]],
                           row_check: bool, assumed: bool) -> tuple[str, list[Any]]:
    key = {name: inputs[name] for name in ("user_id", "unit", "period", "period_start")}
    conditions: list[Any] = []
    if inputs["bound"] is not None:
        conditions.append(LessThanOrEqual(F("used") + F("reserved"), inputs["bound"]))
    if row_check:
        row = {name: inputs[f"row.{name}"] for name in ("tokens", "cost", "period")} if assumed else None
        conditions.append(_assumed_row(inputs["user_id"], row))
    rows = BudgetUsage.objects.using(alias).filter(**key).filter(*conditions)
    return _update_sql(rows, alias, **{name: F(name) + inputs[f"change.{name}"] for name, _ in changes})


def _stand_in(value: Any, index: int) -> Any:
    """A value of ``value``'s type that no other input and no constant of the statement has."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(year=1901 + index, microsecond=index)
    if isinstance(value, Decimal):
        return Decimal(987_654_000 + index)
    if isinstance(value, int) and not isinstance(value, bool):
        return 987_654_000 + index
    if isinstance(value, str):
        return f"stand-in-{index}"
    return value  # another type: matched to no input, so the check below keeps the ORM's path


def _adapted(inputs: Mapping[str, Any], connection: Any) -> dict[str, Any]:
    out = dict(inputs)
    for name in ("user_id", "unit", "period", "period_start"):
        out[name] = _db_value(BudgetUsage, name, inputs[name], connection)
    for name in ("tokens", "cost", "period"):
        if f"row.{name}" in inputs:
            out[f"row.{name}"] = _db_value(UserBudget, name, inputs[f"row.{name}"], connection)
    return out


def _key(value: Any) -> Any:
    """Matches a compiled parameter to its stand-in: by value, an int whatever the backend wraps it in."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (int, int(value))
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return (type(value), value)


def _db_value(model: Any, name: str, value: Any, connection: Any) -> Any:
    """``value`` as the ORM sends it for an exact lookup on ``model.name`` (a datetime is a string on
    SQLite, for instance)."""
    field = model._meta.get_field(name)
    return field.get_db_prep_value(field.get_prep_value(value), connection, prepared=True)


def _reservation(
    alias: str, user_id: Any, budget: Budget, start: datetime, amount: int, *, row_check: bool = False,
    assumed: Budget | None = None,
) -> tuple[str, list[Any]]:
    """The reservation's UPDATE: ``reserved += amount`` on the period row where ``amount`` still fits."""
    if budget.rolling is None:
        return _period_update(alias, user_id, budget, start, (("reserved", amount),), budget.limit - amount,
                              row_check=row_check, assumed=assumed)
    rows, fits, _ = _conditions(alias, user_id, budget, start, amount)  # a sum over the window's rows
    update = rows.filter(fits, _row_guard(user_id, assumed)) if row_check else rows.filter(fits)
    return _update_sql(update, alias, reserved=F("reserved") + amount)


def reserve_more(reservation: dict[str, Any], user_id: Any, model_id: str, body: Mapping[str, Any],
                 max_tokens: int) -> None:
    """Reserve for one more model turn (a run with tools) on the same period row as the first."""
    budget = Budget.parse(_budget_fields(reservation))
    assert budget is not None
    amount = amount_for(budget, model_id, {"input_tokens": estimate_input_tokens(body), "output_tokens": max_tokens})
    _reserve(user_id, budget, datetime.fromisoformat(reservation["start"]), amount, timezone.now())
    reservation["reserved"] += amount


def step_reserver(completion: Any, model_id: str, max_tokens: int) -> Callable[[dict[str, Any]], None] | None:
    """The :class:`~.toolflow.ToolLoop` hook that reserves before each further turn, when the
    stream holds a reservation."""
    reservation = getattr(completion, "budget_reservation", None)
    if not reservation:
        return None

    def reserve_step(body: dict[str, Any]) -> None:
        try:
            reserve_more(reservation, completion.user_id, model_id, body, max_tokens)
        finally:
            release_connections()  # not held for the rest of the stream

    return reserve_step


#: The first key of the PostgreSQL advisory locks of rolling-window reservations (any fixed number).
_LOCK_CLASS = 0x6272


def _lock_key(user_id: Any, budget: Budget) -> int:
    """A 32-bit key for (user, unit, period): a collision only serializes two users' reservations."""
    digest = hashlib.blake2b(f"{user_id}:{budget.unit}:{budget.period}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock(connection: Any, user_id: Any, budget: Budget) -> None:
    """PostgreSQL, a rolling window: serialize this user's reservations for the transaction's life."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_CLASS, _lock_key(user_id, budget)])


def _conditions(alias: str, user_id: Any, budget: Budget, start: datetime, amount: int) -> tuple[
        QuerySet[BudgetUsage], Any, QuerySet[BudgetUsage] | None]:
    """The period row, the condition that ``amount`` fits the budget, and a rolling window's rows."""
    key = {"user_id": user_id, "unit": budget.unit, "period": budget.period}
    rows = BudgetUsage.objects.using(alias).filter(**key, period_start=start)
    window = budget.rolling
    counted = F("used") + F("reserved")
    if window is None:
        return rows, LessThanOrEqual(counted, budget.limit - amount), None
    first = start - (window - window / ROLLING_BUCKETS)
    in_window = BudgetUsage.objects.using(alias).filter(**key, period_start__gte=first)
    total = in_window.values("user_id").annotate(total=Sum(counted)).values("total")
    return rows, LessThanOrEqual(Coalesce(Subquery(total), Value(0)), budget.limit - amount), in_window


def _reserve(user_id: Any, budget: Budget, start: datetime, amount: int, now: datetime) -> None:
    alias = router.db_for_write(BudgetUsage)

    # One statement: PostgreSQL re-checks the WHERE on the row it waited for; SQLite runs a write
    # statement under the database's write lock. A rolling window sums several rows: on PostgreSQL
    # this user's reservations are serialized first (a lock of the transaction's life), so that the
    # sum, read by the next statement on a fresh snapshot, sees every reservation made before ours.
    # (Locking the bucket row is not enough: a waiter re-checks only that row, not the sum.)
    statement = _reservation(alias, user_id, budget, start, amount)
    if _reserve_once(alias, user_id, budget, statement, amount, None):
        return
    key = {"user_id": user_id, "unit": budget.unit, "period": budget.period}
    BudgetUsage.objects.using(alias).bulk_create([BudgetUsage(**key, period_start=start)], ignore_conflicts=True)
    if _reserve_once(alias, user_id, budget, statement, amount, None):
        return
    rows, _, in_window = _conditions(alias, user_id, budget, start, amount)
    scope = in_window if in_window is not None else rows
    state = scope.aggregate(total=Coalesce(Sum(F("used") + F("reserved")), 0), oldest=Min(
        "period_start", filter=Q(used__gt=0) | Q(reserved__gt=0)))
    window = budget.rolling
    if window is not None:
        resets_at = (state["oldest"] or start) + window
    else:
        resets_at = budget.bounds(now)[1]
    raise BudgetExceeded(budget, state["total"], resets_at, now=now)


# -- settling ------------------------------------------------------------------------------------------
def settle(completion: Any, *, save: Sequence[str] | None = None) -> list[tuple[int, Budget, int]]:
    """Trade the completion's reservation for its real usage, once; the thresholds crossed, as
    ``(threshold, budget, used)``. Needs the completion's final usage (``record_end``). With ``save``,
    the completion's ``save(update_fields=save)`` goes with it (in the same statement on PostgreSQL)."""
    reservation = getattr(completion, "budget_reservation", None)
    if not reservation or getattr(completion, "budget_settled", False):
        if save is not None:
            completion.save(update_fields=save)
        return []
    budget = Budget.parse(_budget_fields(reservation))
    assert budget is not None
    usage = {
        "input_tokens": completion.input_tokens,
        "output_tokens": completion.output_tokens,
        "cache_read_tokens": completion.cache_read_tokens,
        "cache_write_tokens": completion.cache_write_tokens,
    }
    try:
        used = amount_for(budget, completion.model_id, usage)
    except BudgetUnpriced:  # the price table changed since the reservation: count what was reserved
        used = reservation["reserved"]
    return _settle(completion.user_id, budget, datetime.fromisoformat(reservation["start"]), used,
                   reservation["reserved"], completion=completion, save=save)


def _settle(user_id: Any, budget: Budget, start: datetime, used: int, reserved: int, *, completion: Any = None,
            save: Sequence[str] | None = None) -> list[tuple[int, Budget, int]]:
    """``used += used, reserved -= reserved`` on the period row (and ``completion``'s save, see
    :func:`settle`); marks ``completion`` settled; the thresholds crossed."""
    from . import receivers

    alias = router.db_for_write(BudgetUsage)
    key = {"user_id": user_id, "unit": budget.unit, "period": budget.period}
    connection = connections[alias]
    together = save is not None and router.db_for_write(type(completion), instance=completion) == alias
    if together and connection.vendor == "postgresql" and receivers.raw_writes_allowed():
        sql, params = _period_update(alias, user_id, budget, start, (("used", used), ("reserved", -reserved)))
        update, update_params = receivers.update_parts(completion, save, alias)  # type: ignore[arg-type]
        with connection.cursor() as cursor:
            cursor.execute(f"WITH s AS ({sql} RETURNING used, notified) {update} "
                           f"RETURNING (SELECT used FROM s), (SELECT notified FROM s)", [*params, *update_params])
            row = cursor.fetchone()
        completion.budget_settled = True
        if row is None:  # as save() would say; the settlement is done
            raise DatabaseError("Save with update_fields did not affect any rows.")
        total, notified = int(row[0] or 0), int(row[1] or 0)
    else:  # two statements (see _reserve_once); a retry of the save does not settle again
        total, notified = _settle_row(alias, user_id, budget, start, used, reserved)
        if completion is not None:
            completion.budget_settled = True
        if save is not None:
            completion.save(update_fields=save)
    window = budget.rolling
    if window is not None:
        first = start - (window - window / ROLLING_BUCKETS)
        state = BudgetUsage.objects.using(alias).filter(**key, period_start__gte=first).aggregate(
            total=Coalesce(Sum("used"), 0), notified=Coalesce(Max("notified"), 0))
        total, notified = state["total"], state["notified"]
    crossed = []
    for threshold in THRESHOLDS:
        if notified < threshold and total * 100 >= budget.limit * threshold:
            rows = BudgetUsage.objects.using(alias).filter(**key, period_start=start)
            if rows.filter(notified__lt=threshold).update(notified=threshold):  # one settle wins each crossing
                crossed.append((threshold, budget, total))
    return crossed


def _settle_row(alias: str, user_id: Any, budget: Budget, start: datetime, used: int, reserved: int
                ) -> tuple[int, int]:
    """One UPDATE: ``used += used, reserved -= reserved``; the row's new ``used`` and ``notified``."""
    connection = connections[alias]
    if not connection.features.can_return_columns_from_insert:  # no UPDATE … RETURNING here
        rows = BudgetUsage.objects.using(alias).filter(user_id=user_id, unit=budget.unit, period=budget.period,
                                                        period_start=start)
        rows.update(used=F("used") + used, reserved=F("reserved") - reserved)
        return next(iter(rows.values_list("used", "notified")), (0, 0))
    sql, params = _period_update(alias, user_id, budget, start, (("used", used), ("reserved", -reserved)))
    meta, quote = BudgetUsage._meta, connection.ops.quote_name
    returning = ", ".join(quote(str(f.column)) for f in (meta.get_field("used"), meta.get_field("notified"))
                          if isinstance(f, Field))
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} RETURNING {returning}", params)
        row = cursor.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


# -- housekeeping (bedrock_reap) -----------------------------------------------------------------------
def settle_reaped(completion: Any) -> list[tuple[int, Budget, int]]:
    """Release the reservation of a stream whose worker died (its row just reaped), like a failed
    stream's: counted at the usage estimated from its stored messages and text (Bedrock never
    reported it); the thresholds crossed."""
    from .runner import estimate_usage

    reservation = completion.budget_reservation
    budget = Budget.parse(_budget_fields(reservation))
    assert budget is not None
    usage = estimate_usage(completion.messages, completion.text, {"input_tokens": 0, "output_tokens": 0})
    try:
        used = amount_for(budget, completion.model_id, usage)
    except BudgetUnpriced:
        used = reservation["reserved"]
    return _settle(completion.user_id, budget, datetime.fromisoformat(reservation["start"]), used,
                   reservation["reserved"])


#: The longest a calendar period lasts (a day with a DST change, a month).
_LONGEST = {"day": timedelta(hours=25), "month": timedelta(days=31)}


def prune_usage(now: datetime, grace: timedelta, *, using: str | None = None, dry_run: bool = False) -> int:
    """Delete the :class:`~.models.BudgetUsage` rows that no reservation can count any more: periods
    that ended, buckets that left their rolling window. A row that still holds a reservation (a
    stream started in that period and still running) is kept ``grace`` longer. The rows deleted
    (or, with ``dry_run``, that would be)."""
    alias = using or router.db_for_write(BudgetUsage)
    rows = BudgetUsage.objects.using(alias)
    count = 0
    for period in rows.values_list("period", flat=True).distinct():
        try:
            budget = Budget(tokens=0, period=period)
        except ImproperlyConfigured:  # not a period this version knows: leave it alone
            continue
        ended = now - (budget.rolling or _LONGEST[period])
        expired = rows.filter(period=period, period_start__lt=ended).filter(
            Q(reserved__lte=0) | Q(period_start__lt=ended - grace))
        count += expired.count() if dry_run else expired.delete()[0]
    return count


def _budget_fields(reservation: Mapping[str, Any]) -> dict[str, Any]:
    return {name: reservation[name] for name in ("tokens", "cost", "period") if reservation.get(name) is not None}


def budgets_configured() -> bool:
    """Whether ``BEDROCK_STREAM["BUDGETS"]`` is set (even to ``{}``: then only the admin's rows count)."""
    return stream_settings.BUDGETS is not None


__all__ = [
    "Budget",
    "BudgetExceeded",
    "BudgetRefused",
    "BudgetUnpriced",
    "amount_for",
    "budget_for",
    "estimate_input_tokens",
    "prune_usage",
    "reserve",
    "reserve_for",
    "settle",
    "settle_reaped",
]
