"""The request side beyond text (issue 10, items 3 and 4), end to end: AI SDK 5+ ``parts`` (files
checked by content, reasoning sent back with its signature), server-controlled model options and
inference profiles. Django's Client (WSGI) and AsyncClient (ASGI), real boto3 / aiobotocore, the
built-in emulator's request log as the witness of what reached "Bedrock"."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from django.urls import path

from django_bedrock_stream.checks import check_settings_values
from django_bedrock_stream.families import AnthropicMessagesFamily, ConverseFamily, NovaFamily
from django_bedrock_stream.media import FileRefused, read_file
from django_bedrock_stream.models import Completion
from django_bedrock_stream.options import ConverseOptions
from django_bedrock_stream.views import BedrockStreamView, Llama2StreamView

from .media_files import GIF, data_url, docx, pdf, png
from .ui_stream import post

PROFILES = [
    "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
    "eu.amazon.nova-micro-v1:0",
    "global.anthropic.claude-sonnet-4-20250514-v1:0",
    "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6",
]


class ConverseView(BedrockStreamView):
    family_class = ConverseFamily
    allowed_models = PROFILES


class ClaudeView(BedrockStreamView):
    family_class = AnthropicMessagesFamily


class NovaView(BedrockStreamView):
    family_class = NovaFamily


class TunedView(BedrockStreamView):
    """Options from the view, one of them open to the request."""

    family_class = ConverseFamily
    model_id = "us.anthropic.claude-sonnet-4-20250514-v1:0"
    converse_options = {"top_p": 0.9, "reasoning_budget": 2048, "prompt_cache": True}
    request_options = ["temperature"]


class ProfileView(BedrockStreamView):
    family_class = ConverseFamily
    model_id = PROFILES[-1]


urlpatterns = [
    path("converse/", ConverseView.as_view()),
    path("claude/", ClaudeView.as_view()),
    path("nova/", NovaView.as_view()),
    path("llama2/", Llama2StreamView.as_view()),
    path("tuned/", TunedView.as_view()),
    path("profile/", ProfileView.as_view()),
]
pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db(transaction=True)]

PNG, PDF = png(3, 2), pdf("Quarterly numbers")


def settled(emulator: Any) -> list[dict[str, Any]]:
    """The emulator's request log once its last request is settled."""
    return emulator.wait_for(lambda records: not records or records[-1]["status"] != "streaming")


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"id": "u1", "role": "user", "parts": list(parts)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def file(media_type: str, data: bytes, filename: str | None = None, **extra: Any) -> dict[str, Any]:
    part = {"type": "file", "mediaType": media_type, "url": data_url(media_type, data), **extra}
    if filename:
        part["filename"] = filename
    return part


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


SERVERS = ["wsgi", "asgi"]


# -- files: what reaches Bedrock -------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
def test_ai_sdk_4_attachments_reach_converse_too(bedrock_emulator: Any, server: str) -> None:
    """AI SDK 4's ``useChat`` sends a user's files as ``experimental_attachments`` (name, contentType,
    a data URL) beside ``content``: the same blocks as AI SDK 5+'s file parts, not silently dropped."""
    message = {"role": "user", "content": "What do these show?", "experimental_attachments": [
        {"name": "chart.png", "contentType": "image/png", "url": data_url("image/png", PNG)},
        {"name": "Q3 report.pdf", "contentType": "application/pdf", "url": data_url("application/pdf", PDF)},
    ]}
    status, body = post(server, "/converse/", {"messages": [message]})
    assert status == 200, body
    (record,) = settled(bedrock_emulator)
    (sent,) = record["body"]["messages"]
    assert sent["content"] == [  # files first, as from file parts
        {"image": {"format": "png", "source": {"bytes": b64(PNG)}}},
        {"document": {"format": "pdf", "name": "Q3 report", "source": {"bytes": b64(PDF)}}},
        {"text": "What do these show?"},
    ]
    assert [a["name"] for a in Completion.objects.get().parts["attachments"]] == ["chart.png", "Q3 report.pdf"]


