"""Scenarios (what the emulator does for a request) and the per-family reply generators.

A :class:`Scenario` holds the controls; server defaults come from ``BedrockEmulator(...)`` /
``set_scenario()`` / ``POST /_emulator/scenario`` / the CLI, and a request overrides them with a
marker anywhere in its body text::

    [[emulator tokens=50 delay_ms=20 ttfb_ms=100]]
    [[emulator error_at=3 error=throttlingException]]
    [[emulator text="Hello there, friend." stop=max_tokens]]
    [[emulator text="Hi 😀" split_pairs=1]]            (the emoji arrives in two chunks, one per surrogate)
    [[emulator fail=AccessDeniedException message="User: arn:aws:iam::123456789012:user/dev is not authorized"]]

Beyond text (Converse, Anthropic Messages; Titan and Nova where their wire format has it)::

    [[emulator reasoning="Let me think." redacted="opaque"]]   (reasoning deltas + a signature in pieces)
    [[emulator cite="Employees get 20 days." cite_title=policy]]  (a citation before the text)
    [[emulator guardrail=intervened unmasked="Call Alice on 555-0100"]]
    [[emulator cache_read=100 cache_write=20 service_tier=priority]]

Tools (Converse, Anthropic Messages, Nova's native format), when the request offers tools::

    [[emulator tool=calculator tool_input={"expression":"2+3"}]]      (one call, then ``tool_use``)
    [[emulator tools=[{"name":"a","input":{"x":1}},{"name":"b","input":{}}]]]   (several, in order)
    [[emulator tool=calculator tool_raw='{"expression": 2+'  text="Let me compute."]]   (input not JSON)

The tool turn is the ``text=`` (if any), then the calls, each with its input JSON in pieces cut at
awkward places (see :func:`input_pieces`); once the request carries the results, the next turn
quotes them (``Result of calculator: 5.``). ``tool_turns=N`` keeps calling for N turns. A value
starting with ``{`` or ``[`` is read as JSON up to its end (keep ``]]`` out of it).

No Django imports here.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import random
import re
import string
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..modelids import base_model_id
from .attachments import InvalidRequest, anthropic_attachments, converse_attachments
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


SERVICE_TIERS = ("priority", "default", "flex", "reserved")


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
    reasoning: str | None = None  #: reasoning text before the answer, then its signature in pieces
    redacted: str | None = None  #: a redacted (encrypted) reasoning block with these bytes
    cite: str | None = None  #: the answer cites this text of the first document
    cite_title: str | None = None  #: the cited document's title (default: the request's first document name)
    guardrail: str | None = None  #: "intervened": a guardrail masked the answer (trace when the request asks)
    unmasked: str | None = None  #: the model's unmasked output in the guardrail trace
    cache_read: int = 0  #: input tokens read from the prompt cache
    cache_write: int = 0  #: input tokens written to the prompt cache
    service_tier: str | None = None  #: the service tier reported in Converse metadata
    tool: str | None = None  #: the model calls this tool (when the request offers tools)
    tool_input: str | None = None  #: ...with this input (a JSON object; default ``{}``)
    tool_raw: str | None = None  #: ...or with this exact input text (need not be JSON)
    tools: str | None = None  #: several calls: a JSON list of ``{"name", "input"}`` or ``{"name", "raw"}``
    tool_turns: int = 1  #: how many turns in a row call the tools before the model answers
    tool_ascii: int = 0  #: 1: the model writes non-ASCII input characters as ``\\uXXXX`` escapes

    _INT = ("tokens", "error_at", "throttle", "corrupt_crc_at", "drop_at", "split_pairs", "cache_read", "cache_write",
            "tool_turns", "tool_ascii")
    _FLOAT = ("delay_ms", "ttfb_ms")
    #: "none" resets these to the default
    _NOT_NULL = ("tokens", "throttle", "delay_ms", "ttfb_ms", "split_pairs", "cache_read", "cache_write",
                 "tool_turns", "tool_ascii")
    _TEXT = ("text", "reasoning", "redacted", "cite", "cite_title", "unmasked", "tool_raw")  # "none" is text here
    _JSON = ("tool_input", "tools")  # JSON values, kept as canonical JSON text

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
            if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and key not in cls._TEXT):
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
                elif key in cls._JSON:
                    value = _tool_json(key, value)
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
            if key == "guardrail" and value != "intervened":
                raise ScenarioError(f"bad value for guardrail: {value!r} (use guardrail=intervened)")
            if key == "service_tier" and value not in SERVICE_TIERS:
                raise ScenarioError(f"unknown service_tier={value!r} (known: {', '.join(SERVICE_TIERS)})")
            out[key] = value
        return out

    def tool_calls(self) -> list[dict[str, Any]]:
        """The calls asked for: ``{"name", "raw"}`` each, ``raw`` being the input text to stream."""
        calls: list[dict[str, Any]] = []
        if self.tool is not None:
            raw = self.tool_raw if self.tool_raw is not None else self.tool_input or "{}"
            calls.append({"name": self.tool, "raw": raw})
        for item in json.loads(self.tools) if self.tools else []:
            raw = item.get("raw", json.dumps(item.get("input", {}), ensure_ascii=False))
            calls.append({"name": item["name"], "raw": raw})
        return calls

    def merged(self, overrides: dict[str, Any]) -> Scenario:
        """A copy with ``overrides`` (validated) applied."""
        if not overrides:
            return self
        return dataclasses.replace(self, **self.coerce(overrides))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _tool_json(key: str, value: Any) -> str:
    """``tool_input`` (a JSON object) or ``tools`` (a list of calls) as canonical JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ScenarioError(f"bad value for emulator scenario key {key!r}: not JSON: {value!r}") from None
    if key == "tool_input" and not isinstance(value, dict):
        raise ScenarioError(f"bad value for tool_input: {value!r} (a JSON object; tool_raw= sends any text)")
    if key == "tools":
        good = isinstance(value, list) and all(
            isinstance(item, dict) and isinstance(item.get("name"), str)
            and set(item) <= {"name", "input", "raw"} and isinstance(item.get("input", {}), dict)
            and isinstance(item.get("raw", ""), str)
            for item in value
        )
        if not good:
            raise ScenarioError(
                f"bad value for tools: {value!r} (a list of objects with a name and an input object or raw text)"
            )
    return json.dumps(value, ensure_ascii=False)


