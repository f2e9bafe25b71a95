"""Scenarios (what the emulator does for a request) and the per-family reply generators.

A :class:`Scenario` holds the controls; server defaults come from ``BedrockEmulator(...)`` /
``set_scenario()`` / ``POST /_emulator/scenario`` / the CLI, and a request overrides them with a
marker anywhere in its body text::

    [[emulator tokens=50 delay_ms=20 ttfb_ms=100]]
    [[emulator error_at=3 error=throttlingException]]
    [[emulator text="Hello there, friend." stop=max_tokens]]
    [[emulator text="Hi 😀" split_pairs=1]]            (the emoji arrives in two chunks, one per surrogate)
    [[emulator fail=AccessDeniedException message="User: arn:aws:iam::123456789012:user/dev is not authorized"]]

No Django imports here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import string
from dataclasses import dataclass, field
from typing import Any

from .eventstream import encode_chunk, encode_event

# ----------------------------------------------------------------------------------------------
# Errors

#: Pre-stream HTTP errors (``fail=``), name -> status.
HTTP_ERRORS: dict[str, int] = {
    "ThrottlingException": 429,
    "AccessDeniedException": 403,
    "ValidationException": 400,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ModelStreamErrorException": 424,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
    "ModelNotReadyException": 429,
    "ServiceQuotaExceededException": 400,
}

#: In-stream exception frames (``error=``).
STREAM_ERRORS = (
    "modelStreamErrorException",
    "throttlingException",
    "internalServerException",
    "serviceUnavailableException",
    "validationException",
    "modelTimeoutException",
)

ERROR_MESSAGES: dict[str, str] = {
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "AccessDeniedException": "You don't have access to the model with the specified model ID.",
    "ValidationException": "The emulator was asked to fail this request with ValidationException.",
    "ResourceNotFoundException": "The requested resource could not be found.",
    "ModelTimeoutException": "Model has timed out in processing the request.",
    "ModelErrorException": "The model returned an error while processing the request.",
    "ModelStreamErrorException": "The model stream failed.",
    "InternalServerException": "The server encountered an internal error.",
    "ServiceUnavailableException": "The service is unavailable. Try again later.",
    "ModelNotReadyException": "The model is not ready to serve inference requests.",
    "modelStreamErrorException": "Emulated model stream error.",
    "throttlingException": "Too many tokens, please wait before trying again.",
    "internalServerException": "The system encountered an unexpected error during processing. Try your request again.",
    "serviceUnavailableException": "The service is unavailable. Try again later.",
    "validationException": "Emulated validation error in the stream.",
    "modelTimeoutException": "Model has timed out in processing the request.",
}


class ScenarioError(ValueError):
    """A bad scenario key or value (reported to the client as a 400 ValidationException)."""


# ----------------------------------------------------------------------------------------------
# Scenario


@dataclass(frozen=True)
class Scenario:
    """What the emulator does for one request. All fields are optional controls."""

    tokens: int = 12  #: number of tokens in the default (generated) reply
    delay_ms: float = 0.0  #: pause between token events
    ttfb_ms: float = 0.0  #: pause before the response headers
    error_at: int | None = None  #: send an exception frame after this many token events
    error: str | None = None  #: exception type for error_at (default modelStreamErrorException)
    fail: str | None = None  #: HTTP error before the stream (e.g. ThrottlingException)
    throttle: int = 0  #: the first N attempts of an identical request get 429 ThrottlingException
    text: str | None = None  #: exact reply text (tokens = words with their leading spaces)
    stop: str | None = None  #: "max_tokens" forces the family's length stop reason
    replay: str | None = None  #: recorded .eventstream file (name in the replay dir, or a path)
    corrupt_crc_at: int | None = None  #: flip a bit in message N's CRC (0-based, all messages)
    drop_at: int | None = None  #: hang up after this many token events (mid-body, no final chunk)
    message: str | None = None  #: the error message for fail= / error= (default: the service's usual one)
    split_pairs: int = 0  #: 1: send each character beyond U+FFFF as two token events, one per surrogate

    _INT = ("tokens", "error_at", "throttle", "corrupt_crc_at", "drop_at", "split_pairs")
    _FLOAT = ("delay_ms", "ttfb_ms")
    _NOT_NULL = ("tokens", "throttle", "delay_ms", "ttfb_ms", "split_pairs")  # "none" resets these to the default

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def coerce(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Validate and convert ``values`` (strings from a marker/CLI, or JSON values)."""
        names = cls.field_names()
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key not in names:
                raise ScenarioError(f"unknown emulator scenario key {key!r} (known: {', '.join(names)})")
            if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and key != "text"):
                out[key] = getattr(cls, key) if key in cls._NOT_NULL else None
                continue
            try:
                if key in cls._INT:
                    if isinstance(value, bool):
                        raise ValueError
                    value = int(float(value)) if isinstance(value, str) else int(value)
                    if value < 0:
                        raise ValueError
                elif key in cls._FLOAT:
                    value = float(value)
                    if value < 0:
                        raise ValueError
                else:
                    value = str(value)
            except (TypeError, ValueError):
                raise ScenarioError(f"bad value for emulator scenario key {key!r}: {value!r}") from None
            if key == "fail" and value not in HTTP_ERRORS:
                raise ScenarioError(f"unknown fail={value!r} (known: {', '.join(HTTP_ERRORS)})")
            if key == "error" and value not in STREAM_ERRORS:
                raise ScenarioError(f"unknown error={value!r} (known: {', '.join(STREAM_ERRORS)})")
            if key == "stop":
                value = _normalise_stop(value)
            out[key] = value
        return out

    def merged(self, overrides: dict[str, Any]) -> Scenario:
        """A copy with ``overrides`` (validated) applied."""
        if not overrides:
            return self
        return dataclasses.replace(self, **self.coerce(overrides))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _normalise_stop(value: str) -> str | None:
    v = value.strip().lower()
    if v in ("", "0", "false", "no", "none", "end_turn", "stop"):
        return None
    if v in ("max_tokens", "length", "1", "true", "yes", "max", "max_tokens_reached"):
        return "max_tokens"
    raise ScenarioError(f"bad value for stop: {value!r} (use stop=max_tokens)")


