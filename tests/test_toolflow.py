"""Runs with tools (issue 11), end to end: the views run the server's tools between model turns and
continue the same HTTP stream, hand client-side calls and approvals to the browser (signed), and
store every run. Django's Client (WSGI), AsyncClient (ASGI) and a real uvicorn; real boto3 /
aiobotocore against the built-in emulator, whose request log shows what reached "Bedrock"."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import django
import pytest
from django.test import override_settings
from django.urls import path

from django_bedrock_stream import client as clients
from django_bedrock_stream.families import AnthropicMessagesFamily, ConverseFamily, NovaFamily
from django_bedrock_stream.models import Completion
from django_bedrock_stream.signals import tool_called
from django_bedrock_stream.tools import Tool, tool, verify_call
from django_bedrock_stream.views import BedrockStreamView
from tests.test_reliability import Recorder

from .recorded import RECORDED_DIR, load_index, wire_events, wire_tool_calls
from .servers import UvicornThread, raw_request, read_head
from .ui_stream import of, post, texts, ui_chunks

CLAUDE_4 = "us.anthropic.claude-sonnet-4-20250514-v1:0"

# -- tools ---------------------------------------------------------------------------------------

#: When each slow tool ran: (start, end), monotonic seconds.
SPANS: dict[str, tuple[float, float]] = {}


@tool
def calculator(expression: str) -> str:
    """Add and subtract whole numbers.

    Args:
        expression: Terms joined by + and -, like "2+3-1".
    """
    return str(sum(int(term) for term in expression.replace("-", "+-").split("+") if term.strip()))


@tool
def echo(text: str) -> str:
    """Say it back."""
    return text


@tool
async def slow_async(tag: str) -> str:
    """Wait 0.3 s on the event loop."""
    start = time.monotonic()
    await asyncio.sleep(0.3)
    SPANS["slow_async"] = (start, time.monotonic())
    return f"async {tag}"


@tool
def slow_sync(tag: str) -> str:
    """Wait 0.3 s on a thread."""
    start = time.monotonic()
    time.sleep(0.3)
    SPANS["slow_sync"] = (start, time.monotonic())
    return f"sync {tag}"


@tool
def broken(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"the database password is hunter2 ({reason})")


class Waiting:
    """What ``wait_forever`` went through (it runs in the server's thread)."""

    started = threading.Event()
    cancelled = threading.Event()


@tool
async def wait_forever() -> str:
    """Never answers, unless cancelled."""
    Waiting.started.set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        Waiting.cancelled.set()
        raise
    return "never"


local_time = Tool(
    "local_time", "The browser's local time.", {"type": "object", "properties": {}, "additionalProperties": False}
)

DELETED: list[str] = []


@tool(needs_approval=True)
def delete_file(path: str) -> str:
    """Delete a file (asks the user first)."""
    DELETED.append(path)
    return "deleted"


SERVER_TOOLS = [calculator, echo, slow_async, slow_sync, broken, wait_forever]


class Action(enum.Enum):
    KEEP = "keep"
    DELETE = "delete"


RULE_INPUTS: list[Any] = []


@tool(needs_approval=lambda input, request: RULE_INPUTS.append(input) or input["action"] == "delete")
def files(action: Action) -> str:
    """Keep or delete the files (deleting asks the user first)."""
    return action.value

#: Values a tool may return that no browser (NaN is not JSON) or PostgreSQL (NUL) takes, or that nest
#: deeper than anything that signs or stores them can follow.
UNSENDABLE = {"nan": float("nan"), "infinity": float("inf"), "nul": "a\x00b", "deep": [[[[[[[[1]]]]]]]] * 1}


@tool
def unsendable(kind: str) -> Any:
    """Return a value that cannot be sent."""
    if kind == "deep":
        value: Any = 1
        for _ in range(600):
            value = [value]
        return value
    return UNSENDABLE[kind]

# -- views ---------------------------------------------------------------------------------------


class ConverseTools(BedrockStreamView):
    family_class = ConverseFamily
    stream_protocol = "ui"
    tools = SERVER_TOOLS


class ClaudeTools(BedrockStreamView):
    family_class = AnthropicMessagesFamily
    stream_protocol = "ui"
    tools = SERVER_TOOLS


class NovaTools(BedrockStreamView):
    family_class = NovaFamily
    stream_protocol = "ui"
    tools = SERVER_TOOLS


class ConverseThinking(ConverseTools):
    model_id = CLAUDE_4
    converse_options = {"reasoning_budget": 1024}


class ClaudeThinking(ClaudeTools):
    model_id = CLAUDE_4.removeprefix("us.")
    converse_options = {"reasoning_budget": 1024}


class TwoSteps(ConverseTools):
    max_steps = 2


class BrowserTools(BedrockStreamView):
    family_class = ConverseFamily
    stream_protocol = "ui"
    tools = [calculator, local_time, delete_file]


RECORDED_TOOLS = [Tool(name, "Weather.", {"type": "object"}) for name in ("get_weather", "get_current_weather")]
VIEWS = {"converse": ConverseTools, "claude": ClaudeTools, "nova": NovaTools}
urlpatterns = [
    *(path(f"{name}/", view.as_view()) for name, view in VIEWS.items()),
    *(path(f"recorded-{name}/", view.as_view(tools=RECORDED_TOOLS)) for name, view in VIEWS.items()),
    path("converse-thinking/", ConverseThinking.as_view()),
    path("claude-thinking/", ClaudeThinking.as_view()),
    path("two-steps/", TwoSteps.as_view()),
    path("browser/", BrowserTools.as_view()),
    path("unsendable/", ConverseTools.as_view(tools=[echo, unsendable])),
    path("files/", ConverseTools.as_view(tools=[files])),
]
pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db(transaction=True)]