def _normalise_stop(value: str) -> str | None:
    v = value.strip().lower()
    if v in ("", "0", "false", "no", "none", "end_turn", "stop"):
        return None
    if v in ("max_tokens", "length", "1", "true", "yes", "max", "max_tokens_reached"):
        return "max_tokens"
    raise ScenarioError(f"bad value for stop: {value!r} (use stop=max_tokens)")


# ----------------------------------------------------------------------------------------------
# Markers

# The marker ends at the first "]]" not followed by another "]" (a JSON list may end the marker).
_MARKER_RE = re.compile(r"\[\[emulator\b(.*?)\]\](?!\])", re.DOTALL)
_PAIR_RE = re.compile(r"""([A-Za-z_]\w*)\s*=\s*("(?:[^"\\]|\\.)*"|'[^']*'|[^\s\]]+)""", re.DOTALL)
_KEY_RE = re.compile(r"([A-Za-z_]\w*)\s*=\s*")
_JSON_DECODER = json.JSONDecoder(strict=False)


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

    Values may be bare (``tokens=5``), quoted (``text="two words"``, ``text='x'``) or JSON objects
    and lists (``tool_input={"a": 1}``). Returns raw values; :meth:`Scenario.coerce` validates them.
    """
    if "[[emulator" not in body_text:
        return {}
    out: dict[str, Any] = {}
    for m in _MARKER_RE.finditer(body_text):
        inner = _unescape_json(m.group(1))
        at = 0
        while True:
            key_match = _KEY_RE.search(inner, at)
            if key_match is None:
                break
            if inner[key_match.end() : key_match.end() + 1] in ("{", "["):  # a JSON value, read to its end
                try:
                    out[key_match.group(1)], at = _JSON_DECODER.raw_decode(inner, key_match.end())
                    continue
                except ValueError:
                    pass
            pm = _PAIR_RE.match(inner, key_match.start())
            if pm is None:
                at = key_match.end()
                continue
            at = pm.end()
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
    #: The request's images and documents (kind, format, name, bytes, sha256), as checked.
    attachments: list[dict[str, Any]] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)  #: reasoning deltas, before the answer
    redacted: bytes | None = None  #: a redacted reasoning block's bytes
    citation: dict[str, str] | None = None  #: {"title", "text"} the answer cites
    guardrail: bool = False  #: a guardrail intervened (masked the answer)
    unmasked: str = ""  #: what the model said before the guardrail masked it
    trace: bool = False  #: the request asked for the guardrail trace
    cache_read: int = 0
    cache_write: int = 0
    service_tier: str | None = None
    #: Laid out by :meth:`Family.lead`: messages sent after the head (``opening``); events before the
    #: text, paced and counted like token events (``lead``); block boundaries between the last of them
    #: and the first text token (``bridge``); the text's content block index.
    opening: bytes = b""
    lead: list[bytes] = field(default_factory=list)
    bridge: bytes = b""
    text_index: int = 0
    #: This turn's tool calls (``id``, ``name``, ``raw`` input text, its ``pieces``): the turn stops
    #: with ``tool_use`` after them.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stop_reason(self) -> str:
        if self.guardrail and self.family.guardrail_stop:
            return self.family.guardrail_stop
        if self.tool_calls:
            return "tool_use"
        return self.family.length_stop if self.length_stop else self.family.normal_stop

    @property
    def tool_index(self) -> int:
        """The content block index of the first tool call: after the text block, if there is text."""
        return self.text_index + (1 if self.tokens else 0)

    def output_tokens(self, sent: int) -> int:
        """Output tokens: the text's, and one per piece of tool input."""
        return sent + sum(len(call["pieces"]) for call in self.tool_calls)

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def signature(self) -> str:
        """The reasoning block's signature ("" without reasoning): derived from its text, so the
        emulator can tell, on a later turn, that a block came back unchanged."""
        return signature_for("".join(self.reasoning)) if self.reasoning else ""


#: Signatures the emulator issues start with this tag (27 bytes: its base64 is a fixed prefix).
_SIGNATURE_TAG = b"bedrock-emulator-reasoning:"
_SIGNATURE_PREFIX = base64.b64encode(_SIGNATURE_TAG).decode()


def signature_for(reasoning: str) -> str:
    """The signature the emulator gives a reasoning block with this text."""
    digest = hashlib.sha512(reasoning.encode("utf-8", "surrogatepass")).digest()
    return base64.b64encode(_SIGNATURE_TAG + digest * 2).decode()