# ----------------------------------------------------------------------------------------------
# Markers

_MARKER_RE = re.compile(r"\[\[emulator\b(.*?)\]\]", re.DOTALL)
_PAIR_RE = re.compile(r"""([A-Za-z_]\w*)\s*=\s*("(?:[^"\\]|\\.)*"|'[^']*'|[^\s\]]+)""", re.DOTALL)


def _unescape_json(s: str) -> str:
    # The marker sits inside a JSON string in the raw body; undo (possibly nested) JSON escaping.
    for _ in range(3):
        if "\\" not in s:
            break
        try:
            s = json.loads('"' + s + '"', strict=False)
        except ValueError:
            break
    return s


def parse_markers(body_text: str) -> dict[str, Any]:
    """All ``[[emulator k=v ...]]`` markers in ``body_text``, merged in order (later keys win).

    Values may be bare (``tokens=5``) or quoted (``text="two words"``, ``text='x'``). Returns raw
    string values; :meth:`Scenario.coerce` validates them.
    """
    if "[[emulator" not in body_text:
        return {}
    out: dict[str, Any] = {}
    for m in _MARKER_RE.finditer(body_text):
        inner = _unescape_json(m.group(1))
        for pm in _PAIR_RE.finditer(inner):
            key, raw = pm.group(1), pm.group(2)
            if raw[:1] == '"':
                try:
                    val = json.loads(raw, strict=False)
                except ValueError:
                    val = raw[1:-1]
            elif raw[:1] == "'":
                val = raw[1:-1]
            else:
                val = raw
            out[key] = val
    return out


