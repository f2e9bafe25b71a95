"""The request side of tools (issue 11, items 4 and 5): the conversation the AI SDK posts back after
the browser ran a client-side tool (``addToolOutput``) or answered an approval
(``addToolApprovalResponse``). The first request of each flow really streams the call (the emulator's
tool scenarios); its ui chunks are folded into the assistant ``UIMessage`` as the AI SDK does, the
browser's answer is applied to it, and the conversation goes back. Django's Client (WSGI) and
AsyncClient (ASGI), real boto3 / aiobotocore; the emulator's request log shows what reached
"Bedrock" (and that a refused request reached nothing)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.core import signing
from django.test import override_settings
from django.urls import path

from django_bedrock_stream.drf import BedrockStreamAPIView
from django_bedrock_stream.families import AnthropicMessagesFamily, ConverseFamily, NovaFamily
from django_bedrock_stream.models import Completion
from django_bedrock_stream.parts import ToolCall
from django_bedrock_stream.prompts import build_anthropic_messages, build_converse_messages, build_llama3_prompt
from django_bedrock_stream.tools import Tool, sign_call, tool, verify_call
from django_bedrock_stream.views import BedrockStreamView
from tests.test_reliability import Recorder

from .servers import UvicornThread
from .ui_stream import of, post, texts, ui_chunks

# -- tools and views -----------------------------------------------------------------------------

local_time = Tool(
    "local_time",
    "The browser's local time.",
    {"type": "object", "properties": {}, "additionalProperties": False},
    output_schema={
        "type": "object",
        "properties": {"time": {"type": "string"}},
        "required": ["time"],
        "additionalProperties": False,
    },
)

DELETED: list[str] = []


@tool(needs_approval=True)
def delete_file(path: str) -> str:
    """Delete a file (asks the user first)."""
    DELETED.append(path)
    return f"deleted {path}"


@tool
def calculator(expression: str) -> str:
    """Add whole numbers.

    Args:
        expression: Terms joined by +, like "2+3".
    """
    return str(sum(int(term) for term in expression.split("+")))


TOOLS = [calculator, local_time, delete_file]


class ConverseBrowser(BedrockStreamView):
    family_class = ConverseFamily
    stream_protocol = "ui"
    tools = TOOLS


class ClaudeBrowser(ConverseBrowser):
    family_class = AnthropicMessagesFamily


class NovaBrowser(ConverseBrowser):
    family_class = NovaFamily


class ConverseThinking(ConverseBrowser):
    model_id = "us.anthropic.claude-sonnet-4-20250514-v1:0"
    converse_options = {"reasoning_budget": 1024}


class ClaudeThinking(ClaudeBrowser):
    model_id = "anthropic.claude-sonnet-4-20250514-v1:0"
    converse_options = {"reasoning_budget": 1024}


class ConverseData(ConverseBrowser):
    """AI SDK 4's data stream: the browser's tools, none needing an approval (v1 cannot ask)."""

    stream_protocol = "data"
    tools = [calculator, local_time]


class NoTools(BedrockStreamView):
    family_class = ConverseFamily
    stream_protocol = "ui"


class DrfBrowser(BedrockStreamAPIView):
    family_class = ConverseFamily
    stream_protocol = "ui"
    tools = TOOLS


VIEWS = {
    "converse": "/converse/",
    "claude": "/claude/",
    "nova": "/nova/",
    "converse-thinking": "/converse-thinking/",
    "claude-thinking": "/claude-thinking/",
}
urlpatterns = [
    path("converse-thinking/", ConverseThinking.as_view()),
    path("claude-thinking/", ClaudeThinking.as_view()),
    path("converse/", ConverseBrowser.as_view()),
    path("claude/", ClaudeBrowser.as_view()),
    path("nova/", NovaBrowser.as_view()),
    path("no-tools/", NoTools.as_view()),
    path("data/", ConverseData.as_view()),
    path("drf/", DrfBrowser.as_view()),
]
pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db(transaction=True)]

# -- helpers -------------------------------------------------------------------------------------


def fold(message: dict[str, Any], chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply a stream's ui chunks to the assistant ``UIMessage`` as the AI SDK's
    ``processUIMessageStream`` does (the parts this app sends)."""
    parts = message["parts"]
    tools = {part["toolCallId"]: part for part in parts if "toolCallId" in part}
    texts_by_id: dict[str, dict[str, Any]] = {}
    for chunk in chunks:
        kind, call_id = chunk["type"], chunk.get("toolCallId")
        if kind == "start-step":
            parts.append({"type": "step-start"})
        elif kind == "text-start":
            texts_by_id[chunk["id"]] = {"type": "text", "text": "", "state": "streaming"}
            parts.append(texts_by_id[chunk["id"]])
        elif kind == "text-delta":
            texts_by_id[chunk["id"]]["text"] += chunk["delta"]
        elif kind == "text-end":
            texts_by_id[chunk["id"]]["state"] = "done"
        elif kind == "reasoning-start":
            texts_by_id[chunk["id"]] = {"type": "reasoning", "text": "", "state": "streaming"}
            parts.append(texts_by_id[chunk["id"]])
        elif kind == "reasoning-delta":
            texts_by_id[chunk["id"]]["text"] += chunk["delta"]
            if "providerMetadata" in chunk:
                texts_by_id[chunk["id"]]["providerMetadata"] = chunk["providerMetadata"]
        elif kind == "reasoning-end":
            texts_by_id[chunk["id"]]["state"] = "done"
        elif kind == "tool-input-start":
            tools[call_id] = {"type": f"tool-{chunk['toolName']}", "toolCallId": call_id, "state": "input-streaming"}
            parts.append(tools[call_id])
        elif kind == "tool-input-available":
            tools[call_id].update(state="input-available", input=chunk["input"])
            if "providerMetadata" in chunk:
                tools[call_id]["callProviderMetadata"] = chunk["providerMetadata"]
        elif kind == "tool-input-error":
            tools[call_id].update(state="output-error", input=chunk["input"], errorText=chunk["errorText"])
        elif kind == "tool-approval-request":
            tools[call_id].update(state="approval-requested", approval={"id": chunk["approvalId"]})
        elif kind == "tool-output-available":
            tools[call_id].update(state="output-available", output=chunk["output"])
        elif kind == "tool-output-error":
            tools[call_id].update(state="output-error", errorText=chunk["errorText"])
        elif kind == "tool-output-denied":
            tools[call_id]["state"] = "output-denied"
    return message