def signature_pieces(signature: str, pieces: int = 3) -> list[str]:
    """The signature cut in ``pieces`` deltas, as Bedrock may deliver it."""
    size = -(-len(signature) // pieces)
    return [signature[i : i + size] for i in range(0, len(signature), size)]


def check_signature(text: Any, signature: Any, where: str) -> None:
    """A reasoning block sent back must carry the signature the emulator gave it, unchanged.
    (Signatures it did not issue, such as recorded ones, are not its to judge.)"""
    if isinstance(signature, str) and signature.startswith(_SIGNATURE_PREFIX):
        if not isinstance(text, str) or signature != signature_for(text):
            raise InvalidRequest(f"{where}: Invalid `signature` in `thinking` block")


def thinking_requested(body: dict[str, Any]) -> bool:
    """Whether the request turns on extended thinking / reasoning (Anthropic's ``thinking``; in
    Converse, inside ``additionalModelRequestFields``)."""
    fields = body.get("additionalModelRequestFields")
    fields = fields if isinstance(fields, dict) else {}
    for config in (body.get("thinking"), fields.get("thinking"), fields.get("reasoning_config"),
                   fields.get("reasoningConfig")):
        if isinstance(config, dict) and config.get("type") in ("enabled", "adaptive"):
            return True
    return False


# ----------------------------------------------------------------------------------------------
# Tools


def input_pieces(text: str, *, size: int = 4, pairs: bool = False) -> list[str]:
    """A tool call's input text in the pieces a model streams it in: an empty piece first (as
    Bedrock sends), then cut every ``size`` characters and at the awkward places a real stream has:
    right after each backslash (between ``\\`` and the character it escapes), inside each
    ``\\uXXXX`` escape, after each escape (so between the two escapes of a surrogate pair:
    ``\\ud83d`` | ``\\ude00``) and, with ``pairs``, between the two UTF-16 halves of a character
    beyond U+FFFF written as is (the piece then ends in a lone surrogate, which the event's JSON
    carries as a ``\\ud83d`` escape, as for ``split_pairs`` text).

    What Bedrock can do, and no more: each event's payload is a whole JSON document in UTF-8, so a
    piece never ends inside a UTF-8 byte sequence; the input's pieces are strings, cut anywhere in
    the model's JSON text (inside strings and escapes) and, for characters beyond U+FFFF, between
    surrogates. A client must join the pieces before it decodes the JSON."""
    units: list[str] = []
    for char in text:
        code = ord(char) - 0x10000
        if pairs and code >= 0:
            units += [chr(0xD800 + (code >> 10)), chr(0xDC00 + (code & 0x3FF))]
        else:
            units.append(char)
    cuts = set(range(size, len(units), size))
    i = 0
    while i < len(units):
        if units[i] == "\\":
            cuts.add(i + 1)
            if units[i + 1 : i + 2] == ["u"]:
                cuts.update((i + 4, i + 6))
                i += 6
                continue
            i += 2
            continue
        if "\ud800" <= units[i] <= "\udbff":
            cuts.add(i + 1)
        i += 1
    bounds = [0, *sorted(cut for cut in cuts if 0 < cut < len(units)), len(units)]
    return ["", *("".join(units[a:b]) for a, b in zip(bounds, bounds[1:]))]


_ID_ALPHABET = string.ascii_letters + string.digits


def _parsed_input(raw: str) -> Any:
    """A call's input for a non-streaming reply: the JSON, or the text when it is not JSON."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@dataclass
class ToolTurn:
    """One message of a request, as far as tools go."""

    role: str
    first: str  #: the kind of its first content block ("text", "tool_use", "thinking"...; "" without)
    uses: list[tuple[str, str]]  #: (id, name) of each tool call
    results: list[tuple[int, str, str, bool]]  #: (block index, call id, the result as text, is an error)


def _tool_answer(turns: list[ToolTurn]) -> str:
    """The model's answer once the tool results arrived: it quotes each one."""
    names = dict(turns[-2].uses)
    lines = []
    for _, call_id, text, error in turns[-1].results:
        name = names.get(call_id, "an unknown tool")
        lines.append(f"Error from {name}: {text}" if error else f"Result of {name}: {text}")
    return "\n".join(lines)


def _tool_rounds(turns: list[ToolTurn]) -> int:
    """How many (tool calls, tool results) pairs of turns end the conversation."""
    rounds, end = 0, len(turns)
    while (
        end >= 2 and turns[end - 1].role == "user" and turns[end - 1].results
        and turns[end - 2].role == "assistant" and turns[end - 2].uses
    ):
        rounds, end = rounds + 1, end - 2
    return rounds


def tool_turn(family: Family, model_id: str, body: dict[str, Any], sc: Scenario) -> tuple[str | None, list[dict]]:
    """(the turn's text, or None for the usual text; its tool calls). The model calls the tools the
    scenario names when the request offers tools and fewer than ``tool_turns`` rounds of calls end
    the conversation; after the results of a round it quotes them."""
    turns = family.tool_turns(body)
    rounds = _tool_rounds(turns)
    wanted = sc.tool_calls()
    if wanted and family.offered_tools(body) and rounds < sc.tool_turns:
        calls = []
        for call in wanted:
            raw = call["raw"]
            if sc.tool_ascii and _is_json(raw):  # the model escapes every non-ASCII character
                raw = json.dumps(json.loads(raw))
            pieces = input_pieces(raw, pairs=bool(sc.split_pairs)) if family.streams_tool_input else [raw]
            calls.append({"id": family.tool_id(), "name": call["name"], "raw": raw, "pieces": pieces})
        return (sc.text or ""), calls
    if rounds:
        return _tool_answer(turns), []
    return sc.text, []


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _thinking_first(where: str, found: str) -> InvalidRequest:
    return InvalidRequest(
        f"{where}: Expected `thinking` or `redacted_thinking`, but found `{found}`. When `thinking` is enabled, "
        "a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` "
        "and `tool_result` blocks). We recommend you include thinking blocks from previous turns. To avoid this "
        "requirement, disable `thinking`. Please consult our documentation at "
        "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
    )


def _thinking_turn_missing(turns: list[ToolTurn], body: dict[str, Any]) -> tuple[int, str] | None:
    """With thinking on, the assistant turn before the last tool results must start with its
    reasoning: (its index, what it starts with) when it does not."""
    if not thinking_requested(body) or len(turns) < 2 or not turns[-1].results:
        return None
    assistant = turns[-2]
    if assistant.role != "assistant" or assistant.first in ("thinking", "redacted_thinking"):
        return None
    return len(turns) - 2, assistant.first


class _Lead:
    """Collects the events before the text: ``step`` is a counted event, ``boundary`` a block start
    or stop, sent in front of the next step."""

    def __init__(self) -> None:
        self.steps: list[bytes] = []
        self.pending = b""

    def step(self, message: bytes) -> None:
        self.steps.append(self.pending + message)
        self.pending = b""

    def boundary(self, message: bytes) -> None:
        self.pending += message


class Family:
    """One reply shape. Subclasses build framed eventstream messages and non-streaming bodies."""

    name = "base"
    normal_stop = "stop"
    length_stop = "length"
    #: the stop reason when a guardrail intervened (None: the family reports its normal one)
    guardrail_stop: str | None = None
    #: the last token event also carries the stop reason and metrics (no separate final chunk)
    merges_last = False
    max_tokens_path: tuple[str, ...] = ("max_tokens",)
    #: The scenario controls beyond text this reply shape can carry (see ``FEATURES``).
    features: frozenset[str] = frozenset()
    #: The invocation metrics always carry the cache token counts (Nova's do, even when 0).
    cache_metrics = False
    #: A tool call's input arrives in pieces (Nova's native format sends it whole, in one delta).
    streams_tool_input = True

    def prompt_text(self, body: dict[str, Any]) -> str:
        p = body.get("prompt")
        return p if isinstance(p, str) else json.dumps(body, sort_keys=True)

    def max_tokens(self, body: dict[str, Any]) -> int | None:
        return _int_or_none(_dig(body, *self.max_tokens_path))

    def check_request(self, model_id: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Refuse (InvalidRequest) what Bedrock refuses in the body; return its attachments."""
        return []

    def offered_tools(self, body: dict[str, Any]) -> list[str]:
        """The names of the tools the request offers."""
        return []

    def tool_turns(self, body: dict[str, Any]) -> list[ToolTurn]:
        """The request's messages, as far as tools go."""
        return []

    def tool_id(self) -> str:
        """A new tool call id, in the service's style."""
        raise NotImplementedError

    def lead(self, plan: Plan) -> _Lead:
        """Lay out the content blocks before the text (reasoning, citations); sets ``text_index``."""
        return _Lead()

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


def _guardrail_match(plan: Plan) -> str:
    """A word the guardrail masked: in the unmasked output, not in the answer."""
    shown = set(plan.text.split())
    return next((word for word in plan.unmasked.split() if word not in shown), plan.unmasked)


def _guardrail_metrics(characters: int) -> dict[str, Any]:
    return {
        "guardrailProcessingLatency": 21,
        "usage": {"topicPolicyUnits": 1, "contentPolicyUnits": 1, "wordPolicyUnits": 1,
                  "sensitiveInformationPolicyUnits": 1, "sensitiveInformationPolicyFreeUnits": 0,
                  "contextualGroundingPolicyUnits": 0},
        "guardrailCoverage": {"textCharacters": {"guarded": characters, "total": characters}},
    }


_GUARDRAIL_ID = "emulatorguard1"


def _pii(plan: Plan) -> dict[str, Any]:
    entity = {"match": _guardrail_match(plan), "type": "NAME", "action": "ANONYMIZED", "detected": True}
    return {"piiEntities": [entity]}


class AnthropicMessages(Family):
    name = "anthropic-messages"
    normal_stop = "end_turn"
    length_stop = "max_tokens"
    features = frozenset({"reasoning", "redacted", "cite", "cache", "tools"})

    def prompt_text(self, body: dict[str, Any]) -> str:
        return _messages_text(body)

    def check_request(self, model_id: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        for i, message in enumerate(body.get("messages") or []):
            content = message.get("content") if isinstance(message, dict) else None
            if message.get("role") != "assistant" or not isinstance(content, list):
                continue
            for j, block in enumerate(content):
                if isinstance(block, dict) and block.get("type") == "thinking":
                    if not block.get("signature"):
                        raise InvalidRequest(f"messages.{i}.content.{j}.thinking.signature: Field required")
                    check_signature(block.get("thinking"), block["signature"], f"messages.{i}.content.{j}")
        self._check_tools(body)
        return anthropic_attachments(body, model_id)

    def _check_tools(self, body: dict[str, Any]) -> None:
        """Each ``tool_use`` answered by a ``tool_result`` in the next message and each result
        answering a call of the previous one, with Anthropic's messages."""
        turns = self.tool_turns(body)
        if any(turn.uses or turn.results for turn in turns) and not body.get("tools"):
            raise InvalidRequest("Requests which include `tool_use` or `tool_result` blocks must define tools.")
        for i, turn in enumerate(turns):
            called = {call_id for call_id, _ in turns[i - 1].uses} if i and turns[i - 1].role == "assistant" else set()
            for j, call_id, _, _ in turn.results:
                if call_id not in called:
                    raise InvalidRequest(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {call_id}. "
                        "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                    )
            missing = _unanswered(turns, i)
            if missing:
                raise InvalidRequest(
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block "
                    "in the next message."
                )
        unthought = _thinking_turn_missing(turns, body)
        if unthought is not None:
            raise _thinking_first(f"messages.{unthought[0]}.content.0.type", unthought[1])

    def offered_tools(self, body: dict[str, Any]) -> list[str]:
        tools = body.get("tools")
        return [t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)] if isinstance(
            tools, list
        ) else []

    def tool_turns(self, body: dict[str, Any]) -> list[ToolTurn]:
        turns = []
        for message in body.get("messages") or []:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            blocks = content if isinstance(content, list) else [{"type": "text"}]
            first = blocks[0].get("type", "") if blocks and isinstance(blocks[0], dict) else ""
            uses, results = [], []
            for j, block in enumerate(blocks):
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_use":
                    uses.append((str(block.get("id")), str(block.get("name"))))
                elif block.get("type") == "tool_result":
                    result = block.get("content")
                    text = result if isinstance(result, str) else _content_text(result)
                    results.append((j, str(block.get("tool_use_id")), text, bool(block.get("is_error"))))
            turns.append(ToolTurn(str(message.get("role")), first, uses, results))
        return turns

    def tool_id(self) -> str:
        return "toolu_bdrk_01" + "".join(_rand.choice(_ID_ALPHABET) for _ in range(22))

    @staticmethod
    def _model_name(model_id: str) -> str:
        m = model_id.split("anthropic.", 1)[-1]
        return re.sub(r"-v\d+(:\d+)?$", "", m)

    def _usage(self, plan: Plan, output_tokens: int) -> dict[str, int]:
        usage = {"input_tokens": plan.input_tokens, "output_tokens": output_tokens}
        if plan.cache_read or plan.cache_write:
            usage["cache_creation_input_tokens"] = plan.cache_write
            usage["cache_read_input_tokens"] = plan.cache_read
        return usage

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
                "usage": self._usage(plan, 1),
            },
        }
        return [_model_json(start)]

    @staticmethod
    def _block(kind: str, index: int, **fields: Any) -> bytes:
        return _model_json({"type": kind, "index": index, **fields})

    def lead(self, plan: Plan) -> _Lead:
        lead, k, block = _Lead(), 0, self._block
        if plan.reasoning:
            thinking = {"type": "thinking", "thinking": "", "signature": ""}
            lead.boundary(block("content_block_start", k, content_block=thinking))
            for tok in plan.reasoning:
                lead.step(block("content_block_delta", k, delta={"type": "thinking_delta", "thinking": tok}))
            for piece in signature_pieces(plan.signature):
                lead.step(block("content_block_delta", k, delta={"type": "signature_delta", "signature": piece}))
            lead.boundary(block("content_block_stop", k))
            k += 1
        if plan.redacted is not None:
            data = base64.b64encode(plan.redacted).decode()
            lead.boundary(block("content_block_start", k, content_block={"type": "redacted_thinking", "data": data}))
            lead.boundary(block("content_block_stop", k))
            k += 1
        text: dict[str, Any] = {"type": "text", "text": ""}
        if plan.citation:
            text["citations"] = []
        if plan.tokens or not plan.tool_calls:  # a turn of tool calls alone has no text block
            lead.boundary(block("content_block_start", k, content_block=text))
        if plan.citation:
            cited = plan.citation["text"]
            citation = {"type": "char_location", "cited_text": cited, "document_index": 0,
                        "document_title": plan.citation["title"], "start_char_index": 0, "end_char_index": len(cited)}
            lead.step(block("content_block_delta", k, delta={"type": "citations_delta", "citation": citation}))
        plan.text_index = k
        return lead

    def token(self, plan: Plan, tok: str, i: int, final_metrics: dict[str, Any] | None) -> bytes:
        msg = encode_chunk(
            b'{"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":' % plan.text_index
            + _dumps(tok)
            + b"}}",
            padding(),
        )
        return plan.bridge + msg if i == 0 and plan.bridge else msg

    def tail(self, plan: Plan, sent: int, merged: bool, metrics: dict[str, Any]) -> list[bytes]:
        return [
            *([plan.bridge] if plan.bridge and not sent else []),
            *([_model_json({"type": "content_block_stop", "index": plan.text_index})]
              if plan.tokens or not plan.tool_calls else []),
            *self._tool_blocks(plan),
            _model_json(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": plan.stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": plan.output_tokens(sent)},
                }
            ),
            _model_json({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics}),
        ]

    def _tool_blocks(self, plan: Plan) -> list[bytes]:
        out = []
        for k, call in enumerate(plan.tool_calls):
            index = plan.tool_index + k
            start = {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}
            out.append(self._block("content_block_start", index, content_block=start))
            for piece in call["pieces"]:
                delta = {"type": "input_json_delta", "partial_json": piece}
                out.append(self._block("content_block_delta", index, delta=delta))
            out.append(self._block("content_block_stop", index))
        return out

    def invoke_body(self, plan: Plan, latency_ms: int) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if plan.reasoning:
            content.append({"type": "thinking", "thinking": "".join(plan.reasoning), "signature": plan.signature})
        if plan.redacted is not None:
            content.append({"type": "redacted_thinking", "data": base64.b64encode(plan.redacted).decode()})
        if plan.tokens or not plan.tool_calls:
            content.append({"type": "text", "text": plan.text})
        for call in plan.tool_calls:
            content.append({"type": "tool_use", "id": call["id"], "name": call["name"],
                            "input": _parsed_input(call["raw"])})
        return {
            "id": "msg_bdrk_" + hashlib.sha1(plan.text.encode()).hexdigest()[:24],
            "type": "message",
            "role": "assistant",
            "model": self._model_name(plan.model_id),
            "content": content,
            "stop_reason": plan.stop_reason,
            "stop_sequence": None,
            "usage": self._usage(plan, plan.output_tokens(len(plan.tokens))),
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
    features = frozenset({"guardrail"})

    def prompt_text(self, body: dict[str, Any]) -> str:
        p = body.get("inputText")
        return p if isinstance(p, str) else json.dumps(body, sort_keys=True)

    def _guardrail(self, plan: Plan, obj: dict[str, Any], last: bool) -> dict[str, Any]:
        """Invoke guardrails: the action on every chunk, the trace (when asked for) on the last."""
        if plan.guardrail:
            obj["amazon-bedrock-guardrailAction"] = "INTERVENED"
            if last and plan.trace:
                output = {_GUARDRAIL_ID: {"sensitiveInformationPolicy": _pii(plan),
                                          "invocationMetrics": _guardrail_metrics(len(plan.unmasked))}}
                obj["amazon-bedrock-trace"] = {"guardrail": {
                    "modelOutput": [plan.unmasked],
                    "input": {_GUARDRAIL_ID: {"invocationMetrics": _guardrail_metrics(plan.input_tokens)}},
                    "outputs": [output],
                }}
        return obj

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
        return _model_json(self._guardrail(plan, obj, final_metrics is not None))

    def tail(self, plan: Plan, sent: int, merged: bool, metrics: dict[str, Any]) -> list[bytes]:
        if merged:
            return []
        obj = {
            "outputText": "",
            "index": 0,
            "totalOutputTextTokenCount": sent,
            "completionReason": plan.stop_reason,
            "inputTextTokenCount": plan.input_tokens,
            "amazon-bedrock-invocationMetrics": metrics,
        }
        return [_model_json(self._guardrail(plan, obj, True))]

    def invoke_body(self, plan: Plan, latency_ms: int) -> dict[str, Any]:
        return {
            "inputTextTokenCount": plan.input_tokens,
            "results": [
                {"tokenCount": len(plan.tokens), "outputText": plan.text, "completionReason": plan.stop_reason}
            ],
        }


class _ConverseShapes(Family):
    """What Converse and Amazon Nova's native invoke format share: the request's messages, its images
    and documents, its reasoning blocks sent back."""

    def prompt_text(self, body: dict[str, Any]) -> str:
        return _messages_text(body)

    def check_request(self, model_id: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        claude = "anthropic.claude" in model_id
        for i, message in enumerate(body.get("messages") or []):
            content = message.get("content") if isinstance(message, dict) else None
            if message.get("role") != "assistant" or not isinstance(content, list):
                continue
            for j, block in enumerate(content):
                reasoning = _dig(block, "reasoningContent", "reasoningText")
                if not isinstance(reasoning, dict):
                    continue
                where = f"The model returned the following errors: messages.{i}.content.{j}"
                if claude and not reasoning.get("signature"):
                    raise InvalidRequest(f"{where}.thinking.signature: Field required")
                check_signature(reasoning.get("text"), reasoning.get("signature"), where)
        self._check_tools(body, claude)
        return converse_attachments(body, model_id)

    def _check_tools(self, body: dict[str, Any], claude: bool) -> None:
        """Converse's own checks of toolUse / toolResult blocks, with its messages; Claude's rule
        that a reasoning turn sends its reasoning back with its tool calls."""
        turns = self.tool_turns(body)
        if any(turn.uses or turn.results for turn in turns) and not isinstance(body.get("toolConfig"), dict):
            raise InvalidRequest(
                "The toolConfig field must be defined when using toolUse and toolResult content blocks."
            )
        for i, turn in enumerate(turns):
            if turn.results:
                called = turns[i - 1].uses if i and turns[i - 1].role == "assistant" else []
                if len(turn.results) > len(called):
                    raise InvalidRequest(
                        f"The number of toolResult blocks at messages.{i}.content exceeds the number of toolUse "
                        "blocks of previous turn."
                    )
            for j, _, text, error in turn.results:
                if error and not text:
                    raise InvalidRequest(
                        f"The content field at messages.{i}.content.{j}.toolResult cannot be empty when status "
                        "value is error."
                    )
            missing = _unanswered(turns, i)
            if missing:
                raise InvalidRequest(
                    f"Expected toolResult blocks at messages.{i + 1}.content for the following Ids: "
                    + ", ".join(missing)
                )
        unthought = _thinking_turn_missing(turns, body) if claude else None
        if unthought is not None:
            where = f"The model returned the following errors: messages.{unthought[0]}.content.0.type"
            raise _thinking_first(where, unthought[1])

    def offered_tools(self, body: dict[str, Any]) -> list[str]:
        tools = _dig(body, "toolConfig", "tools")
        names = [_dig(tool, "toolSpec", "name") for tool in tools] if isinstance(tools, list) else []
        return [name for name in names if isinstance(name, str)]

    def tool_turns(self, body: dict[str, Any]) -> list[ToolTurn]:
        kinds = {"toolUse": "tool_use", "toolResult": "tool_result", "reasoningContent": "thinking"}
        turns = []
        for message in body.get("messages") or []:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            blocks = content if isinstance(content, list) else []
            head = next(iter(blocks[0]), "") if blocks and isinstance(blocks[0], dict) else ""
            if head == "reasoningContent" and "redactedContent" in (blocks[0].get("reasoningContent") or {}):
                head = "redacted_thinking"
            uses, results = [], []
            for j, block in enumerate(blocks):
                use = block.get("toolUse") if isinstance(block, dict) else None
                result = block.get("toolResult") if isinstance(block, dict) else None
                if isinstance(use, dict):
                    uses.append((str(use.get("toolUseId")), str(use.get("name"))))
                elif isinstance(result, dict):
                    text = "".join(
                        item["text"] if isinstance(item.get("text"), str)
                        else json.dumps(item["json"], ensure_ascii=False, separators=(",", ":")) if "json" in item
                        else ""
                        for item in result.get("content") or [] if isinstance(item, dict)
                    )
                    results.append((j, str(result.get("toolUseId")), text, result.get("status") == "error"))
            turns.append(ToolTurn(str(message.get("role")), kinds.get(head, head), uses, results))
        return turns

    def tool_id(self) -> str:
        return "tooluse_" + "".join(_rand.choice(_ID_ALPHABET + "-_") for _ in range(22))

    def _tool_use_blocks(self, plan: Plan) -> list[dict[str, Any]]:
        """A non-streaming reply's toolUse blocks."""
        return [{"toolUse": {"toolUseId": call["id"], "name": call["name"], "input": _parsed_input(call["raw"])}}
                for call in plan.tool_calls]


class Converse(_ConverseShapes):
    """ConverseStream events / Converse response (any model id)."""

    name = "converse"
    normal_stop = "end_turn"
    length_stop = "max_tokens"
    guardrail_stop = "guardrail_intervened"
    max_tokens_path = ("inferenceConfig", "maxTokens")
    features = frozenset({"reasoning", "redacted", "cite", "guardrail", "cache", "service_tier", "tools"})

    @staticmethod
    def _with_p(body: bytes) -> bytes:
        # body is a compact JSON object; append the padding field.
        return body[:-1] + b',"p":"' + padding() + b'"}'

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return encode_event("contentBlockDelta", self._with_p(_dumps({"contentBlockIndex": index, "delta": delta})))

    def _stop(self, index: int) -> bytes:
        return encode_event("contentBlockStop", self._with_p(b'{"contentBlockIndex":%d}' % index))

    def head(self, plan: Plan) -> list[bytes]:
        return [encode_event("messageStart", self._with_p(b'{"role":"assistant"}'))]

    def lead(self, plan: Plan) -> _Lead:
        lead, k = _Lead(), 0
        if plan.reasoning:
            for tok in plan.reasoning:
                lead.step(self._delta(k, {"reasoningContent": {"text": tok}}))
            for piece in signature_pieces(plan.signature):
                lead.step(self._delta(k, {"reasoningContent": {"signature": piece}}))
            lead.boundary(self._stop(k))
            k += 1
        if plan.redacted is not None:
            redacted = base64.b64encode(plan.redacted).decode()
            lead.step(self._delta(k, {"reasoningContent": {"redactedContent": redacted}}))
            lead.boundary(self._stop(k))
            k += 1
        if plan.citation:
            cited = plan.citation["text"]
            lead.step(self._delta(k, {"citation": {
                "title": plan.citation["title"],
                "sourceContent": [{"text": cited}],
                "location": {"documentChar": {"documentIndex": 0, "start": 0, "end": len(cited)}},
            }}))
        plan.text_index = k
        return lead

    def token(self, plan: Plan, tok: str, i: int, final_metrics: dict[str, Any] | None) -> bytes:
        msg = encode_event(
            "contentBlockDelta",
            b'{"contentBlockIndex":%d,"delta":{"text":' % plan.text_index
            + _dumps(tok) + b'},"p":"' + padding() + b'"}',
        )
        return plan.bridge + msg if i == 0 and plan.bridge else msg

    def _usage(self, plan: Plan, output_tokens: int) -> dict[str, int]:
        usage = {
            "inputTokens": plan.input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": plan.input_tokens + output_tokens + plan.cache_read + plan.cache_write,
        }
        if plan.cache_read or plan.cache_write:
            usage["cacheReadInputTokens"] = plan.cache_read
            usage["cacheWriteInputTokens"] = plan.cache_write
        return usage

    def _trace(self, plan: Plan) -> dict[str, Any] | None:
        if not (plan.guardrail and plan.trace):
            return None
        assessment = {
            "sensitiveInformationPolicy": _pii(plan),
            "invocationMetrics": _guardrail_metrics(len(plan.unmasked)),
        }
        return {"guardrail": {
            "modelOutput": [plan.unmasked],
            "inputAssessment": {_GUARDRAIL_ID: {"invocationMetrics": _guardrail_metrics(plan.input_tokens)}},
            "outputAssessments": {_GUARDRAIL_ID: [assessment]},
            "actionReason": "Guardrail masked.",
        }}

    def tail(self, plan: Plan, sent: int, merged: bool, metrics: dict[str, Any]) -> list[bytes]:
        metadata: dict[str, Any] = {
            "usage": self._usage(plan, plan.output_tokens(sent)),
            "metrics": {"latencyMs": metrics["invocationLatency"]},
        }
        trace = self._trace(plan)
        if trace:
            metadata["trace"] = trace
        if plan.service_tier:
            metadata["serviceTier"] = {"type": plan.service_tier}
        return [
            *([plan.bridge] if plan.bridge and not sent else []),
            *([self._stop(plan.text_index)] if plan.tokens or not plan.tool_calls else []),
            *self._tool_blocks(plan),
            encode_event("messageStop", self._with_p(_dumps({"stopReason": plan.stop_reason}))),
            encode_event("metadata", self._with_p(_dumps(metadata))),
        ]

    def _tool_blocks(self, plan: Plan) -> list[bytes]:
        """Each call: a contentBlockStart naming it, its input in pieces, its contentBlockStop."""
        out = []
        for k, call in enumerate(plan.tool_calls):
            index = plan.tool_index + k
            start = {"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": call["id"], "name": call["name"]}}}
            out.append(encode_event("contentBlockStart", self._with_p(_dumps(start))))
            out.extend(self._delta(index, {"toolUse": {"input": piece}}) for piece in call["pieces"])
            out.append(self._stop(index))
        return out

    def invoke_body(self, plan: Plan, latency_ms: int) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if plan.reasoning:
            text = "".join(plan.reasoning)
            content.append({"reasoningContent": {"reasoningText": {"text": text, "signature": plan.signature}}})
        if plan.redacted is not None:
            content.append({"reasoningContent": {"redactedContent": base64.b64encode(plan.redacted).decode()}})
        if plan.tokens or not plan.tool_calls:
            content.append({"text": plan.text})
        out: dict[str, Any] = {
            "output": {"message": {"role": "assistant", "content": [*content, *self._tool_use_blocks(plan)]}},
            "stopReason": plan.stop_reason,
            "usage": self._usage(plan, plan.output_tokens(len(plan.tokens))),
            "metrics": {"latencyMs": latency_ms},
        }
        trace = self._trace(plan)
        if trace:
            out["trace"] = trace
        if plan.service_tier:
            out["serviceTier"] = {"type": plan.service_tier}
        return out