def test_ai_sdk_4_attachments_count_against_max_images(bedrock_emulator: Any) -> None:
    attachments = [{"contentType": "image/png", "url": data_url("image/png", PNG)}] * 21
    status, body = post("wsgi", "/converse/", {"messages": [
        {"role": "user", "content": "What are these?", "experimental_attachments": attachments}]})
    assert status == 400, body
    assert "At most 20 images may be sent, got 21." in json.loads(body)["error"]["message"]
    assert bedrock_emulator.requests == []


@pytest.mark.parametrize("attachments", ["chart.png", [1], {"url": "x"}])
def test_ai_sdk_4_attachments_that_are_no_list_of_objects_are_a_400(bedrock_emulator: Any, attachments: Any) -> None:
    message = {"role": "user", "content": "What is this?", "experimental_attachments": attachments}
    status, body = post("wsgi", "/converse/", {"messages": [message]})
    assert status == 400, body
    assert "Expected a list of attachments." in json.loads(body)["error"]["message"]
    assert bedrock_emulator.requests == []


@pytest.mark.parametrize("server", SERVERS)
def test_an_image_and_a_pdf_reach_converse_as_image_and_document_blocks(bedrock_emulator: Any, server: str) -> None:
    message = user(file("image/png", PNG, "chart.png"), file("application/pdf", PDF, "Q3 report.pdf"),
                   {"type": "step-start"}, text("What do these show?"))
    status, body = post(server, "/converse/", {"messages": [message]})
    assert status == 200, body
    (record,) = settled(bedrock_emulator)
    assert record["status"] == "completed"
    (sent,) = record["body"]["messages"]
    assert sent["content"] == [
        {"image": {"format": "png", "source": {"bytes": b64(PNG)}}},
        {"document": {"format": "pdf", "name": "Q3 report", "source": {"bytes": b64(PDF)}}},
        {"text": "What do these show?"},
    ]
    row = Completion.objects.get()
    attachments = [
        {"name": "chart.png", "media_type": "image/png", "size": len(PNG), "sha256": hashlib.sha256(PNG).hexdigest()},
        {"name": "Q3 report.pdf", "media_type": "application/pdf", "size": len(PDF),
         "sha256": hashlib.sha256(PDF).hexdigest()},
    ]
    assert row.status == "completed" and row.parts["attachments"] == attachments
    assert "reasoning" in row.parts  # the stream's own parts were merged in, not written over the attachments
    assert row.messages == [{"role": "user", "content": "What do these show?", "attachments": attachments}]
    assert b64(PNG) not in json.dumps(row.messages) + json.dumps(row.parts)  # never the bytes


@pytest.mark.parametrize("server", SERVERS)
def test_an_image_and_a_pdf_reach_claude_as_image_and_document_blocks(bedrock_emulator: Any, server: str) -> None:
    message = user(file("image/gif", GIF), text("Compare"), {"type": "file", "mediaType": "application/pdf",
                                                              "url": b64(PDF), "filename": "notes.pdf"})
    status, body = post(server, "/claude/", {"messages": [message]})
    assert status == 200, body
    (record,) = settled(bedrock_emulator)
    assert record["status"] == "completed"
    assert record["body"]["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": b64(GIF)}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(PDF)},
         "title": "notes.pdf"},
        {"type": "text", "text": "Compare"},
    ]


@pytest.mark.parametrize("server", SERVERS)
def test_a_large_image_is_checked_off_the_event_loop_and_sent_whole(bedrock_emulator: Any, server: str) -> None:
    """A body over 64 KiB is validated (and its file decoded) on the request's thread under ASGI."""
    photo = png(160, 160, noise=True)
    assert len(photo) > 64 * 1024
    status, body = post(server, "/converse/", {"messages": [user(file("image/png", photo), text("Describe"))]})
    assert status == 200, body
    (record,) = settled(bedrock_emulator)
    assert base64.b64decode(record["body"]["messages"][0]["content"][0]["image"]["source"]["bytes"]) == photo


