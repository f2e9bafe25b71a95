"""tools.py: schemas from Python functions, validation, concurrent execution with timeouts and
cancellation, each family's request shapes (checked by botocore and against recorded requests), and the
signatures that make client-side tool results and approvals verifiable without server state."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import inspect
import json
import logging
import threading
import time
from typing import Annotated, Any, Literal, Optional
from unittest import mock

import boto3
import pytest
from asgiref.sync import sync_to_async
from botocore.validate import ParamValidator
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest
from django.test import RequestFactory, override_settings
from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic needs it (not typing's) before Python 3.12

from django_bedrock_stream.families import AnthropicMessagesFamily, ConverseFamily, NovaFamily
from django_bedrock_stream.parts import ToolCall, ToolResult
from django_bedrock_stream.streams import BedrockStream
from django_bedrock_stream.tools import (
    TOOL_FORMATS,
    Tool,
    ToolCallAltered,
    ToolCallExpired,
    ToolCallForged,
    ToolCallNotYours,
    ToolCallRefused,
    ToolError,
    ToolInputError,
    ToolOutputError,
    anthropic_call_blocks,
    anthropic_request_tools,
    anthropic_result_blocks,
    client_tool_result,
    converse_call_blocks,
    converse_request_tools,
    converse_result_blocks,
    denied_result,
    nova_request_tools,
    parse_docstring,
    request_binding,
    run_tools,
    run_tools_sync,
    sign_call,
    tool,
    tools_by_name,
    verify_call,
)

from .recorded import RECORDED_DIR, boto3_events, load_index

# -- schema derivation -------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(TypedDict):
    x: int
    y: int


@dataclasses.dataclass
class Box:
    width: float
    height: float = 1.0


class Place(BaseModel):
    city: str
    country: str = "US"


class Node(BaseModel):
    name: str
    children: list[Node] = []


def with_param(hint: Any, default: Any = inspect.Parameter.empty) -> Tool:
    """A tool of one parameter ``x`` with this hint (and default)."""

    def f(x: Any) -> Any:
        return x

    f.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("x", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=hint, default=default)]
    )
    f.__annotations__ = {"x": hint}
    return tool(f)


POINT = {
    "type": "object",
    "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
    "required": ["x", "y"],
    "additionalProperties": False,
}

SCHEMAS = [
    (str, inspect.Parameter.empty, {"type": "string"}),
    (int, inspect.Parameter.empty, {"type": "integer"}),
    (float, inspect.Parameter.empty, {"type": "number"}),
    (bool, inspect.Parameter.empty, {"type": "boolean"}),
    (list[str], inspect.Parameter.empty, {"type": "array", "items": {"type": "string"}}),
    (dict[str, int], inspect.Parameter.empty, {"type": "object", "additionalProperties": {"type": "integer"}}),
    (Optional[int], None, {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}),  # noqa: UP045
    (int | None, None, {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}),
    (Literal["a", "b"], "a", {"type": "string", "enum": ["a", "b"], "default": "a"}),
    (Color, inspect.Parameter.empty, {"type": "string", "enum": ["red", "blue"], "title": "Color"}),
    (int, 5, {"type": "integer", "default": 5}),
    (Point, inspect.Parameter.empty, {**POINT, "title": "Point"}),
    (list[Point], inspect.Parameter.empty, {"type": "array", "items": {**POINT, "title": "Point"}}),
    (
        Place,
        inspect.Parameter.empty,
        {
            "type": "object",
            "title": "Place",
            "properties": {"city": {"type": "string"}, "country": {"type": "string", "default": "US"}},
            "required": ["city"],
        },
    ),
    (
        Box,
        inspect.Parameter.empty,
        {
            "type": "object",
            "title": "Box",
            "properties": {"width": {"type": "number"}, "height": {"type": "number", "default": 1.0}},
            "required": ["width"],
            "additionalProperties": False,
        },
    ),
    (Annotated[int, Field(ge=1, le=10)], inspect.Parameter.empty, {"type": "integer", "minimum": 1, "maximum": 10}),
    (datetime.date, inspect.Parameter.empty, {"type": "string", "format": "date"}),
    (Any, inspect.Parameter.empty, {}),
]


@pytest.mark.parametrize(("hint", "default", "expected"), SCHEMAS, ids=[repr(case[0]) for case in SCHEMAS])
def test_schema_from_type_hints(hint: Any, default: Any, expected: dict) -> None:
    schema = with_param(hint, default).input_schema
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["properties"] == {"x": expected}
    assert schema.get("required", []) == ([] if default is not inspect.Parameter.empty else ["x"])
    # Inlined: models follow references poorly; no pydantic titles on the schema or its fields.
    assert "$defs" not in json.dumps(schema) and "$ref" not in json.dumps(schema)
    assert "title" not in schema


@pytest.mark.parametrize(
    ("hint", "given", "expected"),
    [
        (Color, "red", Color.RED),
        (Box, {"width": 2}, Box(2.0, 1.0)),
        (Place, {"city": "Paris"}, Place(city="Paris")),
        (datetime.date, "2024-02-29", datetime.date(2024, 2, 29)),
        (int, "3", 3),  # the model's lax JSON is accepted where it is unambiguous
        (list[Point], [{"x": 1, "y": 2}], [{"x": 1, "y": 2}]),
    ],
)
def test_validated_input_is_converted_to_the_annotated_types(hint: Any, given: Any, expected: Any) -> None:
    assert with_param(hint).validate_input({"x": given}) == {"x": expected}


def test_recursive_models_keep_their_references() -> None:
    schema = with_param(Node).input_schema
    assert schema["properties"]["x"] == {"$ref": "#/$defs/Node"}
    assert set(schema["$defs"]) == {"Node"}
    assert with_param(Node).validate_input({"x": {"name": "a", "children": [{"name": "b"}]}}) == {
        "x": Node(name="a", children=[Node(name="b")])
    }


def test_docstring_gives_the_description_and_parameter_descriptions() -> None:
    @tool
    def get_weather(location: str, unit: Literal["C", "F"] = "C", days: Annotated[int, Field(description="Days ahead")] = 0) -> str:
        """Get the weather for a location.

        Uses the national service; results are cached.

        Args:
            location (str): The name of the city,
                with its country when ambiguous.
            unit: The temperature unit.
            days: Ignored: the Annotated description wins.

        Returns:
            A sentence.
        """
        return f"Sunny in {location}"

    assert get_weather.name == "get_weather"
    assert get_weather.description == "Get the weather for a location."
    props = get_weather.input_schema["properties"]
    assert props["location"] == {"type": "string", "description": "The name of the city, with its country when ambiguous."}
    assert props["unit"]["description"] == "The temperature unit."
    assert props["days"]["description"] == "Days ahead"
    assert get_weather(location="Oslo") == "Sunny in Oslo"  # still the function


@pytest.mark.parametrize(
    "doc",
    [
        # Google
        """Add two numbers
        written over two lines.

        Args:
            a: The first.
            b (int, optional): The second,
                continued.

        Raises:
            ValueError: never.
        """,
        # numpy
        """Add two numbers
        written over two lines.

        Parameters
        ----------
        a : int
            The first.
        b : int, optional
            The second,
            continued.

        Returns
        -------
        int
        """,
        # reST
        """Add two numbers
        written over two lines.

        :param a: The first.
        :param int b: The second,
            continued.
        :returns: the sum.
        """,
    ],
    ids=["google", "numpy", "rest"],
)
def test_parse_docstring_styles(doc: str) -> None:
    parsed = parse_docstring(doc)
    assert parsed.description == "Add two numbers written over two lines."
    assert parsed.params == {"a": "The first.", "b": "The second, continued."}


def test_parse_docstring_without_sections_and_empty() -> None:
    assert parse_docstring("One line.\n\nSecond paragraph.") == ("One line.", {})
    assert parse_docstring(None) == ("", {})
    assert parse_docstring(":param x: only a field") == ("", {"x": "only a field"})


def test_decorator_overrides_and_request_parameter() -> None:
    seen: list[Any] = []

    @tool(name="lookup-user", description="Look a user up.", needs_approval=True)
    def lookup(query: str, request: HttpRequest) -> str:
        """Ignored description."""
        seen.append(request)
        return query

    assert (lookup.name, lookup.description, lookup.needs_approval) == ("lookup-user", "Look a user up.", True)
    assert list(lookup.input_schema["properties"]) == ["query"]  # the request is no input
    request = RequestFactory().get("/")
    runs = run_tools_sync([ToolCall("c1", "lookup-user", {"query": "ann"})], [lookup], request=request)
    assert runs[0].result == ToolResult("c1", "lookup-user", output="ann")
    assert seen == [request]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: tool(name="has space")(lambda: None), "Invalid tool name"),
        (lambda: tool(name="x" * 65)(lambda: None), "Invalid tool name"),
        (lambda: tool(lambda *args: None), "passable by keyword"),
        (lambda: tool(lambda **kwargs: None), "passable by keyword"),
        (lambda: Tool("ok", "", {"type": "string"}), "type"),
        (lambda: Tool("ok", "", {"type": "object", "default": object()}), "not JSON"),
        (lambda: Tool("ok", "", {"type": "object"}, needs_approval="yes"), "needs_approval"),  # type: ignore[arg-type]
        (lambda: tools_by_name([Tool("a", "", {"type": "object"}), Tool("a", "", {"type": "object"})]), "Two tools"),
    ],
)
def test_declaration_mistakes_are_refused_at_once(make: Any, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        make()


def test_bedrock_name_rule_is_the_service_models() -> None:
    shape = _service_model().shape_for("ToolName")
    assert (shape.metadata["min"], shape.metadata["max"], shape.metadata["pattern"]) == (1, 64, "[a-zA-Z0-9_-]+")
    Tool("a-Z_0" * 12 + "abcd", "", {"type": "object"})  # 64 characters


# -- hand-written tools and their schemas --------------------------------------------------------------

WEATHER = Tool(
    "get_weather",
    "Get the weather.",
    {
        "type": "object",
        "properties": {
            "location": {"type": "string", "minLength": 1},
            "unit": {"enum": ["C", "F"]},
            "days": {"type": "integer", "minimum": 0, "maximum": 7},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
            "at": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "point": {"$ref": "#/$defs/point"},
        },
        "required": ["location"],
        "additionalProperties": False,
        "$defs": {"point": {"type": "object", "required": ["x"], "properties": {"x": {"type": "number"}}}},
    },
)


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({}, "location: required"),
        ({"location": 3}, "location: expected string"),
        ({"location": ""}, "location: shorter than 1"),
        ({"location": "a", "unit": "K"}, "unit: must be one of"),
        ({"location": "a", "days": 8}, "days: more than 7"),
        ({"location": "a", "days": True}, "days: expected integer"),
        ({"location": "a", "tags": ["x", 1]}, "tags[1]: expected string"),
        ({"location": "a", "tags": ["x", "y", "z"]}, "tags: more than 2 items"),
        ({"location": "a", "at": 1}, "at: matches none"),
        ({"location": "a", "point": {}}, "point.x: required"),
        ({"location": "a", "city": "b"}, "city: unknown key"),
        ([1], "must be a JSON object"),
    ],
)
def test_hand_written_schema_is_enforced(given: Any, problem: str) -> None:
    with pytest.raises(ToolInputError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        WEATHER.validate_input(given)


def test_hand_written_schema_accepts_valid_input() -> None:
    given = {"location": "Oslo", "unit": "C", "days": 2.0, "tags": ["a"], "at": None, "point": {"x": 1.5}}
    assert WEATHER.validate_input(given) == given


def test_hand_written_execute_gets_the_input_and_optionally_the_request() -> None:
    plain = Tool("plain", "", {"type": "object"}, execute=lambda input: sorted(input))
    with_request = Tool("req", "", {"type": "object"}, execute=lambda input, request=None: request.method)
    request = RequestFactory().post("/")
    runs = run_tools_sync(
        [ToolCall("1", "plain", {"b": 1, "a": 2}), ToolCall("2", "req", {})], [plain, with_request], request=request
    )
    assert [run.result.output for run in runs] == [["a", "b"], "POST"]


# -- running tools -----------------------------------------------------------------------------------


async def test_invalid_calls_become_error_results_and_the_tool_does_not_run() -> None:
    ran: list[Any] = []

    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        ran.append((a, b))
        return a + b

    calls = [
        ToolCall("1", "add", {"a": "x", "b": 2}),
        ToolCall("2", "add", {"a": 1}),
        ToolCall("3", "add", {"a": 1, "b": 2, "c": 3}),
        ToolCall("4", "add", '{"a": 1,', error="The tool input is not valid JSON: Expecting property name"),
        ToolCall("5", "subtract", {"a": 1, "b": 2}),
        ToolCall("6", "add", {"a": 1, "b": 2}),
    ]
    runs = await run_tools(calls, [add])
    assert [run.status for run in runs] == ["invalid"] * 5 + ["success"]
    assert [run.result.id for run in runs] == ["1", "2", "3", "4", "5", "6"]
    errors = [run.result.error for run in runs]
    assert errors[0] == "Invalid input for tool 'add': a: Input should be a valid integer, unable to parse string as an integer"
    assert errors[1] == "Invalid input for tool 'add': b: Field required"
    assert errors[2] == "Invalid input for tool 'add': c: Extra inputs are not permitted"
    assert errors[3].startswith("The tool input is not valid JSON")
    assert errors[4] == "There is no tool named 'subtract' (tools offered: add)."
    assert runs[5].result == ToolResult("6", "add", output=3)
    assert ran == [(1, 2)]


def meeting_tools(meeting: list[threading.Barrier]) -> tuple[Tool, Tool]:
    """A sync and an async tool that each wait (up to 5 s) at ``meeting[0]`` until every call is
    running, then take 0.3 s: only calls that run side by side meet (one after another, the first
    waits in vain and fails), so concurrency is shown without timing anything."""

    @tool
    def meet_sync(n: int = 0) -> int:
        """Meet the others in a thread."""
        meeting[0].wait()
        time.sleep(0.3)
        return n

    @tool
    async def meet_async(n: int = 0) -> int:
        """Meet the others without blocking the loop."""
        await asyncio.to_thread(meeting[0].wait)
        await asyncio.sleep(0.3)
        return n

    return meet_sync, meet_async


async def test_calls_run_concurrently_sync_off_the_loop_and_async_on_it() -> None:
    meeting = [threading.Barrier(2, timeout=5)]
    meet_sync, meet_async = meeting_tools(meeting)
    runs = await run_tools([ToolCall("a", "meet_sync", {"n": 1}), ToolCall("b", "meet_sync", {"n": 2})], [meet_sync])
    assert [run.result.output for run in runs] == [1, 2]  # the two sync tools ran side by side

    meeting[0] = threading.Barrier(4, timeout=5)
    calls = [ToolCall(str(n), name, {"n": n}) for n, name in enumerate(["meet_sync", "meet_async"] * 2)]
    runs = await run_tools(calls, [meet_sync, meet_async])
    assert [run.result.output for run in runs] == [0, 1, 2, 3]
    assert all(run.duration >= 0.3 for run in runs)


async def test_sync_tools_run_on_the_tool_pool_never_the_thread_sensitive_thread() -> None:
    threads: list[threading.Thread] = []

    @tool
    def where() -> str:
        """Which thread."""
        threads.append(threading.current_thread())
        return "ok"

    thread_sensitive = await sync_to_async(threading.current_thread, thread_sensitive=True)()
    await run_tools([ToolCall("1", "where", {}), ToolCall("2", "where", {})], [where])
    assert len(threads) == 2
    for thread in threads:
        assert thread is not thread_sensitive and thread is not threading.current_thread()
        assert thread.name.startswith("bedrock-tool")


def test_sync_flavour_runs_sync_and_async_tools_concurrently_off_the_calling_thread() -> None:
    threads: list[threading.Thread] = []

    @tool
    def slow_sync() -> str:
        """Sleep."""
        threads.append(threading.current_thread())
        meeting.wait()
        return "sync"

    @tool
    async def slow_async() -> str:
        """Sleep."""
        await asyncio.to_thread(meeting.wait)
        return "async"

    meeting = threading.Barrier(2, timeout=5)  # met only by calls that run side by side
    runs = run_tools_sync([ToolCall("1", "slow_sync", {}), ToolCall("2", "slow_async", {})], [slow_sync, slow_async])
    assert [run.result.output for run in runs] == ["sync", "async"]
    assert threads[0] is not threading.current_thread() and threads[0].name.startswith("bedrock-tool")


async def test_timeouts_become_error_results(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()

    @tool
    async def hangs() -> None:
        """Never ends."""
        await asyncio.sleep(30)

    @tool
    def blocks() -> None:
        """Blocks its thread."""
        release.wait(10)

    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="django_bedrock_stream.tools"):
            runs = await run_tools([ToolCall("1", "hangs", {}), ToolCall("2", "blocks", {})], [hangs, blocks], timeout=0.2)
        assert time.monotonic() - started < 2
    finally:
        release.set()
    assert [run.status for run in runs] == ["timeout", "timeout"]
    assert runs[0].result.error == "The tool 'hangs' did not finish within 0.2 seconds."
    assert sum("did not finish" in record.getMessage() for record in caplog.records) == 2


async def test_timeout_defaults_to_the_setting() -> None:
    @tool
    async def hangs() -> None:
        """Never ends."""
        await asyncio.sleep(30)

    with override_settings(BEDROCK_STREAM={"TOOL_TIMEOUT": 0.1}):
        runs = await run_tools([ToolCall("1", "hangs", {})], [hangs])
    assert runs[0].status == "timeout"


async def test_exceptions_give_the_model_a_safe_message_and_the_log_the_traceback(caplog: pytest.LogCaptureFixture) -> None:
    @tool
    def leaky() -> None:
        """Fails with a secret in the message."""
        raise RuntimeError("could not connect to postgres://admin:hunter2@10.0.0.5/db")

    @tool
    async def leaky_async() -> None:
        """Same, async."""
        raise KeyError("hunter2")

    @tool
    def not_found(city: str) -> None:
        """Fails on purpose, for the model to read."""
        raise ToolError(f"No weather station in {city}.")

    with caplog.at_level(logging.WARNING, logger="django_bedrock_stream.tools"):
        runs = await run_tools(
            [ToolCall("1", "leaky", {}), ToolCall("2", "leaky_async", {}), ToolCall("3", "not_found", {"city": "Atlantis"})],
            [leaky, leaky_async, not_found],
        )
    assert [run.status for run in runs] == ["error"] * 3
    assert runs[0].result == ToolResult("1", "leaky", error="The tool 'leaky' failed with an internal error.")
    assert runs[1].result.error == "The tool 'leaky_async' failed with an internal error."
    assert runs[2].result.error == "No weather station in Atlantis."
    for run in runs:
        assert "hunter2" not in run.result.error and "Traceback" not in run.result.error
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 2 and all(record.exc_info for record in errors)
    assert "hunter2" in caplog.text and "Traceback" in caplog.text  # the traceback is in the log


async def test_cancelling_the_caller_cancels_running_async_tools() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @tool
    async def long_running() -> None:
        """Runs until cancelled."""
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    caller = asyncio.ensure_future(run_tools([ToolCall("1", "long_running", {})], [long_running]))
    await asyncio.wait_for(started.wait(), 5)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(cancelled.wait(), 1)


async def test_outputs_are_made_json_and_capped() -> None:
    @tool
    def structured() -> dict:
        """A dict of rich values."""
        return {"day": datetime.date(2024, 1, 2), "box": Box(1, 2), "place": Place(city="Oslo"), "color": Color.RED}

    @tool
    def big() -> str:
        """Too long."""
        return "x" * 200

    @tool
    def big_list() -> list[int]:
        """Too long as JSON."""
        return list(range(100))

    @tool
    def unsendable() -> object:
        """Not JSON."""
        return object()

    calls = [ToolCall(name, name, {}) for name in ("structured", "big", "big_list", "unsendable")]
    with override_settings(BEDROCK_STREAM={"TOOL_RESULT_MAX_CHARS": 120}):
        runs = await run_tools(calls, [structured, big, big_list, unsendable])
    assert runs[0].result.output == {
        "day": "2024-01-02",
        "box": {"width": 1, "height": 2},
        "place": {"city": "Oslo", "country": "US"},
        "color": "red",
    }
    assert runs[1].result.output == "x" * 120 + "\n[truncated: 200 characters, the limit is 120]"
    assert runs[2].result.output.startswith("[0, 1, 2") and runs[2].result.output.endswith("the limit is 120]")
    assert (runs[3].status, runs[3].result.error) == ("error", "The tool 'unsendable' returned a value that cannot be sent.")


async def test_client_side_tools_are_not_run_here() -> None:
    browser = Tool("local_time", "The browser's time.", {"type": "object"})
    assert browser.client_side and not browser.is_async
    with pytest.raises(ValueError, match="client-side"):
        await run_tools([ToolCall("1", "local_time", {})], [browser])


def test_needs_approval_constant_or_per_call() -> None:
    seen: list[Any] = []

    def rule(input: Any, request: HttpRequest | None) -> bool:
        seen.append((input, request))
        return input["amount"] > 100

    def broken(input: Any, request: HttpRequest | None) -> bool:
        raise RuntimeError("bug")

    schema = {"type": "object"}
    request = RequestFactory().get("/")
    assert Tool("a", "", schema, execute=print, needs_approval=True).requires_approval({}, request)
    assert not Tool("b", "", schema, execute=print).requires_approval({}, request)
    pay = Tool("pay", "", schema, execute=print, needs_approval=rule)
    assert pay.requires_approval({"amount": 500}, request) and not pay.requires_approval({"amount": 5}, request)
    assert seen[0] == ({"amount": 500}, request)
    assert Tool("c", "", schema, execute=print, needs_approval=broken).requires_approval({}, None)  # fails closed


def test_client_tool_results_are_checked_and_capped() -> None:
    browser = Tool(
        "local_time",
        "",
        {"type": "object"},
        output_schema={"type": "object", "properties": {"time": {"type": "string"}}, "required": ["time"]},
    )
    assert client_tool_result(browser, "c1", output={"time": "10:00"}) == ToolResult("c1", "local_time", output={"time": "10:00"})
    assert client_tool_result(browser, "c1", error="No clock") == ToolResult("c1", "local_time", error="No clock")
    with pytest.raises(ToolOutputError, match="time: required"):
        client_tool_result(browser, "c1", output={"hour": 10})
    with pytest.raises(ToolOutputError):
        client_tool_result(browser, "c1")
    with override_settings(BEDROCK_STREAM={"TOOL_RESULT_MAX_CHARS": 10}):
        assert client_tool_result(Tool("t", "", {"type": "object"}), "c", output="y" * 20).output.startswith("y" * 10 + "\n[truncated")
    assert denied_result(ToolCall("c2", "pay", {})) == ToolResult("c2", "pay", error="The user denied this tool call.")


# -- request shapes ----------------------------------------------------------------------------------


def _service_model() -> Any:
    return boto3.session.Session().client("bedrock-runtime", region_name="us-east-1").meta.service_model


def assert_valid(params: dict, shape: Any) -> None:
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()


def _declares_function_tools(body: dict) -> bool:
    """Tools declared by the caller (not Bedrock's own, like Nova's code interpreter ``systemTool``)."""
    declared = (body.get("toolConfig") or {}).get("tools") or body.get("tools") or []
    return bool(declared) and all("toolSpec" in item or "input_schema" in item for item in declared)


TOOL_ENTRIES = [entry for entry in load_index() if _declares_function_tools(entry["request_body"])]


@pytest.mark.skipif(not TOOL_ENTRIES, reason=f"recorded Bedrock captures not found at {RECORDED_DIR}")
@pytest.mark.parametrize("entry", TOOL_ENTRIES, ids=[entry["file"] for entry in TOOL_ENTRIES])
def test_tool_declarations_match_the_recorded_requests(entry: dict) -> None:
    body = entry["request_body"]
    if "toolConfig" in body:
        specs = [declared["toolSpec"] for declared in body["toolConfig"]["tools"]]
        tools = [Tool(spec["name"], spec["description"], spec["inputSchema"]["json"]) for spec in specs]
        build = nova_request_tools if entry["payload_family"] == "amazon-nova" else converse_request_tools
        assert build(tools) == {"toolConfig": body["toolConfig"]}
    else:
        tools = [Tool(spec["name"], spec["description"], spec["input_schema"]) for spec in body["tools"]]
        assert anthropic_request_tools(tools) == {"tools": body["tools"]}


def _recorded_calls(name: str, family: Any) -> list[ToolCall]:
    stream = BedrockStream(boto3_events(RECORDED_DIR / name), family.parse_event)
    "".join(stream)
    return stream.tool_calls


@pytest.mark.skipif(not TOOL_ENTRIES, reason=f"recorded Bedrock captures not found at {RECORDED_DIR}")
def test_a_recorded_tool_turn_continues_as_a_request_botocore_accepts_and_sends(bedrock_emulator: Any) -> None:
    entry = next(e for e in TOOL_ENTRIES if e["file"] == "converse_nova_micro_two_tool_uses.eventstream")
    calls = _recorded_calls(entry["file"], ConverseFamily())
    assert [(call.name, call.input) for call in calls] == [
        ("get_current_weather", {"location": "Seattle"}),
        ("get_current_weather", {"location": "San Francisco"}),
    ]

    @tool
    def get_current_weather(location: str) -> dict:
        """Get the current weather in a given location.

        Args:
            location: The name of the city
        """
        if location == "Seattle":
            return {"location": location, "sky": "rain", "celsius": 11.5}
        raise ToolError(f"No station in {location}.")

    results = [run.result for run in run_tools_sync(calls, [get_current_weather])]
    client = boto3.client("bedrock-runtime", endpoint_url=bedrock_emulator.url, region_name="us-east-1")
    params = {
        "modelId": entry["model_id"],
        "messages": [
            *entry["request_body"]["messages"],
            {"role": "assistant", "content": [{"text": "Let me check."}, *converse_call_blocks(calls)]},
            {"role": "user", "content": converse_result_blocks(results)},
        ],
        **converse_request_tools([get_current_weather], "get_current_weather"),
    }
    model = client.meta.service_model
    for operation in ("ConverseStream", "Converse"):
        assert_valid(params, model.operation_model(operation).input_shape)
    events = list(client.converse_stream(**params)["stream"])  # botocore validates and serializes it
    assert events and bedrock_emulator.requests[-1]["body"]["messages"] == json.loads(json.dumps(params["messages"]))
    assert params["messages"][-1]["content"] == [
        {"toolResult": {"toolUseId": calls[0].id, "content": [{"text": json.dumps({"location": "Seattle", "sky": "rain", "celsius": 11.5})}], "status": "success"}},
        {"toolResult": {"toolUseId": calls[1].id, "content": [{"text": "No station in San Francisco."}], "status": "error"}},
    ]


def test_converse_shapes_pass_botocore_validation_for_every_option() -> None:
    model = _service_model()
    tools = [WEATHER, with_param(Color)]
    calls = [ToolCall("tooluse_a1", "get_weather", {"location": "Oslo"}), ToolCall("tooluse_b2", "f", "{oops", error="bad")]
    results = [
        ToolResult("tooluse_a1", "get_weather", output={"sky": "clear"}),
        ToolResult("tooluse_b2", "f", error="bad"),
        ToolResult("tooluse_c3", "f", output=[1, 2]),
        ToolResult("tooluse_d4", "f", output=None),
        ToolResult("tooluse_e5", "f", output=""),
    ]
    for choice in ("auto", "any", "get_weather"):
        for content in ("text", "json"):
            for status in (True, False):
                params = {
                    "modelId": "m",
                    "messages": [
                        {"role": "user", "content": [{"text": "hi"}]},
                        {"role": "assistant", "content": converse_call_blocks(calls)},
                        {"role": "user", "content": converse_result_blocks(results, content=content, status=status)},
                    ],
                    **converse_request_tools(tools, choice),
                }
                assert_valid(params, model.operation_model("ConverseStream").input_shape)
    assert converse_call_blocks(calls)[1] == {"toolUse": {"toolUseId": "tooluse_b2", "name": "f", "input": {}}}
    assert converse_request_tools(tools)["toolConfig"].keys() == {"tools"}  # "auto" is the default: left out
    assert converse_request_tools(tools, "any")["toolConfig"]["toolChoice"] == {"any": {}}
    assert converse_request_tools(tools, "f")["toolConfig"]["toolChoice"] == {"tool": {"name": "f"}}
    assert converse_request_tools([with_param(int)])["toolConfig"]["tools"][0]["toolSpec"].keys() == {"name", "inputSchema"}
    assert converse_request_tools([]) == {} and anthropic_request_tools([]) == {}
    json_blocks = converse_result_blocks(results, content="json", status=False)
    assert [block["toolResult"]["content"] for block in json_blocks] == [
        [{"json": {"sky": "clear"}}],
        [{"text": "bad"}],
        [{"json": {"result": [1, 2]}}],
        [{"json": {"result": None}}],
        [{"json": {"result": ""}}],
    ]
    assert all("status" not in block["toolResult"] for block in json_blocks)
    assert [block["toolResult"]["content"] for block in converse_result_blocks(results)][2:] == [
        [{"text": "[1, 2]"}],
        [{"text": "null"}],
        [{"text": '""'}],  # never a blank text block
    ]
    with pytest.raises(ValueError, match="tool_choice"):
        converse_request_tools(tools, "missing")


@pytest.mark.skipif(not TOOL_ENTRIES, reason=f"recorded Bedrock captures not found at {RECORDED_DIR}")
def test_nova_shapes_are_converse_shapes() -> None:
    model = _service_model()
    calls = _recorded_calls("invoke_nova_micro_tool_use.eventstream", NovaFamily())
    assert [call.input for call in calls] == [{"location": "Seattle"}, {"location": "San Francisco"}]
    fragment = nova_request_tools([WEATHER], "any")
    assert_valid(fragment["toolConfig"], model.shape_for("ToolConfiguration"))
    results = [ToolResult(call.id, call.name, output={"ok": True}) for call in calls]
    for block in [*converse_call_blocks(calls), *converse_result_blocks(results)]:
        assert_valid(block, model.shape_for("ContentBlock"))
    assert TOOL_FORMATS["nova"].call_blocks is converse_call_blocks


@pytest.mark.skipif(not TOOL_ENTRIES, reason=f"recorded Bedrock captures not found at {RECORDED_DIR}")
def test_anthropic_shapes() -> None:
    calls = _recorded_calls("invoke_claude35_sonnet_messages_tool_use.eventstream", AnthropicMessagesFamily())
    assert [(call.name, call.input) for call in calls] == [
        ("get_current_weather", {"location": "Seattle"}),
        ("get_current_weather", {"location": "San Francisco"}),
    ]
    assert anthropic_call_blocks(calls) == [
        {"type": "tool_use", "id": calls[0].id, "name": "get_current_weather", "input": {"location": "Seattle"}},
        {"type": "tool_use", "id": calls[1].id, "name": "get_current_weather", "input": {"location": "San Francisco"}},
    ]
    results = [ToolResult(calls[0].id, "get_current_weather", output={"celsius": 11}), ToolResult(calls[1].id, "x", error="down")]
    assert anthropic_result_blocks(results) == [
        {"type": "tool_result", "tool_use_id": calls[0].id, "content": '{"celsius": 11}'},
        {"type": "tool_result", "tool_use_id": calls[1].id, "content": "down", "is_error": True},
    ]
    assert anthropic_request_tools([WEATHER], "any")["tool_choice"] == {"type": "any"}
    assert anthropic_request_tools([WEATHER], "get_weather")["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert "tool_choice" not in anthropic_request_tools([WEATHER])
    assert TOOL_FORMATS["anthropic-messages"].request([WEATHER], "auto") == anthropic_request_tools([WEATHER])
    assert set(TOOL_FORMATS) == {"converse", "nova", "anthropic-messages"}


# -- signatures --------------------------------------------------------------------------------------


@dataclasses.dataclass
class FakeUser:
    pk: int
    is_authenticated: bool = True


@dataclasses.dataclass
class FakeSession:
    session_key: str | None


def request_for(user: Any = None, session: str | None = None) -> HttpRequest:
    request = RequestFactory().post("/")
    request.user = user or AnonymousUser()
    request.session = FakeSession(session)  # type: ignore[assignment]
    return request


CALL = ToolCall("tooluse_abc", "pay", {"to": "bob", "amount": 12.0, "memo": {"a": [1, 2.5]}})


def test_request_binding() -> None:
    assert request_binding(request_for(FakeUser(7))) == "user:7"
    assert request_binding(request_for(session="s3cr3t")) == "session:s3cr3t"
    assert request_binding(request_for()) == "anonymous"
    assert request_binding(None) == "anonymous"


@pytest.mark.parametrize("purpose", ["call", "approval"])
def test_signed_call_round_trip(purpose: Any) -> None:
    alice = request_for(FakeUser(1))
    token = sign_call(CALL, alice, purpose=purpose)
    assert "bob" not in token and "user:1" not in token  # only keyed digests of the input and the user
    # What comes back went through JavaScript: 12.0 became 12, keys may be reordered.
    echoed = json.loads(json.dumps({"memo": {"a": [1, 2.5]}, "amount": 12, "to": "bob"}))
    assert verify_call(token, name="pay", input=echoed, request=alice, purpose=purpose, call_id="tooluse_abc") == "tooluse_abc"


def test_session_and_explicit_bindings() -> None:
    token = sign_call(CALL, request_for(session="k1"))
    assert verify_call(token, name="pay", input=CALL.input, request=request_for(session="k1")) == CALL.id
    with pytest.raises(ToolCallNotYours):
        verify_call(token, name="pay", input=CALL.input, request=request_for(session="k2"))
    token = sign_call(CALL, binding="chat:42")
    assert verify_call(token, name="pay", input=CALL.input, binding="chat:42") == CALL.id


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        (lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"), ToolCallForged),
        (lambda token: "tooluse_abc", ToolCallForged),
        (lambda token: "", ToolCallForged),
        (lambda token: None, ToolCallForged),
        (lambda token: token.replace(token.split(":")[0], token.split(":")[0][::-1]), ToolCallForged),
    ],
    ids=["signature", "bare-id", "empty", "missing", "payload"],
)
def test_forged_tokens_are_refused(tamper: Any, error: type) -> None:
    alice = request_for(FakeUser(1))
    with pytest.raises(error):
        verify_call(tamper(sign_call(CALL, alice)), name="pay", input=CALL.input, request=alice)


def test_a_token_signed_with_another_secret_is_forged() -> None:
    alice = request_for(FakeUser(1))
    with override_settings(SECRET_KEY="another-site-" + "x" * 50):
        token = sign_call(CALL, alice)
    with pytest.raises(ToolCallForged):
        verify_call(token, name="pay", input=CALL.input, request=alice)


def test_a_call_id_is_no_approval_and_an_approval_no_call_id() -> None:
    alice = request_for(FakeUser(1))
    with pytest.raises(ToolCallForged):
        verify_call(sign_call(CALL, alice), name="pay", input=CALL.input, request=alice, purpose="approval")
    with pytest.raises(ToolCallForged):
        verify_call(sign_call(CALL, alice, purpose="approval"), name="pay", input=CALL.input, request=alice)


def test_another_users_call_is_refused() -> None:
    token = sign_call(CALL, request_for(FakeUser(1)))
    for other in (request_for(FakeUser(2)), request_for(session="k"), request_for(), None):
        with pytest.raises(ToolCallNotYours):
            verify_call(token, name="pay", input=CALL.input, request=other)


@pytest.mark.parametrize(
    "changes",
    [
        {"input": {"to": "mallory", "amount": 12, "memo": {"a": [1, 2.5]}}},
        {"input": {"to": "bob", "amount": 1200, "memo": {"a": [1, 2.5]}}},
        {"input": {"to": "bob", "amount": 12, "memo": {"a": [1, 2.5]}, "extra": True}},
        {"input": {"to": "bob", "amount": 12}},
        {"name": "refund"},
        {"call_id": "tooluse_other"},
    ],
)
def test_altered_calls_are_refused(changes: dict) -> None:
    alice = request_for(FakeUser(1))
    token = sign_call(CALL, alice)
    claim = {"name": "pay", "input": CALL.input, "call_id": CALL.id, **changes}
    with pytest.raises(ToolCallAltered):
        verify_call(token, request=alice, **claim)


def test_expired_tokens_are_refused() -> None:
    alice = request_for(FakeUser(1))
    with mock.patch("django.core.signing.time.time", return_value=time.time() - 3600):
        token = sign_call(CALL, alice)
    assert verify_call(token, name="pay", input=CALL.input, request=alice) == CALL.id  # default: a day
    with pytest.raises(ToolCallExpired):
        verify_call(token, name="pay", input=CALL.input, request=alice, max_age=60)
    with override_settings(BEDROCK_STREAM={"TOOL_CALL_MAX_AGE": 60}), pytest.raises(ToolCallExpired):
        verify_call(token, name="pay", input=CALL.input, request=alice)


def test_refusals_are_suspicious_operations() -> None:
    for error in (ToolCallForged, ToolCallExpired, ToolCallNotYours, ToolCallAltered):
        assert issubclass(error, ToolCallRefused) and issubclass(error, SuspiciousOperation)


async def test_a_lone_surrogate_in_an_output_cannot_break_the_next_request() -> None:
    """Half an emoji cannot be encoded as UTF-8 (Anthropic's and Nova's request bodies are UTF-8 JSON)."""

    @tool
    def halves() -> dict:
        """Returns broken text."""
        return {"pair": "\ud83d\ude00", "lone": "a\ud83d", "nested": ["\ude00b"]}

    [run] = await run_tools([ToolCall("t1", "halves", {})], [halves])
    assert run.result.output == {"pair": "\U0001F600", "lone": "a\ufffd", "nested": ["\ufffdb"]}
    json.dumps(run.result.output, ensure_ascii=False).encode("utf-8")