class Nova(_ConverseShapes):
    """Amazon Nova's native invoke format (``schemaVersion: messages-v1``): Converse's event shapes,
    one per chunk; as recorded from Bedrock, each text delta is a content block of its own."""

    name = "amazon-nova"
    normal_stop = "end_turn"
    length_stop = "max_tokens"
    max_tokens_path = ("inferenceConfig", "max_new_tokens")
    features = frozenset({"cache", "tools"})
    cache_metrics = True
    streams_tool_input = False

    def check_request(self, model_id: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        if not isinstance(body.get("messages"), list):
            raise InvalidRequest(
                "Malformed input request: #: required key [messages] not found, "
                "please reformat your input and try again."
            )
        return super().check_request(model_id, body)

    def head(self, plan: Plan) -> list[bytes]:
        return [_model_json({"messageStart": {"role": "assistant"}})]

    def token(self, plan: Plan, tok: str, i: int, final_metrics: dict[str, Any] | None) -> bytes:
        return encode_chunk(
            b'{"contentBlockDelta":{"delta":{"text":' + _dumps(tok) + b'},"contentBlockIndex":%d}}' % i, padding()
        ) + encode_chunk(b'{"contentBlockStop":{"contentBlockIndex":%d}}' % i, padding())

    def _usage(self, plan: Plan, output_tokens: int) -> dict[str, int]:
        return {"inputTokens": plan.input_tokens, "outputTokens": output_tokens,
                "cacheReadInputTokenCount": plan.cache_read, "cacheWriteInputTokenCount": plan.cache_write}

    def tool_id(self) -> str:
        return str(uuid.UUID(int=_rand.getrandbits(128), version=4))

    def tail(self, plan: Plan, sent: int, merged: bool, metrics: dict[str, Any]) -> list[bytes]:
        metadata = {"usage": self._usage(plan, plan.output_tokens(sent)), "metrics": {}, "trace": {}}
        calls = []
        for k, call in enumerate(plan.tool_calls):  # as recorded: after the text's blocks, input whole
            index = len(plan.tokens) + k
            use = {"toolUseId": call["id"], "name": call["name"]}
            calls.append(_model_json({"contentBlockStart": {"start": {"toolUse": use}, "contentBlockIndex": index}}))
            calls.extend(
                _model_json({"contentBlockDelta": {"delta": {"toolUse": {"input": piece}}, "contentBlockIndex": index}})
                for piece in call["pieces"]
            )
            calls.append(_model_json({"contentBlockStop": {"contentBlockIndex": index}}))
        return [
            *calls,
            _model_json({"messageStop": {"stopReason": plan.stop_reason}}),
            _model_json({"metadata": metadata, "amazon-bedrock-invocationMetrics": metrics}),
        ]

    def invoke_body(self, plan: Plan, latency_ms: int) -> dict[str, Any]:
        output = plan.output_tokens(len(plan.tokens))
        usage = self._usage(plan, output)
        usage["totalTokens"] = plan.input_tokens + output
        content = [{"text": plan.text}] if plan.tokens or not plan.tool_calls else []
        return {
            "output": {"message": {"content": [*content, *self._tool_use_blocks(plan)], "role": "assistant"}},
            "stopReason": plan.stop_reason,
            "usage": usage,
        }


ANTHROPIC_MESSAGES = AnthropicMessages()
ANTHROPIC_COMPLETIONS = AnthropicCompletions()
COHERE = Cohere()
LLAMA = Llama()
MISTRAL = Mistral()
TITAN = Titan()
CONVERSE = Converse()
NOVA = Nova()

#: The reply format for each family of the package's registry (``families.FAMILIES``), by name: a
#: family added to the registry needs its replies here, and nothing else in the emulator.
REPLIES: dict[str, Family] = {
    "anthropic": ANTHROPIC_COMPLETIONS,
    "anthropic-messages": ANTHROPIC_MESSAGES,
    "cohere": COHERE,
    "llama2": LLAMA,
    "llama3": LLAMA,
    "mistral": MISTRAL,
    "titan": TITAN,
    "nova": NOVA,
    "converse": CONVERSE,
}


def _unanswered(turns: Sequence[Any], index: int) -> list[str]:
    """The ids of the tool calls of turn ``index`` that the next turn does not answer."""
    if not turns[index].uses or index + 1 >= len(turns):
        return []
    answered = {result[1] for result in turns[index + 1].results}
    return [call_id for call_id, _ in turns[index].uses if call_id not in answered]


def invoke_family(model_id: str, body: Any) -> Family:
    """The reply family for an InvokeModel[WithResponseStream] request, or raise InvalidRequest."""
    from ..families import FAMILIES

    for name, family in FAMILIES.items():
        if family.operation == "invoke_model_with_response_stream" and family.serves(model_id, body):
            return REPLIES[name]
    if base_model_id(model_id).startswith("anthropic.claude"):  # Claude, but neither of its formats
        if not isinstance(body, dict):
            raise InvalidRequest("Malformed input request, please reformat your input and try again.")
        raise InvalidRequest(
            "Malformed input request: required key [messages] not found, please reformat your input and try again."
        )
    raise InvalidRequest("The provided model identifier is invalid.")


def make_plan(
    family: Family, model_id: str, body: Any, scenario: Scenario, headers: dict[str, str] | None = None
) -> Plan:
    """The reply for this request. Checks the body as Bedrock would (raises InvalidRequest).
    ``headers``: the request's (lower-case names), for the invoke guardrail trace switch."""
    body_dict = body if isinstance(body, dict) else {}
    attachments = family.check_request(model_id, body_dict) if body_dict else []
    prompt = family.prompt_text(body_dict) if body_dict else ""
    text = scenario.text
    tool_calls: list[dict[str, Any]] = []
    if "tools" in family.features and body_dict:
        text, tool_calls = tool_turn(family, model_id, body_dict, scenario)
    if text is not None:
        tokens = split_text(text)
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
        attachments=attachments,
        tool_calls=tool_calls,
    )
    if isinstance(body_dict.get("prompt"), str):
        plan.extra["prompt"] = body_dict["prompt"]
    _beyond_text(plan, scenario, body_dict, headers or {})
    return plan