def test_nova_native_takes_base64_images_and_refuses_documents(bedrock_emulator: Any) -> None:
    status, body = post("wsgi", "/nova/", {"messages": [user(file("image/png", PNG), text("Describe"))]})
    assert status == 200, body
    (record,) = settled(bedrock_emulator)
    assert record["body"]["messages"][0]["content"][0] == {"image": {"format": "png", "source": {"bytes": b64(PNG)}}}
    status, body = post("wsgi", "/nova/", {"messages": [user(file("application/pdf", PDF), text("Read"))]})
    assert status == 400 and json.loads(body)["error"]["type"] == "unsupported_media", body
    assert len(bedrock_emulator.requests) == 1


# -- files: refused before any upstream call -------------------------------------------------------

SPOOFS = {
    "pdf-as-png": file("image/png", PDF),
    "png-as-pdf": file("application/pdf", PNG),
    "png-as-jpeg": file("image/jpeg", PNG),
    "pdf-as-text": file("text/plain", PDF),
    "pdf-as-docx": file("application/vnd.openxmlformats-officedocument.wordprocessingml.document", PDF),
    "docx-as-xlsx": file("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", docx()),
    "url-type-disagrees": {"type": "file", "mediaType": "image/png", "url": data_url("application/pdf", PDF)},
    "video": file("video/mp4", b"\x00\x00\x00\x18ftypmp42"),
    "remote-url": {"type": "file", "mediaType": "image/png", "url": "https://example.com/cat.png"},
}


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("case", list(SPOOFS))
def test_a_spoofed_or_unsupported_file_is_refused_before_bedrock(bedrock_emulator: Any, server: str, case: str) -> None:
    status, body = post(server, "/converse/", {"messages": [user(SPOOFS[case], text("What is this?"))]})
    error = json.loads(body)["error"]
    assert (status, error["type"]) == (400, "unsupported_media"), body
    assert "parts: part 0: " in error["message"]
    assert bedrock_emulator.requests == [] and not Completion.objects.exists()


@pytest.mark.parametrize("server", SERVERS)
def test_files_over_the_limits_are_refused_before_bedrock(bedrock_emulator: Any, server: str) -> None:
    limit = len(PNG) - 1
    limits = {"ALLOW_ANONYMOUS": True, "MAX_IMAGE_BYTES": limit, "MAX_IMAGES": 2, "MAX_DOCUMENTS": 1}
    with override_settings(BEDROCK_STREAM=limits):
        status, body = post(server, "/converse/", {"messages": [user(file("image/png", PNG), text("x"))]})
        assert status == 413 and json.loads(body)["error"]["type"] == "payload_too_large", body
        assert f"The image is {len(PNG)} bytes; the limit is {limit} bytes." in body
        three = [file("image/png", PNG)] * 3
        status, body = post(server, "/converse/", {"messages": [user(*three, text("x"))]})
        assert status == 400 and "At most 2 images may be sent, got 3" in body, body
        docs = [file("application/pdf", PDF, "a.pdf"), file("text/plain", b"notes", "b.txt")]
        status, body = post(server, "/converse/", {"messages": [user(*docs, text("x"))]})
        assert status == 400 and "At most 1 documents may be sent, got 2" in body, body
    assert bedrock_emulator.requests == [] and not Completion.objects.exists()


