"""DRF access control on the plain views, and the DRF flavour (``drf.BedrockStreamAPIView``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import AsyncClient, Client, RequestFactory, override_settings
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.permissions import AllowAny, IsAdminUser, IsAuthenticated
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from django_bedrock_stream.drf import BedrockStreamAPIView, api_view_for, sets_own_permission_classes
from django_bedrock_stream.families import Llama2Family
from django_bedrock_stream.models import Completion
from django_bedrock_stream.views import Llama2StreamView

BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}]})


def call(view: Any, request: Any) -> Any:
    return async_to_sync(view)(request)


@pytest.fixture(autouse=True)
def _clear_throttle_cache() -> None:
    cache.clear()


@pytest.mark.django_db
@override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": False})
def test_basic_auth_first_gives_401_with_challenge(bedrock_emulator: Any) -> None:
    view = Llama2StreamView.as_view(authentication_classes=[BasicAuthentication])
    response = call(view, RequestFactory().post("/", BODY, content_type="application/json"))
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Basic")
    assert json.loads(response.content)["error"]["type"] == "not_authenticated"
    get_user_model().objects.create_user("grace", password="pw")
    import base64

    auth = "Basic " + base64.b64encode(b"grace:pw").decode()
    ok = call(view, RequestFactory().post("/", BODY, content_type="application/json", HTTP_AUTHORIZATION=auth))
    assert ok.status_code == 200
    b"".join(ok.streaming_content)
    assert Completion.objects.get().user.username == "grace"


@pytest.mark.django_db
def test_permission_classes_are_honoured(bedrock_emulator: Any) -> None:
    user = get_user_model().objects.create_user("linus", password="pw")
    request = RequestFactory().post("/", BODY, content_type="application/json")
    request.user = user
    request._dont_enforce_csrf_checks = True
    view = Llama2StreamView.as_view(permission_classes=[IsAdminUser], authentication_classes=[SessionAuthentication])
    from django.contrib.sessions.backends.db import SessionStore

    request.session = SessionStore()
    response = call(view, request)
    assert response.status_code == 403 and json.loads(response.content)["error"]["type"] == "permission_denied"
    assert bedrock_emulator.requests == []


class TwoPerMinute(AnonRateThrottle):
    rate = "2/min"


@pytest.mark.django_db
def test_throttle_classes_give_429_with_retry_after(bedrock_emulator: Any) -> None:
    view = Llama2StreamView.as_view(throttle_classes=[TwoPerMinute])
    statuses = []
    for _ in range(3):
        response = call(view, RequestFactory().post("/", BODY, content_type="application/json"))
        statuses.append(response.status_code)
        if response.status_code == 200:
            b"".join(response.streaming_content)
    assert statuses == [200, 200, 429]
    assert response["Retry-After"].isdigit() and json.loads(response.content)["error"]["type"] == "throttled"


@pytest.mark.django_db
def test_csrf_enforced_for_session_users_only(bedrock_emulator: Any) -> None:
    user = get_user_model().objects.create_user("ken", password="pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    refused = client.post("/bedrock/llama2/", BODY, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    client.get("/admin/login/")  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    ok = client.post("/bedrock/llama2/", BODY, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert ok.status_code == 200
    b"".join(ok.streaming_content)


@pytest.mark.django_db
def test_drf_view_streams_under_wsgi_and_renders_errors_the_drf_way(bedrock_emulator: Any) -> None:
    client = Client()
    response = client.post("/api/llama2/", BODY, content_type="application/json", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    body = b"".join(response.streaming_content).decode()
    assert "event: token" in body and "event: done" in body
    bad = client.post("/api/llama2/", json.dumps({"messages": []}), content_type="application/json")
    assert bad.status_code == 400 and "messages" in bad.json()
    garbage = client.post("/api/llama2/", "{nope", content_type="application/json")
    assert garbage.status_code == 400 and "detail" in garbage.json()
    assert client.get("/api/llama2/").status_code == 405
    assert client.options("/api/llama2/").status_code == 200


@pytest.mark.django_db(transaction=True)
@override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "CLIENT_CONFIG": {"retries": {"total_max_attempts": 1}}})
async def test_drf_view_streams_under_asgi(bedrock_emulator: Any) -> None:
    client = AsyncClient()
    response = await client.post("/api/converse/", BODY, content_type="application/json")
    assert response.status_code == 200 and response.is_async
    text = b"".join([part async for part in response.streaming_content]).decode()
    assert text and (await Completion.objects.aget()).text == text
    throttled = await client.post(
        "/api/converse/",
        json.dumps({"messages": [{"role": "user", "content": "[[emulator fail=ThrottlingException]]"}]}),
        content_type="application/json",
    )
    assert throttled.status_code == 429 and throttled.json()["detail"]


# -- the DRF flavour refuses anonymous users like the plain views --------------------------------

ROUTES = ("/api/llama2/", "/api/converse/", "/bedrock/llama2/")  # two DRF views, one plain view


def assert_refused(response: Any) -> None:
    assert response.status_code == 403, (response.status_code, response.content[:300])
    assert "credentials were not provided" in response.content.decode()


@pytest.mark.django_db
@override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": False})
def test_drf_view_refuses_anonymous_users_under_wsgi(bedrock_emulator: Any) -> None:
    for url in ROUTES:
        assert_refused(Client().post(url, BODY, content_type="application/json"))
    assert bedrock_emulator.requests == [] and not Completion.objects.exists()


@pytest.mark.django_db(transaction=True)
@override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": False})
async def test_drf_view_refuses_anonymous_users_under_asgi(bedrock_emulator: Any) -> None:
    for url in ROUTES:
        assert_refused(await AsyncClient().post(url, BODY, content_type="application/json"))
    assert bedrock_emulator.requests == [] and not await Completion.objects.aexists()


@pytest.mark.django_db(transaction=True)
@override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": False})
async def test_drf_view_streams_for_a_signed_in_user_under_asgi(bedrock_emulator: Any) -> None:
    user = await sync_to_async(get_user_model().objects.create_user)("ada", password="pw")
    client = AsyncClient()
    await sync_to_async(client.force_login)(user)
    response = await client.post("/api/converse/", BODY, content_type="application/json")
    assert response.status_code == 200
    assert b"".join([part async for part in response.streaming_content])
    assert (await Completion.objects.select_related("user").aget()).user == user


@pytest.mark.django_db
@override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True})
def test_drf_view_lets_anonymous_users_in_with_allow_anonymous(bedrock_emulator: Any) -> None:
    response = Client().post("/api/llama2/", BODY, content_type="application/json")
    assert response.status_code == 200
    b"".join(response.streaming_content)
    assert Completion.objects.get().user is None


@pytest.mark.django_db
@override_settings(
    BEDROCK_STREAM={"ALLOW_ANONYMOUS": True},
    REST_FRAMEWORK={"DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"]},
)
def test_drf_view_keeps_the_project_default_permissions(bedrock_emulator: Any) -> None:
    user = get_user_model().objects.create_user("bob", password="pw")
    client = Client()
    client.force_login(user)
    response = client.post("/api/llama2/", BODY, content_type="application/json")
    assert response.status_code == 403 and bedrock_emulator.requests == []


class PublicLlama2API(BedrockStreamAPIView):
    family_class = Llama2Family
    permission_classes = [AllowAny]


class ProjectBaseAPIView(APIView):
    permission_classes = [AllowAny]


class ProjectLlama2API(BedrockStreamAPIView, ProjectBaseAPIView):
    """``permission_classes`` chosen by a project base class that sits between the view and ``APIView``."""

    family_class = Llama2Family


@pytest.mark.django_db
@override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": False})
@pytest.mark.parametrize(
    "view",
    [
        PublicLlama2API.as_view(),
        ProjectLlama2API.as_view(),
        api_view_for("llama2").as_view(permission_classes=[AllowAny]),
    ],
    ids=["class-attribute", "project-base-class", "as_view-argument"],
)
def test_drf_view_uses_its_own_permission_classes_as_given(bedrock_emulator: Any, view: Any) -> None:
    response = call(view, RequestFactory().post("/", BODY, content_type="application/json"))
    assert response.status_code == 200
    b"".join(response.streaming_content)


def test_sets_own_permission_classes() -> None:
    inherited = api_view_for("llama2")
    assert not sets_own_permission_classes(inherited())
    assert inherited.permission_classes is APIView.permission_classes  # DRF's AllowAny stays untouched
    assert sets_own_permission_classes(inherited(permission_classes=[IsAuthenticated]))
    assert sets_own_permission_classes(PublicLlama2API())
    assert sets_own_permission_classes(ProjectLlama2API())


def test_openapi_schema_with_drf_spectacular() -> None:
    pytest.importorskip("drf_spectacular", reason="pip install drf-spectacular")
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)  # tests/settings.py enables it
    operation = schema["paths"]["/api/llama2/"]["post"]
    assert list(operation["requestBody"]["content"]) == ["application/json"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatRequest"}
    assert operation["responses"]["200"]["content"]["text/event-stream"]["schema"] == {"type": "string"}
    message = schema["components"]["schemas"]["Message"]
    assert set(message["properties"]) == {"role", "content", "parts"} and message["required"] == ["role"]