needs_asgi_cancellation = pytest.mark.skipif(
    django.VERSION < (5, 0), reason="Django < 5.0 does not cancel ASGI responses on client disconnect"
)

# -- helpers -------------------------------------------------------------------------------------


def chat(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def settled(emulator: Any, count: int) -> list[dict[str, Any]]:
    """The emulator's log once it holds ``count`` settled requests."""
    return emulator.wait_for(lambda log: len(log) >= count and all(r["status"] != "streaming" for r in log))


def row() -> Completion:
    wait_until(lambda: Completion.objects.exclude(status="streaming").exists(), "the row to settle")
    return Completion.objects.get()


def wait_until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def tool_calls() -> Recorder:
    """``tool_called`` as sent, while in the ``with`` block (``.of("tool_called")``)."""
    return Recorder("tool_called")


def usage_of(emulator: Any, family: str, model_id: str, body: dict[str, Any]) -> tuple[int, int]:
    """(input, output) tokens "Bedrock" reports for this request body, asked again."""
    runtime = boto3.client("bedrock-runtime", endpoint_url=emulator.url, region_name="us-east-1")
    if family == "converse":
        events = list(runtime.converse_stream(modelId=model_id, **body)["stream"])
        usage = next(event["metadata"]["usage"] for event in events if "metadata" in event)
        return usage["inputTokens"], usage["outputTokens"]
    events = [json.loads(e["chunk"]["bytes"]) for e in runtime.invoke_model_with_response_stream(
        modelId=model_id, body=json.dumps(body))["body"]]
    if family == "nova":
        usage = next(event["metadata"]["usage"] for event in events if "metadata" in event)
        return usage["inputTokens"], usage["outputTokens"]
    start = next(event for event in events if event["type"] == "message_start")
    delta = next(event for event in events if event["type"] == "message_delta")
    return start["message"]["usage"]["input_tokens"], delta["usage"]["output_tokens"]


@pytest.fixture(scope="module")
def uvicorn_server() -> Iterator[UvicornThread]:
    with UvicornThread() as server:
        yield server
        if server.loop is not None:
            asyncio.run_coroutine_threadsafe(clients.aclose_clients(), server.loop).result(10)
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(10)


@pytest.fixture(params=["wsgi", "asgi", "uvicorn"])
def server(request: pytest.FixtureRequest) -> str:
    """Where to POST: Django's Client, AsyncClient, or a real uvicorn's URL."""
    if request.param == "uvicorn":
        return str(request.getfixturevalue("uvicorn_server").url)
    return str(request.param)


COMPUTE = '[[emulator tool=calculator tool_input={"expression": "2+3"} text="Let me compute."]] What is 2+3?'

# -- a server tool over two steps ----------------------------------------------------------------


@pytest.mark.parametrize("family", ["converse", "claude"])
def test_a_server_tool_runs_between_two_model_turns(bedrock_emulator: Any, server: str, family: str) -> None:
    with tool_calls() as sent:
        status, body = post(server, f"/{family}/", chat(COMPUTE))
    assert status == 200, body
    chunks = ui_chunks(body)
    kinds = [chunk["type"] for chunk in chunks]
    # One message, two steps: text, the call streamed, its result, then the answer.
    assert kinds[:2] == ["start", "start-step"] and kinds[-2:] == ["finish-step", "finish"]
    assert kinds.count("start") == kinds.count("finish") == 1
    assert kinds.count("start-step") == kinds.count("finish-step") == 2
    [started] = of(chunks, "tool-input-start")
    [available] = of(chunks, "tool-input-available")
    [output] = of(chunks, "tool-output-available")
    call_id = started["toolCallId"]
    assert call_id.startswith("tooluse_" if family == "converse" else "toolu_bdrk_01")
    assert started["toolName"] == available["toolName"] == "calculator"
    pieces = [chunk["inputTextDelta"] for chunk in of(chunks, "tool-input-delta")]
    assert len(pieces) > 3 and all(chunk["toolCallId"] == call_id for chunk in of(chunks, "tool-input-delta"))
    assert json.loads("".join(pieces)) == available["input"] == {"expression": "2+3"}
    signature = available["providerMetadata"]["bedrock"]["signature"]
    assert verify_call(signature, name="calculator", input={"expression": "2+3"}, binding="anonymous") == call_id
    assert output == {"type": "tool-output-available", "toolCallId": call_id, "output": "5"}
    order = [kinds.index(kind) for kind in ("tool-input-start", "tool-input-available", "tool-output-available")]
    between = kinds.index("finish-step")
    assert order == sorted(order) and order[-1] < between and kinds[between + 1] == "start-step"
    assert texts(chunks) == "Let me compute.Result of calculator: 5"
    assert chunks[-1]["messageMetadata"]["finishReason"] == "stop"

    # "Bedrock" was called twice; the second call carried the model's turn and the result.
    first, second = settled(bedrock_emulator, 2)
    if family == "converse":
        assert second["body"]["messages"][1:] == [
            {"role": "assistant", "content": [
                {"text": "Let me compute."},
                {"toolUse": {"toolUseId": call_id, "name": "calculator", "input": {"expression": "2+3"}}},
            ]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": call_id, "content": [{"text": "5"}], "status": "success"}},
            ]},
        ]
        assert second["body"]["toolConfig"] == first["body"]["toolConfig"]
    else:
        assert second["body"]["messages"][1:] == [
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me compute."},
                {"type": "tool_use", "id": call_id, "name": "calculator", "input": {"expression": "2+3"}},
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id, "content": "5"}]},
        ]
        assert second["body"]["tools"] == first["body"]["tools"]

    # The row: the whole text, both turns' usage, the run.
    completion = row()
    assert (completion.status, completion.stop_reason) == ("completed", "end_turn")
    assert completion.text == texts(chunks)
    kind = "converse" if family == "converse" else "anthropic"
    turns = [usage_of(bedrock_emulator, kind, record["model_id"], record["body"]) for record in (first, second)]
    assert (completion.input_tokens, completion.output_tokens) == tuple(map(sum, zip(*turns)))
    usage = chunks[-1]["messageMetadata"]["usage"]
    assert (usage["inputTokens"], usage["outputTokens"]) == tuple(map(sum, zip(*turns)))
    [run] = completion.parts["tool_runs"]
    assert run["duration"] >= 0 and run.pop("duration") < 5
    assert run == {"id": call_id, "name": "calculator", "input": {"expression": "2+3"}, "output": "5", "error": "",
                   "status": "success", "step": 0}
    assert [call["id"] for call in completion.parts["tool_calls"]] == [call_id]
    [called] = sent.of("tool_called")
    assert called["tool_name"] == "calculator" and called["completion"].pk == completion.pk
    assert (called["input"], called["output"], called["error"]) == ({"expression": "2+3"}, "5", "")
    assert called["duration"] >= 0 and called["request"].path == f"/{family}/"


