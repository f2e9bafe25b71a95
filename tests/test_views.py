"""The stream views end to end: Django's Client (WSGI) and AsyncClient (ASGI), real boto3, real HTTP
to the built-in emulator."""

from __future__ import annotations

import json
import threading
import time
import warnings
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.test import AsyncClient, Client, RequestFactory, override_settings
from django.urls import reverse

from django_bedrock_stream import client as clients
from django_bedrock_stream import signals
from django_bedrock_stream.callbacks import StreamCallbacks
from django_bedrock_stream.models import Completion
from django_bedrock_stream.views import Llama2StreamView

FAMILIES = ["anthropic", "anthropic-messages", "cohere", "llama2", "llama3", "mistral", "titan", "converse"]
NO_RETRY = {"ALLOW_ANONYMOUS": True, "CLIENT_CONFIG": {"retries": {"mode": "standard", "total_max_attempts": 1}}}


def chat(text: str, **extra: Any) -> str:
    return json.dumps({"messages": [{"role": "user", "content": text}], **extra})


def post(client: Client, family: str, text: str, **extra: Any) -> Any:
    return client.post(reverse(f"django_bedrock_stream:{family}"), chat(text, **extra), content_type="application/json")


async def apost(client: AsyncClient, family: str, text: str, **extra: Any) -> Any:
    return await client.post(
        reverse(f"django_bedrock_stream:{family}"), chat(text, **extra), content_type="application/json"
    )


def read(response: Any) -> str:
    return b"".join(response.streaming_content).decode()


async def aread(response: Any) -> str:
    return b"".join([part async for part in response.streaming_content]).decode()


def last_record(emulator: Any) -> dict:
    """The newest request once the emulator has settled it (it may still be writing the tail)."""
    emulator.wait_for(lambda records: records and records[-1]["status"] != "streaming")
    return emulator.requests[-1]


@pytest.mark.django_db
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_streams_under_wsgi_and_is_persisted(bedrock_emulator: Any, family: str) -> None:
    response = post(Client(), family, "Tell me about Django")
    assert response.status_code == 200
    assert response.streaming and not response.is_async
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Cache-Control"] == "no-cache" and response["X-Accel-Buffering"] == "no"
    text = read(response)
    record = last_record(bedrock_emulator)
    assert text == record["text"] and text
    row = Completion.objects.get()
    assert (row.status, row.text, row.family) == ("completed", text, family)
    assert row.output_tokens == record["chunks_sent"] and row.input_tokens and row.input_tokens > 0
    assert row.stop_reason and row.finished_at and row.time_to_first_token is not None
    assert row.messages == [{"role": "user", "content": "Tell me about Django"}]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("transport", ["aiobotocore", "thread"])
async def test_every_family_streams_under_asgi_without_sync_iterator_warning(
    bedrock_emulator: Any, family: str, transport: str
) -> None:
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "ASYNC_TRANSPORT": transport}):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "StreamingHttpResponse must consume synchronous iterators"
            response = await apost(AsyncClient(), family, "Tell me about ASGI")
            assert response.status_code == 200 and response.is_async
            text = await aread(response)
    assert text == last_record(bedrock_emulator)["text"] and text, bedrock_emulator.requests
    row = await Completion.objects.aget()
    assert (row.status, row.text) == ("completed", text)


@pytest.mark.django_db
def test_tokens_arrive_one_by_one_under_wsgi(bedrock_emulator: Any) -> None:
    response = post(Client(), "llama2", "[[emulator tokens=6 delay_ms=250]] pace me")
    arrivals = []
    for _part in response.streaming_content:
        arrivals.append(time.monotonic())
    # Paced 250 ms apart: a buffered response would deliver everything at once. (Tokens that reached
    # the socket together leave in one write, by design, so the count is not exact on a loaded machine.)
    assert len(arrivals) >= 3
    assert arrivals[-1] - arrivals[0] > 0.5