#: Scenario controls beyond text -> whether a scenario asks for them.
FEATURES: dict[str, Any] = {
    "reasoning": lambda sc: sc.reasoning is not None,
    "redacted": lambda sc: sc.redacted is not None,
    "cite": lambda sc: sc.cite is not None,
    "guardrail": lambda sc: sc.guardrail is not None,
    "cache": lambda sc: bool(sc.cache_read or sc.cache_write),
    "service_tier": lambda sc: sc.service_tier is not None,
    "tools": lambda sc: sc.tool is not None or sc.tools is not None,
}


def _beyond_text(plan: Plan, sc: Scenario, body: dict[str, Any], headers: dict[str, str]) -> None:
    family = plan.family
    missing = [name for name, wanted in FEATURES.items() if wanted(sc) and name not in family.features]
    if missing:
        raise InvalidRequest(f"The emulator has no {', '.join(missing)} for {family.name} replies.")
    reasoning = sc.reasoning
    if reasoning is None and "reasoning" in family.features and thinking_requested(body):
        reasoning = "".join(generated_tokens("reasoning\n" + plan.text, 8)) + "."
    plan.reasoning = split_text(reasoning or "")
    plan.redacted = sc.redacted.encode("utf-8") if sc.redacted is not None else None
    if sc.cite is not None:
        names = [a["name"] for a in plan.attachments if a["kind"] == "document" and a.get("name")]
        plan.citation = {"title": sc.cite_title or (names[0] if names else "document"), "text": sc.cite}
    if sc.guardrail:
        plan.guardrail = True
        plan.unmasked = sc.unmasked if sc.unmasked is not None else f"Alice Example: {plan.text}"
        config = body.get("guardrailConfig")
        converse_trace = isinstance(config, dict) and config.get("trace") in ("enabled", "enabled_full")
        plan.trace = converse_trace or headers.get("x-amzn-bedrock-trace", "").upper() in ("ENABLED", "ENABLED_FULL")
    plan.cache_read, plan.cache_write = sc.cache_read, sc.cache_write
    tier = _dig(body, "serviceTier", "type")
    echoed = tier if "service_tier" in family.features and isinstance(tier, str) else None
    plan.service_tier = sc.service_tier or echoed
    lead = family.lead(plan)
    if lead.steps:
        plan.lead, plan.bridge = lead.steps, lead.pending
    else:
        plan.opening = lead.pending