@pytest.mark.parametrize("view", ["converse-thinking", "claude-thinking"])
def test_the_next_turn_carries_the_first_turns_signed_reasoning(bedrock_emulator: Any, view: str) -> None:
    """With thinking on, Claude refuses a tool round whose assistant turn does not start with its
    signed reasoning (the emulator checks it as Bedrock does)."""
    status, body = post("asgi", f"/{view}/", chat(COMPUTE))
    assert status == 200, body
    chunks = ui_chunks(body)
    assert texts(chunks) == "Let me compute.Result of calculator: 5", body
    signed = [chunk for chunk in of(chunks, "reasoning-delta") if "providerMetadata" in chunk]
    assert len(signed) == 2  # each turn reasoned
    _, second = settled(bedrock_emulator, 2)
    assistant = second["body"]["messages"][1]["content"]
    signature = signed[0]["providerMetadata"]["bedrock"]["signature"]
    if view == "converse-thinking":
        assert assistant[0]["reasoningContent"]["reasoningText"]["signature"] == signature
        assert [next(iter(block)) for block in assistant] == ["reasoningContent", "text", "toolUse"]
    else:
        assert assistant[0]["type"] == "thinking" and assistant[0]["signature"] == signature
        assert [block["type"] for block in assistant] == ["thinking", "text", "tool_use"]


def test_nova_runs_a_server_tool_too(bedrock_emulator: Any) -> None:
    status, body = post("wsgi", "/nova/", chat(COMPUTE))
    assert status == 200, body
    chunks = ui_chunks(body)
    [available] = of(chunks, "tool-input-available")
    assert available["input"] == {"expression": "2+3"}
    assert texts(chunks) == "Let me compute.Result of calculator: 5"
    _, second = settled(bedrock_emulator, 2)
    assert second["body"]["messages"][-1]["content"][0]["toolResult"]["content"] == [{"text": "5"}]


