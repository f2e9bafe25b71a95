"""The persisted record of every stream."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from .pricing import cost_of


class Completion(models.Model):
    """One row per stream: created when it starts, finished once when it ends (never per token)."""

    class Status(models.TextChoices):
        STREAMING = "streaming", "Streaming"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="bedrock_completions",
    )
    model_id = models.CharField(max_length=255, db_index=True)
    family = models.CharField(max_length=40, blank=True)
    messages = models.JSONField(default=list)
    text = models.TextField(blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.STREAMING, db_index=True
    )
    stop_reason = models.CharField(max_length=64, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    #: Prompt-cache reads and writes, counted apart from ``input_tokens`` (None: none reported).
    cache_read_tokens = models.PositiveIntegerField(null=True, blank=True)
    cache_write_tokens = models.PositiveIntegerField(null=True, blank=True)
    #: Everything but the text: ``reasoning`` blocks (text, signature, redacted), ``sources``
    #: (citations), ``files``, ``tool_calls``, ``guardrail`` (action and trace), ``attachments``
    #: (the files the request sent: name, media type, size, sha256; never their bytes).
    parts = models.JSONField(default=dict, blank=True)
    #: True when Bedrock never reported the counts (a stream that failed or was cancelled before
    #: the final usage event) and they were estimated from the text (about 4 characters a token).
    usage_estimated = models.BooleanField(default=False)
    #: What the stream cost, from the final usage and ``BEDROCK_STREAM["PRICES"]``, in
    #: ``PRICE_CURRENCY`` (None: unknown: no price table, or the model is not in it).
    #: Ten decimal places: a single token of the cheapest model is well under a micro-cent.
    cost = models.DecimalField(max_digits=20, decimal_places=10, null=True, blank=True)
    error = models.TextField(blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    time_to_first_token = models.DurationField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    #: The budget reservation this stream made before calling Bedrock (budgets.py): the budget
    #: (``tokens`` or ``cost``, ``period``), its period row's ``start`` and the amount ``reserved``
    #: (in tokens or millionths of the currency), traded for the real usage when the stream ends.
    #: None: no budget applied.
    budget_reservation = models.JSONField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"{self.model_id} · {self.status} · {self.created_at:%Y-%m-%d %H:%M}"

    def record_end(
        self,
        *,
        status: str,
        text: str,
        stop_reason: str,
        usage: Mapping[str, int],
        usage_estimated: bool,
        parts: dict[str, Any],
        error: str,
        error_code: str,
        time_to_first_token: timedelta | None,
    ) -> None:
        """Set the final state (unsaved: the ``stream_finished`` receiver saves it, once), and the
        cost of ``usage`` by the price table (None when unknown; an estimate when the usage is)."""
        self.status, self.text, self.stop_reason = status, text, stop_reason
        self.input_tokens = usage["input_tokens"]
        self.output_tokens = usage["output_tokens"]
        self.cache_read_tokens = usage.get("cache_read_tokens") or None
        self.cache_write_tokens = usage.get("cache_write_tokens") or None
        self.usage_estimated = usage_estimated
        self.cost = cost_of(self.model_id, usage)
        self.parts = parts
        self.error, self.error_code = error, error_code
        self.time_to_first_token = time_to_first_token
        self.finished_at = timezone.now()

    @property
    def total_tokens(self) -> int | None:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)


def usage_aggregates() -> dict[str, Any]:
    """Count, token and cost sums and failure counts of completions, for ``aggregate()`` or
    ``annotate()``.

    One definition shared by the admin totals, the usage dashboard and ``bedrock_usage``. ``cost`` is
    the sum of the known costs (None when none is known); ``unpriced`` counts the rows it leaves out,
    so that a partial sum is never shown as the whole.
    """
    return {
        "completions": Count("id"),
        "input_tokens": Coalesce(Sum("input_tokens"), 0),
        "output_tokens": Coalesce(Sum("output_tokens"), 0),
        "cache_read_tokens": Coalesce(Sum("cache_read_tokens"), 0),
        "cache_write_tokens": Coalesce(Sum("cache_write_tokens"), 0),
        # Before "cost": once annotated, that name means the sum, not the field.
        "unpriced": Count("id", filter=Q(cost__isnull=True)),
        "cost": Sum("cost"),
        "failed": Count("id", filter=Q(status=Completion.Status.FAILED)),
        "cancelled": Count("id", filter=Q(status=Completion.Status.CANCELLED)),
    }


class UserBudget(models.Model):
    """A user's own budget, set in the admin; it wins over ``BEDROCK_STREAM["BUDGETS"]``.

    Set ``tokens`` or ``cost`` (not both); leave both empty for no limit at all.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bedrock_budget")
    tokens = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Tokens per period (input + output). Empty with an empty cost: no limit."
    )
    cost = models.DecimalField(
        max_digits=20, decimal_places=6, null=True, blank=True,
        help_text="Money per period, in the price table's currency (needs BEDROCK_STREAM['PRICES']).",
    )
    period = models.CharField(
        max_length=16, default="day",
        help_text='"day", "month" (calendar, in TIME_ZONE) or a rolling window: "24h", "7d".',
    )
    note = models.CharField(max_length=255, blank=True)

    class Meta:
        verbose_name = "user budget"

    def __str__(self) -> str:
        limit = "no limit" if self.tokens is None and self.cost is None else (
            f"{self.tokens} tokens" if self.tokens is not None else f"{self.cost}"
        )
        return f"{self.user} · {limit} / {self.period}"

    def clean(self) -> None:
        from django.core.exceptions import ImproperlyConfigured, ValidationError

        if self.tokens is not None and self.cost is not None:
            raise ValidationError("Set tokens or cost, not both.")
        try:
            self.as_budget()
        except ImproperlyConfigured as err:
            raise ValidationError({"period": str(err)}) from None

    def as_budget(self) -> Any:
        """The :class:`~.budgets.Budget` of this row, or None (no limit)."""
        from .budgets import Budget

        if self.tokens is None and self.cost is None:
            return None
        return Budget(tokens=self.tokens, cost=self.cost, period=self.period)


