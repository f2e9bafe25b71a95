"""The admin's usage dashboard: totals per day, user and model, filters, CSV export, SVG charts."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.db.models import Sum
from django.http import HttpResponse
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_bedrock_stream import charts
from django_bedrock_stream.dashboard import usage_charts
from django_bedrock_stream.models import Completion
from tests.test_admin import CHROMIUM, admin_over_http  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db

PAGE = "admin:django_bedrock_stream_completion_usage"
CSV = "admin:django_bedrock_stream_completion_usage_csv"
SVG = "{http://www.w3.org/2000/svg}"
#: Summed by every table: what the database totals are compared with.
SUMMED = ("completions", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "total_tokens",
          "failed", "cancelled", "unpriced")
ALL_TIME = {"since": ""}


def make(days_ago: int = 0, **fields: Any) -> Completion:
    values: dict[str, Any] = {"model_id": "m-a", "status": "completed", "input_tokens": 0, "output_tokens": 0}
    values.update(fields)
    completion = Completion.objects.create(**values)
    # auto_now_add ignores the value given to create(); noon keeps the day the same in any time zone offset.
    created_at = timezone.make_aware(dt.datetime.combine(timezone.localdate() - dt.timedelta(days=days_ago),
                                                         dt.time(12)))
    Completion.objects.filter(pk=completion.pk).update(created_at=created_at)
    return completion


@pytest.fixture
def users() -> dict[str, User]:
    return {name: User.objects.create_user(name) for name in ("alice", "bob")}


@pytest.fixture
def rows(users: dict[str, User]) -> list[Completion]:
    alice, bob = users["alice"], users["bob"]
    return [
        make(user=alice, input_tokens=10, output_tokens=100, cache_read_tokens=1000, cost=Decimal("0.0125")),
        make(user=alice, model_id="m-b", input_tokens=20, output_tokens=200, cache_write_tokens=7,
             cost=Decimal("1.25"), days_ago=1),
        make(user=bob, input_tokens=5, output_tokens=None, status="failed", days_ago=1),
        make(input_tokens=1, output_tokens=2, status="cancelled", cost=Decimal("0.5"), days_ago=3),
        make(user=bob, model_id="m-b", input_tokens=1000, output_tokens=2000, cost=Decimal("3"), days_ago=40),
    ]


def expected_totals(queryset: Any) -> dict[str, Any]:
    """The sums computed in Python from the rows themselves (not with usage_aggregates)."""
    items = list(queryset)
    costs = [c.cost for c in items if c.cost is not None]
    return {
        "completions": len(items),
        "input_tokens": sum(c.input_tokens or 0 for c in items),
        "output_tokens": sum(c.output_tokens or 0 for c in items),
        "cache_read_tokens": sum(c.cache_read_tokens or 0 for c in items),
        "cache_write_tokens": sum(c.cache_write_tokens or 0 for c in items),
        "total_tokens": sum((c.input_tokens or 0) + (c.output_tokens or 0) for c in items),
        "failed": sum(c.status == "failed" for c in items),
        "cancelled": sum(c.status == "cancelled" for c in items),
        "unpriced": len(items) - len(costs),
        "cost": sum(costs) if costs else None,
    }


def read_csv(response: HttpResponse) -> list[dict[str, str]]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def csv_totals(records: list[dict[str, str]]) -> dict[str, Any]:
    costs = [Decimal(r["cost"]) for r in records if r["cost"]]
    return {**{key: sum(int(r[key]) for r in records) for key in SUMMED}, "cost": sum(costs) if costs else None}


def page_totals(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-total="(\w+)">([^<]*)<', html))


# -- totals and filters ----------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["day", "user", "model"])
def test_csv_opens_with_the_csv_module_and_sums_to_the_database_totals(
    admin_client: Client, rows: list[Completion], by: str
) -> None:
    records = read_csv(admin_client.get(reverse(CSV), {**ALL_TIME, "by": by}))
    assert list(records[0]) == [by, "completions", "input_tokens", "output_tokens", "cache_read_tokens",
                                "cache_write_tokens", "total_tokens", "failed", "cancelled", "cost", "unpriced",
                                "currency"]
    database = expected_totals(Completion.objects.all())
    assert csv_totals(records) == database
    assert database["cost"] == Completion.objects.aggregate(total=Sum("cost"))["total"] == Decimal("4.7625")
    assert {r["currency"] for r in records if r["cost"]} == {"USD"}


def test_csv_rows_per_group(admin_client: Client, rows: list[Completion]) -> None:
    by_user = {r["user"]: r for r in read_csv(admin_client.get(reverse(CSV), {**ALL_TIME, "by": "user"}))}
    assert list(by_user) == ["alice", "bob", "(anonymous)"]
    assert by_user["alice"]["input_tokens"] == "30" and by_user["alice"]["cost"] == "1.2625"
    assert by_user["bob"]["cost"] == "3.00" and by_user["bob"]["unpriced"] == "1"
    today = timezone.localdate()
    by_day = read_csv(admin_client.get(reverse(CSV), {**ALL_TIME, "by": "day"}))
    assert [r["day"] for r in by_day] == [str(today - dt.timedelta(days=n)) for n in (40, 3, 1, 0)]
    assert [r["completions"] for r in by_day] == ["1", "1", "2", "1"]
    unknown = read_csv(admin_client.get(reverse(CSV), {**ALL_TIME, "by": "user", "status": "failed"}))
    assert [(r["user"], r["cost"], r["currency"], r["unpriced"]) for r in unknown] == [("bob", "", "", "1")]


def test_page_shows_the_database_totals_and_the_chosen_grouping(admin_client: Client, rows: list[Completion]) -> None:
    response = admin_client.get(reverse(PAGE), {**ALL_TIME, "by": "model"})
    assert response.status_code == 200
    database = expected_totals(Completion.objects.all())
    shown = page_totals(response.content.decode())
    assert {key: int(shown[key]) for key in shown if key != "cost"} == {
        key: database[key] for key in shown if key != "cost"
    }
    assert shown["cost"] == "4.7625 USD"
    table = [(row["label"], row["completions"], row["cost"]) for row in response.context["rows"]]
    assert table == [("m-a", 3, "0.5125"), ("m-b", 2, "4.25")]
    assert "1 completion has no known cost" in response.content.decode()


def test_the_default_range_is_the_last_30_days(admin_client: Client, rows: list[Completion]) -> None:
    response = admin_client.get(reverse(PAGE))
    assert response.context["form"]["since"].value() == str(timezone.localdate() - dt.timedelta(days=29))
    assert response.context["totals"]["completions"] == 4  # not the row of 40 days ago
    assert len(read_csv(admin_client.get(reverse(CSV)))) == 3  # days 0, 1 and 3


@pytest.mark.parametrize(
    ("query", "narrowed"),
    [
        ({"model": "m-b"}, {"model_id": "m-b"}),
        ({"user": "alice"}, {"user__username": "alice"}),
        ({"user": "anonymous"}, {"user__isnull": True}),
        ({"status": "failed"}, {"status": "failed"}),
        ({"since": "{3}", "until": "{1}"}, {"created_at__date__gte": "{3}", "created_at__date__lte": "{1}"}),
        ({"until": "{2}"}, {"created_at__date__lte": "{2}"}),
        ({"model": "m-b", "user": "bob", "status": "completed"}, {"model_id": "m-b", "user__username": "bob",
                                                                 "status": "completed"}),
    ],
)
def test_filters_narrow_page_and_csv_alike(
    admin_client: Client, rows: list[Completion], users: dict[str, User], query: dict[str, str],
    narrowed: dict[str, Any],
) -> None:
    def resolve(value: Any) -> Any:
        if value == "alice" or value == "bob":
            return str(users[value].pk)
        match = re.fullmatch(r"\{(\d+)\}", str(value))
        return str(timezone.localdate() - dt.timedelta(days=int(match.group(1)))) if match else value

    query = {**ALL_TIME, **{key: resolve(value) for key, value in query.items()}}
    narrowed = {key: (value if key.startswith("user__") else resolve(value)) for key, value in narrowed.items()}
    database = expected_totals(Completion.objects.filter(**narrowed))
    assert 0 < database["completions"] < len(rows)
    page = admin_client.get(reverse(PAGE), query)
    assert {key: page.context["totals"][key] for key in database} == database
    for by in ("day", "user", "model"):
        assert csv_totals(read_csv(admin_client.get(reverse(CSV), {**query, "by": by}))) == database


@pytest.mark.parametrize(
    "query", [{"since": "2026-05-02", "until": "2026-05-01"}, {"model": "nope"}, {"by": "planet"}, {"since": "soon"}]
)
def test_bad_filters_are_reported_not_ignored(admin_client: Client, rows: list[Completion], query: dict[str, str]) -> None:
    page = admin_client.get(reverse(PAGE), query)
    assert page.status_code == 200 and page.context["form"].errors
    assert 'class="errornote"' in page.content.decode() and 'id="bedrock-usage-table"' not in page.content.decode()
    export = admin_client.get(reverse(CSV), query)
    assert export.status_code == 400 and export.content.startswith(b"Invalid filters: ")


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo", "America/New_York"])
@pytest.mark.parametrize(
    "query", [{"until": "9999-12-31"}, {"since": "0001-01-01", "until": "0001-01-02"}, {"since": "0001-01-01"},
              {"since": "2000-01-01", "until": "2021-01-01"}, {"since": "2000-01-01"}, {"since": "", "until": "9998-12-31"}]
)
def test_dates_out_of_range_and_too_long_ranges_are_bad_filters(
    admin_client: Client, rows: list[Completion], query: dict[str, str], zone: str
) -> None:
    """Not a 500 (date overflow shifting to UTC or by a day), nor a day-by-day chart of centuries."""
    with override_settings(TIME_ZONE=zone):
        page = admin_client.get(reverse(PAGE), query)
        assert page.status_code == 200 and page.context["form"].errors
        export = admin_client.get(reverse(CSV), query)
        assert export.status_code == 400 and export.content.startswith(b"Invalid filters: ")


def test_the_longest_range_and_the_extreme_dates_are_served(admin_client: Client, rows: list[Completion]) -> None:
    with override_settings(TIME_ZONE="Asia/Tokyo"):
        for query in ({"since": "2000-01-01", "until": "2020-01-15"}, {"since": "2010-01-01"}, {"since": "0002-01-01", "until": "0002-01-01"},
                      {"since": "9998-12-31", "until": "9998-12-31"}, {"since": "", "until": "2000-01-01"}):
            page = admin_client.get(reverse(PAGE), query)
            assert page.status_code == 200 and not page.context["form"].errors, query
            assert admin_client.get(reverse(CSV), query).status_code == 200


def test_spreadsheet_formulas_in_usernames_are_defused(admin_client: Client) -> None:
    make(user=User.objects.create_user("=HYPERLINK(\"http://x\")"), input_tokens=3)
    make(user=User.objects.create_user("-1+2"), input_tokens=4)
    records = read_csv(admin_client.get(reverse(CSV), {"by": "user"}))
    assert sorted(r["user"] for r in records) == ["'-1+2", "'=HYPERLINK(\"http://x\")"]
    assert sum(int(r["input_tokens"]) for r in records) == 7


def test_empty_database(admin_client: Client) -> None:
    page = admin_client.get(reverse(PAGE))
    assert page.status_code == 200
    assert page.context["totals"]["completions"] == 0 and page_totals(page.content.decode())["cost"] == "unknown"
    assert "No completions match these filters." in page.content.decode()
    assert len(page.context["charts"]) == 1  # tokens only: no cost is known
    assert read_csv(admin_client.get(reverse(CSV))) == []


def test_the_changelist_links_to_the_dashboard(admin_client: Client) -> None:
    html = admin_client.get(reverse("admin:django_bedrock_stream_completion_changelist")).content.decode()
    assert f'href="{reverse(PAGE)}"' in html


# -- who may see it -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [PAGE, CSV])
def test_anonymous_and_non_staff_users_are_sent_to_the_login(client: Client, rows: list[Completion], name: str) -> None:
    for user in (None, User.objects.create_user("carol"), User.objects.create_user("dave", is_staff=True,
                                                                                    is_active=False)):
        client.logout()
        if user is not None:
            client.force_login(user)
        response = client.get(reverse(name), ALL_TIME)
        assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("name", [PAGE, CSV])
def test_staff_needs_the_view_permission(client: Client, rows: list[Completion], name: str) -> None:
    staff = User.objects.create_user("erin", is_staff=True)
    client.force_login(staff)
    assert client.get(reverse(name)).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_completion"))
    staff = User.objects.get(pk=staff.pk)  # a fresh permission cache
    client.force_login(staff)
    assert client.get(reverse(name)).status_code == 200


@pytest.mark.parametrize("name", [PAGE, CSV])
def test_read_only(admin_client: Client, rows: list[Completion], name: str) -> None:
    assert admin_client.post(reverse(name), ALL_TIME).status_code == 405
    assert Completion.objects.count() == len(rows)


# -- queries --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["day", "user", "model"])
def test_query_count_does_not_grow_with_rows(admin_client: Client, by: str) -> None:
    def queries(name: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(reverse(name), {"by": by}).status_code == 200
        return len(captured)

    def add(n: int) -> None:
        for i in range(n):
            make(user=User.objects.create_user(f"user{Completion.objects.count()}"), model_id=f"m-{i}", days_ago=i,
                 input_tokens=i, cost=Decimal(i))

    add(1)
    few = queries(PAGE), queries(CSV)
    add(25)
    assert (queries(PAGE), queries(CSV)) == few


# -- charts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("top", "ticks"),
    [(0, [0, 1]), (1, [0, 0.25, 0.5, 0.75, 1]), (7, [0, 2, 4, 6, 8]), (100, [0, 25, 50, 75, 100]),
     (101, [0, 50, 100, 150]), (3118, [0, 1000, 2000, 3000, 4000]), (0.0042, [0, 0.002, 0.004, 0.006])],
)
def test_nice_ticks(top: float, ticks: list[float]) -> None:
    assert charts.nice_ticks(top) == pytest.approx(ticks)


@pytest.mark.parametrize(("value", "label"), [(0, "0"), (0.25, "0.25"), (950, "950"), (12_000, "12k"),
                                              (1_500_000, "1.5M"), (2e9, "2B"), (0.0005, "0.0005")])
def test_compact(value: float, label: str) -> None:
    assert charts.compact(value) == label


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def bars(root: ET.Element, series: int) -> list[dict[str, Any]]:
    return [
        {**{k: float(v) for k, v in rect.attrib.items() if k in ("x", "y", "width", "height")},
         "tip": rect.findtext(f"{SVG}title")}
        for rect in root.iter(f"{SVG}rect")
        if rect.get("class") == f"series-{series}" and rect.findtext(f"{SVG}title")
    ]


def test_bar_chart_shape() -> None:
    svg = charts.bar_chart(chart_id="c", title="Tokens <per> day", desc="Three days & counting.",
                           labels=["May 1", "May 2", "May 3"], series=[("In", [10, 0, 30]), ("Out", [40, 0, 10])],
                           x_label="Day", y_label="Tokens")
    root = parse(svg)  # well-formed, text escaped
    assert root.get("role") == "img" and root.get("aria-labelledby") == "c-title c-desc"
    assert root.findtext(f"{SVG}title") == "Tokens <per> day" and root.findtext(f"{SVG}desc") == "Three days & counting."
    assert root.find(f"{SVG}title").get("id") == "c-title"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"Day", "Tokens", "In", "Out", "May 1", "May 2", "May 3"} <= set(texts)
    assert texts[:4] == ["0", "20", "40", "60"]  # y ticks: round steps up to the first above the top (50)
    inputs, outputs = bars(root, 0), bars(root, 1)
    assert [b["tip"] for b in inputs] == ["May 1 · In: 10", "May 3 · In: 30"]  # no bar for a zero
    assert [b["tip"] for b in outputs] == ["May 1 · Out: 40", "May 3 · Out: 10"]
    unit = (charts.HEIGHT - charts.TOP - charts.BOTTOM) / 60  # the plot's height is the top tick's
    assert [b["height"] for b in inputs + outputs] == pytest.approx([10 * unit, 30 * unit, 40 * unit, 10 * unit],
                                                                    abs=0.01)
    baseline = charts.HEIGHT - charts.BOTTOM
    assert inputs[0]["y"] + inputs[0]["height"] == pytest.approx(baseline, abs=0.01)  # stacked bottom-up
    assert outputs[0]["y"] + outputs[0]["height"] == pytest.approx(inputs[0]["y"], abs=0.01)
    assert inputs[0]["x"] < inputs[1]["x"] and inputs[0]["width"] == inputs[1]["width"]


def test_bar_chart_thins_out_x_labels_and_draws_one_series_without_legend() -> None:
    labels = [f"d{n}" for n in range(31)]
    root = parse(charts.bar_chart(chart_id="c", title="t", desc="d", labels=labels, series=[("Cost", [1.5] * 31)],
                                  x_label="Day", y_label="Cost (USD)", value_format=lambda v: f"{v} USD"))
    shown = [t.text for t in root.iter(f"{SVG}text") if t.text in labels]
    assert shown == labels[::4] and len(shown) <= charts.MAX_X_LABELS
    assert len(bars(root, 0)) == 31 and bars(root, 0)[0]["tip"] == "d0 · Cost: 1.5 USD"
    assert root.find(f".//{SVG}g[@class='legend']") is None
    top_bar = bars(root, 0)[0]  # 1.5 is the top tick: the bar fills the plot, which takes the legend's room
    assert (top_bar["y"], top_bar["height"]) == (charts.TOP_WITHOUT_LEGEND,
                                                 charts.HEIGHT - charts.TOP_WITHOUT_LEGEND - charts.BOTTOM)


def test_usage_charts_fill_missing_days_and_bucket_long_ranges_by_month() -> None:
    day = dt.date(2026, 5, 3)
    row = {"key": day, "input_tokens": 5, "output_tokens": 7, "cache_read_tokens": 0, "cache_write_tokens": 1,
           "cost": None}
    [(title, tokens)] = usage_charts([row], dt.date(2026, 5, 1), dt.date(2026, 5, 4), "USD")
    assert title == "Tokens per day"
    root = parse(tokens)
    assert [t.text for t in root.iter(f"{SVG}text") if t.text.startswith("May")] == ["May 1", "May 2", "May 3",
                                                                                      "May 4"]
    assert [b["tip"] for b in bars(root, 0)] == ["May 3 · Input: 5"]
    assert root.findtext(f"{SVG}desc") == ("1 May 2026 – 4 May 2026: Input 5, Output 7, Cache read 0, Cache write 1 "
                                          "tokens.")
    priced = [{**row, "cost": Decimal("0.25")}, {**row, "key": dt.date(2026, 7, 9), "cost": Decimal("0.5")}]
    (_, tokens), (title, cost) = usage_charts(priced, dt.date(2026, 4, 1), dt.date(2026, 7, 31), "EUR")
    assert [b["tip"] for b in bars(parse(tokens), 0)] == ["May 2026 · Input: 5", "Jul 2026 · Input: 5"]
    cost_root = parse(cost)
    assert cost_root.findtext(f"{SVG}title") == title == "Cost per month (EUR)"
    assert [b["tip"] for b in bars(cost_root, 0)] == ["May 2026 · Cost: 0.25 EUR", "Jul 2026 · Cost: 0.50 EUR"]
    assert "0.75 EUR of known cost" in cost_root.findtext(f"{SVG}desc")


@override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "PRICE_CURRENCY": "EUR"})
def test_page_embeds_the_charts_with_the_currency(admin_client: Client, rows: list[Completion]) -> None:
    html = admin_client.get(reverse(PAGE)).content.decode()
    assert html.count('class="bedrock-chart"') == 2 and 'aria-labelledby="bedrock-cost-title bedrock-cost-desc"' in html
    assert "Cost per day (EUR)" in html and "Cost (EUR)" in html and "4.7625" not in html  # 30 days: 1.7625
    assert page_totals(html)["cost"] == "1.7625 EUR"


# -- in a browser ---------------------------------------------------------------------------------------


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is needed (apt-get install chromium)")
def test_dashboard_renders_in_chromium(admin_over_http: tuple[str, str]) -> None:  # noqa: F811
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    url, session = admin_over_http
    users = [User.objects.create_user(name) for name in ("alice", "bob", "carol")]
    for n in range(30):
        make(days_ago=n, user=users[n % 3], model_id=("anthropic.claude-3-haiku-20240307-v1:0", "amazon.nova-lite-v1:0")
             [n % 2], input_tokens=1000 + 97 * n, output_tokens=3000 - 61 * n, cache_read_tokens=400 * (n % 4),
             cache_write_tokens=150 * (n % 3), cost=Decimal("0.0125") * (n % 7 + 1), status="completed")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_cookies([{"name": "sessionid", "value": session, "url": url}])
            page = context.new_page()
            page.goto(url + reverse("admin:django_bedrock_stream_completion_changelist"))
            page.click("#bedrock-usage-link")
            page.wait_for_selector("svg.bedrock-chart")
            layout = page.evaluate(
                """() => [...document.querySelectorAll('svg.bedrock-chart')].map((svg) => {
                  const box = svg.getBoundingClientRect();
                  const rects = [...svg.querySelectorAll('.bars rect')];
                  return {width: box.width, height: box.height, bars: rects.length,
                          filled: rects.every((r) => getComputedStyle(r).fill !== 'rgb(0, 0, 0)'),
                          label: svg.getAttribute('aria-labelledby')};
                })"""
            )
            rows = page.locator("#bedrock-usage-table tbody tr").count()
            Path("/tmp/bedrock-usage-dashboard.png").write_bytes(page.screenshot(full_page=True))
            page.emulate_media(color_scheme="dark")  # the admin's dark theme: the charts follow it
            Path("/tmp/bedrock-usage-dashboard-dark.png").write_bytes(page.screenshot())
            with page.expect_download() as download:
                page.click("#bedrock-usage-csv")
            exported = Path(download.value.path()).read_text()
        finally:
            browser.close()
    assert rows == 30  # one per day
    assert [chart["label"] for chart in layout] == ["bedrock-tokens-title bedrock-tokens-desc",
                                                    "bedrock-cost-title bedrock-cost-desc"]
    assert all(chart["width"] > 400 and chart["height"] > 150 and chart["filled"] for chart in layout), layout
    assert layout[1]["bars"] == 30
    assert sum(int(r["completions"]) for r in csv.DictReader(io.StringIO(exported))) == 30