@pytest.mark.parametrize("family", ["converse", "claude"])
@pytest.mark.parametrize("split", ["split_pairs=1", "tool_ascii=1"])
def test_input_cut_inside_characters_reaches_the_tool_whole(bedrock_emulator: Any, family: str, split: str) -> None:
    """The input's pieces end inside escapes and, with ``split_pairs``, between the two halves of
    an emoji: the call is decoded from the joined pieces, never piece by piece."""
    said = {"text": 'caf\u00e9 \U0001f600 "quoted" \\ done'}
    status, body = post("asgi", f"/{family}/", chat(f"[[emulator tool=echo tool_input={json.dumps(said)} {split}]] x"))
    assert status == 200, body
    chunks = ui_chunks(body)
    [available] = of(chunks, "tool-input-available")
    [output] = of(chunks, "tool-output-available")
    assert available["input"] == said and output["output"] == said["text"]
    joined = "".join(chunk["inputTextDelta"] for chunk in of(chunks, "tool-input-delta"))
    # A piece may end in half a character (sent as a \\ud83d escape): JavaScript's strings, UTF-16,
    # pair the halves again when the browser joins the pieces.
    assert json.loads(joined.encode("utf-16-le", "surrogatepass").decode("utf-16-le")) == said
    assert row().parts["tool_runs"][0]["output"] == said["text"]


# -- several calls, failures -----------------------------------------------------------------------


@pytest.mark.parametrize("server_kind", ["wsgi", "asgi", "asgi-thread"])
def test_several_calls_keep_their_order_and_ids_and_run_concurrently(bedrock_emulator: Any, server_kind: str) -> None:
    SPANS.clear()
    calls = [{"name": "slow_async", "input": {"tag": "a"}}, {"name": "slow_sync", "input": {"tag": "b"}}]
    transport = "thread" if server_kind == "asgi-thread" else "auto"
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "ASYNC_TRANSPORT": transport}):
        prompt = f"[[emulator tools={json.dumps(calls)}]] two at once"
        status, body = post(server_kind.removesuffix("-thread"), "/converse/", chat(prompt))
    assert status == 200, body
    chunks = ui_chunks(body)
    ids = [chunk["toolCallId"] for chunk in of(chunks, "tool-input-start")]
    assert [chunk["toolName"] for chunk in of(chunks, "tool-input-available")] == ["slow_async", "slow_sync"]
    assert len(set(ids)) == 2 and [chunk["toolCallId"] for chunk in of(chunks, "tool-input-available")] == ids
    assert [(c["toolCallId"], c["output"]) for c in of(chunks, "tool-output-available")] == [
        (ids[0], "async a"), (ids[1], "sync b"),
    ]
    # Concurrently: each tool started before the other one ended.
    (a_start, a_end), (b_start, b_end) = SPANS["slow_async"], SPANS["slow_sync"]
    assert a_start < b_end and b_start < a_end
    runs = row().parts["tool_runs"]
    assert [run["id"] for run in runs] == ids
    _, second = settled(bedrock_emulator, 2)
    assert [block["toolUse"]["toolUseId"] for block in second["body"]["messages"][1]["content"]] == ids
    assert [block["toolResult"]["toolUseId"] for block in second["body"]["messages"][2]["content"]] == ids
    assert texts(chunks) == "Result of slow_async: async a\nResult of slow_sync: sync b"


@pytest.mark.parametrize("server_kind", ["wsgi", "asgi"])
def test_a_tool_that_raises_gives_the_model_an_error_and_the_client_a_safe_message(
    bedrock_emulator: Any, server_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="django_bedrock_stream.tools"), tool_calls() as sent:
        status, body = post(server_kind, "/claude/", chat('[[emulator tool=broken tool_input={"reason": "x"}]] go'))
    assert status == 200, body
    chunks = ui_chunks(body)
    [call] = of(chunks, "tool-input-available")
    [failed] = of(chunks, "tool-output-error")
    safe = "The tool 'broken' failed with an internal error."
    assert failed == {"type": "tool-output-error", "toolCallId": call["toolCallId"], "errorText": safe}
    assert "hunter2" not in body and "Traceback" not in body and "RuntimeError" not in body
    assert texts(chunks) == f"Error from broken: {safe}"
    _, second = settled(bedrock_emulator, 2)
    assert second["body"]["messages"][-1]["content"] == [
        {"type": "tool_result", "tool_use_id": call["toolCallId"], "content": safe, "is_error": True}
    ]
    [record] = [r for r in caplog.records if r.name == "django_bedrock_stream.tools"]
    assert "broken" in record.getMessage() and record.exc_info is not None and "hunter2" in str(record.exc_info[1])
    completion = row()
    assert completion.status == "completed"
    [run] = completion.parts["tool_runs"]
    assert (run["status"], run["output"], run["error"]) == ("error", None, safe)
    [called] = sent.of("tool_called")
    assert (called["output"], called["error"]) == (None, safe)