@pytest.mark.django_db(transaction=True)
async def test_tokens_arrive_one_by_one_under_asgi(bedrock_emulator: Any) -> None:
    response = await apost(AsyncClient(), "converse", "[[emulator tokens=6 delay_ms=250]] pace me")
    arrivals = [time.monotonic() async for _part in response.streaming_content]
    # Streamed, not buffered: several writes spread over the answer's 1.25 s (a buffered body arrives in
    # one go). Tokens that reached the socket together on a loaded machine leave in one write, by design
    # (one write per network read), so neither the count nor the spread is exact.
    assert len(arrivals) >= 3
    assert arrivals[-1] - arrivals[0] > 0.5


@pytest.mark.django_db(transaction=True)
async def test_asgi_never_calls_bedrock_on_djangos_shared_thread(bedrock_emulator: Any) -> None:
    """The "thread" transport calls boto3 on the dedicated pool, not the thread-sensitive thread."""
    seen: list[str] = []

    def record_thread(**kwargs: Any) -> None:
        seen.append(threading.current_thread().name)

    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "ASYNC_TRANSPORT": "thread"}):
        clients.get_client().meta.events.register("before-call.bedrock-runtime.*", record_thread)
        response = await apost(AsyncClient(), "llama2", "hello")
        await aread(response)
    assert seen and all(name.startswith("bedrock-stream") for name in seen), seen


@pytest.mark.django_db
def test_callbacks_and_signals_fire_in_order_with_documented_kwargs(bedrock_emulator: Any) -> None:
    events: list[tuple[str, Any]] = []

    class View(Llama2StreamView):
        callbacks = StreamCallbacks(
            on_start=lambda: events.append(("on_start", None)),
            on_token=lambda token: events.append(("on_token", token)),
            on_completion=lambda text: events.append(("on_completion", text)),
            on_final=lambda text: events.append(("on_final", text)),
        )

    def receiver(name: str) -> Any:
        def handler(sender: Any, **kwargs: Any) -> None:
            assert sender is View
            events.append((name, sorted(kwargs)))

        return handler

    handlers = {name: receiver(name) for name in (
        "stream_started", "token_received", "stream_completed", "stream_finished")}
    for name, handler in handlers.items():
        getattr(signals, name).connect(handler, sender=View)
    try:
        from django.test import RequestFactory

        request = RequestFactory().post("/", chat("[[emulator tokens=3]] hi"), content_type="application/json")
        text = b"".join(async_to_sync(View.as_view())(request).streaming_content).decode()
    finally:
        for name, handler in handlers.items():
            getattr(signals, name).disconnect(handler, sender=View)
    names = [name for name, _ in events]
    assert names == [
        "stream_started", "on_start",
        "on_token", "token_received", "on_token", "token_received", "on_token", "token_received",
        "on_completion", "on_final", "stream_completed", "stream_finished",
    ]
    assert dict(events)["stream_started"] == ["completion", "model_id", "request", "signal"]
    assert dict(events)["token_received"] == ["request", "signal", "token"]
    assert dict(events)["stream_completed"] == [
        "completion", "model_id", "parts", "request", "signal", "stop_reason", "text", "usage"]
    assert dict(events)["stream_finished"] == ["completion", "model_id", "request", "signal", "status", "text"]
    assert [t for n, t in events if n == "on_token"] and "".join(t for n, t in events if n == "on_token") == text


@pytest.mark.django_db
def test_model_allowlist(bedrock_emulator: Any) -> None:
    refused = post(Client(), "converse", "hi", model="anthropic.claude-3-opus-20240229-v1:0")
    assert refused.status_code == 400 and "model" in refused.json()["error"]["message"]
    assert bedrock_emulator.requests == []
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "ALLOWED_MODELS": ["mistral.mistral-large-2402-v1:0"]}):
        response = post(Client(), "converse", "hi", model="mistral.mistral-large-2402-v1:0")
        read(response)
    assert last_record(bedrock_emulator)["model_id"] == "mistral.mistral-large-2402-v1:0"


