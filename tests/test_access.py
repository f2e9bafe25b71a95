"""GET streams (``allow_get``) cannot be triggered cross-site (issue 9, defect 6).

A page elsewhere can navigate a logged-in user to ``/get/llama2/?prompt=…``: the lax session cookie
rides along and the prompt would run on their account. A GET that carries ambient credentials (a
cookie, session or Basic auth) runs only with ``Sec-Fetch-Site: same-origin`` or a token minted by
``POST /bedrock/token/``; everything else is a 403 ``cross_site_get`` with nothing sent upstream.
Checked through Django's ``Client`` (WSGI) and ``AsyncClient`` (ASGI), real boto3, the emulator.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.core import signing
from django.test import AsyncClient, Client
from django.urls import path
from rest_framework.authentication import BaseAuthentication, SessionAuthentication

from django_bedrock_stream.models import Completion
from django_bedrock_stream.views import Llama2StreamView, Llama3StreamView

from .servers import UvicornThread
from .urls import urlpatterns as test_urlpatterns


class ApiKeyAuthentication(BaseAuthentication):
    """A credential no browser attaches by itself: ``X-Api-Key: <username>``."""

    def authenticate(self, request: Any) -> Any:
        key = request.headers.get("X-Api-Key")
        return (get_user_model().objects.get(username=key), None) if key else None


urlpatterns = [
    *test_urlpatterns,  # /bedrock/… (the package's URLs, token/ included) and /get/llama2/ (allow_get)
    path("get/llama3/", Llama3StreamView.as_view(allow_get=True)),
    path("get/keyed/", Llama2StreamView.as_view(allow_get=True, authentication_classes=[ApiKeyAuthentication])),
    path(
        "get/keyed-or-session/",
        Llama2StreamView.as_view(allow_get=True, authentication_classes=[ApiKeyAuthentication, SessionAuthentication]),
    ),
]
pytestmark = pytest.mark.urls(__name__)

PROMPT = "[[emulator tokens=4]] spend my tokens"
NOT_PROOF = [None, "cross-site", "same-site", "none"]


@pytest.fixture(autouse=True)
def _logged_in_only(settings: Any) -> None:
    settings.BEDROCK_STREAM = {"ALLOW_ANONYMOUS": False}


def stream_url(route: str = "/get/llama2/", **query: Any) -> str:
    return f"{route}?{urlencode({'prompt': PROMPT, **query})}"


def fetch_site(value: str | None) -> dict[str, str]:
    return {} if value is None else {"Sec-Fetch-Site": value}


def logged_in(username: str = "ada") -> Client:
    user = get_user_model().objects.create_user(username, password="pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/admin/login/")  # sets the csrftoken cookie, as the site's own page would
    return client


async def alogged_in(username: str = "ada") -> AsyncClient:
    user = await sync_to_async(get_user_model().objects.create_user)(username, password="pw")
    client = AsyncClient(enforce_csrf_checks=True)
    await sync_to_async(client.force_login)(user)
    await client.get("/admin/login/")
    return client


def mint(client: Client, url: str) -> Any:
    token = client.cookies["csrftoken"].value
    return client.post(
        "/bedrock/token/", json.dumps({"url": url}), content_type="application/json", HTTP_X_CSRFTOKEN=token
    )


async def amint(client: AsyncClient, url: str) -> Any:
    token = client.cookies["csrftoken"].value
    return await client.post(
        "/bedrock/token/", json.dumps({"url": url}), content_type="application/json", headers={"X-CSRFToken": token}
    )


def read(response: Any) -> str:
    return b"".join(response.streaming_content).decode()


async def aread(response: Any) -> str:
    return b"".join([part async for part in response.streaming_content]).decode()


def assert_refused(response: Any, emulator: Any) -> None:
    assert response.status_code == 403, response
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["type"] == "cross_site_get"
    assert emulator.requests == []
    assert not Completion.objects.exists()


def assert_streamed(text: str, emulator: Any, username: str | None = "ada") -> None:
    emulator.wait_for(lambda records: records and records[-1]["status"] != "streaming")
    assert text and text == emulator.requests[-1]["text"]
    assert len(emulator.requests) == 1
    row = Completion.objects.get()
    assert row.status == "completed" and (row.user.username if row.user else None) == username


# -- WSGI ----------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("sec_fetch_site", NOT_PROOF)
def test_session_get_without_proof_is_refused_under_wsgi(bedrock_emulator: Any, sec_fetch_site: str | None) -> None:
    response = logged_in().get(stream_url(), headers=fetch_site(sec_fetch_site))
    assert_refused(response, bedrock_emulator)


@pytest.mark.django_db
def test_same_origin_get_streams_under_wsgi(bedrock_emulator: Any) -> None:
    response = logged_in().get(stream_url(protocol="sse"), headers=fetch_site("same-origin"))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    body = read(response)
    text = "".join(json.loads(line[6:])["text"] for line in body.splitlines() if line.startswith('data: {"text"'))
    assert_streamed(text, bedrock_emulator)


@pytest.mark.django_db
def test_minted_token_streams_under_wsgi(bedrock_emulator: Any) -> None:
    client = logged_in()
    minted = mint(client, stream_url(max_tokens=64))
    assert minted.status_code == 200, minted.content
    body = minted.json()
    assert body["url"].startswith("/get/llama2/?") and f"token={body['token'].replace(':', '%3A')}" in body["url"]
    response = client.get(body["url"])  # no Sec-Fetch-Site: the token is the proof
    assert response.status_code == 200
    assert_streamed(read(response), bedrock_emulator)


@pytest.mark.django_db
def test_token_survives_a_changed_protocol_and_a_replaced_token(bedrock_emulator: Any) -> None:
    """Only prompt/messages/model/max_tokens are bound; a stale ``token`` in the URL is replaced."""
    client = logged_in()
    url = mint(client, stream_url(token="stale")).json()["url"]
    assert "stale" not in url
    response = client.get(url + "&protocol=data")
    assert response.status_code == 200 and response["x-vercel-ai-data-stream"] == "v1"
    read(response)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "misuse",
    [
        "another prompt",
        "messages instead",
        "another max_tokens",
        "another model",
        "another view",
        "another user",
        "tampered",
        "expired",
    ],
)
def test_token_is_refused_when_misused(bedrock_emulator: Any, monkeypatch: Any, misuse: str) -> None:
    ada = logged_in()
    if misuse == "expired":
        now = int(time.time()) - 61  # TOKEN_MAX_AGE is 60 s
        with monkeypatch.context() as patch:
            patch.setattr(signing.TimestampSigner, "timestamp", lambda self: signing.b62_encode(now))
            url = mint(ada, stream_url()).json()["url"]
    else:
        url = mint(ada, stream_url()).json()["url"]
    client = ada
    if misuse == "another prompt":
        url = url.replace("spend+my+tokens", "spend+all+tokens")
    elif misuse == "messages instead":
        url += "&" + urlencode({"messages": json.dumps([{"role": "user", "content": "other"}])})
    elif misuse == "another max_tokens":
        url += "&max_tokens=1"
    elif misuse == "another model":
        url += "&model=meta.llama2-13b-chat-v1"  # the default: valid, but not what was signed
    elif misuse == "another view":
        url = url.replace("/get/llama2/", "/get/llama3/")
    elif misuse == "another user":
        client = logged_in("bob")
    elif misuse == "tampered":
        url = url[:-1] + ("A" if url[-1] != "A" else "B")
    assert_refused(client.get(url), bedrock_emulator)


@pytest.mark.django_db
def test_minting_is_checked_like_a_stream_post(bedrock_emulator: Any) -> None:
    client = logged_in()
    no_csrf = client.post("/bedrock/token/", json.dumps({"url": stream_url()}), content_type="application/json")
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["error"]["message"]
    anonymous = Client().post("/bedrock/token/", json.dumps({"url": stream_url()}), content_type="application/json")
    assert anonymous.status_code == 403 and anonymous.json()["error"]["type"] == "not_authenticated"
    for url in [
        "/bedrock/llama2/?prompt=x",
        "https://elsewhere.example/get/llama2/?prompt=x",
        "//elsewhere.example/get/llama2/",
        "/nowhere/",
        "get/llama2/",
        "//[oops/",
        42,
    ]:
        bad = mint(client, url)  # type: ignore[arg-type]
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request", url
    token = client.cookies["csrftoken"].value
    garbage = client.post("/bedrock/token/", "{nope", content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert garbage.status_code == 400 and garbage.json()["error"]["type"] == "invalid_request"
    assert client.get("/bedrock/token/").status_code == 405
    assert bedrock_emulator.requests == []


@pytest.mark.django_db
def test_header_authenticated_get_needs_no_proof(bedrock_emulator: Any) -> None:
    get_user_model().objects.create_user("ada", password="pw")
    response = Client(enforce_csrf_checks=True).get(stream_url("/get/keyed/"), headers={"X-Api-Key": "ada"})
    assert response.status_code == 200
    assert_streamed(read(response), bedrock_emulator)


@pytest.mark.django_db
def test_header_authenticated_get_with_a_cookie_needs_proof(bedrock_emulator: Any) -> None:
    """A cookie is ambient whoever reads it (a custom authenticator may): proof required again."""
    get_user_model().objects.create_user("ada", password="pw")
    client = Client(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = "x" * 32
    response = client.get(stream_url("/get/keyed/"), headers={"X-Api-Key": "ada"})
    assert_refused(response, bedrock_emulator)


@pytest.mark.django_db
def test_basic_auth_is_ambient(bedrock_emulator: Any) -> None:
    """Browsers replay cached Basic credentials on any navigation: no cookie, still refused."""
    get_user_model().objects.create_user("ada", password="pw")
    auth = "Basic " + base64.b64encode(b"ada:pw").decode()
    response = Client().get(stream_url(), headers={"Authorization": auth})
    assert_refused(response, bedrock_emulator)


@pytest.mark.django_db
def test_session_user_on_a_view_that_also_takes_header_keys_needs_proof(bedrock_emulator: Any) -> None:
    response = logged_in().get(stream_url("/get/keyed-or-session/"))
    assert_refused(response, bedrock_emulator)


@pytest.mark.django_db
def test_anonymous_get_when_allowed(bedrock_emulator: Any, settings: Any) -> None:
    """ALLOW_ANONYMOUS: a GET with no cookie at all is open (like the anonymous POST); one that
    carries a session needs proof, and a token is bound to that session."""
    settings.BEDROCK_STREAM = {"ALLOW_ANONYMOUS": True}
    visitor, other = with_session(Client(enforce_csrf_checks=True)), with_session(Client())
    assert_refused(visitor.get(stream_url()), bedrock_emulator)
    url = mint(visitor, stream_url()).json()["url"]
    assert_refused(other.get(url), bedrock_emulator)
    response = visitor.get(url)
    assert response.status_code == 200
    assert_streamed(read(response), bedrock_emulator, username=None)
    Completion.objects.all().delete()
    bedrock_emulator.reset()
    response = Client().get(stream_url())
    assert response.status_code == 200, response.content
    assert_streamed(read(response), bedrock_emulator, username=None)


def with_session(client: Client) -> Client:
    """An anonymous visitor with a session of their own (and the csrftoken cookie)."""
    session = SessionStore()
    session["seen"] = True
    session.create()
    client.cookies[django_settings.SESSION_COOKIE_NAME] = str(session.session_key)
    client.get("/admin/login/")
    return client


# -- ASGI ----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sec_fetch_site", NOT_PROOF)
async def test_session_get_without_proof_is_refused_under_asgi(
    bedrock_emulator: Any, sec_fetch_site: str | None
) -> None:
    client = await alogged_in()
    response = await client.get(stream_url(), headers=fetch_site(sec_fetch_site))
    await sync_to_async(assert_refused)(response, bedrock_emulator)


@pytest.mark.django_db(transaction=True)
async def test_same_origin_get_streams_under_asgi(bedrock_emulator: Any) -> None:
    client = await alogged_in()
    response = await client.get(stream_url(), headers=fetch_site("same-origin"))
    assert response.status_code == 200 and getattr(response, "is_async", False)
    text = await aread(response)
    await sync_to_async(assert_streamed)(text, bedrock_emulator)


@pytest.mark.django_db(transaction=True)
async def test_minted_token_streams_and_another_users_is_refused_under_asgi(bedrock_emulator: Any) -> None:
    ada, bob = await alogged_in(), await alogged_in("bob")
    minted = await amint(ada, stream_url())
    assert minted.status_code == 200, minted.content
    url = minted.json()["url"]
    await sync_to_async(assert_refused)(await bob.get(url), bedrock_emulator)
    response = await ada.get(url)
    assert response.status_code == 200
    text = await aread(response)
    await sync_to_async(assert_streamed)(text, bedrock_emulator)


@pytest.mark.django_db(transaction=True)
async def test_header_authenticated_get_needs_no_proof_under_asgi(bedrock_emulator: Any) -> None:
    await sync_to_async(get_user_model().objects.create_user)("ada", password="pw")
    response = await AsyncClient().get(stream_url("/get/keyed/"), headers={"X-Api-Key": "ada"})
    assert response.status_code == 200
    text = await aread(response)
    await sync_to_async(assert_streamed)(text, bedrock_emulator)


# -- a real browser ------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is needed (apt-get install chromium)")
def test_in_chromium_eventsource_streams_and_a_cross_site_navigation_is_refused(
    bedrock_emulator: Any, transactional_db: Any
) -> None:
    """The attack itself: a page on another site (``localhost`` is not ``127.0.0.1``) sends the
    logged-in browser to the stream URL. Chromium attaches the lax session cookie and
    ``Sec-Fetch-Site: cross-site``; its own page's ``EventSource`` sends ``same-origin``."""
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (no browser download needed)"
    )
    client = Client()
    client.force_login(get_user_model().objects.create_user("ada", password="pw"))
    session = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    with UvicornThread() as server, playwright.sync_playwright() as p:  # tests.urls: /get/llama2/, /sse-page/
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            context = browser.new_context()
            context.add_cookies(
                [
                    {
                        "name": django_settings.SESSION_COOKIE_NAME,
                        "value": session,
                        "url": server.url,
                        "sameSite": "Lax",
                        "httpOnly": True,
                    }
                ]
            )
            page = context.new_page()
            page.goto(f"http://localhost:{server.port}/admin/login/")  # a page of the other site
            with page.expect_response(lambda r: "/get/llama2/" in r.url) as attacked:
                page.evaluate("url => { location.href = url }", server.url + stream_url())
            refused = attacked.value
            assert refused.request.all_headers()["sec-fetch-site"] == "cross-site"
            assert refused.status == 403 and refused.json()["error"]["type"] == "cross_site_get"
            assert bedrock_emulator.requests == []

            page.goto(f"{server.url}/sse-page/?stream={quote(stream_url(protocol='sse'))}")
            result = page.evaluate("window.result")
        finally:
            browser.close()
    assert "error" not in result, result
    assert_streamed("".join(result["tokens"]), bedrock_emulator)  # one request, one row: the attack left none