def test_malformed_input_and_an_unknown_tool_become_errors_the_model_sees(bedrock_emulator: Any) -> None:
    calls = [{"name": "calculator", "raw": '{"expression": 2+'}, {"name": "teleport", "input": {"to": "Mars"}}]
    status, body = post("asgi", "/converse/", chat(f"[[emulator tools={json.dumps(calls)}]] go"))
    assert status == 200, body
    chunks = ui_chunks(body)
    bad, unknown = of(chunks, "tool-input-start")
    [input_error] = of(chunks, "tool-input-error")
    assert input_error["toolCallId"] == bad["toolCallId"] and input_error["input"] == '{"expression": 2+'
    assert input_error["errorText"].startswith("The tool input is not valid JSON")
    [available] = of(chunks, "tool-input-available")  # a tool nobody offered: not signed
    assert available["toolCallId"] == unknown["toolCallId"] and "providerMetadata" not in available
    errors = {chunk["toolCallId"]: chunk["errorText"] for chunk in of(chunks, "tool-output-error")}
    assert errors[bad["toolCallId"]].startswith("The tool input is not valid JSON")
    assert errors[unknown["toolCallId"]].startswith("There is no tool named 'teleport' (tools offered: ")
    _, second = settled(bedrock_emulator, 2)
    assistant, results = second["body"]["messages"][1:]
    assert [block["toolUse"]["input"] for block in assistant["content"]] == [{}, {"to": "Mars"}]
    assert [(r["toolResult"]["status"], r["toolResult"]["content"][0]["text"]) for r in results["content"]] == [
        ("error", errors[bad["toolCallId"]]), ("error", errors[unknown["toolCallId"]]),
    ]
    assert texts(chunks) == (
        f"Error from calculator: {errors[bad['toolCallId']]}\nError from teleport: {errors[unknown['toolCallId']]}"
    )
    assert [run["status"] for run in row().parts["tool_runs"]] == ["invalid", "invalid"]


@pytest.mark.parametrize("server_kind", ["wsgi", "asgi"])
def test_when_max_steps_run_out_the_stream_ends_with_the_last_turn(bedrock_emulator: Any, server_kind: str) -> None:
    prompt = '[[emulator tool=calculator tool_input={"expression": "1+1"} text="Once more." tool_turns=9]] loop'
    status, body = post(server_kind, "/two-steps/", chat(prompt))
    assert status == 200, body
    chunks = ui_chunks(body)
    assert len(settled(bedrock_emulator, 2)) == 2  # max_steps = 2 model turns, no third
    assert texts(chunks) == "Once more.Once more."
    assert chunks[-1]["messageMetadata"]["finishReason"] == "tool-calls"
    assert len(of(chunks, "tool-input-available")) == 2 and len(of(chunks, "tool-output-available")) == 1
    completion = row()
    assert (completion.status, completion.stop_reason, completion.text) == ("completed", "tool_use", "Once more.Once more.")
    assert len(completion.parts["tool_runs"]) == 1


# -- calls the browser answers -------------------------------------------------------------------


@pytest.mark.parametrize("server_kind", ["wsgi", "asgi"])
def test_a_client_side_call_ends_the_stream_signed(bedrock_emulator: Any, server_kind: str) -> None:
    status, body = post(server_kind, "/browser/", chat("[[emulator tool=local_time text=Checking.]] what time is it?"))
    assert status == 200, body
    chunks = ui_chunks(body)
    [available] = of(chunks, "tool-input-available")
    assert (available["toolName"], available["input"]) == ("local_time", {})
    signature = available["providerMetadata"]["bedrock"]["signature"]
    assert verify_call(signature, name="local_time", input={}, binding="anonymous") == available["toolCallId"]
    assert not of(chunks, "tool-output-available") and not of(chunks, "tool-output-error")
    assert chunks[-1]["messageMetadata"]["finishReason"] == "tool-calls"
    assert [chunk["type"] for chunk in chunks].count("start-step") == 1
    assert len(settled(bedrock_emulator, 1)) == 1  # no second model call
    completion = row()
    assert (completion.status, completion.stop_reason) == ("completed", "tool_use")
    assert "tool_runs" not in completion.parts