@pytest.mark.django_db
def test_subclass_with_custom_prompt_hooks(bedrock_emulator: Any) -> None:
    class Pirate(Llama2StreamView):
        model_id = "meta.llama2-70b-chat-v1"
        max_tokens = 64

        def get_messages(self, request: Any) -> list[dict[str, str]]:
            return [{"role": "system", "content": "Talk like a pirate."}, *super().get_messages(request)]

        def build_body(self, messages: Any) -> dict[str, Any]:
            return {**super().build_body(messages), "temperature": 0.2}

    from django.test import RequestFactory

    request = RequestFactory().post("/", chat("hello"), content_type="application/json")
    b"".join(async_to_sync(Pirate.as_view())(request).streaming_content)
    record = last_record(bedrock_emulator)
    assert record["model_id"] == "meta.llama2-70b-chat-v1"
    assert record["body"]["temperature"] == 0.2 and record["body"]["max_gen_len"] == 64
    assert "Talk like a pirate." in record["body"]["prompt"]


@pytest.mark.django_db
@override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": False})
def test_anonymous_refused_and_user_recorded(bedrock_emulator: Any) -> None:
    refused = post(Client(), "llama3", "hi")
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "not_authenticated"
    user = get_user_model().objects.create_user("ada", password="pw")
    client = Client()
    client.force_login(user)
    read(post(client, "llama3", "hi"))
    assert Completion.objects.get().user == user
    assert len(bedrock_emulator.requests) == 1


@pytest.mark.django_db
@override_settings(BEDROCK_STREAM=NO_RETRY)
@pytest.mark.parametrize(
    ("fail", "status", "error_type"),
    [("ThrottlingException", 429, "throttled"), ("ValidationException", 400, "invalid_request"),
     ("AccessDeniedException", 502, "upstream_access_denied"), ("ServiceUnavailableException", 503, "upstream_unavailable"),
     ("ModelTimeoutException", 504, "upstream_timeout")],
)
def test_errors_before_the_first_byte_become_json(bedrock_emulator: Any, fail: str, status: int, error_type: str) -> None:
    response = post(Client(), "mistral", f"[[emulator fail={fail}]] hi")
    assert response.status_code == status
    body = response.json()
    assert body["error"]["type"] == error_type and body["error"]["code"] == fail
    if status == 429:
        assert response["Retry-After"].isdigit()
    row = Completion.objects.get()
    assert (row.status, row.error_code, row.text) == ("failed", fail, "")


@pytest.mark.django_db(transaction=True)
@override_settings(BEDROCK_STREAM=NO_RETRY)
async def test_errors_before_the_first_byte_under_asgi(bedrock_emulator: Any) -> None:
    response = await apost(AsyncClient(), "titan", "[[emulator fail=ThrottlingException]] hi")
    assert response.status_code == 429 and response["Retry-After"]
    row = await Completion.objects.aget()
    assert row.status == "failed"


@pytest.mark.django_db
def test_mid_stream_error_keeps_partial_text_under_wsgi(bedrock_emulator: Any) -> None:
    failed: list[dict] = []
    signals.stream_failed.connect(lambda sender, **kw: failed.append(kw), weak=False, dispatch_uid="t-failed")
    try:
        text = read(post(Client(), "cohere", "[[emulator tokens=8 error_at=3]] hi"))
    finally:
        signals.stream_failed.disconnect(dispatch_uid="t-failed")
    record = last_record(bedrock_emulator)
    assert record["chunks_sent"] == 3 and text == record["text"]
    row = Completion.objects.get()
    assert (row.status, row.text, row.error_code) == ("failed", record["text"], "modelStreamErrorException")
    assert failed and failed[0]["text"] == record["text"] and failed[0]["error"].code == "modelStreamErrorException"