def asked(server: str, view: str, prompt: str, user: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first request of a flow: (the user message, the assistant message its stream made)."""
    question = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": prompt}]}
    status, body = post(server, VIEWS[view], {"messages": [question]}, user=user)
    assert status == 200, body
    return question, fold({"id": "a1", "role": "assistant", "parts": []}, ui_chunks(body))


def tool_part(message: dict[str, Any]) -> dict[str, Any]:
    [part] = [part for part in message["parts"] if "toolCallId" in part]
    return part


def settled(emulator: Any, count: int) -> list[dict[str, Any]]:
    """The emulator's log once it holds ``count`` settled requests."""
    return emulator.wait_for(lambda log: len(log) >= count and all(r["status"] != "streaming" for r in log))


def sent_messages(emulator: Any, number: int) -> list[dict[str, Any]]:
    """The messages of the ``number``-th request that reached the emulator."""
    return list(settled(emulator, number)[number - 1]["body"]["messages"])


def refused(status: int, body: str, emulator: Any, before: int) -> str:
    """Assert a 400 ``invalid_tool_call`` that reached nothing upstream; its message."""
    assert status == 400, body
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_tool_call", error
    assert len(emulator.requests) == before  # no upstream call
    return str(error["message"])


def signed_part(name: str, call_id: str, input: Any, binding: str = "anonymous", **fields: Any) -> dict[str, Any]:
    """A tool part as the browser keeps it, signed for ``binding`` (as the stream signs calls)."""
    signature = sign_call(ToolCall(call_id, name, input), binding=binding)
    return {
        "type": f"tool-{name}",
        "toolCallId": call_id,
        "input": input,
        "callProviderMetadata": {"bedrock": {"signature": signature}},
        **fields,
    }


def conversation(*parts: dict[str, Any], then: str | None = None) -> dict[str, Any]:
    """A user question, an assistant message with ``parts``, and maybe a new user message."""
    messages = [
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Help me."}]},
        {"id": "a1", "role": "assistant", "parts": [{"type": "step-start"}, *parts]},
    ]
    if then is not None:
        messages.append({"id": "u2", "role": "user", "parts": [{"type": "text", "text": then}]})
    return {"messages": messages}


def tool_calls() -> Recorder:
    """``tool_called`` as sent, while in the ``with`` block (``.of("tool_called")``)."""
    return Recorder("tool_called")


@pytest.fixture(autouse=True)
def _nothing_deleted() -> None:
    DELETED.clear()


# -- a client-side tool round trip -------------------------------------------------------------------


@pytest.mark.parametrize("view", ["converse", "claude", "nova"])
@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_a_client_tool_output_goes_to_the_model_and_it_answers(bedrock_emulator: Any, server: str, view: str) -> None:
    question, answer = asked(server, view, "[[emulator tool=local_time text=Checking.]] What time is it?")
    part = tool_part(answer)
    assert part["state"] == "input-available" and part["callProviderMetadata"]["bedrock"]["signature"]
    part.update(state="output-available", output={"time": "10:42"})  # addToolOutput

    status, body = post(server, VIEWS[view], {"messages": [question, answer]})
    assert status == 200, body
    chunks = ui_chunks(body)
    assert 'Result of local_time: {"time": "10:42"}' in texts(chunks)
    assert not of(chunks, "tool-input-available")  # the model answered; nothing to call

    user, assistant, results = sent_messages(bedrock_emulator, 2)
    call_id = part["toolCallId"]
    if view == "claude":
        assert assistant["content"] == [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": call_id, "name": "local_time", "input": {}},
        ]
        assert results == {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call_id, "content": '{"time": "10:42"}'}],
        }
    else:
        assert assistant["content"] == [
            {"text": "Checking."},
            {"toolUse": {"toolUseId": call_id, "name": "local_time", "input": {}}},
        ]
        result = {"toolUseId": call_id, "content": [{"text": '{"time": "10:42"}'}], "status": "success"}
        assert results == {"role": "user", "content": [{"toolResult": result}]}


@pytest.mark.parametrize("view", ["converse-thinking", "claude-thinking"])
def test_the_step_goes_back_with_its_signed_reasoning_first(bedrock_emulator: Any, view: str) -> None:
    """With thinking on, Claude refuses a tool round whose assistant turn does not start with the
    turn's signed reasoning (the emulator checks it, and the signature, as Bedrock does)."""
    question, answer = asked("asgi", view, "[[emulator tool=local_time text=Checking.]] What time is it?")
    assert [part["type"] for part in answer["parts"]] == ["step-start", "reasoning", "text", "tool-local_time"]
    tool_part(answer).update(state="output-available", output={"time": "10:42"})

    status, body = post("asgi", VIEWS[view], {"messages": [question, answer]})
    assert status == 200, body
    assert 'Result of local_time: {"time": "10:42"}' in texts(ui_chunks(body))
    assistant = sent_messages(bedrock_emulator, 2)[1]["content"]
    signature = answer["parts"][1]["providerMetadata"]["bedrock"]["signature"]
    if view == "converse-thinking":
        assert [next(iter(block)) for block in assistant] == ["reasoningContent", "text", "toolUse"]
        assert assistant[0]["reasoningContent"]["reasoningText"]["signature"] == signature
    else:
        assert [block["type"] for block in assistant] == ["thinking", "text", "tool_use"]
        assert assistant[0]["signature"] == signature


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_a_client_tool_error_goes_to_the_model_as_an_error(bedrock_emulator: Any, server: str) -> None:
    question, answer = asked(server, "converse", "[[emulator tool=local_time]] What time is it?")
    tool_part(answer).update(state="output-error", errorText="The clock is not available.")

    status, body = post(server, "/converse/", {"messages": [question, answer]})
    assert status == 200, body
    assert "Error from local_time: The clock is not available." in texts(ui_chunks(body))
    result = sent_messages(bedrock_emulator, 2)[-1]["content"][0]["toolResult"]
    assert (result["status"], result["content"]) == ("error", [{"text": "The clock is not available."}])


