"""A run with tools: after each model turn that asks for tools, run the server's tools and continue the
same stream with the next turn, up to ``max_steps`` turns.

The view builds one :class:`ToolLoop` per request and hands it to the stream as its continuation
(:class:`~.streams.Step`). Calls to client-side tools (no ``execute``) and calls that need the user's
approval end the stream instead: the browser answers them and posts the conversation back, with the
call ids and approval ids this loop signed (:func:`~.tools.sign_call`), so nothing is kept on the
server between the two requests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest

from . import parts as p
from .families import BedrockFamily
from .runner import asend_all, release_connections
from .signals import tool_called
from .streams import BedrockStream, Step
from .tools import (
    TOOL_FORMATS,
    Tool,
    ToolChoice,
    ToolInputError,
    ToolRun,
    run_tools,
    run_tools_sync,
    sign_call,
    tools_by_name,
)


class ToolLoop:
    """The server side of one request's tool run (see the module docstring)."""

    #: Called (sync) with the request body of each further model turn before it is sent; may raise
    #: a :class:`~.exceptions.BedrockStreamError` to end the stream there (a budget's reservation).
    before_step: Callable[[dict[str, Any]], None] | None = None

    def __init__(
        self,
        *,
        sender: type,
        request: HttpRequest,
        completion: Any,
        family: BedrockFamily,
        model_id: str,
        body: dict[str, Any],
        tools: Sequence[Tool],
        max_steps: int,
    ) -> None:
        self.sender, self.request, self.completion = sender, request, completion
        self.family, self.model_id, self.body = family, model_id, body
        self.tools = tools_by_name(tools)
        self.max_steps = max_steps
        self.format = TOOL_FORMATS[family.name]

    @staticmethod
    def request_fragment(family: BedrockFamily, tools: Sequence[Tool], tool_choice: ToolChoice) -> dict[str, Any]:
        """What the family's request body needs to offer ``tools`` (``toolConfig`` / ``tools``)."""
        return TOOL_FORMATS[family.name].request(tools, tool_choice)

    # -- hooks of the stream ------------------------------------------------------------------------
    def prepare_call(self, call: p.ToolCall) -> p.ToolCall:
        """Sign each call as it goes out (bound to this user, the tool and the input): the browser
        sends calls back in the conversation, with its answers to client-side ones, and only calls
        this site made are accepted. A client-side call whose input breaks the tool's schema is an
        error (the browser does not run it, the model is told), as a server tool's would be."""
        tool = self.tools.get(call.name)
        if call.error or call.provider_executed or tool is None:
            return call
        if tool.client_side:
            try:
                tool.validate_input(call.input)
            except ToolInputError as err:
                return dataclasses.replace(call, error=str(err))
        return dataclasses.replace(call, signature=sign_call(call, self.request))

    def next(self, stream: BedrockStream) -> Step | None:
        """After a model turn (WSGI): run its server tools and open the next turn, or end the stream."""
        plan = self._plan(stream)
        if plan is None:
            return None
        to_run, approvals, waits = plan
        runs = run_tools_sync(to_run, self.tools, request=self.request) if to_run else []
        for run in runs:
            tool_called.send_robust(self.sender, **self.record(run, stream.step))
        release_connections()  # what tool_called's receivers opened: not held for the next turn
        step = Step(parts=[*(run.result for run in runs), *approvals])
        if not waits:
            body = self._continue(stream, runs)
            if self.before_step is not None:
                self.before_step(body)
            step.source = self.family.open(self.model_id, body)
        return step

    async def anext(self, stream: BedrockStream) -> Step | None:
        """After a model turn (ASGI); a client that leaves cancels the tools still running."""
        plan = self._plan(stream)
        if plan is None:
            return None
        to_run, approvals, waits = plan
        runs = await run_tools(to_run, self.tools, request=self.request) if to_run else []
        sends = [(tool_called, self.record(run, stream.step)) for run in runs]
        if sends:
            await asend_all(sends, self.sender, then=release_connections)
        step = Step(parts=[*(run.result for run in runs), *approvals])
        if not waits:
            body = self._continue(stream, runs)
            if self.before_step is not None:
                await sync_to_async(self.before_step)(body)
            step.source = await self.family.aopen(self.model_id, body)
        return step

    # -- the decision -------------------------------------------------------------------------------
    def _plan(self, stream: BedrockStream) -> tuple[list[p.ToolCall], list[p.Part], bool] | None:
        """(the calls to run here, approval requests, whether the browser must answer before the
        model can go on), or None when the turn asked for no tool, or the run has used its
        ``max_steps`` turns. A call to a client-side tool needs no part of its own: it went out,
        signed, as it arrived. A tool Bedrock ran itself (its result came in the turn) is not ours."""
        calls = _ours(stream.step_tool_calls)
        if stream.stop_reason != "tool_use" or not calls or stream.step + 1 >= self.max_steps:
            return None
        to_run: list[p.ToolCall] = []
        approvals: list[p.Part] = []
        waits = False
        for call in calls:
            tool = self.tools.get(call.name)
            if tool is not None and tool.client_side and not call.error:
                waits = True
            elif tool is not None and not call.error and tool.requires_approval(call.input, self.request):
                approval = sign_call(call, self.request, purpose="approval")
                approvals.append(p.ToolApprovalRequest(approval_id=approval, call_id=call.id))
                waits = True
            else:
                to_run.append(call)  # unknown tools and bad input become error results run_tools makes
        return to_run, approvals, waits

    def _continue(self, stream: BedrockStream, runs: list[ToolRun]) -> dict[str, Any]:
        """The request body of the next turn: the conversation so far, the model's turn (its text,
        reasoning with signatures, tool calls) and a user turn with the tool results."""
        results = [run.result for run in runs]
        body = dict(self.body)
        assistant: list[dict[str, Any]] = self.family.assistant_blocks(
            stream.step_text, stream.step_reasoning_blocks
        ) + self.format.call_blocks(_ours(stream.step_tool_calls))
        body["messages"] = [
            *body["messages"],
            {"role": "assistant", "content": assistant},
            {"role": "user", "content": self.format.result_blocks(results)},
        ]
        self.body = body
        return body

    def record(self, run: ToolRun, step: int) -> dict[str, Any]:
        """Store the run on the completion (``parts["tool_runs"]``); the ``tool_called`` kwargs."""
        result = run.result
        entry = {
            "id": run.call.id,
            "name": run.call.name,
            "input": run.call.input,
            "output": result.output,
            "error": result.error,
            "status": run.status,
            "duration": round(run.duration, 3),
            "step": step,
        }
        self.completion.parts.setdefault("tool_runs", []).append(entry)
        return {
            "request": self.request,
            "completion": self.completion,
            "tool_name": run.call.name,
            "input": run.call.input,
            "output": result.output,
            "error": result.error,
            "duration": run.duration,
        }


def _ours(calls: list[p.ToolCall]) -> list[p.ToolCall]:
    """The calls this loop answers: not those Bedrock ran itself (Nova 2's ``nova_code_interpreter``),
    which are left out of the next turn too (a ``toolUse`` there would need a result from us)."""
    return [call for call in calls if not call.provider_executed]
