"""The read-only Completion admin, driven through the admin client."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_bedrock_stream.admin import usage_totals
from django_bedrock_stream.models import Completion

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:django_bedrock_stream_completion_changelist"


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
        "failed": 0,
        "cancelled": 0,
    }