# -- approvals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("view", ["converse", "claude"])
@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_an_approved_call_runs_before_the_model_is_called_and_opens_the_stream(
    bedrock_emulator: Any, server: str, view: str
) -> None:
    question, answer = asked(server, view, '[[emulator tool=delete_file tool_input={"path": "/tmp/a.txt"}]] Clean up.')
    part = tool_part(answer)
    assert part["state"] == "approval-requested" and DELETED == []
    part.update(state="approval-responded", approval={**part["approval"], "approved": True})

    with tool_calls() as signals:
        status, body = post(server, VIEWS[view], {"messages": [question, answer]})
    assert status == 200, body
    chunks = ui_chunks(body)
    assert [chunk["type"] for chunk in chunks[:3]] == ["start", "start-step", "tool-output-available"]
    assert chunks[0]["messageId"] == answer["id"]  # so the AI SDK appends to that message, not a copy
    assert chunks[2] == {"type": "tool-output-available", "toolCallId": part["toolCallId"], "output": "deleted /tmp/a.txt"}
    assert DELETED == ["/tmp/a.txt"]
    # The model read the result (so the tool ran first) and quotes it.
    assert "Result of delete_file: deleted /tmp/a.txt" in texts(chunks)
    assert len(settled(bedrock_emulator, 2)) == 2

    fold(answer, chunks)  # the browser's message now: the call done, then the answer's step
    assert part["state"] == "output-available" and part["approval"]["approved"] is True
    [run] = signals.of("tool_called")
    assert (run["tool_name"], run["input"], run["output"], run["error"]) == (
        "delete_file", {"path": "/tmp/a.txt"}, "deleted /tmp/a.txt", ""
    )
    completion = Completion.objects.exclude(pk=Completion.objects.order_by("pk").first().pk).get()
    assert run["completion"].pk == completion.pk
    [stored] = completion.parts["tool_runs"]
    assert (stored["id"], stored["status"], stored["output"]) == (part["toolCallId"], "success", "deleted /tmp/a.txt")
    # The row's messages were stored before the call ran: they say it was approved (its run is above).
    assert completion.messages[-1] == {
        "role": "user", "content": "", "tool_results": [{"id": part["toolCallId"], "name": "delete_file", "approved": True}]
    }

    # Posted again with the next question, the run is history: nothing runs twice.
    again = {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "Thanks."}]}
    status, body = post(server, VIEWS[view], {"messages": [question, answer, again]})
    assert status == 200, body
    assert DELETED == ["/tmp/a.txt"] and not of(ui_chunks(body), "tool-output-available")


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_a_denied_call_does_not_run_and_the_model_is_told(bedrock_emulator: Any, server: str) -> None:
    question, answer = asked(server, "converse", '[[emulator tool=delete_file tool_input={"path": "/tmp/a.txt"}]] Go.')
    part = tool_part(answer)
    part.update(state="approval-responded", approval={**part["approval"], "approved": False, "reason": "Keep it."})

    status, body = post(server, "/converse/", {"messages": [question, answer]})
    assert status == 200, body
    chunks = ui_chunks(body)
    assert chunks[2] == {"type": "tool-output-denied", "toolCallId": part["toolCallId"]}
    told = "The user denied this tool call. Reason: Keep it."
    assert f"Error from delete_file: {told}" in texts(chunks)
    assert DELETED == []
    result = sent_messages(bedrock_emulator, 2)[-1]["content"][0]["toolResult"]
    assert (result["status"], result["content"]) == ("error", [{"text": told}])

    fold(answer, chunks)
    assert part["state"] == "output-denied"
    again = {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "OK."}]}
    status, body = post(server, "/converse/", {"messages": [question, answer, again]})
    assert status == 200, body  # the denial is history now: the model is told again, the browser not
    assert not of(ui_chunks(body), "tool-output-denied")
    history = sent_messages(bedrock_emulator, 3)
    assert history[2]["content"][0]["toolResult"]["content"] == [{"text": told}]


def test_an_approval_answered_in_an_earlier_message_does_not_run(bedrock_emulator: Any) -> None:
    """``approval-responded`` left behind (the user wrote instead of sending the answer): nothing acts
    on it, now or on any later request, and the call is left out like an unanswered one."""
    approval = sign_call(ToolCall("t1", "delete_file", {"path": "/x"}), binding="anonymous", purpose="approval")
    part = signed_part("delete_file", "t1", {"path": "/x"}, state="approval-responded",
                       approval={"id": approval, "approved": True})
    status, body = post("wsgi", "/converse/", conversation({"type": "text", "text": "Shall I?"}, part, then="Stop."))
    assert status == 200, body
    assert DELETED == []
    assert [m["content"] for m in sent_messages(bedrock_emulator, 1)] == [
        [{"text": "Help me."}], [{"text": "Shall I?"}], [{"text": "Stop."}]
    ]


# -- the AI SDK's own clients -----------------------------------------------------------------------

JS = Path(__file__).parent / "js"
NODE = shutil.which("node")


@pytest.mark.skipif(
    NODE is None or not (JS / "node_modules" / "ai6").exists(),
    reason="node and tests/js/node_modules are needed (run `npm ci --prefix tests/js`)",
)
@pytest.mark.parametrize(
    ("package", "flow"),
    [("ai", "client"), ("ai6", "client"), ("ai5", "client"), ("ai", "approve"), ("ai6", "approve"), ("ai", "deny"),
     ("ai6", "deny")],
)
def test_the_ai_sdk_answers_tools_through_a_live_server(bedrock_emulator: Any, package: str, flow: str) -> None:
    """``useChat``'s machinery (AbstractChat + DefaultChatTransport over real fetch, uvicorn): the
    browser's answer goes back by itself and the final UIMessage holds the call, done, then the answer."""
    prompt = (
        "[[emulator tool=local_time text=Checking.]] What time is it?"
        if flow == "client"
        else '[[emulator tool=delete_file tool_input={"path": "/tmp/a.txt"}]] Clean up.'
    )
    with UvicornThread() as server:
        done = subprocess.run(
            [str(NODE), str(JS / "tool-round-trip.mjs"), f"{server.url}/converse/", package, flow, prompt],
            capture_output=True, text=True, timeout=60, cwd=JS, check=False,
        )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["posts"], result["errors"], result["status"]) == (2, [], "ready")
    [question, answer] = result["messages"]  # the second stream continued the assistant's message
    kinds = [part["type"] for part in answer["parts"]]
    [part] = [part for part in answer["parts"] if "toolCallId" in part]
    answer_text = answer["parts"][-1]["text"]
    if flow == "client":
        assert kinds == ["step-start", "text", "tool-local_time", "step-start", "text"]
        assert (part["state"], part["output"]) == ("output-available", {"time": "10:42"})
        assert answer_text == 'Result of local_time: {"time": "10:42"}'
    elif flow == "approve":
        assert kinds == ["step-start", "tool-delete_file", "step-start", "text"]
        assert (part["state"], part["output"], part["approval"]["approved"]) == (
            "output-available", "deleted /tmp/a.txt", True
        )
        assert answer_text == "Result of delete_file: deleted /tmp/a.txt" and DELETED == ["/tmp/a.txt"]
    else:
        assert (part["state"], part["approval"]["approved"]) == ("output-denied", False)
        assert answer_text == "Error from delete_file: The user denied this tool call. Reason: Keep it."
        assert DELETED == []
    assert len(settled(bedrock_emulator, 2)) == 2