class BudgetUsage(models.Model):
    """What a user has used (``used``) and holds for running streams (``reserved``) in one period of
    a budget (a bucket of a rolling one): in tokens, or millionths of the currency (``unit="cost"``).
    Written with conditional UPDATEs only (budgets.py); ``notified`` is the highest threshold
    (80, 100) signalled for the period."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bedrock_budget_usage")
    unit = models.CharField(max_length=8)
    period = models.CharField(max_length=16)
    period_start = models.DateTimeField()
    used = models.BigIntegerField(default=0)
    reserved = models.BigIntegerField(default=0)
    notified = models.PositiveSmallIntegerField(default=0)

    class Meta:
        verbose_name_plural = "budget usage"
        constraints = [
            models.UniqueConstraint(
                fields=["user", "unit", "period", "period_start"], name="bedrock_budget_usage_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} · {self.unit} · {self.period} from {self.period_start:%Y-%m-%d %H:%M}"


class Chat(models.Model):
    """A conversation kept on the server (``ChatStreamView``): the client names it (``useChat``'s
    ``id``) or the server does; its history is read from here, never from the request."""

    id = models.CharField(primary_key=True, max_length=64)
    #: The signed-in owner; None for an anonymous chat (``ALLOW_ANONYMOUS``), then bound to ``session_key``.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="bedrock_chats"
    )
    session_key = models.CharField(max_length=64, blank=True, db_index=True)
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at", "-created_at"]

    def __str__(self) -> str:
        return self.title or self.id


class ChatMessage(models.Model):
    """One AI SDK ``UIMessage`` of a chat (``id``, ``role``, ``parts``, ``metadata``); an assistant
    message links the ``Completion`` that produced it and keeps how it ended (``status``)."""

    id = models.CharField(primary_key=True, max_length=64)
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16)
    parts = models.JSONField(default=list)
    metadata = models.JSONField(default=dict, blank=True)
    #: Assistant messages: ``completed`` / ``failed`` / ``cancelled`` (stopped or client gone); "" for the user's.
    status = models.CharField(max_length=16, blank=True)
    completion = models.ForeignKey(
        Completion, null=True, blank=True, on_delete=models.SET_NULL, related_name="chat_messages"
    )
    position = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["chat", "position", "created_at"]
        indexes = [models.Index(fields=["chat", "position"])]

    def __str__(self) -> str:
        return f"{self.role} · {self.id}"

    def as_ui_message(self) -> dict[str, Any]:
        """The AI SDK ``UIMessage`` (what ``GET chat/<id>/`` answers and the model reads again)."""
        message: dict[str, Any] = {"id": self.id, "role": self.role, "parts": self.parts}
        if self.metadata:
            message["metadata"] = self.metadata
        return message
