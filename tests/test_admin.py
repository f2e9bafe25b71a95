"""The read-only Completion admin, driven through the admin client."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client, modify_settings, override_settings
from django.urls import reverse
from django.utils import timezone

from django_bedrock_stream.admin import usage_totals
from django_bedrock_stream.models import Completion

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:django_bedrock_stream_completion_changelist"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def make(**fields: Any) -> Completion:
    created_at = fields.pop("created_at", None)
    values: dict[str, Any] = {"model_id": "meta.llama3-8b-instruct-v1:0", "family": "llama3", "status": "completed"}
    values.update(fields)
    completion = Completion.objects.create(**values)
    if created_at is not None:  # auto_now_add ignores the value given to create()
        Completion.objects.filter(pk=completion.pk).update(created_at=created_at)
    return completion


def totals(html: str) -> dict[str, int]:
    return {key: int(value) for key, value in re.findall(r'data-total="(\w+)">(\d+)<', html)}


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice")


@pytest.fixture
def rows(alice: User) -> list[Completion]:
    return [
        make(input_tokens=10, output_tokens=100, user=alice, text="first <reply>\n  indented"),
        make(input_tokens=20, output_tokens=200, status="failed", error="boom", error_code="throttlingException"),
        make(model_id="amazon.titan-text-express-v1", family="titan", input_tokens=1, output_tokens=2),
        make(
            model_id="amazon.titan-text-express-v1",
            family="titan",
            status="cancelled",
            input_tokens=None,
            output_tokens=5,
            created_at=timezone.now() - dt.timedelta(days=40),
        ),
    ]


def test_changelist_shows_totals_of_everything(admin_client: Client, rows: list[Completion]) -> None:
    response = admin_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    html = response.content.decode()
    assert totals(html) == {
        "completions": 4,
        "input_tokens": 31,
        "output_tokens": 307,
        "total_tokens": 338,
        "failed": 1,
        "cancelled": 1,
    }
    assert response.context["usage_totals"]["input_tokens"] == 31


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"model_id": "amazon.titan-text-express-v1"}, {"completions": 2, "input_tokens": 1, "output_tokens": 7}),
        ({"status__exact": "failed"}, {"completions": 1, "input_tokens": 20, "output_tokens": 200}),
        ({"family": "llama3"}, {"completions": 2, "input_tokens": 30, "output_tokens": 300}),
        ({"q": "indented"}, {"completions": 1, "input_tokens": 10, "output_tokens": 100}),
        ({"q": "alice"}, {"completions": 1, "input_tokens": 10, "output_tokens": 100}),
        ({"created_at__gte": "{recent}"}, {"completions": 3, "input_tokens": 31, "output_tokens": 302}),
    ],
)
def test_filters_and_search_narrow_the_totals(
    admin_client: Client, rows: list[Completion], query: dict[str, str], expected: dict[str, int]
) -> None:
    recent = (timezone.now() - dt.timedelta(days=7)).isoformat()
    query = {key: value.format(recent=recent) for key, value in query.items()}
    response = admin_client.get(reverse(CHANGELIST), query)
    assert response.status_code == 200
    got = totals(response.content.decode())
    assert {key: got[key] for key in expected} == expected
    assert response.context["cl"].result_count == expected["completions"]


def test_user_filter_lists_only_users_with_completions(admin_client: Client, rows: list[Completion], alice: User) -> None:
    User.objects.create_user("bob")
    response = admin_client.get(reverse(CHANGELIST))
    html = response.content.decode()
    assert f"user__id__exact={alice.pk}" in html
    assert "bob" not in html
    filtered = admin_client.get(reverse(CHANGELIST), {"user__id__exact": alice.pk})
    assert totals(filtered.content.decode())["completions"] == 1


def test_filters_offered(admin_client: Client, rows: list[Completion]) -> None:
    response = admin_client.get(reverse(CHANGELIST))
    titles = [spec.title for spec in response.context["cl"].filter_specs]
    assert [str(t) for t in titles] == ["status", "model id", "family", "user", "created at"]


def test_empty_changelist_shows_zero_totals(admin_client: Client) -> None:
    response = admin_client.get(reverse(CHANGELIST))
    assert totals(response.content.decode())["completions"] == 0


def test_bad_filter_parameter_redirects_without_crashing(admin_client: Client, rows: list[Completion]) -> None:
    response = admin_client.get(reverse(CHANGELIST), {"nonsense": "1"})
    assert response.status_code == 302  # Django's "?e=1" redirect, no totals to compute


def test_add_is_forbidden(admin_client: Client) -> None:
    response = admin_client.get(reverse("admin:django_bedrock_stream_completion_add"))
    assert response.status_code == 403
    changelist = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert reverse("admin:django_bedrock_stream_completion_add") not in changelist


def test_change_view_is_read_only_and_text_is_preformatted(admin_client: Client, rows: list[Completion]) -> None:
    completion = rows[0]
    url = reverse("admin:django_bedrock_stream_completion_change", args=[completion.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    form = html.split('id="completion_form"')[1].split("</form>")[0]
    assert set(re.findall(r'name="([^"]+)"', form)) <= {"csrfmiddlewaretoken"}  # no editable widgets
    assert "<textarea" not in form and "<select" not in form and 'type="submit"' not in form
    assert "<pre" in html and "first &lt;reply&gt;\n  indented</pre>" in html  # escaped, whitespace kept
    assert response.context["has_change_permission"] is False


def test_post_to_change_view_does_not_modify(admin_client: Client, rows: list[Completion]) -> None:
    completion = rows[0]
    url = reverse("admin:django_bedrock_stream_completion_change", args=[completion.pk])
    response = admin_client.post(url, {"text": "edited", "model_id": "x", "status": "completed"})
    assert response.status_code == 403
    completion.refresh_from_db()
    assert completion.text.startswith("first")


def test_view_permission_is_enough_to_read(client: Client, rows: list[Completion]) -> None:
    staff = User.objects.create_user("staff", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_completion"))
    client.force_login(staff)
    assert client.get(reverse(CHANGELIST)).status_code == 200
    url = reverse("admin:django_bedrock_stream_completion_change", args=[rows[0].pk])
    assert client.get(url).status_code == 200


def test_messages_are_shown_by_role(admin_client: Client) -> None:
    completion = make(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <b>"}])
    url = reverse("admin:django_bedrock_stream_completion_change", args=[completion.pk])
    html = admin_client.get(url).content.decode()
    assert "[system]\nBe brief.\n\n[user]\nHi &lt;b&gt;" in html


def test_usage_totals_helper_handles_nulls() -> None:
    make(input_tokens=None, output_tokens=None)
    assert usage_totals(Completion.objects.all()) == {
        "completions": 1,
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cost": None,
        "unpriced": 1,
        "failed": 0,
        "cancelled": 0,
    }


def column_cells(html: str, field: str) -> list[str]:
    return re.findall(rf'<td class="field-{field}[^"]*">([^<]*)</td>', html)


def test_changelist_columns_show_usage_right_after_the_model(admin_client: Client, rows: list[Completion]) -> None:
    Completion.objects.filter(pk=rows[0].pk).update(time_to_first_token=dt.timedelta(milliseconds=412.4))
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    headers = re.findall(r'<th scope="col" class="[^"]*column-(\w+)', html)
    assert headers == [
        "created_at", "model_id", "status", "input_tokens", "output_tokens", "cost_column", "first_token", "user",
        "stop_reason", "family",
    ]
    assert re.search(r"column-output_tokens.*?<a [^>]*>Output tokens</a>", html, re.S)
    assert sorted(column_cells(html, "output_tokens")) == ["100", "2", "200", "5"]
    assert sorted(column_cells(html, "input_tokens")) == ["-", "1", "10", "20"]
    assert sorted(column_cells(html, "first_token")) == ["-", "-", "-", "412 ms"]


@pytest.fixture
def admin_over_http(transactional_db: None) -> Iterator[tuple[str, str]]:
    """The admin with its stylesheets, behind a real server: its URL and a superuser's session cookie."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.handlers.wsgi import WSGIHandler

    from tests.servers import WSGIThread

    root = User.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(root)
    with (
        modify_settings(INSTALLED_APPS={"append": "django.contrib.staticfiles"}),
        override_settings(STATIC_URL="/static/"),
        WSGIThread(StaticFilesHandler(WSGIHandler())) as server,
    ):
        yield server.url, client.cookies["sessionid"].value


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is needed (apt-get install chromium)")
def test_usage_columns_fit_a_laptop_wide_changelist(admin_over_http: tuple[str, str]) -> None:
    """At 1280 px, with the navigation sidebar and the filters open, the token columns are on screen
    (they used to be past the right edge of the scrolling results box)."""
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    url, session = admin_over_http
    for n in range(3):
        make(model_id="anthropic.claude-3-5-sonnet-20240620-v1:0", family="anthropic_messages",
             input_tokens=1234, output_tokens=5678 + n, stop_reason="end_turn",
             time_to_first_token=dt.timedelta(milliseconds=412))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.add_cookies([{"name": "sessionid", "value": session, "url": url}])
            page = context.new_page()
            page.goto(url + reverse(CHANGELIST))
            assert page.locator("#nav-sidebar").is_visible() and page.locator("#changelist-filter").is_visible()
            layout = page.evaluate(
                """() => {
                  const box = document.querySelector('#changelist-form .results').getBoundingClientRect();
                  const seen = (el) => el.getBoundingClientRect().right <= box.right + 1;
                  const cells = (name) => [...document.querySelectorAll(`#result_list .${name}`)];
                  return Object.fromEntries(['input_tokens', 'output_tokens', 'first_token'].map((f) => [f, {
                    header: cells(`column-${f}`).map((el) => [el.innerText.replace(/\\s+/g, ' ').trim(), seen(el)]),
                    values: cells(`field-${f}`).map((el) => [el.innerText.trim(), seen(el)]),
                  }]));
                }"""
            )
        finally:
            browser.close()
    assert layout["output_tokens"]["header"] == [["OUTPUT TOKENS", True]]
    assert layout["output_tokens"]["values"] == [["5680", True], ["5679", True], ["5678", True]]
    assert layout["input_tokens"]["values"] == [["1234", True]] * 3
    assert [text for text, _ in layout["first_token"]["values"]] == ["412 ms"] * 3