@pytest.mark.parametrize("server_kind", ["wsgi", "asgi"])
def test_a_call_needing_approval_asks_for_it_and_does_not_run(bedrock_emulator: Any, server_kind: str) -> None:
    DELETED.clear()
    prompt = '[[emulator tool=delete_file tool_input={"path": "/tmp/report.txt"}]] clean up'
    status, body = post(server_kind, "/browser/", chat(prompt))
    assert status == 200, body
    chunks = ui_chunks(body)
    [available] = of(chunks, "tool-input-available")
    [request] = of(chunks, "tool-approval-request")
    call_id = available["toolCallId"]
    assert request["toolCallId"] == call_id
    approved = {"name": "delete_file", "input": {"path": "/tmp/report.txt"}, "binding": "anonymous"}
    assert verify_call(request["approvalId"], purpose="approval", **approved) == call_id
    kinds = [chunk["type"] for chunk in chunks]
    assert kinds.index("tool-input-available") < kinds.index("tool-approval-request") < kinds.index("finish")
    assert chunks[-1]["messageMetadata"]["finishReason"] == "tool-calls"
    assert DELETED == [] and len(settled(bedrock_emulator, 1)) == 1
    assert "tool_runs" not in row().parts


@pytest.mark.parametrize("server_kind", ["wsgi", "asgi"])
def test_the_text_protocol_is_refused_where_the_browser_answers_calls(bedrock_emulator: Any, server_kind: str) -> None:
    status, body = post(server_kind, "/browser/", chat("hi"), query="?protocol=text")
    assert status == 400
    assert json.loads(body)["error"]["type"] == "invalid_protocol"
    assert bedrock_emulator.requests == []
    status, body = post(server_kind, "/converse/", chat("hi"), query="?protocol=text")  # server tools only: fine
    assert status == 200 and body


@pytest.mark.parametrize("server_kind", ["wsgi", "asgi"])
def test_the_data_protocol_is_refused_where_calls_need_approval(bedrock_emulator: Any, server_kind: str) -> None:
    """AI SDK 4's data stream has no approval request part: its client could never answer one."""
    status, body = post(server_kind, "/browser/", chat("hi"), query="?protocol=data")
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_protocol"
    assert bedrock_emulator.requests == []


# -- other protocols -----------------------------------------------------------------------------


def test_the_data_protocol_carries_the_tool_parts(bedrock_emulator: Any) -> None:
    status, body = post("wsgi", "/converse/", chat(COMPUTE), query="?protocol=data")
    assert status == 200, body
    lines = [(line[:1], json.loads(line[2:])) for line in body.splitlines()]
    codes = [code for code, _ in lines]
    [(_, start)] = [item for item in lines if item[0] == "b"]
    call_id = start["toolCallId"]
    assert start == {"toolCallId": call_id, "toolName": "calculator"}
    pieces = [value["argsTextDelta"] for code, value in lines if code == "c"]
    assert json.loads("".join(pieces)) == {"expression": "2+3"}
    [call] = [value for code, value in lines if code == "9"]
    signature = call.pop("signature")  # AI SDK 4 keeps it in the tool invocation and posts it back
    assert call == {"toolCallId": call_id, "toolName": "calculator", "args": {"expression": "2+3"}}
    assert verify_call(signature, name="calculator", input={"expression": "2+3"}, binding="anonymous") == call_id
    assert [value for code, value in lines if code == "a"] == [{"toolCallId": call_id, "result": "5"}]
    # Between the steps: a step finish that continues, then the next step's start.
    step = codes.index("e")
    assert codes[step + 1] == "f" and codes.index("a") < step < codes.index("0", step)
    assert lines[step][1]["finishReason"] == "tool-calls"
    assert codes[-2:] == ["e", "d"] and lines[-1][1]["finishReason"] == "stop"
    assert "".join(value for code, value in lines if code == "0") == "Let me compute.Result of calculator: 5"


def test_the_sse_protocol_carries_the_tool_parts(bedrock_emulator: Any) -> None:
    status, body = post("asgi", "/converse/", chat(COMPUTE), query="?protocol=sse")
    assert status == 200, body
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    names = [name for name, _ in events]
    [(_, start)] = [e for e in events if e[0] == "tool-call-start"]
    call_id = start["id"]
    assert start == {"id": call_id, "name": "calculator"}
    assert json.loads("".join(data["delta"] for name, data in events if name == "tool-input")) == {"expression": "2+3"}
    [(_, call)] = [e for e in events if e[0] == "tool-call"]
    assert (call["id"], call["name"], call["input"]) == (call_id, "calculator", {"expression": "2+3"})
    assert verify_call(call["signature"], name="calculator", input={"expression": "2+3"}, binding="anonymous") == call_id
    assert [data for name, data in events if name == "tool-result"] == [{"id": call_id, "name": "calculator", "output": "5"}]
    [(_, step)] = [e for e in events if e[0] == "step"]
    assert (step["finish_reason"], step["stop_reason"]) == ("tool-calls", "tool_use")
    assert names.index("tool-result") < names.index("step") < names.index("done")
    assert events[-1][1]["finish_reason"] == "stop"
    assert "".join(data["text"] for name, data in events if name == "token") == "Let me compute.Result of calculator: 5"


# -- a client that leaves ------------------------------------------------------------------------


