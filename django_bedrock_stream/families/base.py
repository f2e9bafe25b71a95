"""The one base class every model family extends.

A family knows two I/O-free things: how to build the request body from chat messages, and how to turn
one decoded event into a :class:`Delta`. Both the sync (boto3) and async (aiobotocore / thread)
paths share them, so each family is tested on plain dicts and on recorded bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

Message = Mapping[str, str]
METRICS_KEY = "amazon-bedrock-invocationMetrics"


@dataclass(slots=True)
class Delta:
    """What one event contributes: text, and possibly a stop reason and token counts."""

    text: str = ""
    stop_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    #: ``amazon-bedrock-invocationMetrics`` from the last invoke chunk: fills counts the family lacks.
    metrics: Mapping[str, Any] | None = None


class BedrockFamily:
    """Base for a model family. Subclasses set ``name`` and ``default_model_id`` and override
    :meth:`build_body` and :meth:`parse_chunk`; the Converse family also overrides the
    "call the API" hooks (:attr:`operation`, :meth:`request_kwargs`, :meth:`parse_event`).
    """

    #: Short identifier used in URLs, settings and the ``Completion.family`` column.
    name: ClassVar[str]
    #: Model id used when the view sets none.
    default_model_id: ClassVar[str]
    #: boto3 client method; must not need overriding except for Converse.
    operation: ClassVar[str] = "invoke_model_with_response_stream"
    #: Key of the event stream in the boto3 response.
    stream_key: ClassVar[str] = "body"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in ("name", "default_model_id"):
            if not hasattr(cls, attr) and not cls.__name__.startswith("_"):
                raise NotImplementedError(f"{cls.__name__} must define the class attribute {attr!r}")

    # -- request side ------------------------------------------------------------------------
    def build_body(self, messages: Sequence[Message], *, max_tokens: int) -> dict[str, Any]:
        """Must override: the family's native request body for these chat messages."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_body()")

    def request_kwargs(self, model_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the boto3 call; should not need overriding for invoke families."""
        return {
            "modelId": model_id,
            "body": json.dumps(body, ensure_ascii=False).encode("utf-8"),
            "contentType": "application/json",
            "accept": "application/json",
        }

    # -- response side -----------------------------------------------------------------------
    def parse_chunk(self, data: Mapping[str, Any]) -> Delta:
        """Must override: one decoded model JSON chunk -> Delta (ignore unknown keys)."""
        raise NotImplementedError(f"{type(self).__name__} must implement parse_chunk()")

    def parse_event(self, event: Mapping[str, Any]) -> Delta | None:
        """One boto3 event dict -> Delta. Decodes ``chunk.bytes``, reads invocation metrics."""
        chunk = event.get("chunk")
        if chunk is None:
            return None
        data = json.loads(chunk["bytes"])
        delta = self.parse_chunk(data)
        delta.metrics = data.get(METRICS_KEY)
        return delta


def _int(value: Any) -> int | None:
    """Token counts arrive as ints, floats (Titan: ``28.0``) or null."""
    return None if value is None else int(value)