# -- history -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_server_tool_results_and_steps_go_back_as_history(bedrock_emulator: Any, server: str) -> None:
    question, answer = asked(
        server, "converse", '[[emulator tool=calculator tool_input={"expression": "2+3"} text="Let me add."]] 2+3?'
    )
    assert tool_part(answer)["state"] == "output-available" and tool_part(answer)["output"] == "5"
    assert [part["type"] for part in answer["parts"]] == [
        "step-start", "text", "tool-calculator", "step-start", "text"
    ]
    final = answer["parts"][-1]["text"]
    follow_up = {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "And 3+4?"}]}

    status, body = post(server, "/converse/", {"messages": [question, answer, follow_up]})
    assert status == 200, body
    call_id = tool_part(answer)["toolCallId"]
    assert [(m["role"], m["content"]) for m in sent_messages(bedrock_emulator, 3)[1:]] == [
        ("assistant", [{"text": "Let me add."}, {"toolUse": {"toolUseId": call_id, "name": "calculator",
                                                             "input": {"expression": "2+3"}}}]),
        ("user", [{"toolResult": {"toolUseId": call_id, "content": [{"text": "5"}], "status": "success"}}]),
        ("assistant", [{"text": final}]),
        ("user", [{"text": "And 3+4?"}]),
    ]


def test_dynamic_tool_parts_are_read_too(bedrock_emulator: Any) -> None:
    part = _output(type="dynamic-tool", toolName="local_time")
    status, body = post("wsgi", "/converse/", conversation(part, then="And now?"))
    assert status == 200, body
    _, assistant, results = sent_messages(bedrock_emulator, 1)
    assert assistant["content"] == [{"toolUse": {"toolUseId": "t1", "name": "local_time", "input": {}}}]
    result = {"toolUseId": "t1", "content": [{"text": '{"time": "10:42"}'}], "status": "success"}
    assert results["content"] == [{"toolResult": result}, {"text": "And now?"}]


def test_unanswered_calls_and_the_models_own_failed_calls_are_left_out(bedrock_emulator: Any) -> None:
    """A call with no answer (the user wrote something else) cannot be sent without a result; a call
    the model got wrong (input not JSON, a tool it made up) was never signed: both are left out."""
    pending = signed_part("local_time", "t1", {}, state="input-available")
    malformed = {"type": "tool-calculator", "toolCallId": "t2", "state": "output-error", "input": '{"expr',
                 "errorText": "The input of tool 'calculator' is not valid JSON."}
    made_up = {"type": "tool-launch", "toolCallId": "t3", "state": "output-error", "input": {},
               "errorText": "There is no tool named 'launch'."}
    streaming = {"type": "tool-local_time", "toolCallId": "t4", "state": "input-streaming"}
    body = conversation({"type": "text", "text": "Hmm."}, pending, malformed, made_up, streaming, then="Never mind.")
    status, text = post("wsgi", "/converse/", body)
    assert status == 200, text
    sent = sent_messages(bedrock_emulator, 1)
    assert [m["content"] for m in sent] == [[{"text": "Help me."}], [{"text": "Hmm."}], [{"text": "Never mind."}]]


def test_a_tool_bedrock_ran_itself_is_left_out_not_refused(bedrock_emulator: Any) -> None:
    """Nova's code interpreter runs in Bedrock (``providerExecuted``): the view neither offers nor signs
    it, so it is not a call of ours to verify or replay; the conversation goes on."""
    ran = {"type": "tool-nova_code_interpreter", "toolCallId": "t9", "state": "output-available",
           "providerExecuted": True, "input": {"snippet": "1234 * 5678"}, "output": {"stdOut": "7006652"}}
    body = conversation({"type": "text", "text": "Computed."}, ran, then="Thanks.")
    status, text = post("wsgi", "/converse/", body)
    assert status == 200, text
    sent = sent_messages(bedrock_emulator, 1)
    assert [m["content"] for m in sent] == [[{"text": "Help me."}], [{"text": "Computed."}], [{"text": "Thanks."}]]


def test_results_stay_valid_after_the_signature_age_but_approvals_do_not(bedrock_emulator: Any) -> None:
    """A result in the conversation is checked for who and what, not when (a day-old chat goes on);
    an approval runs a tool now, so an old one is refused."""
    with mock.patch.object(signing.time, "time", return_value=time.time() - 2 * 86_400):
        old = signed_part("local_time", "t1", {}, state="output-available", output={"time": "09:00"})
        approval = sign_call(ToolCall("t2", "delete_file", {"path": "/x"}), binding="anonymous", purpose="approval")
        old_approval = signed_part("delete_file", "t2", {"path": "/x"}, state="approval-responded",
                                   approval={"id": approval, "approved": True})
    status, body = post("wsgi", "/converse/", conversation(old, then="And now?"))
    assert status == 200, body
    assert len(settled(bedrock_emulator, 1)) == 1

    status, body = post("wsgi", "/converse/", conversation(old_approval))
    assert "expired" in refused(status, body, bedrock_emulator, 1)
    assert DELETED == []


# -- bad input: 400 invalid_tool_call and no upstream call ----------------------------------------------------

APPROVAL_INPUT = {"path": "/tmp/a.txt"}


def _approved(call_id: str = "t1", input: Any = APPROVAL_INPUT, **approval: Any) -> dict[str, Any]:
    token = sign_call(ToolCall(call_id, "delete_file", APPROVAL_INPUT), binding="anonymous", purpose="approval")
    return signed_part(
        "delete_file", call_id, APPROVAL_INPUT, state="approval-responded",
        approval={"id": token, "approved": True, **approval},
    ) | {"input": input}


def _output(**changes: Any) -> dict[str, Any]:
    return signed_part("local_time", "t1", {}, state="output-available", output={"time": "10:42"}) | changes