def cached_prefix(body: Any) -> str | None:
    """The part of a request up to its last cache point, as canonical JSON, or ``None`` without one.
    Bedrock caches tools, then the system prompt, then the messages: Converse (and Nova) mark the end
    of the prefix with a ``{"cachePoint": ...}`` block, Anthropic with ``cache_control`` on a block."""
    if not isinstance(body, dict):
        return None
    items: list[Any] = []
    end = 0
    tool_config = body.get("toolConfig")
    system = body.get("system")
    messages: list[Any] = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        messages.extend(content if isinstance(content, list) else [content])
    sections = [
        (tool_config.get("tools") if isinstance(tool_config, dict) else None) or body.get("tools"),
        system if isinstance(system, list) else [system] if system else [],
        messages,
    ]
    for section in sections:
        for item in section if isinstance(section, list) else []:
            if isinstance(item, dict) and "cachePoint" in item:
                end = len(items)
                continue
            items.append(item)
            if isinstance(item, dict) and "cache_control" in item:
                end = len(items)
    return json.dumps(items[:end], sort_keys=True) if end else None


# ----------------------------------------------------------------------------------------------
# Text extraction from recorded/replayed messages (record["text"] for replays).


def extract_text(headers: dict[str, Any], payload: bytes) -> str | None:
    """The text delta carried by one event (per the fixtures README's ``expected_text``), else None."""
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