@needs_asgi_cancellation
def test_a_client_leaving_while_a_tool_runs_cancels_it(bedrock_emulator: Any, uvicorn_server: UvicornThread) -> None:
    Waiting.started.clear()
    Waiting.cancelled.clear()
    payload = json.dumps(chat("[[emulator tool=wait_forever]] wait")).encode()
    sock = raw_request(uvicorn_server.url, "/converse/", payload)
    try:
        status, _ = read_head(sock)
        assert status == 200
        assert Waiting.started.wait(10), "the tool did not start"
    finally:
        sock.close()
    assert Waiting.cancelled.wait(10), "the running tool was not cancelled"
    completion = row()
    assert completion.status == "cancelled"
    assert len(settled(bedrock_emulator, 1)) == 1  # the next model turn never started


@needs_asgi_cancellation
@pytest.mark.parametrize("transport", ["aiobotocore", "thread"])
def test_a_client_leaving_during_the_next_turn_cancels_the_model_call(
    bedrock_emulator: Any, uvicorn_server: UvicornThread, transport: str
) -> None:
    # 0.6 s between chunks: time enough, on a loaded machine, for the disconnect to reach the thread
    # transport's reader before the second turn's 4 tokens are all sent (0.3 s was not, under load).
    prompt = '[[emulator tool=calculator tool_input={"expression": "2+3"} delay_ms=600]] slowly'
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "ASYNC_TRANSPORT": transport}):
        sock = raw_request(uvicorn_server.url, "/converse/", json.dumps(chat(prompt)).encode())
        try:
            status, _ = read_head(sock)
            assert status == 200
            bedrock_emulator.wait_for(lambda log: len(log) == 2 and log[1]["chunks_sent"] >= 1, timeout=10)
        finally:
            sock.close()
    _, second = settled(bedrock_emulator, 2)
    assert second["status"] == "disconnected", second
    assert second["chunks_sent"] < 4  # "Result of calculator: 5" is 4 tokens, 0.6 s apart
    completion = row()
    assert completion.status == "cancelled" and completion.parts["tool_runs"][0]["status"] == "success"


# -- recorded captures -----------------------------------------------------------------------------

TOOL_CAPTURES = [entry for entry in load_index() if entry.get("tool_input_json_concatenated")
                 and entry["file"] != "converse_nova2_lite_code_interpreter.eventstream"]
CAPTURE_VIEWS = {"converse": "converse", "anthropic-messages": "claude", "amazon-nova": "nova"}


@pytest.mark.parametrize("entry", TOOL_CAPTURES, ids=[entry["file"] for entry in TOOL_CAPTURES])
def test_recorded_tool_calls_reach_the_browser_exactly(bedrock_emulator: Any, recorded_dir: Any, entry: dict) -> None:
    """Bedrock's own tool turns (the recorded captures, one with two calls), through a view whose
    tools the browser runs: exactly their names, ids and inputs, each signed, and the stream ends."""
    view = CAPTURE_VIEWS[entry.get("payload_family", "converse")]
    calls, raw = wire_tool_calls(wire_events(RECORDED_DIR / entry["file"]))
    status, body = post("wsgi", f"/recorded-{view}/", chat(f"[[emulator replay={RECORDED_DIR / entry['file']}]]"))
    assert status == 200, body
    chunks = ui_chunks(body)
    available = of(chunks, "tool-input-available")
    assert [(c["toolCallId"], c["toolName"], c["input"]) for c in available] == calls
    assert "".join(chunk["inputTextDelta"] for chunk in of(chunks, "tool-input-delta")) == raw
    for chunk in available:
        signature = chunk["providerMetadata"]["bedrock"]["signature"]
        assert verify_call(signature, name=chunk["toolName"], input=chunk["input"], binding="anonymous") == chunk["toolCallId"]
    assert texts(chunks) == entry["expected_text"]
    assert chunks[-1]["messageMetadata"]["finishReason"] == "tool-calls"
    assert len(bedrock_emulator.requests) == 1


@pytest.mark.parametrize("server_kind", ["wsgi", "asgi"])
@pytest.mark.parametrize("given, problem", [
    ("tool_raw='{oops'", "The tool input is not valid JSON"),
    ('tool_input={"zone": "CET"}', "Invalid input for tool 'local_time': zone: unknown key"),
])
def test_bad_input_for_a_client_side_tool_is_an_error_the_model_sees(
    bedrock_emulator: Any, server_kind: str, given: str, problem: str
) -> None:
    """The browser is not handed a call whose input is not JSON or breaks the tool's schema: the
    model is told, as for a server tool (the stream used to fail on the first)."""
    status, body = post(server_kind, "/browser/", chat(f"[[emulator tool=local_time {given}]] time?"))
    assert status == 200, body
    chunks = ui_chunks(body)
    [call] = of(chunks, "tool-input-error")
    [error] = of(chunks, "tool-output-error")
    assert not of(chunks, "tool-input-available")  # what the AI SDK would hand to onToolCall
    assert error["toolCallId"] == call["toolCallId"] and error["errorText"].startswith(problem)
    assert not of(chunks, "error") and chunks[-1]["messageMetadata"]["finishReason"] == "stop"
    _, second = settled(bedrock_emulator, 2)
    assert second["body"]["messages"][-1]["content"][0]["toolResult"]["status"] == "error"
    assert texts(chunks) == f"Error from local_time: {error['errorText']}"