#: Images whose claimed type is told another way than ``data:image/png;base64,``: each is read as an
#: image, so each counts as one (they were counted as documents, and MAX_IMAGES let them through).
IMAGES_CLAIMED_OTHERWISE = {
    "no type in the data URL, mediaType image/png": {"type": "file", "mediaType": "image/png",
                                                     "url": f"data:;base64,{base64.b64encode(PNG).decode()}"},
    "a space before the data URL's type": {"type": "file", "url": f"data: image/png;base64,{base64.b64encode(PNG).decode()}"},
    "upper-case type": {"type": "file", "url": f"data:IMAGE/PNG;base64,{base64.b64encode(PNG).decode()}"},
    "a data URL in data, no mediaType": {"type": "file", "data": data_url("image/png", PNG)},
}


@pytest.mark.parametrize("case", list(IMAGES_CLAIMED_OTHERWISE))
def test_every_way_of_claiming_an_image_counts_against_max_images(bedrock_emulator: Any, case: str) -> None:
    image = IMAGES_CLAIMED_OTHERWISE[case]
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "MAX_IMAGES": 1, "MAX_DOCUMENTS": 5}):
        status, body = post("wsgi", "/converse/", {"messages": [user(image, text("Describe it."))]})
        assert status == 200, body  # one is read, and it is an image
        assert [block for block in settled(bedrock_emulator)[-1]["body"]["messages"][0]["content"] if "image" in block]
        status, body = post("wsgi", "/converse/", {"messages": [user(file("image/png", PNG), image, text("And?"))]})
        assert status == 400 and "At most 1 images may be sent, got 2." in json.loads(body)["error"]["message"], body
        v4 = {"contentType": image.get("mediaType"), "url": image.get("url", image.get("data"))}
        status, body = post("wsgi", "/converse/", {"messages": [
            {"role": "user", "content": "And these?", "experimental_attachments": [v4, v4]}]})
        assert status == 400 and "At most 1 images may be sent, got 2." in json.loads(body)["error"]["message"], body
    assert len(bedrock_emulator.requests) == 1


@pytest.mark.parametrize("server", SERVERS)
def test_files_to_a_text_family_are_refused_before_bedrock(bedrock_emulator: Any, server: str) -> None:
    status, body = post(server, "/llama2/", {"messages": [user(file("image/png", PNG), text("Describe"))]})
    error = json.loads(body)["error"]
    assert (status, error["type"]) == (400, "unsupported_media"), body
    assert "text only" in error["message"]
    assert bedrock_emulator.requests == [] and not Completion.objects.exists()


def test_bad_base64_and_a_document_without_text_are_400(bedrock_emulator: Any) -> None:
    bad = {"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,not base64!"}
    status, body = post("wsgi", "/converse/", {"messages": [user(bad, text("x"))]})
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request", body
    status, body = post("wsgi", "/converse/", {"messages": [user(file("application/pdf", PDF))]})
    assert status == 400 and "document needs text" in body, body
    assert bedrock_emulator.requests == []


def test_files_in_assistant_messages_are_ignored_and_an_image_alone_is_a_question(bedrock_emulator: Any) -> None:
    generated = {"id": "a1", "role": "assistant", "parts": [file("image/png", PNG), text("Here it is.")]}
    status, body = post("wsgi", "/converse/", {"messages": [user(text("Draw")), generated, user(file("image/png", PNG))]})
    assert status == 200, body
    sent = settled(bedrock_emulator)[-1]["body"]["messages"]
    assert sent[1]["content"] == [{"text": "Here it is."}]
    assert sent[2]["content"] == [{"image": {"format": "png", "source": {"bytes": b64(PNG)}}}]


def test_read_file_decodes_once_after_the_size_check() -> None:
    """The size limit is checked on the base64 length, so an oversized upload is refused without decoding it."""
    huge = "data:image/png;base64," + "A" * 8_000_000
    with pytest.raises(FileRefused, match="limit is 3932160 bytes") as err:
        read_file(huge, None, None)
    assert err.value.code == "file_too_large"


# -- reasoning: the signature goes back unchanged --------------------------------------------------


