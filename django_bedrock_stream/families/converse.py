"""The model-agnostic Converse API (``converse_stream``): its own call and event shapes."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..options import ConverseOptions, check_converse_body
from ..parts import Part, ReasoningDelta, Source, ToolResult
from ..prompts import _converse_reasoning, build_converse_messages, extract_system
from .base import BedrockFamily, ContentBlocks, Delta, Message, complete_reasoning, guardrail_trace


class ConverseEvents:
    """Parses Converse's event shapes, which Nova's native invoke format shares: one per stream."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = ContentBlocks()
        self._stop_reason: str | None = None
        self._reset_server_tools()

    def _reset_server_tools(self) -> None:
        #: Bedrock's own tools (``server_tool_use``, e.g. Nova 2's ``nova_code_interpreter``): the
        #: calls' names by id, and the result blocks Bedrock streams for them, by block index.
        self._server_calls: dict[str, str] = {}
        self._server_results: dict[int, tuple[str, str, list[Mapping[str, Any]]]] = {}

    #: Whether the request carries blobs as bytes (boto3's ``converse_stream``) or base64 text (a
    #: JSON invoke body, Nova's native format).
    binary_blobs = True

    def assistant_blocks(self, text: str, reasoning: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
        blocks = [_converse_reasoning(block, self.binary_blobs, 0) for block in complete_reasoning(reasoning)]
        return [*blocks, {"text": text}] if text.strip() else blocks

    def converse_event(self, event: Mapping[str, Any]) -> Delta | None:
        if "contentBlockDelta" in event:
            body = event["contentBlockDelta"]
            index = body.get("contentBlockIndex") or 0
            delta = body.get("delta") or {}
            if "text" in delta:
                return Delta(delta["text"] or "", index=index)
            return Delta(parts=self._block_parts(index, delta))
        if "contentBlockStart" in event:
            body = event["contentBlockStart"]
            index = body.get("contentBlockIndex") or 0
            start = body.get("start") or {}
            tool = start.get("toolUse")
            if tool:
                tool_id, name = tool.get("toolUseId", ""), tool.get("name", "")
                server = tool.get("type") == "server_tool_use"
                if server:
                    self._server_calls[tool_id] = name
                return Delta(parts=(self.blocks.start_tool(index, tool_id, name, provider_executed=server),))
            result = start.get("toolResult")
            if result:  # only Bedrock's own tools stream a result
                self._server_results[index] = (result.get("toolUseId", ""), result.get("status", ""), [])
            return None
        if "contentBlockStop" in event:
            index = event["contentBlockStop"].get("contentBlockIndex") or 0
            if index in self._server_results:
                return Delta(parts=(self._server_result(*self._server_results.pop(index)),))
            return Delta(parts=self.blocks.stop(index))
        if "messageStart" in event:
            self.blocks = ContentBlocks()
            self._reset_server_tools()
            return None
        if "messageStop" in event:
            self._stop_reason = event["messageStop"].get("stopReason")
            return Delta(stop_reason=self._stop_reason)
        if "metadata" in event:
            return self._metadata(event["metadata"])
        return None

    def _block_parts(self, index: int, delta: Mapping[str, Any]) -> tuple[Part, ...]:
        reasoning = delta.get("reasoningContent")
        if reasoning is not None:
            if reasoning.get("text"):
                return (ReasoningDelta(text=reasoning["text"], index=index),)
            if reasoning.get("signature"):
                self.blocks.signature(index, reasoning["signature"])
            if reasoning.get("redactedContent"):
                return (ReasoningDelta(redacted=_base64(reasoning["redactedContent"]), index=index),)
            return ()
        citation = delta.get("citation")
        if citation is not None:
            return (self._source(citation, index),)
        tool = delta.get("toolUse")
        if tool is not None:
            piece = self.blocks.tool_input(index, tool.get("input") or "")
            return (piece,) if piece is not None else ()
        if "toolResult" in delta and index in self._server_results:
            self._server_results[index][2].extend(delta["toolResult"] or [])
        return ()

    def _server_result(self, tool_id: str, status: str, content: list[Mapping[str, Any]]) -> ToolResult:
        """The result Bedrock streamed for its own tool: one ``json`` or ``text`` item as its value
        (the code interpreter's ``{stdOut, stdErr, exitCode, isError}``), several as the list."""
        name = self._server_calls.get(tool_id, "")
        value: Any = content
        if len(content) == 1 and len(content[0]) == 1 and ("json" in content[0] or "text" in content[0]):
            value = next(iter(content[0].values()))
        if status == "error":
            error = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            return ToolResult(tool_id, name, error=error or "The tool failed.", provider_executed=True)
        return ToolResult(tool_id, name, output=value, provider_executed=True)

    def _source(self, citation: Mapping[str, Any], index: int) -> Source:
        location = citation.get("location") or {}
        where: Mapping[str, Any] = next(iter(location.values()), {}) if location else {}
        web = location.get("web") or {}
        return self.blocks.source(
            title=citation.get("title") or web.get("domain") or "",
            url=web.get("url") or "",
            cited_text="".join(part.get("text", "") for part in citation.get("sourceContent") or []),
            document_index=where.get("documentIndex"),
            location=location,
            index=index,
        )

    def _metadata(self, metadata: Mapping[str, Any]) -> Delta:
        usage = metadata.get("usage") or {}
        parts: tuple[Part, ...] = ()
        guardrail = (metadata.get("trace") or {}).get("guardrail")
        if guardrail:
            action = "INTERVENED" if self._stop_reason == "guardrail_intervened" else "NONE"
            parts = (guardrail_trace(action, guardrail),)
        return Delta(
            parts=parts,
            input_tokens=usage.get("inputTokens"),
            output_tokens=usage.get("outputTokens"),
            # Converse says cacheReadInputTokens; Nova's native format, cacheReadInputTokenCount.
            cache_read_tokens=usage.get("cacheReadInputTokens", usage.get("cacheReadInputTokenCount")),
            cache_write_tokens=usage.get("cacheWriteInputTokens", usage.get("cacheWriteInputTokenCount")),
            latency_ms=(metadata.get("metrics") or {}).get("latencyMs"),
            service_tier=(metadata.get("serviceTier") or {}).get("type"),
        )


class ConverseFamily(ConverseEvents, BedrockFamily):
    name = "converse"
    default_model_id = "anthropic.claude-3-haiku-20240307-v1:0"
    operation = "converse_stream"
    stream_key = "stream"

    def build_body(
        self, messages: Sequence[Message], *, max_tokens: int, options: ConverseOptions | None = None
    ) -> dict[str, Any]:
        """Every option has its Converse field; the reasoning fields go in ``additionalModelRequestFields``
        (the model's own: ``thinking`` for Claude, ``reasoningConfig`` for Nova 2)."""
        options = options or ConverseOptions()
        body: dict[str, Any] = {
            "messages": build_converse_messages(messages, cache=options.cache_history),
            "inferenceConfig": options.inference_config(("maxTokens", options.max_tokens(max_tokens)), "topP"),
        }
        system = options.system_blocks(extract_system(messages))
        if system:
            body["system"] = system
        fields = dict(options.additional_fields)
        for name, config in (("thinking", options.thinking()), ("reasoningConfig", options.reasoning_config())):
            if config is not None:
                fields[name] = config
        if fields:
            body["additionalModelRequestFields"] = fields
        if options.guardrail:
            body["guardrailConfig"] = dict(options.guardrail)
        if options.latency:
            body["performanceConfig"] = {"latency": options.latency}
        if options.service_tier:
            body["serviceTier"] = {"type": options.service_tier}
        if options.request_metadata:
            body["requestMetadata"] = dict(options.request_metadata)
        return check_converse_body(body)

    def request_kwargs(self, model_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return {"modelId": model_id, **body}

    def parse_event(self, event: Mapping[str, Any]) -> Delta | None:
        return self.converse_event(event)


def _base64(data: bytes | str) -> str:
    """boto3 gives blobs as bytes; a raw event dict may already carry base64 text."""
    return data if isinstance(data, str) else base64.b64encode(data).decode("ascii")