@pytest.mark.django_db(transaction=True)
async def test_mid_stream_error_keeps_partial_text_under_asgi(bedrock_emulator: Any) -> None:
    response = await apost(AsyncClient(), "anthropic-messages", "[[emulator tokens=8 error_at=4 error=internalServerException]] hi")
    text = await aread(response)
    record = last_record(bedrock_emulator)
    row = await Completion.objects.aget()
    assert (row.status, row.text, row.error_code) == ("failed", record["text"], "internalServerException")
    assert text == record["text"]


@pytest.mark.django_db
@override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "PERSIST": False})
def test_persist_off_stores_nothing(bedrock_emulator: Any) -> None:
    read(post(Client(), "llama2", "hi"))
    assert not Completion.objects.exists()


@pytest.mark.django_db
def test_bad_requests_are_400_and_never_reach_bedrock(bedrock_emulator: Any) -> None:
    url = reverse("django_bedrock_stream:llama2")
    client = Client()
    cases = [
        ("not json", 400, "invalid_json"),
        ("[]", 400, "invalid_request"),
        ('{"messages": []}', 400, "invalid_request"),
        ('{"messages": [{"role": "wizard", "content": "x"}]}', 400, "invalid_request"),
        ('{"messages": [{"role": "user", "content": 5}]}', 400, "invalid_request"),
        ('{"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}', 400, "invalid_request"),
    ]
    for body, status, error_type in cases:
        response = client.post(url, body, content_type="application/json")
        assert response.status_code == status, body
        assert response.json()["error"]["type"] == error_type, body
    assert client.get(url).status_code == 405
    assert bedrock_emulator.requests == []
    assert not Completion.objects.exists()


@pytest.mark.django_db
def test_ai_sdk_message_shapes_are_accepted(bedrock_emulator: Any) -> None:
    body = {
        "id": "chat-1",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hi from"}, {"type": "step-start"},
                                                         {"type": "text", "text": " useChat"}]}],
        "trigger": "submit-message",
    }
    response = Client().post(reverse("django_bedrock_stream:converse"), json.dumps(body), content_type="application/json")
    read(response)
    assert Completion.objects.get().messages == [{"role": "user", "content": "Hi from useChat"}]


# -- issue 9, defect 9: Converse validates conversations like every other family ------------------------
#: The plain Converse view and the DRF flavour, ``api_view_for("converse")`` (tests/urls.py).
CONVERSE_VIEWS = ["django_bedrock_stream:converse", "api-converse"]


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def converse_post(view: str, server: str, messages: list[dict[str, str]]) -> tuple[Any, str]:
    """POST ``messages`` to a Converse view through Django's Client (WSGI) or AsyncClient (ASGI);
    return the response and its whole body."""
    body = json.dumps({"messages": messages})

    async def asgi() -> tuple[Any, str]:
        response = await AsyncClient().post(reverse(view), body, content_type="application/json")
        text = await aread(response) if response.streaming else response.content.decode()
        await clients.aclose_clients()  # made on this call's own loop
        return response, text

    if server == "asgi":
        return async_to_sync(asgi)()
    response = Client().post(reverse(view), body, content_type="application/json")
    return response, (read(response) if response.streaming else response.content.decode())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server", ["wsgi", "asgi"])
@pytest.mark.parametrize("view", CONVERSE_VIEWS)
@pytest.mark.parametrize(
    "messages",
    [
        [assistant("Hello! How can I help?"), user("Tell me a joke")],
        [{"role": "system", "content": "Be brief."}, assistant("Hi"), user("x")],
        [user("   "), assistant("I opened"), user("then the user spoke")],  # blank user turns do not count
    ],
    ids=["assistant-first", "after-system", "after-blank-user"],
)
def test_converse_refuses_an_assistant_first_conversation_before_calling_bedrock(
    bedrock_emulator: Any, server: str, view: str, messages: list[dict[str, str]]
) -> None:
    response, body = converse_post(view, server, messages)
    assert response.status_code == 400, body
    assert "start with a user message" in body and "non_field_errors" not in body
    assert bedrock_emulator.requests == []
    assert not Completion.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server", ["wsgi", "asgi"])