def ui_message(stream: str) -> dict[str, Any]:
    """The assistant ``UIMessage`` the AI SDK rebuilds from a ``ui`` stream (as ``readUIMessageStream``
    does: a reasoning part per reasoning block, its ``providerMetadata`` from the last delta having one)."""
    parts: list[dict[str, Any]] = []
    open_parts: dict[str, dict[str, Any]] = {}
    for line in stream.splitlines():
        if not line.startswith("data: {"):
            continue
        chunk = json.loads(line[6:])
        kind = chunk["type"]
        if kind in ("reasoning-start", "text-start"):
            part = {"type": kind.split("-")[0], "text": ""}
            open_parts[chunk["id"]] = part
            parts.append(part)
        elif kind in ("reasoning-delta", "text-delta"):
            part = open_parts[chunk["id"]]
            part["text"] += chunk["delta"]
            if chunk.get("providerMetadata"):
                part["providerMetadata"] = chunk["providerMetadata"]
    return {"id": "a1", "role": "assistant", "parts": parts}


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize(
    ("url", "reasoning_block"),
    [
        ("/converse/", lambda block: block["reasoningContent"]["reasoningText"]),
        ("/claude/", lambda block: {"text": block["thinking"], "signature": block["signature"]}),
    ],
    ids=["converse", "anthropic"],
)
def test_a_second_turn_sends_the_first_turns_signature_back_unchanged(
    bedrock_emulator: Any, server: str, url: str, reasoning_block: Any
) -> None:
    first = user(text('[[emulator reasoning="First I add two and two." tokens=4]] What is 2+2?'))
    status, stream = post(server, url, {"messages": [first]}, "?protocol=ui")
    assert status == 200, stream
    answer = ui_message(stream)
    (reasoning,) = [p for p in answer["parts"] if p["type"] == "reasoning"]
    signature = reasoning["providerMetadata"]["bedrock"]["signature"]
    assert reasoning["text"] == "First I add two and two." and signature

    status, body = post(server, url, {"messages": [first, answer, user(text("And 3+3?"))]}, "?protocol=ui")
    assert status == 200, body
    records = settled(bedrock_emulator)
    assert [r["status"] for r in records] == ["completed", "completed"]
    sent = records[1]["body"]["messages"][1]["content"]
    assert reasoning_block(sent[0]) == {"text": "First I add two and two.", "signature": signature}
    assert len(sent) == 2  # the reasoning block, then the answer's text

    # The emulator, like Bedrock, refuses a signature that does not match its block.
    answer["parts"][0]["providerMetadata"]["bedrock"]["signature"] = signature[:-4] + "AAAA"
    status, body = post(server, url, {"messages": [first, answer, user(text("And 3+3?"))]})
    assert status == 400 and "signature" in body, body


@pytest.mark.parametrize("url", ["/converse/", "/claude/"])
def test_redacted_reasoning_goes_back_as_its_bytes(bedrock_emulator: Any, url: str) -> None:
    first = user(text('[[emulator redacted="opaque-bytes"]] Hi'))
    status, stream = post("wsgi", url, {"messages": [first]}, "?protocol=ui")
    assert status == 200, stream
    answer = ui_message(stream)
    redacted = [p["providerMetadata"]["bedrock"]["redactedData"] for p in answer["parts"] if p["type"] == "reasoning"]
    assert redacted == [b64(b"opaque-bytes")]
    status, body = post("wsgi", url, {"messages": [first, answer, user(text("More"))]})
    assert status == 200, body
    block = settled(bedrock_emulator)[1]["body"]["messages"][1]["content"][0]
    expected = {"reasoningContent": {"redactedContent": redacted[0]}} if url == "/converse/" else {
        "type": "redacted_thinking", "data": redacted[0]}
    assert block == expected