BAD_PARTS = {
    "a result for a call that never happened": (
        {"type": "tool-local_time", "toolCallId": "t9", "state": "output-available", "input": {},
         "output": {"time": "10:42"}},
        "signature is missing",
    ),
    "a forged signature": (
        _output(callProviderMetadata={"bedrock": {"signature": "eyJpIjoidDEifQ:1u:forged"}}),
        "not valid",
    ),
    "a signed call presented under another id": (_output(toolCallId="t2"), "differs"),
    "a signed call of another tool": (
        signed_part("local_time", "t1", {}) | {"type": "tool-calculator", "state": "output-available", "output": "5",
                                               "input": {}},
        "differs",
    ),
    "altered input": (_approved(input={"path": "/etc/passwd"}), "differs"),
    "a call id presented as the approval": (
        _approved() | {"approval": {"id": signed_part("delete_file", "t1", APPROVAL_INPUT)["callProviderMetadata"][
            "bedrock"]["signature"], "approved": True}},
        "not valid",
    ),
    "a forged approval": (_approved(id="forged"), "not valid"),
    "an approval for another call": (
        _approved() | {"approval": {"id": _approved("t2")["approval"]["id"], "approved": True}},
        "differs",
    ),
    "an output that breaks the tool's output schema": (_output(output={"time": 1042}), "does not match its schema"),
    "an approval of a client-side tool": (
        signed_part("local_time", "t1", {}, state="approval-responded", approval={
            "id": sign_call(ToolCall("t1", "local_time", {}), binding="anonymous", purpose="approval"),
            "approved": True}),
        "runs in the browser",
    ),
    "a tool this view does not offer": (
        signed_part("launch", "t1", {}, state="output-available", output="ok"),
        "not offered",
    ),
    "an unknown state": (_output(state="done"), "state must be one of"),
    "no call id": (_output(toolCallId=""), "needs 'toolCallId'"),
    "an approval answer without its approval": (_output(state="approval-responded", approval=None), "approval"),
}


@pytest.mark.parametrize("case", list(BAD_PARTS))
@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_bad_tool_parts_are_refused_before_anything_runs(bedrock_emulator: Any, server: str, case: str) -> None:
    part, message = BAD_PARTS[case]
    status, body = post(server, "/converse/", conversation(copy.deepcopy(part)))
    assert message in refused(status, body, bedrock_emulator, 0)
    assert DELETED == []
    assert "Traceback" not in body and "127.0.0.1" not in body


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_another_users_call_is_refused(bedrock_emulator: Any, server: str) -> None:
    alice = get_user_model().objects.create_user("alice")
    bob = get_user_model().objects.create_user("bob")
    question, answer = asked(server, "converse", "[[emulator tool=local_time]] What time is it?", user=bob)
    tool_part(answer).update(state="output-available", output={"time": "10:42"})
    conversation_of_bob = {"messages": [question, answer]}

    status, body = post(server, "/converse/", conversation_of_bob, user=alice)
    assert "another user" in refused(status, body, bedrock_emulator, 1)
    status, body = post(server, "/converse/", conversation_of_bob)  # nor anonymously
    assert "another user" in refused(status, body, bedrock_emulator, 1)
    status, body = post(server, "/converse/", conversation_of_bob, user=bob)
    assert status == 200, body


def test_a_call_sent_twice_is_refused(bedrock_emulator: Any) -> None:
    """Else one approval could run its call twice in one request."""
    status, body = post("wsgi", "/converse/", conversation(_approved(), _approved()))
    assert "appears twice" in refused(status, body, bedrock_emulator, 0)
    assert DELETED == []


def test_a_view_without_tools_refuses_tool_results(bedrock_emulator: Any) -> None:
    status, body = post("wsgi", "/no-tools/", conversation(_output()))
    assert "not offered" in refused(status, body, bedrock_emulator, 0)


def test_the_refusal_is_logged_as_a_suspicious_operation(bedrock_emulator: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("ERROR", logger="django.security"):
        status, body = post("wsgi", "/converse/", conversation(_approved(id="forged")))
    refused(status, body, bedrock_emulator, 0)
    [record] = [r for r in caplog.records if r.name.startswith("django.security.")]
    assert record.name == "django.security.ToolCallForged"


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_the_drf_flavour_refuses_with_its_own_error_shape(bedrock_emulator: Any, server: str) -> None:
    status, body = post(server, "/drf/", conversation(_output(output={"time": 1042})))
    assert status == 400, body
    assert "does not match its schema" in json.loads(body)["detail"]
    assert len(bedrock_emulator.requests) == 0
    status, body = post(server, "/drf/", conversation(_output(), then="And now?"))
    assert status == 200, body


# -- the internal message form, built per family ---------------------------------------------------------

TOOL_MESSAGES = [
    {"role": "user", "content": "Time?"},
    {"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "t1", "name": "local_time", "input": {}}]},
    {"role": "user", "content": "", "tool_results": [{"id": "t1", "name": "local_time", "output": {"time": "9"}}]},
    {"role": "user", "content": "And in Oslo?"},
]


def test_tool_turns_in_converse_and_anthropic_shapes() -> None:
    assert build_converse_messages(TOOL_MESSAGES)[1:] == [
        {"role": "assistant", "content": [
            {"text": "Checking."}, {"toolUse": {"toolUseId": "t1", "name": "local_time", "input": {}}}]},
        {"role": "user", "content": [
            {"toolResult": {"toolUseId": "t1", "content": [{"text": '{"time": "9"}'}], "status": "success"}},
            {"text": "And in Oslo?"}]},
    ]
    assert build_anthropic_messages(TOOL_MESSAGES)[1:] == [
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "t1", "name": "local_time", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": '{"time": "9"}'},
            {"type": "text", "text": "And in Oslo?"}]},
    ]


def test_text_formats_refuse_tool_turns() -> None:
    with pytest.raises(ValueError, match="cannot carry tool calls"):
        build_llama3_prompt(TOOL_MESSAGES)


# -- found by attacking it ---------------------------------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
@pytest.mark.parametrize("where", ["input", "output"])
def test_a_deeply_nested_tool_input_or_output_is_a_400_not_a_500(bedrock_emulator: Any, server: str, where: str) -> None:
    """Signing and checking recurse through the JSON: 700 levels were a RecursionError (a 500)."""
    part = signed_part("calculator", "t1", {"expression": "2+3"}, state="output-available", output="5")
    if where == "input":
        part["input"] = {"expression": _nested(700)}
    else:
        part["output"] = _nested(700)
    status, text = post(server, "/converse/", conversation(part, then="And?"))
    assert status == 400 and json.loads(text)["error"]["type"] == "invalid_tool_call", text
    assert bedrock_emulator.requests == []


