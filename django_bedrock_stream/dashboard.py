"""The usage dashboard of the Completion admin: totals per day, user or model, filters, a CSV export
of the same rows and charts of tokens and cost over time (server-rendered SVG, :mod:`.charts`).

Served by :meth:`CompletionAdmin.get_urls <django_bedrock_stream.admin.CompletionAdmin.get_urls>`
behind ``admin_site.admin_view`` (active staff only) and read-only: it needs the ``view_completion``
permission (or ``change_completion``), and answers GET and HEAD only.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, QueryDict
from django.template.response import TemplateResponse
from django.utils import dateformat, timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_safe

from . import charts
from .conf import stream_settings
from .models import Completion
from .pricing import format_cost
from .usage import ANONYMOUS, GROUPINGS, group_usage, usage_totals

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

#: The date range shown when the query string names no start (``?since=`` with no value: all time).
DEFAULT_DAYS = 30
#: Longer ranges are charted per month instead of per day.
MAX_CHART_DAYS = 92
#: The longest range a query string may ask for, in days from "From" (empty: all time, counted from
#: today) to "To" (empty: today): about 20 years, which the chart walks day by day.
MAX_RANGE_DAYS = 366 * 20
#: The dates a filter may name: a day after the last or before the first overflows ``datetime`` once
#: shifted by a day or to UTC.
MIN_DATE, MAX_DATE = dt.date(2, 1, 1), dt.date(9998, 12, 31)
#: The CSV columns after the group's key; ``cost`` is in ``currency``, empty when unknown.
CSV_COLUMNS = ("completions", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
               "total_tokens", "failed", "cancelled", "cost", "unpriced", "currency")
#: The groupings, as the dashboard names them.
GROUPING_LABELS = {name: _(name.capitalize()) for name in GROUPINGS}
#: The token series of the chart: (usage key, legend).
TOKEN_SERIES = (("input_tokens", _("Input")), ("output_tokens", _("Output")),
                ("cache_read_tokens", _("Cache read")), ("cache_write_tokens", _("Cache write")))


class UsageFilters(forms.Form):
    """The dashboard's query string. Choices list only the models and users that have completions."""

    since = forms.DateField(label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    model = forms.ChoiceField(label=_("Model"), required=False)
    user = forms.ChoiceField(label=_("User"), required=False)
    status = forms.ChoiceField(label=_("Status"), required=False,
                               choices=[("", _("All")), *Completion.Status.choices])
    by = forms.ChoiceField(label=_("Totals per"), required=False,
                           choices=GROUPING_LABELS.items())

    def __init__(self, query: QueryDict) -> None:
        data = query.copy()
        if "since" not in data:
            data["since"] = (timezone.localdate() - dt.timedelta(days=DEFAULT_DAYS - 1)).isoformat()
        super().__init__(data)
        models = Completion.objects.order_by("model_id").values_list("model_id", flat=True).distinct()
        username = f"user__{get_user_model().USERNAME_FIELD}"
        users = (Completion.objects.filter(user__isnull=False).order_by(username)
                 .values_list("user_id", username).distinct())
        cast(forms.ChoiceField, self.fields["model"]).choices = [("", _("All")), *((m, m) for m in models)]
        cast(forms.ChoiceField, self.fields["user"]).choices = [
            ("", _("All")), ("anonymous", ANONYMOUS), *((str(pk), name) for pk, name in users)
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for name in ("since", "until"):
            day = data.get(name)
            if day and not MIN_DATE <= day <= MAX_DATE:
                self.add_error(name, _("Enter a date between %(min)s and %(max)s.")
                               % {"min": MIN_DATE.isoformat(), "max": MAX_DATE.isoformat()})
        if "since" in self.errors or "until" in self.errors:
            return data
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            raise forms.ValidationError(_("The start of the range is after its end."))
        today = timezone.localdate()  # the end of an open range, and the start of an all-time one's limit
        if ((until or today) - (since or today)).days >= MAX_RANGE_DAYS:
            raise forms.ValidationError(_("The range is longer than %(days)s days.") % {"days": MAX_RANGE_DAYS})
        data["by"] = data.get("by") or GROUPINGS[0]
        return data

    def filter(self, queryset: QuerySet[Completion]) -> QuerySet[Completion]:
        """``queryset`` narrowed to the valid filters; days are whole days in the current time zone."""
        data = self.cleaned_data
        if data["since"]:
            queryset = queryset.filter(created_at__gte=_start_of(data["since"]))
        if data["until"]:
            queryset = queryset.filter(created_at__lt=_start_of(data["until"] + dt.timedelta(days=1)))
        if data["model"]:
            queryset = queryset.filter(model_id=data["model"])
        if data["user"] == "anonymous":
            queryset = queryset.filter(user__isnull=True)
        elif data["user"]:
            queryset = queryset.filter(user_id=data["user"])
        if data["status"]:
            queryset = queryset.filter(status=data["status"])
        return queryset


@require_safe
def usage_page(request: HttpRequest, model_admin: ModelAdmin[Completion]) -> HttpResponse:
    """The dashboard: filters, totals, charts and the table of the chosen grouping."""
    _check_permission(model_admin, request)
    form = UsageFilters(request.GET)
    context: dict[str, Any] = {
        **model_admin.admin_site.each_context(request),
        "opts": Completion._meta,
        "title": _("Bedrock usage"),
        "form": form,
        "currency": stream_settings.PRICE_CURRENCY,
    }
    if form.is_valid():
        queryset, by = form.filter(Completion.objects.all()), form.cleaned_data["by"]
        days = group_usage(queryset, "day")
        rows = days if by == "day" else group_usage(queryset, by)
        totals = usage_totals(queryset)
        start = form.cleaned_data["since"] or (days[0]["key"] if days else timezone.localdate())
        end = form.cleaned_data["until"] or max(timezone.localdate(), days[-1]["key"] if days else start)
        context.update(
            by=by,
            column_label=GROUPING_LABELS[by],
            rows=[_display(row, by) for row in rows],
            totals=totals,
            total_cost=None if totals["cost"] is None else format_cost(totals["cost"]),
            charts=usage_charts(days, start, end, stream_settings.PRICE_CURRENCY),
            export_query=request.GET.urlencode(),
        )
    return TemplateResponse(request, "admin/django_bedrock_stream/completion/usage.html", context)


@require_safe
def usage_csv(request: HttpRequest, model_admin: ModelAdmin[Completion]) -> HttpResponse:
    """The dashboard's table as CSV: same filters and grouping, one row per group, no total row."""
    _check_permission(model_admin, request)
    form = UsageFilters(request.GET)
    if not form.is_valid():
        errors = "; ".join(f"{field}: {' '.join(map(str, messages))}" for field, messages in form.errors.items())
        return HttpResponse(f"Invalid filters: {errors}\n", status=400, content_type="text/plain; charset=utf-8")
    by, since, until = form.cleaned_data["by"], form.cleaned_data["since"], form.cleaned_data["until"]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    name = "-".join(["bedrock-usage-by", by, *(str(day) for day in (since, until) if day)])
    response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    writer = csv.writer(response)
    writer.writerow([by, *CSV_COLUMNS])
    currency = stream_settings.PRICE_CURRENCY
    for row in group_usage(form.filter(Completion.objects.all()), by):
        cost = row["cost"]
        writer.writerow([
            _spreadsheet_safe(str(row["key"])), *(row[column] for column in CSV_COLUMNS[:-3]),
            "" if cost is None else format_cost(cost), row["unpriced"], "" if cost is None else currency,
        ])
    return response


def usage_charts(
    days: Sequence[dict[str, Any]], start: dt.date, end: dt.date, currency: str
) -> list[tuple[str, SafeString]]:
    """``(title, svg)`` of the tokens chart and, when any cost is known, of the cost chart, per day
    from ``start`` to ``end`` (per month over :data:`MAX_CHART_DAYS`), days without completions at 0."""
    monthly = (end - start).days >= MAX_CHART_DAYS
    buckets: dict[dt.date, dict[str, Any]] = {}
    for day in _days(start, end):
        buckets.setdefault(day.replace(day=1) if monthly else day,
                           {"cost": None, **{key: 0 for key, _legend in TOKEN_SERIES}})
    for row in days:
        bucket = buckets.get(row["key"].replace(day=1) if monthly else row["key"])
        if bucket is None:  # outside the range (a row from a clock ahead of ours)
            continue
        for key, _legend in TOKEN_SERIES:
            bucket[key] += row[key]
        if row["cost"] is not None:
            bucket["cost"] = (bucket["cost"] or Decimal(0)) + row["cost"]
    labels = [dateformat.format(key, "M Y" if monthly else "M j") for key in buckets]
    period, unit = (_("month"), _("Month")) if monthly else (_("day"), _("Day"))
    span = f"{dateformat.format(start, 'j M Y')} – {dateformat.format(end, 'j M Y')}"
    series = [(str(legend), [bucket[key] for bucket in buckets.values()]) for key, legend in TOKEN_SERIES]
    title = f"{_('Tokens per')} {period}"
    result = [(title, mark_safe(charts.bar_chart(  # ElementTree escaped every text and attribute
        chart_id="bedrock-tokens", title=title, labels=labels, series=series, x_label=str(unit),
        y_label=str(_("Tokens")),
        desc=f"{span}: " + ", ".join(f"{name} {sum(values):,}" for name, values in series) + " tokens.",
    )))]
    costs = [bucket["cost"] for bucket in buckets.values()]
    if any(cost is not None for cost in costs):
        title = f"{_('Cost per')} {period} ({currency})"
        result.append((title, mark_safe(charts.bar_chart(
            chart_id="bedrock-cost", title=title, labels=labels, x_label=str(unit),
            series=[(str(_("Cost")), [float(cost or 0) for cost in costs])], y_label=f"{_('Cost')} ({currency})",
            desc=f"{span}: {format_cost(sum(cost for cost in costs if cost is not None))} {currency} of known cost.",
            value_format=lambda value: f"{format_cost(Decimal(str(value)))} {currency}",
        ))))
    return result


def _check_permission(model_admin: ModelAdmin[Completion], request: HttpRequest) -> None:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied


def _start_of(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def _days(start: dt.date, end: dt.date) -> Iterable[dt.date]:
    return (start + dt.timedelta(days=n) for n in range((end - start).days + 1))


def _display(row: dict[str, Any], by: str) -> dict[str, Any]:
    """A table row: the key as shown (a day as ISO date) and the cost formatted (None: unknown)."""
    return {**row, "label": row["key"].isoformat() if by == "day" else row["key"],
            "cost": None if row["cost"] is None else format_cost(row["cost"])}


def _spreadsheet_safe(text: str) -> str:
    """A username or model id that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``,
    tab, CR) gets a leading apostrophe (OWASP's CSV injection advice); numbers are never touched."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