def test_reasoning_without_a_signature_is_not_sent_back(bedrock_emulator: Any) -> None:
    answer = {"role": "assistant", "parts": [{"type": "reasoning", "text": "hmm", "state": "done"}, text("Hello")]}
    status, body = post("wsgi", "/converse/", {"messages": [user(text("Hi")), answer, user(text("Again"))]})
    assert status == 200, body
    assert settled(bedrock_emulator)[-1]["body"]["messages"][1]["content"] == [{"text": "Hello"}]


def test_a_signature_that_is_not_text_is_400(bedrock_emulator: Any) -> None:
    answer = {"role": "assistant", "parts": [
        {"type": "reasoning", "text": "hmm", "providerMetadata": {"bedrock": {"signature": 42}}}, text("Hello")]}
    status, body = post("wsgi", "/converse/", {"messages": [user(text("Hi")), answer, user(text("Again"))]})
    assert status == 400 and "signature" in body, body
    assert bedrock_emulator.requests == []


# -- Converse options ---------------------------------------------------------------------------------

SERVER_OPTIONS = {
    "ALLOW_ANONYMOUS": True,
    "CONVERSE": {
        "temperature": 0.2,
        "stop_sequences": ["END"],
        "guardrail": {"guardrailIdentifier": "gr1abc", "guardrailVersion": "3", "trace": "enabled",
                      "streamProcessingMode": "async"},
        "latency": "optimized",
        "service_tier": "priority",
        "additional_fields": {"top_k": 50},
    },
}


@pytest.mark.parametrize("server", SERVERS)
def test_converse_options_reach_bedrock_and_the_request_cannot_set_them(bedrock_emulator: Any, server: str) -> None:
    body = {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        # None of these is allowlisted on this view: ignored, not validated, never sent.
        "temperature": 1, "top_p": "x", "guardrail": None, "service_tier": "flex", "reasoning_budget": 99999,
    }
    with override_settings(BEDROCK_STREAM=SERVER_OPTIONS):
        status, text_ = post(server, "/converse/", body)
    assert status == 200, text_
    sent = settled(bedrock_emulator)[-1]["body"]
    assert sent["inferenceConfig"] == {"maxTokens": 1024, "temperature": 0.2, "stopSequences": ["END"]}
    assert sent["guardrailConfig"] == SERVER_OPTIONS["CONVERSE"]["guardrail"]  # type: ignore[index]
    assert sent["performanceConfig"] == {"latency": "optimized"}
    assert sent["serviceTier"] == {"type": "priority"}
    assert sent["additionalModelRequestFields"] == {"top_k": 50}
    assert sent["requestMetadata"] == {"user_id": "anonymous", "view": "tests.test_request_parts.ConverseView"}
    assert sent["system"] == [{"text": "Be brief."}]  # no prompt caching unless switched on