# ----------------------------------------------------------------------------------------------
# Replies

WORDS = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "stream", "token", "river", "cloud", "model",
    "answer", "bedrock", "emulator", "django", "python", "signal", "packet", "frame", "window", "garden", "lantern",
    "harbor", "meadow", "silver", "copper", "orbit", "velvet", "ember", "thunder", "canyon", "prairie", "summit",
    "echo", "pebble", "willow", "maple", "cedar", "falcon", "otter", "badger", "heron", "comet", "nebula", "quartz",
    "marble", "cobalt", "saffron", "amber", "indigo", "violet", "crimson", "azure", "coral", "ivory", "onyx", "jade",
    "topaz", "opal",
]

_TOKEN_RE = re.compile(r"\s*\S+|\s+$")
_PAD = (string.ascii_letters + string.digits).encode()
_rand = random.Random()


def padding() -> bytes:
    """Random-length padding like Bedrock's ``"p"`` field (a prefix of ``a..zA..Z0..9``)."""
    return _PAD[: _rand.randint(1, len(_PAD))]


def split_text(text: str) -> list[str]:
    """Split reply text into tokens on word boundaries, each keeping its leading whitespace."""
    return _TOKEN_RE.findall(text)


def generated_tokens(prompt: str, n: int) -> list[str]:
    """``n`` deterministic words derived from ``prompt``; all but the first have a leading space."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode("utf-8", "replace")).digest()[:8], "big")
    rng = random.Random(seed)
    words = WORDS
    k = len(words)
    out = [" " + words[int(rng.random() * k)] for _ in range(n)]
    if out:
        first = out[0][1:]
        out[0] = first[:1].upper() + first[1:]
    return out


def estimate_tokens(text: str) -> int:
    return max(1, len(text.split()))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict):
                t = block.get("text")
                if isinstance(t, str):
                    parts.append(t)
    return "\n".join(parts)


def _messages_text(body: dict) -> str:
    parts = []
    system = body.get("system")
    if system:
        parts.append(_content_text(system))
    for m in body.get("messages") or []:
        if isinstance(m, dict):
            parts.append(_content_text(m.get("content")))
    return "\n".join(p for p in parts if p)


def _dig(body: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(body, dict):
            return None
        body = body.get(p)
    return body


def _int_or_none(v: Any) -> int | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _dumps(obj: Any) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (split_pairs): Bedrock sends it as a \uXXXX escape
        return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def split_pairs(token: str) -> list[str]:
    """``token`` cut inside each character beyond U+FFFF, between its UTF-16 surrogates:
    ``"a😀b"`` -> ``["a\\ud83d", "\\ude00b"]``."""
    out, current = [], ""
    for char in token:
        code = ord(char) - 0x10000
        if code >= 0:
            out.append(current + chr(0xD800 + (code >> 10)))
            current = chr(0xDC00 + (code & 0x3FF))
        else:
            current += char
    out.append(current)
    return out


@dataclass
class Plan:
    """The reply decided for one request."""

    family: Family
    model_id: str
    tokens: list[str]
    input_tokens: int
    length_stop: bool  #: True when the family's "length" stop reason is reported
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stop_reason(self) -> str:
        return self.family.length_stop if self.length_stop else self.family.normal_stop

    @property
    def text(self) -> str:
        return "".join(self.tokens)


class Family:
    """One reply shape. Subclasses build framed eventstream messages and non-streaming bodies."""

    name = "base"
    normal_stop = "stop"
    length_stop = "length"
    #: the last token event also carries the stop reason and metrics (no separate final chunk)
    merges_last = False
    max_tokens_path: tuple[str, ...] = ("max_tokens",)

    def prompt_text(self, body: dict[str, Any]) -> str:
        p = body.get("prompt")
        return p if isinstance(p, str) else json.dumps(body, sort_keys=True)

    def max_tokens(self, body: dict[str, Any]) -> int | None:
        return _int_or_none(_dig(body, *self.max_tokens_path))

    def head(self, plan: Plan) -> list[bytes]:
        return []

    def token(self, plan: Plan, tok: str, i: int, final_metrics: dict[str, Any] | None) -> bytes:
        raise NotImplementedError

    def tail(self, plan: Plan, sent: int, merged: bool, metrics: dict[str, Any]) -> list[bytes]:
        raise NotImplementedError

    def invoke_body(self, plan: Plan, latency_ms: int) -> dict[str, Any]:
        raise NotImplementedError


def _model_json(obj: dict) -> bytes:
    return encode_chunk(_dumps(obj), padding())


class AnthropicMessages(Family):
    name = "anthropic-messages"
    normal_stop = "end_turn"
    length_stop = "max_tokens"

    def prompt_text(self, body: dict[str, Any]) -> str:
        return _messages_text(body)

    @staticmethod
    def _model_name(model_id: str) -> str:
        m = model_id.split("anthropic.", 1)[-1]
        return re.sub(r"-v\d+(:\d+)?$", "", m)

    def head(self, plan: Plan) -> list[bytes]:
        msg_id = "msg_bdrk_" + hashlib.sha1(repr((plan.model_id, plan.text, _rand.random())).encode()).hexdigest()[:24]
        start = {
            "type": "message_start",
            "message": {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": self._model_name(plan.model_id),
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": plan.input_tokens, "output_tokens": 1},
            },
        }
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        return [_model_json(start), _model_json(block)]

    def token(self, plan: Plan, tok: str, i: int, final_metrics: dict[str, Any] | None) -> bytes:
        return encode_chunk(
            b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
            + _dumps(tok)
            + b"}}",
            padding(),
        )

    def tail(self, plan: Plan, sent: int, merged: bool, metrics: dict[str, Any]) -> list[bytes]:
        return [
            _model_json({"type": "content_block_stop", "index": 0}),
            _model_json(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": plan.stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": sent},
                }
            ),
            _model_json({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics}),
        ]

    def invoke_body(self, plan: Plan, latency_ms: int) -> dict[str, Any]:
        return {
            "id": "msg_bdrk_" + hashlib.sha1(plan.text.encode()).hexdigest()[:24],
            "type": "message",
            "role": "assistant",
            "model": self._model_name(plan.model_id),
            "content": [{"type": "text", "text": plan.text}],
            "stop_reason": plan.stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": plan.input_tokens, "output_tokens": len(plan.tokens)},
        }


class AnthropicCompletions(Family):
    name = "anthropic-completions"
    normal_stop = "stop_sequence"
    length_stop = "max_tokens"
    max_tokens_path = ("max_tokens_to_sample",)

    def token(self, plan: Plan, tok: str, i: int, final_metrics: dict[str, Any] | None) -> bytes:
        return encode_chunk(b'{"completion":' + _dumps(tok) + b',"stop_reason":null,"stop":null}', padding())

    def _stop(self, plan: Plan) -> str | None:
        return "\n\nHuman:" if not plan.length_stop else None

    def tail(self, plan: Plan, sent: int, merged: bool, metrics: dict[str, Any]) -> list[bytes]:
        return [
            _model_json(
                {
                    "completion": "",
                    "stop_reason": plan.stop_reason,
                    "stop": self._stop(plan),
                    "amazon-bedrock-invocationMetrics": metrics,
                }
            )
        ]

    def invoke_body(self, plan: Plan, latency_ms: int) -> dict[str, Any]:
        return {
            "type": "completion",
            "completion": plan.text,
            "stop_reason": plan.stop_reason,
            "stop": self._stop(plan),
        }


class Cohere(Family):
    name = "cohere"
    normal_stop = "COMPLETE"
    length_stop = "MAX_TOKENS"

    def prompt_text(self, body: dict[str, Any]) -> str:
        p = body.get("prompt", body.get("message"))
        return p if isinstance(p, str) else json.dumps(body, sort_keys=True)

    def token(self, plan: Plan, tok: str, i: int, final_metrics: dict[str, Any] | None) -> bytes:
        return encode_chunk(b'{"text":' + _dumps(tok) + b',"is_finished":false}', padding())

    def tail(self, plan: Plan, sent: int, merged: bool, metrics: dict[str, Any]) -> list[bytes]:
        return [
            _model_json(
                {"is_finished": True, "finish_reason": plan.stop_reason, "amazon-bedrock-invocationMetrics": metrics}
            )
        ]

    def invoke_body(self, plan: Plan, latency_ms: int) -> dict[str, Any]:
        gen_id = hashlib.sha1(plan.text.encode()).hexdigest()
        return {
            "id": gen_id[:8] + "-" + gen_id[8:12] + "-" + gen_id[12:16] + "-" + gen_id[16:20] + "-" + gen_id[20:32],
            "generations": [
                {"id": gen_id[:32], "text": plan.text, "finish_reason": plan.stop_reason}
            ],
            "prompt": plan.extra.get("prompt", ""),
        }


class Llama(Family):
    name = "meta-llama"
    normal_stop = "stop"
    length_stop = "length"
    merges_last = True
    max_tokens_path = ("max_gen_len",)

    def token(self, plan: Plan, tok: str, i: int, final_metrics: dict[str, Any] | None) -> bytes:
        obj: dict[str, Any] = {
            "generation": tok,
            "prompt_token_count": plan.input_tokens if i == 0 else None,
            "generation_token_count": i + 1,
            "stop_reason": plan.stop_reason if final_metrics is not None else None,
        }
        if final_metrics is not None:
            obj["amazon-bedrock-invocationMetrics"] = final_metrics
        return _model_json(obj)

    def tail(self, plan: Plan, sent: int, merged: bool, metrics: dict[str, Any]) -> list[bytes]:
        if merged:
            return []
        return [
            _model_json(
                {
                    "generation": "",
                    "prompt_token_count": plan.input_tokens if sent == 0 else None,
                    "generation_token_count": sent,
                    "stop_reason": plan.stop_reason,
                    "amazon-bedrock-invocationMetrics": metrics,
                }
            )
        ]

    def invoke_body(self, plan: Plan, latency_ms: int) -> dict[str, Any]:
        return {
            "generation": plan.text,
            "prompt_token_count": plan.input_tokens,
            "generation_token_count": len(plan.tokens),
            "stop_reason": plan.stop_reason,
        }


class Mistral(Family):
    name = "mistral"
    normal_stop = "stop"
    length_stop = "length"
    merges_last = True

    def token(self, plan: Plan, tok: str, i: int, final_metrics: dict[str, Any] | None) -> bytes:
        if final_metrics is None:
            return encode_chunk(b'{"outputs":[{"text":' + _dumps(tok) + b',"stop_reason":null}]}', padding())
        return _model_json(
            {
                "outputs": [{"text": tok, "stop_reason": plan.stop_reason}],
                "amazon-bedrock-invocationMetrics": final_metrics,
            }
        )

    def tail(self, plan: Plan, sent: int, merged: bool, metrics: dict[str, Any]) -> list[bytes]:
        if merged:
            return []
        return [
            _model_json(
                {
                    "outputs": [{"text": "", "stop_reason": plan.stop_reason}],
                    "amazon-bedrock-invocationMetrics": metrics,
                }
            )
        ]

    def invoke_body(self, plan: Plan, latency_ms: int) -> dict[str, Any]:
        return {"outputs": [{"text": plan.text, "stop_reason": plan.stop_reason}]}


class Titan(Family):
    name = "amazon-titan-text"
    normal_stop = "FINISH"
    length_stop = "LENGTH"
    merges_last = True
    max_tokens_path = ("textGenerationConfig", "maxTokenCount")

    def prompt_text(self, body: dict[str, Any]) -> str:
        p = body.get("inputText")
        return p if isinstance(p, str) else json.dumps(body, sort_keys=True)

    def token(self, plan: Plan, tok: str, i: int, final_metrics: dict[str, Any] | None) -> bytes:
        obj: dict[str, Any] = {
            "outputText": tok,
            "index": 0,
            "totalOutputTextTokenCount": i + 1,
            "completionReason": plan.stop_reason if final_metrics is not None else None,
            "inputTextTokenCount": plan.input_tokens,
        }
        if final_metrics is not None:
            obj["amazon-bedrock-invocationMetrics"] = final_metrics
        return _model_json(obj)

    def tail(self, plan: Plan, sent: int, merged: bool, metrics: dict[str, Any]) -> list[bytes]:
        if merged:
            return []
        return [
            _model_json(
                {
                    "outputText": "",
                    "index": 0,
                    "totalOutputTextTokenCount": sent,
                    "completionReason": plan.stop_reason,
                    "inputTextTokenCount": plan.input_tokens,
                    "amazon-bedrock-invocationMetrics": metrics,
                }
            )
        ]

    def invoke_body(self, plan: Plan, latency_ms: int) -> dict[str, Any]:
        return {
            "inputTextTokenCount": plan.input_tokens,
            "results": [
                {"tokenCount": len(plan.tokens), "outputText": plan.text, "completionReason": plan.stop_reason}
            ],
        }


class Converse(Family):
    """ConverseStream events / Converse response (any model id)."""

    name = "converse"
    normal_stop = "end_turn"
    length_stop = "max_tokens"
    max_tokens_path = ("inferenceConfig", "maxTokens")

    def prompt_text(self, body: dict[str, Any]) -> str:
        return _messages_text(body)

    @staticmethod
    def _with_p(body: bytes) -> bytes:
        # body is a compact JSON object; append the padding field.
        return body[:-1] + b',"p":"' + padding() + b'"}'

    def head(self, plan: Plan) -> list[bytes]:
        return [encode_event("messageStart", self._with_p(b'{"role":"assistant"}'))]

    def token(self, plan: Plan, tok: str, i: int, final_metrics: dict[str, Any] | None) -> bytes:
        return encode_event(
            "contentBlockDelta",
            b'{"contentBlockIndex":0,"delta":{"text":' + _dumps(tok) + b'},"p":"' + padding() + b'"}',
        )

    def tail(self, plan: Plan, sent: int, merged: bool, metrics: dict[str, Any]) -> list[bytes]:
        usage = {
            "inputTokens": plan.input_tokens,
            "outputTokens": sent,
            "totalTokens": plan.input_tokens + sent,
        }
        return [
            encode_event("contentBlockStop", self._with_p(b'{"contentBlockIndex":0}')),
            encode_event("messageStop", self._with_p(_dumps({"stopReason": plan.stop_reason}))),
            encode_event(
                "metadata",
                self._with_p(_dumps({"usage": usage, "metrics": {"latencyMs": metrics["invocationLatency"]}})),
            ),
        ]

    def invoke_body(self, plan: Plan, latency_ms: int) -> dict[str, Any]:
        n = len(plan.tokens)
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": plan.text}]}},
            "stopReason": plan.stop_reason,
            "usage": {"inputTokens": plan.input_tokens, "outputTokens": n, "totalTokens": plan.input_tokens + n},
            "metrics": {"latencyMs": latency_ms},
        }


ANTHROPIC_MESSAGES = AnthropicMessages()
ANTHROPIC_COMPLETIONS = AnthropicCompletions()
COHERE = Cohere()
LLAMA = Llama()
MISTRAL = Mistral()
TITAN = Titan()
CONVERSE = Converse()

_PROVIDERS = (
    "anthropic", "cohere", "meta", "mistral", "amazon", "ai21", "deepseek", "openai", "qwen",
    "writer", "stability", "twelvelabs", "luma", "moonshot", "minimax", "google", "nvidia",
)


def base_model_id(model_id: str) -> str:
    """Strip an ARN prefix and a cross-region inference-profile prefix (``us.``, ``eu.``, ...)."""
    mid = model_id
    if mid.startswith("arn:"):
        mid = mid.rsplit("/", 1)[-1]
    first, dot, rest = mid.partition(".")
    if dot and first not in _PROVIDERS and rest.split(".", 1)[0] in _PROVIDERS:
        mid = rest
    return mid


class InvalidRequest(Exception):
    """Reported to the client as a 400 ValidationException with this message."""


def invoke_family(model_id: str, body: Any) -> Family:
    """The reply family for an InvokeModel[WithResponseStream] request, or raise InvalidRequest."""
    mid = base_model_id(model_id)
    if mid.startswith("anthropic.claude"):
        if not isinstance(body, dict):
            raise InvalidRequest("Malformed input request, please reformat your input and try again.")
        if "messages" in body:
            return ANTHROPIC_MESSAGES
        if "prompt" in body:
            return ANTHROPIC_COMPLETIONS
        raise InvalidRequest(
            "Malformed input request: required key [messages] not found, please reformat your input and try again."
        )
    if mid.startswith("cohere.command"):
        return COHERE
    if mid.startswith("meta.llama"):
        return LLAMA
    if mid.startswith("mistral."):
        return MISTRAL
    if mid.startswith("amazon.titan-text"):
        return TITAN
    raise InvalidRequest("The provided model identifier is invalid.")


def make_plan(family: Family, model_id: str, body: Any, scenario: Scenario) -> Plan:
    body_dict = body if isinstance(body, dict) else {}
    prompt = family.prompt_text(body_dict) if body_dict else ""
    if scenario.text is not None:
        tokens = split_text(scenario.text)
    else:
        tokens = generated_tokens(prompt, scenario.tokens)
    if scenario.split_pairs:
        tokens = [part for token in tokens for part in split_pairs(token) if part]
    length_stop = scenario.stop == "max_tokens"
    limit = family.max_tokens(body_dict) if body_dict else None
    if limit is not None and 0 <= limit < len(tokens):
        tokens = tokens[:limit]
        length_stop = True
    plan = Plan(
        family=family,
        model_id=model_id,
        tokens=tokens,
        input_tokens=estimate_tokens(prompt),
        length_stop=length_stop,
    )
    if isinstance(body_dict.get("prompt"), str):
        plan.extra["prompt"] = body_dict["prompt"]
    return plan


# ----------------------------------------------------------------------------------------------
# Text extraction from recorded/replayed messages (record["text"] for replays).


def extract_text(headers: dict[str, Any], payload: bytes) -> str | None:
    """The text delta carried by one event (per the fixtures README's ``expected_text``), else None."""
    import base64

    if headers.get(":message-type") != "event":
        return None
    et = headers.get(":event-type")
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    if et == "contentBlockDelta":
        t = _dig(obj, "delta", "text")
        return t if isinstance(t, str) else None
    if et != "chunk" or "bytes" not in obj:
        return None
    try:
        inner = json.loads(base64.b64decode(obj["bytes"]))
    except ValueError:
        return None
    if not isinstance(inner, dict):
        return None
    if inner.get("type") == "content_block_delta":
        d = inner.get("delta") or {}
        return d.get("text") if d.get("type") == "text_delta" else None
    if "type" in inner and str(inner.get("type", "")).startswith(("message_", "content_block_")):
        return None
    for key in ("completion", "outputText", "generation", "text"):
        if isinstance(inner.get(key), str):
            return inner[key]
    if "outputs" in inner and isinstance(inner["outputs"], list) and inner["outputs"]:
        t = inner["outputs"][0].get("text")
        return t if isinstance(t, str) else None
    if "contentBlockDelta" in inner:
        t = _dig(inner, "contentBlockDelta", "delta", "text")
        return t if isinstance(t, str) else None
    return None