@pytest.mark.django_db
def test_the_detail_page_shows_the_parts_and_marks_estimated_usage(admin_client: Any) -> None:
    row = Completion.objects.create(
        model_id="anthropic.claude-3-haiku-20240307-v1:0", family="converse", status="failed", text="partial",
        input_tokens=12, output_tokens=3, usage_estimated=True, cache_read_tokens=40,
        parts={
            "reasoning": [{"text": "Let me think <b>", "signature": "sig", "redacted": ""}],
            "sources": [{"id": "source-1", "title": "policy", "cited_text": "20 days"}],
            "tool_runs": [{"name": "add", "input": {"a": 1}, "output": 2, "error": "", "status": "success",
                           "duration": 0.01}],
            "guardrail": {"action": "INTERVENED", "trace": {}},
            "attachments": [{"name": "cat.png", "media_type": "image/png", "bytes": 68}],
        },
    )
    page = admin_client.get(f"/admin/django_bedrock_stream/completion/{row.pk}/change/").content.decode()
    for expected in ("Let me think &lt;b&gt;", "[1] policy: 20 days", 'add({&quot;a&quot;: 1}) -&gt; success in 0.01 s: 2',
                     "INTERVENED", "cat.png", "40"):
        assert expected in page, expected
    assert re.search(r"Usage estimated:.*?(True|icon-yes)", page, re.S)