@pytest.mark.parametrize("server", SERVERS)
def test_view_options_and_an_allowlisted_request_field(bedrock_emulator: Any, server: str) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Again"}]
    status, body = post(server, "/tuned/", {"messages": messages, "temperature": 0.7, "top_p": 0.1, "max_tokens": 100})
    assert status == 200, body
    sent = settled(bedrock_emulator)[-1]["body"]
    assert sent["inferenceConfig"] == {"maxTokens": 100 + 2048, "temperature": 0.7, "topP": 0.9}
    assert sent["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 2048}}
    assert sent["system"] == [{"text": "Be brief."}, {"cachePoint": {"type": "default"}}]
    assert sent["messages"][-1]["content"] == [{"text": "Again"}, {"cachePoint": {"type": "default"}}]
    assert sent["messages"][0]["content"] == [{"text": "Hi"}]
    # an allowlisted field is validated like any other
    status, body = post(server, "/tuned/", {"messages": messages, "temperature": 3})
    assert status == 400 and "temperature" in body, body
    status, body = post(server, "/tuned/", {"messages": messages, "temperature": "0.5"})
    assert status == 400, body
    assert len(bedrock_emulator.requests) == 1


def test_the_options_in_claude_and_nova_native_bodies(bedrock_emulator: Any) -> None:
    options = {"temperature": 0.3, "top_p": 0.8, "stop_sequences": ["STOP"], "reasoning_budget": 1024,
               "reasoning_effort": "low", "prompt_cache": "system", "additional_fields": {"top_k": 5}}
    messages = [{"role": "system", "content": "Sys"}, {"role": "user", "content": "Hi"}]
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "CONVERSE": options}):
        assert post("wsgi", "/claude/", {"messages": messages})[0] == 200
        assert post("wsgi", "/nova/", {"messages": messages})[0] == 200
    claude, nova = (record["body"] for record in settled(bedrock_emulator))
    assert claude == {
        "top_k": 5, "anthropic_version": "bedrock-2023-05-31", "max_tokens": 1024 + 1024,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "system": [{"type": "text", "text": "Sys", "cache_control": {"type": "ephemeral"}}],
        "temperature": 0.3, "top_p": 0.8, "stop_sequences": ["STOP"],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    assert nova == {
        "top_k": 5, "schemaVersion": "messages-v1",
        "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
        "inferenceConfig": {"max_new_tokens": 1024, "temperature": 0.3, "top_p": 0.8, "stopSequences": ["STOP"]},
        "system": [{"text": "Sys"}, {"cachePoint": {"type": "default"}}],
        "reasoningConfig": {"type": "enabled", "maxReasoningEffort": "low"},
    }


def test_request_metadata_names_the_user_in_the_characters_bedrock_allows(bedrock_emulator: Any) -> None:
    from django.contrib.auth import get_user_model

    person = get_user_model().objects.create_user("ada")
    client = Client()
    client.force_login(person)
    response: Any = client.post(
        "/converse/", json.dumps({"messages": [{"role": "user", "content": "Hi"}]}), content_type="application/json"
    )
    b"".join(response.streaming_content)
    sent = settled(bedrock_emulator)[-1]["body"]
    assert sent["requestMetadata"] == {"user_id": str(person.pk), "view": "tests.test_request_parts.ConverseView"}
    odd = ConverseOptions.from_values({}, {"tenant": "Café «1»", "k" * 300: "v" * 300})
    assert odd.request_metadata == {"tenant": "Caf_ _1_", "k" * 256: "v" * 256}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": 2}, "temperature"),
        ({"reasoning_budget": 10}, "reasoning_budget"),
        ({"reasoning_effort": "max"}, "reasoning_effort"),
        ({"guardrail": {"guardrailIdentifier": "x"}}, "guardrail"),
        ({"prompt_cache": "everything"}, "prompt_cache"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_bad_server_option_is_a_configuration_error(bedrock_emulator: Any, options: dict, message: str) -> None:
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "CONVERSE": options}):
        with pytest.raises(ImproperlyConfigured, match=message):
            Client(raise_request_exception=True).post(
                "/converse/", json.dumps({"messages": [{"role": "user", "content": "Hi"}]}),
                content_type="application/json",
            )
    assert bedrock_emulator.requests == []


def test_a_request_option_outside_the_allowlistable_set_is_a_configuration_error(bedrock_emulator: Any) -> None:
    class Loose(TunedView):
        request_options = ["guardrail"]

    with pytest.raises(ImproperlyConfigured, match="guardrail cannot come from a request"):
        Loose().get_request_options()