def test_an_approval_runs_its_call_once(bedrock_emulator: Any) -> None:
    """A double submit or a replay of the same approval must not delete the file three times."""
    body = conversation(_approved())
    statuses = [post("wsgi", "/converse/", body)[0] for _ in range(3)]
    assert statuses[0] == 200 and statuses[1:] == [400, 400]
    assert DELETED == ["/tmp/a.txt"]


def test_an_approval_in_a_refused_request_stays_usable(bedrock_emulator: Any, django_user_model: Any) -> None:
    """A request refused before its approved call ran (another part forged: 400; over budget: 429)
    does not use the approval up: sent again once the request is fine, the call runs, once."""
    status, _ = post("wsgi", "/converse/", conversation(_approved(), _output(callProviderMetadata={
        "bedrock": {"signature": "forged"}})))
    assert status == 400 and DELETED == []
    alice = django_user_model.objects.create_user("alice", password="x")
    token = sign_call(ToolCall("t2", "delete_file", APPROVAL_INPUT), binding=f"user:{alice.pk}", purpose="approval")
    hers = signed_part("delete_file", "t2", APPROVAL_INPUT, binding=f"user:{alice.pk}", state="approval-responded",
                       approval={"id": token, "approved": True})
    for server in ("wsgi", "asgi"):
        with override_settings(BEDROCK_STREAM={"BUDGETS": {"default": {"tokens": 1, "period": "day"}}}):
            status, body = post(server, "/converse/", conversation(hers), user=alice)
        assert status == 429 and json.loads(body)["error"]["type"] == "budget_exceeded", body
    assert DELETED == []
    assert post("asgi", "/converse/", conversation(hers), user=alice)[0] == 200
    assert post("wsgi", "/converse/", conversation(_approved()))[0] == 200
    assert post("wsgi", "/converse/", conversation(hers), user=alice)[0] == 400  # used now
    assert sorted(DELETED) == ["/tmp/a.txt", "/tmp/a.txt"]


# -- AI SDK 4 (the data stream, v1) ---------------------------------------------------------------


def fold_v4(message: dict[str, Any], body: str) -> dict[str, Any]:
    """Apply a data stream to the assistant message as ``processChatResponse`` of ``@ai-sdk/ui-utils``
    1.2 does (``parts`` and their ``toolInvocations`` mirror; every field of a ``9:`` part is kept)."""
    parts, invocations = message.setdefault("parts", []), message.setdefault("toolInvocations", [])
    step, text_part = 0, None

    def put(invocation: dict[str, Any]) -> None:
        for part in parts:
            if part["type"] == "tool-invocation" and part["toolInvocation"]["toolCallId"] == invocation["toolCallId"]:
                part["toolInvocation"] = invocation
                break
        else:
            parts.append({"type": "tool-invocation", "toolInvocation": invocation})
        for i, known in enumerate(invocations):
            if known["toolCallId"] == invocation["toolCallId"]:
                invocations[i] = invocation
                return
        invocations.append(invocation)

    for line in body.splitlines():
        code, value = line[:1], json.loads(line[2:])
        if code == "f":
            parts.append({"type": "step-start"})
        elif code == "0":
            if text_part is None:
                text_part = {"type": "text", "text": ""}
                parts.append(text_part)
            text_part["text"] += value
            message["content"] = message.get("content", "") + value
        elif code == "b":
            put({"state": "partial-call", "step": step, "toolCallId": value["toolCallId"],
                 "toolName": value["toolName"], "args": None})
        elif code == "9":
            put({"state": "call", "step": step, **value})
        elif code == "a":
            known = next(i for i in invocations if i["toolCallId"] == value["toolCallId"])
            put({**known, "state": "result", **value})
        elif code == "e":
            step, text_part = step + 1, None
    return message


def v4_payload(*messages: dict[str, Any]) -> dict[str, Any]:
    """What AI SDK 4's ``useChat`` posts (``sendExtraMessageFields`` off): role, content, parts and
    toolInvocations of each message."""
    keep = ("role", "content", "parts", "toolInvocations", "experimental_attachments")
    return {"messages": [{key: m[key] for key in keep if key in m} for m in messages]}