def _nested(depth: int) -> str:
    return '{"text": ' + "[" * depth + "1" + "]" * depth + "}"


@pytest.mark.parametrize("server_kind", ["wsgi", "asgi"])
@pytest.mark.parametrize("raw", [
    '{"text": NaN}', '{"text": -Infinity}', '{"text": "a\\u0000b"}', '{"text": "half \\ud800 a pair"}',
    _nested(70), _nested(600), _nested(1200),
], ids=["nan", "infinity", "nul", "lone-surrogate", "70-deep", "600-deep", "1200-deep"])
def test_tool_input_no_browser_or_database_takes_is_an_error_the_model_sees(
    bedrock_emulator: Any, server_kind: str, raw: str
) -> None:
    """The model's input is JSON to Python but not to a browser (NaN), to PostgreSQL (NUL, half a
    surrogate pair), or to what signs it (600 levels: a RecursionError ended the stream as failed):
    the model hears of it, the stream goes on and the row settles."""
    status, body = post(server_kind, "/unsendable/", chat(f"[[emulator tool=echo tool_raw='{raw}']] say it"))
    assert status == 200, body
    chunks = ui_chunks(body)
    [error] = of(chunks, "tool-output-error")
    assert error["errorText"].startswith("The tool input is not valid JSON"), error
    assert not of(chunks, "error") and chunks[-1]["messageMetadata"]["finishReason"] == "stop"
    assert row().status == "completed"
    def not_json(name: str) -> None:
        pytest.fail(f"{name} in the stream: no browser parses it")

    for event in body.split("\n\n"):  # JSON a browser parses: no NaN or Infinity constants
        if event.startswith("data: {"):
            json.loads(event[len("data: "):], parse_constant=not_json)


@pytest.mark.parametrize("server_kind", ["wsgi", "asgi"])
@pytest.mark.parametrize("kind", ["nan", "infinity", "nul", "deep"])
def test_a_tool_output_that_cannot_be_sent_is_an_error_the_model_sees(
    bedrock_emulator: Any, server_kind: str, kind: str
) -> None:
    status, body = post(server_kind, "/unsendable/", chat(f'[[emulator tool=unsendable tool_input={{"kind": "{kind}"}}]] go'))
    assert status == 200, body
    chunks = ui_chunks(body)
    [error] = of(chunks, "tool-output-error")
    assert error["errorText"].startswith("The tool 'unsendable' returned a value that cannot be sent"), error
    assert not of(chunks, "error") and row().status == "completed"


def test_an_approval_rule_reads_the_input_as_the_model_sent_it(bedrock_emulator: Any) -> None:
    """As the README says: JSON values, before the tool's types apply (the enum's value, not the enum)."""
    RULE_INPUTS.clear()
    status, body = post("wsgi", "/files/", chat('[[emulator tool=files tool_input={"action": "delete"}]] go'))
    assert status == 200, body
    assert RULE_INPUTS == [{"action": "delete"}] and of(ui_chunks(body), "tool-approval-request")


@pytest.mark.parametrize("server_kind", ["wsgi", "asgi"])
def test_no_database_connection_is_held_into_the_turn_after_a_tool(bedrock_emulator: Any, server_kind: str) -> None:
    """A ``tool_called`` receiver that queries (an audit log) opened a connection the next model turn
    then held for its whole length (found by attacking it)."""
    from django.db import connection, connections

    from django_bedrock_stream.models import Completion
    from django_bedrock_stream.signals import token_received

    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip("an in-memory SQLite connection is never closed (it would lose the database)")
    held: list[bool] = []

    def audit(sender: Any, **kwargs: Any) -> None:
        Completion.objects.count()

    def probe(sender: Any, **kwargs: Any) -> None:
        held.append(connections["default"].connection is not None)

    tool_called.connect(audit, dispatch_uid="audit")
    token_received.connect(probe, dispatch_uid="probe")
    try:
        prompt = '[[emulator tool=calculator tool_input={"expression": "2+3"} text="Let me add."]] 2+3?'
        status, body = post(server_kind, "/converse/", chat(prompt))
    finally:
        tool_called.disconnect(dispatch_uid="audit")
        token_received.disconnect(dispatch_uid="probe")
    assert status == 200 and "Result of calculator" in body
    assert held and not any(held), held