def test_keys_the_installed_botocore_does_not_know_are_refused_or_dropped(monkeypatch: Any) -> None:
    from django_bedrock_stream import options

    request, content, system = options._converse_shape()
    old = (request - {"requestMetadata", "serviceTier"}, content - {"cachePoint"}, system - {"cachePoint"})
    monkeypatch.setattr(options, "_converse_shape", lambda: old)
    body = ConverseFamily().build_body([{"role": "user", "content": "Hi"}], max_tokens=5,
                                       options=options.ConverseOptions(request_metadata={"user_id": "1"}))
    assert "requestMetadata" not in body  # on by default: dropped where boto3 would refuse it
    with pytest.raises(ImproperlyConfigured, match="cannot send serviceTier"):
        ConverseFamily().build_body([{"role": "user", "content": "Hi"}], max_tokens=5,
                                    options=options.ConverseOptions(service_tier="flex"))
    with pytest.raises(ImproperlyConfigured, match="cannot send cachePoint"):
        ConverseFamily().build_body([{"role": "user", "content": "Hi"}], max_tokens=5,
                                    options=options.ConverseOptions(prompt_cache=True))


# -- inference profiles ------------------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("model", PROFILES)
def test_inference_profile_ids_and_arns_work_as_model_ids(bedrock_emulator: Any, server: str, model: str) -> None:
    status, body = post(server, "/converse/", {"messages": [{"role": "user", "content": "Hi"}], "model": model})
    assert status == 200, body
    record = settled(bedrock_emulator)[-1]
    assert (record["model_id"], record["status"]) == (model, "completed")
    assert Completion.objects.get().model_id == model


def test_an_arn_as_the_views_model_and_in_allowed_models_settings(bedrock_emulator: Any) -> None:
    status, body = post("wsgi", "/profile/", {"messages": [{"role": "user", "content": "Hi"}]})
    assert status == 200, body
    assert settled(bedrock_emulator)[-1]["model_id"] == PROFILES[-1]
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "ALLOWED_MODELS": PROFILES}):
        assert check_settings_values() == []
        status, body = post("wsgi", "/claude/", {"messages": [{"role": "user", "content": "Hi"}],
                                                 "model": PROFILES[2]})
        assert status == 200, body
    assert settled(bedrock_emulator)[-1]["model_id"] == PROFILES[2]


# -- found by attacking it ---------------------------------------------------------------------------


def test_a_docx_whose_zip_zipfile_cannot_read_is_a_400_not_a_500(bedrock_emulator: Any) -> None:
    """An unknown ZIP "version needed" made zipfile raise NotImplementedError (a 500)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("word/document.xml", "<w/>")
    data = bytearray(buffer.getvalue())
    data[data.rfind(b"PK\x01\x02") + 6] = 100  # the central directory's "version needed to extract"
    media_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    url = f"data:{media_type};base64," + base64.b64encode(bytes(data)).decode()
    status, text = post("wsgi", "/converse/", {"messages": [{"role": "user", "parts": [
        {"type": "text", "text": "hi"}, {"type": "file", "mediaType": media_type, "url": url}]}]})
    assert status == 400, text
    assert bedrock_emulator.requests == []


def test_a_zip_of_too_many_entries_is_not_listed(bedrock_emulator: Any) -> None:
    """Listing 50,000 entries costs CPU on the worker: the central directory's count refuses it first."""
    import io
    import zipfile

    from django_bedrock_stream.media import MAX_ZIP_ENTRIES, _zip_folders

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n in range(MAX_ZIP_ENTRIES + 1):
            archive.writestr(f"word/{n}", b"")
    assert _zip_folders(buffer.getvalue()) == set()


@pytest.mark.parametrize("protocol", ["ui", "sse"])
def test_an_inference_profile_arn_never_shows_the_account_id(bedrock_emulator: Any, protocol: str) -> None:
    _, streamed = post("wsgi", "/profile/", {"messages": [{"role": "user", "content": "Hi"}]}, query=f"?protocol={protocol}")
    assert "123456789012" not in streamed and "arn:aws:bedrock:us-east-1:***:application-inference-profile" in streamed
    status, refused = post("wsgi", "/converse/", {"messages": [{"role": "user", "content": "Hi"}], "model": "nope"})
    assert status == 400 and "123456789012" not in refused and ":***:" in refused
    assert Completion.objects.get().model_id == PROFILES[-1]  # stored whole: the operator's own data
