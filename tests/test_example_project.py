"""The example site: each user sees only their own history; anonymous visitors only their session's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, modify_settings, override_settings

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.urls("example_project.urls"),
]
EXAMPLE = modify_settings(INSTALLED_APPS={"append": ["django.contrib.staticfiles", "example_project"]})


@pytest.fixture(autouse=True)
def _disconnect_example_receiver() -> Iterator[None]:
    """Installing the example app connects its session-writing stream_started receiver; it must not
    outlive these tests (every later request would save a session row)."""
    yield
    from django_bedrock_stream.signals import stream_started

    stream_started.disconnect(dispatch_uid="example_remember_completion")


def ask(client: Client, prompt: str) -> str:
    response = client.post(
        "/bedrock/llama3/",
        json.dumps({"messages": [{"role": "user", "content": f"[[emulator tokens=3]] {prompt}"}]}),
        content_type="application/json",
    )
    assert response.status_code == 200
    return b"".join(response.streaming_content).decode()


@EXAMPLE
@override_settings(STATIC_URL="/static/", BEDROCK_STREAM={"ALLOW_ANONYMOUS": True})
def test_history_is_per_user_and_per_session(bedrock_emulator: Any) -> None:
    users = get_user_model().objects
    ada, bob = users.create_user("ada", password="pw"), users.create_user("bob", password="pw")
    admin = users.create_user("root", password="pw", is_staff=True)
    clients = {name: Client() for name in ("ada", "bob", "anon1", "anon2", "root")}
    clients["ada"].force_login(ada)
    clients["bob"].force_login(bob)
    clients["root"].force_login(admin)
    for name in ("ada", "bob", "anon1"):
        ask(clients[name], f"question from {name}")

    def history(name: str) -> str:
        response = clients[name].get("/history/")
        assert response.status_code == 200
        return response.content.decode()

    assert "question from ada" in history("ada") and "question from bob" not in history("ada")
    assert "question from bob" in history("bob") and "question from ada" not in history("bob")
    assert "question from anon1" in history("anon1") and "question from ada" not in history("anon1")
    assert "question from" not in history("anon2")
    assert all(f"question from {n}" in history("root") for n in ("ada", "bob", "anon1"))
    latest = clients["ada"].get("/history/latest.json").json()
    assert latest["status"] == "completed" and latest["output_tokens"] == 3
    assert clients["anon2"].get("/history/latest.json").status_code == 404


@EXAMPLE
@override_settings(STATIC_URL="/static/", EXAMPLE_USES_EMULATOR=True)
def test_chat_page_says_it_uses_the_emulator(bedrock_emulator: Any) -> None:
    with override_settings(EXAMPLE_EMULATOR_URL=bedrock_emulator.url):
        page = Client().get("/").content.decode()
    assert "built-in Bedrock emulator" in page and "llama3" in page