def asked_v4(server: str, prompt: str, user: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    question = {"role": "user", "content": prompt, "parts": [{"type": "text", "text": prompt}]}
    status, body = post(server, "/data/", v4_payload(question), user=user)
    assert status == 200, body
    return question, fold_v4({"role": "assistant", "content": ""}, body)


def answer_v4(message: dict[str, Any], result: Any) -> dict[str, Any]:
    """``addToolResult`` (``updateToolCallResult``): the waiting call's invocation gets its result."""
    [invocation] = [i for i in message["toolInvocations"] if i["state"] == "call"]
    done = {**invocation, "state": "result", "result": result}
    message["toolInvocations"] = [done if i is invocation else i for i in message["toolInvocations"]]
    for part in message["parts"]:
        if part["type"] == "tool-invocation" and part["toolInvocation"]["toolCallId"] == done["toolCallId"]:
            part["toolInvocation"] = done
    return message


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_an_ai_sdk_4_client_tool_result_goes_to_the_model(bedrock_emulator: Any, server: str) -> None:
    question, answer = asked_v4(server, "[[emulator tool=local_time text=Checking.]] What time is it?")
    [invocation] = answer["toolInvocations"]
    assert invocation["state"] == "call" and invocation["toolName"] == "local_time"
    call_id = invocation["toolCallId"]
    assert verify_call(invocation["signature"], name="local_time", input={}, binding="anonymous") == call_id

    status, body = post(server, "/data/", v4_payload(question, answer_v4(answer, {"time": "10:42"})))
    assert status == 200, body
    assert fold_v4({}, body)["content"] == 'Result of local_time: {"time": "10:42"}'
    _, assistant, results = sent_messages(bedrock_emulator, 2)
    assert assistant["content"] == [{"text": "Checking."},
                                    {"toolUse": {"toolUseId": call_id, "name": "local_time", "input": {}}}]
    result = {"toolUseId": call_id, "content": [{"text": '{"time": "10:42"}'}], "status": "success"}
    assert results == {"role": "user", "content": [{"toolResult": result}]}


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_an_ai_sdk_4_conversation_with_a_server_tool_goes_on(bedrock_emulator: Any, server: str) -> None:
    """The next question after a server tool ran: AI SDK 4 posts the call (its parts, and its
    toolInvocations mirror) back as history; it used to be refused as a malformed tool part."""
    question, answer = asked_v4(
        server, '[[emulator tool=calculator tool_input={"expression": "2+3"} text="Let me add."]] 2+3?')
    [invocation] = answer["toolInvocations"]
    assert (invocation["state"], invocation["result"]) == ("result", "5")
    assert [part["type"] for part in answer["parts"]] == ["step-start", "text", "tool-invocation", "step-start", "text"]
    follow_up = {"role": "user", "content": "And 3+4?", "parts": [{"type": "text", "text": "And 3+4?"}]}

    status, body = post(server, "/data/", v4_payload(question, answer, follow_up))
    assert status == 200, body
    call_id = invocation["toolCallId"]
    assert [(m["role"], m["content"]) for m in sent_messages(bedrock_emulator, 3)[1:]] == [
        ("assistant", [{"text": "Let me add."}, {"toolUse": {"toolUseId": call_id, "name": "calculator",
                                                             "input": {"expression": "2+3"}}}]),
        ("user", [{"toolResult": {"toolUseId": call_id, "content": [{"text": "5"}], "status": "success"}}]),
        ("assistant", [{"text": "Result of calculator: 5"}]),
        ("user", [{"text": "And 3+4?"}]),
    ]


def test_ai_sdk_4_0_messages_without_parts_are_read_from_their_tool_invocations(bedrock_emulator: Any) -> None:
    """AI SDK 4.0 and 4.1 send ``toolInvocations`` alone: the calls by step, then the message's text."""
    question, answer = asked_v4("wsgi", "[[emulator tool=local_time text=Checking.]] What time is it?")
    answer_v4(answer, {"time": "10:42"})
    del answer["parts"], question["parts"]
    status, body = post("wsgi", "/data/", v4_payload(question, answer))
    assert status == 200, body
    call_id = answer["toolInvocations"][0]["toolCallId"]
    _, assistant, results, text = sent_messages(bedrock_emulator, 2)
    assert assistant["content"] == [{"toolUse": {"toolUseId": call_id, "name": "local_time", "input": {}}}]
    assert results["content"][0]["toolResult"]["toolUseId"] == call_id
    assert text == {"role": "assistant", "content": [{"text": "Checking."}]}


def _v4_message(**invocation: Any) -> dict[str, Any]:
    signature = sign_call(ToolCall("t1", "local_time", {}), binding="anonymous")
    done = {"state": "result", "step": 0, "toolCallId": "t1", "toolName": "local_time", "args": {},
            "result": {"time": "10:42"}, "signature": signature} | invocation
    return {"role": "assistant", "content": "", "parts": [{"type": "tool-invocation", "toolInvocation": done}],
            "toolInvocations": [done]}


BAD_V4 = {
    "no signature": (_v4_message(signature=None), "signature is missing"),
    "a forged signature": (_v4_message(signature="forged"), "not valid"),
    "another input than was signed": (_v4_message(args={"zone": "UTC"}), "differs"),
    "an unknown state": (_v4_message(state="done"), "state must be one of"),
    "a state that is an object": (_v4_message(state={"x": 1}), "state must be one of"),
    "a state that is a list": (_v4_message(state=["result"]), "state must be one of"),
    "no call id": (_v4_message(toolCallId=""), "needs 'toolName' and 'toolCallId'"),
    "an invocation that is no object": (
        {"role": "assistant", "content": "", "parts": [{"type": "tool-invocation", "toolInvocation": "t1"}]},
        "must be an object",
    ),
}


@pytest.mark.parametrize("case", list(BAD_V4))
def test_bad_ai_sdk_4_tool_invocations_are_refused_before_anything_runs(bedrock_emulator: Any, case: str) -> None:
    message, expected = BAD_V4[case]
    question = {"role": "user", "content": "Help me."}
    status, body = post("asgi", "/data/", {"messages": [question, copy.deepcopy(message)]})
    assert expected in refused(status, body, bedrock_emulator, 0)
    assert "Traceback" not in body


@pytest.mark.parametrize(("value", "kind", "expected"), [
    ("t1", "invalid_request", "Expected a list of tool invocations."),
    ({"a": 1}, "invalid_request", "Expected a list of tool invocations."),
    ([1], "invalid_tool_call", "a tool invocation must be an object."),
])
def test_tool_invocations_that_are_no_list_of_objects_are_a_400(
    bedrock_emulator: Any, value: Any, kind: str, expected: str
) -> None:
    messages = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "", "toolInvocations": value}]
    status, body = post("wsgi", "/data/", {"messages": messages})
    assert status == 400, body
    error = json.loads(body)["error"]
    assert error["type"] == kind and expected in error["message"]
    assert bedrock_emulator.requests == []


def test_an_ai_sdk_4_call_of_another_user_is_refused(bedrock_emulator: Any) -> None:
    bob = get_user_model().objects.create_user("bob")
    question, answer = asked_v4("asgi", "[[emulator tool=local_time]] What time is it?", user=bob)
    payload = v4_payload(question, answer_v4(answer, {"time": "10:42"}))
    status, body = post("asgi", "/data/", payload)  # anonymously
    assert "another user" in refused(status, body, bedrock_emulator, 1)
    status, body = post("asgi", "/data/", payload, user=bob)
    assert status == 200, body


@pytest.mark.skipif(
    NODE is None or not (JS / "node_modules" / "@ai-sdk" / "ui-utils").exists(),
    reason="node and tests/js/node_modules are needed (run `npm ci --prefix tests/js`)",
)
@pytest.mark.parametrize("flow", ["client", "server"])
def test_ai_sdk_4_use_chat_answers_tools_through_a_live_server(bedrock_emulator: Any, flow: str) -> None:
    """AI SDK 4's own client code (``callChatApi`` of ``@ai-sdk/ui-utils``, as ``useChat`` drives it):
    a client-side tool answered in ``onToolCall`` goes back by itself and the model reads its result;
    after a server tool ran, the next question is answered (the call goes back as history)."""
    if flow == "client":
        argv = ["[[emulator tool=local_time text=Checking.]] What time is it?"]
    else:
        argv = ['[[emulator tool=calculator tool_input={"expression": "2+3"} text="Let me add."]] 2+3?', "And 3+4?"]
    with UvicornThread() as server:
        done = subprocess.run([str(NODE), str(JS / "v4-tool-round-trip.mjs"), f"{server.url}/data/", *argv],
                              capture_output=True, text=True, timeout=60, cwd=JS, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["posts"], result["errors"]) == (2, [])
    answer = result["messages"][1]
    [invocation] = answer["toolInvocations"]
    assert invocation["state"] == "result"
    logged = settled(bedrock_emulator, 2)
    [call] = [block["toolUse"] for block in logged[1]["body"]["messages"][1]["content"] if "toolUse" in block]
    assert call["toolUseId"] == invocation["toolCallId"]
    if flow == "client":
        assert invocation["result"] == {"time": "10:42"}
        assert answer["content"] == 'Checking.Result of local_time: {"time": "10:42"}'
        assert [part["type"] for part in answer["parts"]] == [
            "step-start", "text", "tool-invocation", "step-start", "text"]
    else:
        assert invocation["result"] == "5" and len(result["messages"]) == 4
        follow_up = settled(bedrock_emulator, 3)[2]["body"]["messages"]  # the first post made two model turns
        assert [block["toolUse"]["toolUseId"] for block in follow_up[1]["content"] if "toolUse" in block] == [
            invocation["toolCallId"]]
        assert follow_up[-1] == {"role": "user", "content": [{"text": "And 3+4?"}]}


