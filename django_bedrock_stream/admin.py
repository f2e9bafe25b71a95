"""A read-only admin for :class:`~django_bedrock_stream.models.Completion`.

Rows are written by the stream views (through signals), never by hand: there is no add view, the
change view is read-only for everyone (superusers included), and deleting stays governed by the
usual ``delete_completion`` permission so old rows can be purged. The changelist shows token totals
of the rows currently filtered (template ``admin/django_bedrock_stream/completion/change_list.html``),
and links to the usage dashboard (``usage/``, :mod:`.dashboard`): totals per day, user or model, charts
and a CSV export.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils.html import format_html

from . import dashboard
from .conf import stream_settings
from .models import BudgetUsage, Chat, ChatMessage, Completion, UserBudget
from .pricing import format_cost
from .usage import usage_totals

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Completion]
else:
    _ModelAdmin = admin.ModelAdmin

__all__ = ["CompletionAdmin", "usage_totals"]  # usage_totals: its home was here before usage.py


def _pre(text: str) -> str:
    return format_html('<pre style="white-space: pre-wrap; margin: 0;">{}</pre>', text)


@admin.register(Completion)
class CompletionAdmin(_ModelAdmin):
    # Usage first after the model: the columns past the fold of a laptop-wide changelist (with the
    # sidebar and the filters open) are the ones that may need a horizontal scroll.
    list_display = (
        "created_at",
        "model_id",
        "status",
        "input_tokens",
        "output_tokens",
        "cost_column",
        "first_token",
        "user",
        "stop_reason",
        "family",
    )
    list_filter = (
        "status",
        "model_id",
        "family",
        ("user", admin.RelatedOnlyFieldListFilter),
        "created_at",
    )
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    fieldsets = (
        (None, {"fields": ("model_id", "family", "user", "status", "stop_reason", "created_at", "finished_at")}),
        ("Usage", {"fields": ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                              "total_tokens", "cost_display", "usage_estimated", "time_to_first_token")}),
        ("Conversation", {"fields": ("messages_display", "text_display")}),
        ("Beyond text", {"fields": ("reasoning_display", "sources_display", "tools_display", "guardrail_display",
                                    "attachments_display")}),
        ("Error", {"fields": ("error_code", "error_display"), "classes": ("collapse",)}),
    )
    readonly_fields = (
        *(field.name for field in Completion._meta.fields),
        "total_tokens",
        "cost_display",
        "messages_display",
        "text_display",
        "error_display",
        "reasoning_display",
        "sources_display",
        "tools_display",
        "guardrail_display",
        "attachments_display",
    )

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        username = get_user_model().USERNAME_FIELD
        return ["model_id", "text", "error", f"user__{username}"]

    # -- read-only ------------------------------------------------------------------------------
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Completion | None = None) -> bool:
        # Viewing needs "view" or "change" permission (ModelAdmin.has_view_permission); editing, never.
        return False

    # -- read-only displays ---------------------------------------------------------------------
    @admin.display(description="Total tokens")
    def total_tokens(self, obj: Completion) -> int | None:
        return obj.total_tokens

    @admin.display(description="Cost", ordering="cost")
    def cost_column(self, obj: Completion) -> str:
        return "-" if obj.cost is None else format_cost(obj.cost)

    @admin.display(description="Cost")
    def cost_display(self, obj: Completion) -> str:
        """In ``PRICE_CURRENCY``; "unknown" when no price table covers the model (never a guess)."""
        return "unknown" if obj.cost is None else f"{format_cost(obj.cost)} {stream_settings.PRICE_CURRENCY}"

    @admin.display(description="First token", ordering="time_to_first_token")
    def first_token(self, obj: Completion) -> str:
        """Time to first token in milliseconds: narrower than the duration's ``0:00:00.412000``."""
        ttft = obj.time_to_first_token
        return "-" if ttft is None else f"{round(ttft.total_seconds() * 1000)} ms"

    @admin.display(description="Messages")
    def messages_display(self, obj: Completion) -> str:
        parts = []
        for message in obj.messages or []:
            if isinstance(message, dict):
                parts.append(f"[{message.get('role', '?')}]\n{message.get('content', '')}")
            else:
                parts.append(json.dumps(message, ensure_ascii=False, indent=2))
        return _pre("\n\n".join(parts))

    @admin.display(description="Text")
    def text_display(self, obj: Completion) -> str:
        return _pre(obj.text)

    @admin.display(description="Reasoning")
    def reasoning_display(self, obj: Completion) -> str:
        blocks = (obj.parts or {}).get("reasoning") or []
        return _pre("\n\n".join(
            "[redacted]" if block.get("redacted") else block.get("text", "")
            + ("" if block.get("signature") else "\n(no signature: not complete)")
            for block in blocks
        ))

    @admin.display(description="Sources")
    def sources_display(self, obj: Completion) -> str:
        sources = (obj.parts or {}).get("sources") or []
        return _pre("\n".join(
            f"[{n}] {s.get('title') or s.get('url') or 'document'}: {s.get('cited_text', '')}"
            for n, s in enumerate(sources, 1)
        ))

    @admin.display(description="Tool calls")
    def tools_display(self, obj: Completion) -> str:
        parts = obj.parts or {}
        runs = parts.get("tool_runs") or [
            {"name": call.get("name"), "input": call.get("input"), "status": "called"}
            for call in parts.get("tool_calls") or []
        ]
        return _pre("\n".join(
            f"{run.get('name')}({json.dumps(run.get('input'), ensure_ascii=False)}) -> {run.get('status')}"
            + (f" in {run['duration']} s" if run.get("duration") is not None else "")
            + (f": {run['error']}" if run.get("error") else
               f": {json.dumps(run['output'], ensure_ascii=False)}" if "output" in run else "")
            for run in runs
        ))

    @admin.display(description="Guardrail")
    def guardrail_display(self, obj: Completion) -> str:
        guardrail = (obj.parts or {}).get("guardrail")
        return guardrail.get("action", "") if guardrail else ""

    @admin.display(description="Attachments")
    def attachments_display(self, obj: Completion) -> str:
        files = (obj.parts or {}).get("attachments") or []
        return _pre("\n".join(json.dumps(item, ensure_ascii=False) for item in files))

    @admin.display(description="Error")
    def error_display(self, obj: Completion) -> str:
        return _pre(obj.error)

    # -- usage totals ---------------------------------------------------------------------------
    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        if isinstance(response, TemplateResponse) and response.context_data and "cl" in response.context_data:
            # cl.queryset is the filtered and searched queryset, before pagination.
            response.context_data["usage_totals"] = usage_totals(response.context_data["cl"].queryset)
        return response

    # -- usage dashboard ------------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        """``usage/`` and ``usage/csv/`` ahead of the catch-all ``<object_id>/`` patterns; admin_view
        lets active staff only in, the views then ask for the view permission."""
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("usage/", self.admin_site.admin_view(self.usage_view), name=f"{name}_usage"),
            path("usage/csv/", self.admin_site.admin_view(self.usage_csv_view), name=f"{name}_usage_csv"),
            *super().get_urls(),
        ]

    def usage_view(self, request: HttpRequest) -> HttpResponse:
        return dashboard.usage_page(request, self)

    def usage_csv_view(self, request: HttpRequest) -> HttpResponse:
        return dashboard.usage_csv(request, self)


if TYPE_CHECKING:
    _UserBudgetAdmin = admin.ModelAdmin[UserBudget]
    _BudgetUsageAdmin = admin.ModelAdmin[BudgetUsage]
else:
    _UserBudgetAdmin = _BudgetUsageAdmin = admin.ModelAdmin


@admin.register(UserBudget)
class UserBudgetAdmin(_UserBudgetAdmin):
    """Per-user budgets: they win over ``BEDROCK_STREAM["BUDGETS"]`` (README, "Budgets")."""

    list_display = ("user", "tokens", "cost", "period", "note")
    list_filter = ("period",)
    raw_id_fields = ("user",)

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        return [f"user__{get_user_model().USERNAME_FIELD}", "note"]


@admin.register(BudgetUsage)
class BudgetUsageAdmin(_BudgetUsageAdmin):
    """What each user used and holds per budget period; written by the streams only."""

    list_display = ("user", "unit", "period", "period_start", "used", "reserved", "notified")
    list_filter = ("unit", "period", "period_start")
    list_select_related = ("user",)
    readonly_fields = ("user", "unit", "period", "period_start", "used", "reserved", "notified")

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        return [f"user__{get_user_model().USERNAME_FIELD}"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: BudgetUsage | None = None) -> bool:
        return False


if TYPE_CHECKING:
    _ChatAdmin = admin.ModelAdmin[Chat]
    _ChatMessageInline = admin.TabularInline[ChatMessage, Chat]
else:
    _ChatAdmin = admin.ModelAdmin
    _ChatMessageInline = admin.TabularInline


class ChatMessageInline(_ChatMessageInline):
    """A chat's messages, read-only: written by the chat view only."""

    model = ChatMessage
    fields = ("position", "id", "role", "status", "text", "completion", "created_at")
    readonly_fields = fields
    ordering = ("position", "created_at")
    extra = 0
    can_delete = False
    show_change_link = False

    @admin.display(description="text")
    def text(self, obj: ChatMessage) -> str:
        return _pre("".join(str(part.get("text", "")) for part in obj.parts if part.get("type") == "text"))

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Chat)
class ChatAdmin(_ChatAdmin):
    """Chats kept on the server (README, "Chats"), with their messages; read-only, deletable."""

    list_display = ("id", "title", "owner", "updated_at", "created_at")
    list_select_related = ("owner",)
    date_hierarchy = "updated_at"
    readonly_fields = ("id", "owner", "session_key", "title", "created_at", "updated_at")
    inlines = [ChatMessageInline]

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        return ["id", "title", f"owner__{get_user_model().USERNAME_FIELD}"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Chat | None = None) -> bool:
        return False
