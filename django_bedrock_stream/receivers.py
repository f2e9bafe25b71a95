"""The built-in receivers that persist :class:`~django_bedrock_stream.models.Completion` rows.

Connected in ``AppConfig.ready()``. Two writes per stream: an INSERT when it starts and one UPDATE
when it ends, so a crash mid-stream leaves a ``streaming`` row for ``bedrock_reap`` to settle. With a
budget on PostgreSQL, the reservation rides in the INSERT and the settlement in the UPDATE, one
statement each (:mod:`~.budgets`), so a budget adds no round trip.

Both writes survive a connection that died while the stream ran (a database restart, PostgreSQL's
``idle_session_timeout``, a proxy cutting idle connections): they reconnect and retry. An INSERT
that still fails leaves ``completion.pk`` unset, and the view answers 503 before calling Bedrock.
An UPDATE that still fails is logged at ERROR with the whole completion after the stable marker
:data:`UNSAVED_MARKER`, so it can be recovered from the logs; the row stays for ``bedrock_reap``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from django.db import DatabaseError, connections, router
from django.db.models import Field, Model
from django.db.models import signals as model_signals

from . import signals
from .conf import stream_settings
from .models import Completion

logger = logging.getLogger("django_bedrock_stream")

#: Starts the ERROR log line of a final write that failed after every retry; JSON follows it.
UNSAVED_MARKER = "bedrock_stream.unsaved_completion"
#: Seconds to wait before each retry of the final write (so three attempts in about two seconds).
FINAL_WRITE_BACKOFF = (0.25, 1.5)

FINAL_FIELDS = [
    "text",
    "status",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "parts",
    "usage_estimated",
    "cost",
    "error",
    "error_code",
    "time_to_first_token",
    "finished_at",
    "budget_reservation",  # grown by each further turn of a run with tools
]


def connect() -> None:
    """Connect the receivers while ``PERSIST`` is on, disconnect them otherwise (called at start-up
    and when the setting changes): a signal with no receiver is not sent at all, which saves a
    stream its thread hops."""
    pairs = ((signals.stream_started, create_completion, "bedrock_stream_create"),
             (signals.stream_finished, finish_completion, "bedrock_stream_finish"))
    for signal, receiver, uid in pairs:
        if stream_settings.PERSIST:
            signal.connect(receiver, dispatch_uid=uid)
        else:
            signal.disconnect(dispatch_uid=uid)
    if stream_settings.BUDGETS is not None:
        connect_budget_settle()
    else:  # a view with budgets of its own connects it again when it reserves
        signals.stream_finished.disconnect(dispatch_uid=BUDGET_SETTLE_UID)


BUDGET_SETTLE_UID = "bedrock_stream_budget_settle"


def connect_budget_settle() -> None:
    """Connect :func:`settle_budget` unless it is (cheap: a view calls it for each reservation)."""
    if not any(key[0] == BUDGET_SETTLE_UID for key, *_ in signals.stream_finished.receivers):
        signals.stream_finished.connect(settle_budget, dispatch_uid=BUDGET_SETTLE_UID)


def settle_budget(*, sender: type, completion: Completion, **kwargs: Any) -> None:
    """Trade the stream's budget reservation for its real usage (exactly once: ``stream_finished``
    is sent once per stream, whatever happened), and send ``budget_threshold_reached`` for each
    threshold it crossed. Usually :func:`finish_completion` settled it already, in the final write;
    otherwise (persistence off, or that write failed) retried on a fresh connection like it."""
    from .budgets import settle

    reservation = completion.budget_reservation
    if not reservation:
        return
    crossed: list[Any] | None = completion.__dict__.pop("_budget_crossed", None)
    for delay in (*FINAL_WRITE_BACKOFF, None):
        if crossed is not None:
            break
        try:
            crossed = settle(completion)
        except DatabaseError:
            if delay is None or connections[router.db_for_write(Completion)].in_atomic_block:
                logger.exception("Could not settle a budget reservation: %s", json.dumps(reservation))
                return
            logger.warning("Retrying a budget settlement after a database error", exc_info=True)
            with contextlib.suppress(DatabaseError):
                connections[router.db_for_write(Completion)].close()
            time.sleep(delay)
    for threshold, budget, used in crossed or ():
        signals.budget_threshold_reached.send_robust(
            sender, user=completion.user, budget=budget, used=budget.amount(used),
            limit=budget.amount(budget.limit), threshold=threshold,
        )


def create_completion(*, completion: Completion, **kwargs: Any) -> None:
    """The INSERT of the start row (unless the budget reservation inserted it already)."""
    if not stream_settings.PERSIST or completion.pk is not None:
        return
    try:
        retrying_write(completion, (0.0,), lambda alias: completion.save(using=alias, force_insert=True))
    except DatabaseError:
        # The view sees ``pk is None`` and answers 503 without calling Bedrock.
        logger.exception("Could not store the start of a Bedrock stream for %s", completion.model_id)


def finish_completion(*, completion: Completion, **kwargs: Any) -> None:
    """The final UPDATE of the row, with the budget settlement folded in when the stream reserved."""
    if not stream_settings.PERSIST or completion.pk is None:
        return
    try:
        retrying_write(completion, FINAL_WRITE_BACKOFF, lambda alias: _final_write(completion, alias))
    except DatabaseError:
        logger.exception("%s %s", UNSAVED_MARKER, json.dumps(completion_record(completion), ensure_ascii=True))


def _final_write(completion: Completion, alias: str) -> None:
    from .budgets import settle

    if completion.budget_reservation and not getattr(completion, "budget_settled", False):
        # settle_budget (the next receiver) sends the threshold signals.
        completion.__dict__["_budget_crossed"] = settle(completion, save=FINAL_FIELDS)
    else:
        completion.save(using=alias, update_fields=FINAL_FIELDS)


def retrying_write(instance: Model, backoff: tuple[float, ...], write: Callable[[str], None]) -> None:
    """``write(alias)`` (the database ``instance`` is written to); after a database error, wait each
    delay of ``backoff`` in turn and try again on a fresh connection (a dead connection is what
    usually failed)."""
    alias = router.db_for_write(type(instance), instance=instance)
    for attempt in range(len(backoff) + 1):
        try:
            write(alias)
            return
        except DatabaseError:
            connection = connections[alias]
            if attempt == len(backoff) or connection.in_atomic_block:  # no reconnecting mid-transaction
                raise
            logger.warning("Retrying a %s write after a database error", type(instance).__name__, exc_info=True)
            with contextlib.suppress(DatabaseError):
                connection.close()
            time.sleep(backoff[attempt])


# -- the SQL of the two writes, for budgets.py to fold its statements into (PostgreSQL) ------------------
def raw_writes_allowed() -> bool:
    """Whether the writes may skip ``Model.save()``: only while nothing listens to its
    ``pre_save`` / ``post_save`` (a raw statement would not send them)."""
    return not (model_signals.pre_save.has_listeners(Completion) or model_signals.post_save.has_listeners(Completion))


#: The INSERT's columns and SQL per database (alias and engine): the same on every request, and
#: building them (a ``db_type`` per column) cost three times what the values did.
_INSERTS: dict[tuple[str, str], tuple[list[Field[Any, Any]], str, str]] = {}


def insert_parts(completion: Completion, alias: str) -> tuple[str, str, list[Any]]:
    """``INSERT INTO <table> (<columns>)``, the typed placeholders of its values (for an ``INSERT …
    SELECT``) and their parameters: what ``save(force_insert=True)`` would write."""
    connection = connections[alias]
    key = (alias, connection.settings_dict["ENGINE"])
    cached = _INSERTS.get(key)
    if cached is None:
        meta, quote = Completion._meta, connection.ops.quote_name
        fields = [f for f in meta.local_concrete_fields
                  if f is not meta.auto_field and not getattr(f, "generated", False)]
        head = f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(str(f.column)) for f in fields)})"
        cached = _INSERTS[key] = (fields, head, ", ".join(f"%s::{f.db_type(connection)}" for f in fields))
    fields, head, values = cached
    return head, values, [f.get_db_prep_save(f.pre_save(completion, True), connection=connection) for f in fields]


def inserted(completion: Completion, alias: str, pk: Any) -> None:
    """Mark ``completion`` saved as ``pk`` (what ``save()`` does after its INSERT)."""
    completion.pk = pk
    completion._state.adding, completion._state.db = False, alias


def update_parts(completion: Completion, fields: Sequence[str], alias: str) -> tuple[str, list[Any]]:
    """The ``UPDATE`` that ``save(update_fields=fields)`` would run, and its parameters."""
    connection = connections[alias]
    meta, quote = Completion._meta, connection.ops.quote_name
    concrete: list[Field[Any, Any]] = []
    for name in fields:
        field = meta.get_field(name)
        assert isinstance(field, Field), name  # a column of the row, not a reverse relation
        concrete.append(field)
    sets = ", ".join(f"{quote(str(f.column))} = %s" for f in concrete)
    params = [f.get_db_prep_save(f.pre_save(completion, False), connection=connection) for f in concrete]
    return f"UPDATE {quote(meta.db_table)} SET {sets} WHERE {quote(str(meta.pk.column))} = %s", [*params, completion.pk]


def completion_record(completion: Completion) -> dict[str, Any]:
    """Everything needed to recreate the final state of a row, as JSON-safe values."""
    return {
        "id": completion.pk,
        "user_id": completion.user_id,
        "model_id": completion.model_id,
        "family": completion.family,
        **{field: getattr(completion, field) for field in FINAL_FIELDS},
        "time_to_first_token": (
            completion.time_to_first_token.total_seconds() if completion.time_to_first_token else None
        ),
        "finished_at": completion.finished_at.isoformat() if completion.finished_at else None,
        "cost": None if completion.cost is None else str(completion.cost),  # a string: JSON has no Decimal
    }