def test_an_ai_sdk_4_call_bedrock_ran_itself_is_left_out_not_refused(bedrock_emulator: Any) -> None:
    """The data protocol marks a tool Bedrock ran (Nova's code interpreter) ``providerExecuted``; it is
    unsigned, and history the model keeps itself: left out, as its AI SDK 5+ part is."""
    ran = {"state": "result", "step": 0, "toolCallId": "t9", "toolName": "nova_code_interpreter",
           "args": {"snippet": "6 * 7"}, "result": {"stdout": "42"}, "providerExecuted": True}
    answer = {"role": "assistant", "content": "42.", "toolInvocations": [ran], "parts": [
        {"type": "step-start"}, {"type": "tool-invocation", "toolInvocation": ran}, {"type": "text", "text": "42."}]}
    status, body = post("wsgi", "/data/", {"messages": [{"role": "user", "content": "6 * 7?"}, answer,
                                                        {"role": "user", "content": "Thanks."}]})
    assert status == 200, body
    assert [(m["role"], m["content"]) for m in sent_messages(bedrock_emulator, 1)] == [
        ("user", [{"text": "6 * 7?"}]), ("assistant", [{"text": "42."}]), ("user", [{"text": "Thanks."}])]


def test_an_ai_sdk_4_message_reads_as_its_ai_sdk_5_counterpart() -> None:
    """Reasoning (its signed and redacted details), a generated file's ``mimeType`` and a tool call:
    the internal form is the one the same message in the AI SDK 5+ shape gives."""
    from django_bedrock_stream.serializers import MessageSerializer

    signature = sign_call(ToolCall("t1", "local_time", {}), binding="anonymous")
    done = {"state": "result", "step": 0, "toolCallId": "t1", "toolName": "local_time", "args": {},
            "result": {"time": "10:42"}, "signature": signature}
    v4 = {"role": "assistant", "content": "Checking.", "toolInvocations": [done], "parts": [
        {"type": "step-start"},
        {"type": "reasoning", "reasoning": "Think.", "details": [
            {"type": "text", "text": "Think.", "signature": "c2ln"}, {"type": "redacted", "data": "cmVk"}]},
        {"type": "file", "mimeType": "image/png", "data": "iVBORw0KGgo="},
        {"type": "text", "text": "Checking."},
        {"type": "tool-invocation", "toolInvocation": done},
        {"type": "step-start"},
        {"type": "text", "text": "It is 10:42."},
    ]}
    v5 = {"role": "assistant", "parts": [
        {"type": "step-start"},
        {"type": "reasoning", "text": "Think.", "providerMetadata": {"bedrock": {"signature": "c2ln"}}},
        {"type": "reasoning", "text": "", "providerMetadata": {"bedrock": {"redactedData": "cmVk"}}},
        {"type": "file", "mediaType": "image/png", "data": "iVBORw0KGgo="},
        {"type": "text", "text": "Checking."},
        {"type": "dynamic-tool", "toolName": "local_time", "toolCallId": "t1", "state": "output-available",
         "input": {}, "output": {"time": "10:42"}, "callProviderMetadata": {"bedrock": {"signature": signature}}},
        {"type": "step-start"},
        {"type": "text", "text": "It is 10:42."},
    ]}

    def internal(message: dict[str, Any]) -> list[dict[str, Any]]:
        serializer = MessageSerializer(data=[{"role": "user", "content": "Time?"}, message], many=True)
        assert serializer.is_valid(), serializer.errors
        return list(serializer.validated_data)

    steps = internal(v4)
    assert steps == internal(v5)
    assert steps[1]["reasoning"] == [{"text": "Think.", "signature": "c2ln"}, {"redacted": "cmVk"}]
    assert steps[1]["tool_calls"][0]["signature"] == signature and steps[2]["content"] == "It is 10:42."


def test_an_ai_sdk_4_server_tool_error_goes_back_as_an_error(bedrock_emulator: Any) -> None:
    """v1 has no tool error: the ``a:`` part's result is ``{"error": …}``, marked ``isError``, which
    AI SDK 4 keeps; the model reads it again as an error result, as it read it the first time."""
    question, answer = asked_v4("wsgi", '[[emulator tool=calculator tool_input={"expression": "2+x"}]] 2+x?')
    [invocation] = answer["toolInvocations"]
    assert invocation["isError"] is True and set(invocation["result"]) == {"error"}
    follow_up = {"role": "user", "content": "Try 2+3.", "parts": [{"type": "text", "text": "Try 2+3."}]}
    status, body = post("wsgi", "/data/", v4_payload(question, answer, follow_up))
    assert status == 200, body
    first_time = settled(bedrock_emulator, 2)[1]["body"]["messages"][2]["content"][0]["toolResult"]
    again = sent_messages(bedrock_emulator, 3)[2]["content"][0]["toolResult"]
    assert again == first_time and again["status"] == "error"
    assert again["content"] == [{"text": invocation["result"]["error"]}]


def test_ai_sdk_4_tool_invocations_count_against_max_parts(bedrock_emulator: Any) -> None:
    """4.0's ``toolInvocations`` become parts before the limits are checked: a long list is the same 400."""
    calls = [{"state": "result", "toolCallId": f"t{i}", "toolName": "local_time", "args": {}, "result": 1}
             for i in range(1001)]
    messages = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "", "toolInvocations": calls}]
    status, body = post("wsgi", "/data/", {"messages": messages})
    assert status == 400, body
    assert "parts; the limit is 1000" in json.loads(body)["error"]["message"]
    assert bedrock_emulator.requests == []