@pytest.mark.parametrize("view", CONVERSE_VIEWS)
def test_converse_never_sends_blank_blocks_or_a_trailing_space_prefill(
    bedrock_emulator: Any, server: str, view: str
) -> None:
    """Bedrock's Converse API refuses blank text blocks and a prefill ending in whitespace; like the other
    families, blank messages are skipped and the prefill's trailing whitespace is removed."""
    messages = [
        {"role": "system", "content": " "},
        user("Hi"),
        user(" \n\t"),
        assistant(""),
        assistant("Hello!"),
        assistant("   "),
        user("Tell me a joke"),
        assistant("Sure: "),
    ]
    response, text = converse_post(view, server, messages)
    assert response.status_code == 200 and text
    sent = bedrock_emulator.requests[-1]["body"]
    assert sent["messages"] == [
        {"role": "user", "content": [{"text": "Hi"}]},
        {"role": "assistant", "content": [{"text": "Hello!"}]},
        {"role": "user", "content": [{"text": "Tell me a joke"}]},
        {"role": "assistant", "content": [{"text": "Sure:"}]},
    ]
    assert "system" not in sent and len(bedrock_emulator.requests) == 1


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_a_wrong_method_is_a_json_405_with_allow(method: str) -> None:
    response = getattr(Client(), method)(reverse("django_bedrock_stream:llama2"))
    assert response.status_code == 405 and response["Content-Type"] == "application/json"
    assert response["Allow"] == "POST, OPTIONS"
    assert response.json()["error"]["type"] == "method_not_allowed"


async def test_a_wrong_method_is_a_json_405_under_asgi() -> None:
    response = await AsyncClient().put(reverse("django_bedrock_stream:converse"))
    assert response.status_code == 405 and response.json()["error"]["type"] == "method_not_allowed"


def test_every_registered_family_is_routed_by_its_name() -> None:
    from django_bedrock_stream.families import FAMILIES
    from django_bedrock_stream.views import ConverseStreamView, stream_view_for

    for name, family in FAMILIES.items():
        assert reverse(f"django_bedrock_stream:{name}") == f"/bedrock/{name}/"
        assert stream_view_for(name).family_class is family
    assert stream_view_for("converse") is ConverseStreamView  # the named classes stay what is routed


def test_a_family_without_a_named_view_gets_one_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from django_bedrock_stream.families import FAMILIES, Llama3Family
    from django_bedrock_stream.views import BedrockStreamView, stream_view_for

    class AcmeFamily(Llama3Family):
        name = "acme"

    monkeypatch.setitem(FAMILIES, "acme", AcmeFamily)
    view = stream_view_for("acme")
    assert issubclass(view, BedrockStreamView) and view.family_class is AcmeFamily
    assert view.__name__ == "AcmeStreamView"


@pytest.mark.django_db
def test_a_family_written_before_options_existed_still_streams(bedrock_emulator: Any) -> None:
    """A project's own family whose build_body has no ``options=`` (the signature before 0.2) works."""
    from django_bedrock_stream.families import Llama3Family
    from django_bedrock_stream.views import BedrockStreamView

    class OldStyleFamily(Llama3Family):
        name = "old-style"

        def build_body(self, messages: Any, *, max_tokens: int) -> dict[str, Any]:  # type: ignore[override]
            return {"prompt": "[[emulator tokens=3]] old", "max_gen_len": max_tokens}

    class OldStyleView(BedrockStreamView):
        family_class = OldStyleFamily

    assert OldStyleFamily.takes_options is False
    view = OldStyleView.as_view()
    request = RequestFactory().post("/", json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
                                    content_type="application/json")
    response = async_to_sync(view)(request)
    assert response.status_code == 200 and b"".join(response.streaming_content)
