"""Prompt builders for the Bedrock model families.

Every builder takes the same chat-style input, a sequence of
``{"role": "system" | "user" | "assistant", "content": str}`` mappings, so
views and the emulator can stay family-agnostic.

Shared rules (one place each, so the families cannot drift apart):

* System messages are hoisted: all of them, wherever they occur, are joined
  with a blank line (:func:`extract_system`) and placed where the family
  expects a system prompt.
* Whitespace-only messages are skipped, then consecutive same-role messages
  are merged (joined with a blank line) so user/assistant turns alternate.
* The first remaining turn must be ``user`` (``ValueError`` otherwise); the
  text formats cannot represent an opening assistant turn.
* A trailing assistant message is a *prefill*: the prompt ends inside that
  assistant turn (its trailing whitespace removed) so the model continues it,
  instead of opening a new, empty assistant turn.
* Text formats strip each turn's content, as Meta's reference chat formatters
  do; the structured APIs (Claude Messages, Converse) keep content verbatim.
* Role markers inside any content (system text included) are neutralised by
  :func:`neutralise_markers` so user text cannot forge a turn.  The rule is
  the same for every family: a zero-width space (U+200B) is inserted after
  the first character of each marker.  Text looks unchanged to a reader, yet
  neither the literal marker nor its special token survives.

Beyond text, a message may carry (both optional, both set by the request validation from AI SDK
``parts``, or by a ``get_messages`` override):

* ``attachments``: :class:`~django_bedrock_stream.media.Attachment` values (images and documents,
  checked by content), in user messages only. A user turn with files and no text is kept. The
  structured builders put them before the turn's text; the text formats refuse them
  (:class:`~django_bedrock_stream.media.FileRefused`, code ``unsupported_media``).
* ``reasoning``: the model's earlier reasoning blocks, in assistant messages, to be sent back
  unchanged: ``{"text", "signature"}`` or ``{"redacted"}`` (base64). The structured builders put
  them before the turn's text; the text formats leave them out.
* ``tool_calls``: the model's tool calls, in assistant messages: ``{"id", "name", "input"}``; the
  structured builders put them after the turn's text (``toolUse`` / ``tool_use`` blocks).
* ``tool_results``: their results, in the user message that follows: ``{"id", "name", "output"}``
  or ``{"id", "name", "error"}`` (text); put before the turn's files and text (``toolResult`` /
  ``tool_result`` blocks). A turn with calls or results and no text is kept. The text formats
  refuse both (``ValueError``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .media import Attachment, FileRefused, decode_base64
from .parts import ToolCall, ToolResult
from .tools import anthropic_call_blocks, anthropic_result_blocks, converse_call_blocks, converse_result_blocks

__all__ = [
    "Family",
    "build_anthropic_messages",
    "build_anthropic_prompt",
    "build_cohere_prompt",
    "build_converse_messages",
    "build_llama2_prompt",
    "build_llama3_prompt",
    "build_mistral_prompt",
    "build_titan_prompt",
    "extract_system",
    "neutralise_markers",
]

Family = Literal["anthropic", "llama2", "llama3", "mistral", "titan", "cohere"]

ROLES = ("system", "user", "assistant")
ZWSP = "\u200b"

# --------------------------------------------------------------------------
# Marker neutralisation
# --------------------------------------------------------------------------

# Everything str.splitlines() treats as a line boundary: a label after any of
# these starts a new line as far as a reader (or a model) is concerned.
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_LINE_START = rf"(?:\A|(?<=[{_LINE_BREAKS}]))[^\S{_LINE_BREAKS}]*"
_COLON = "[:\uff1a\ufe55]"  # ASCII, fullwidth and small colon


def _line_labels(*labels: str) -> str:
    """``Label:`` at the start of a line (leading blanks allowed)."""
    return rf"{_LINE_START}({'|'.join(labels)})(?=[^\S{_LINE_BREAKS}]*{_COLON})"


_INST = r"\[\s*/?\s*INST\s*\]"
_BOS_EOS = r"<\s*/?\s*s\s*>"
_LLAMA2_SYS = r"<<\s*/?\s*SYS\s*>>"
_MISTRAL_CONTROL = r"\[\s*/?\s*(?:SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS)\s*\]"
_LLAMA3_SPECIAL = r"<\|[^<>|]*\|>"

# Group 1 of each pattern is the marker to break.
_MARKERS: dict[str, re.Pattern[str]] = {
    "anthropic": re.compile(_line_labels("Human", "Assistant", "H", "A"), re.IGNORECASE),
    "llama2": re.compile(rf"({_LLAMA2_SYS}|{_INST}|{_BOS_EOS})", re.IGNORECASE),
    "llama3": re.compile(rf"({_LLAMA3_SPECIAL})"),
    "mistral": re.compile(rf"({_INST}|{_MISTRAL_CONTROL}|{_BOS_EOS})", re.IGNORECASE),
    "titan": re.compile(_line_labels("Chatbot", "User", "Bot"), re.IGNORECASE),
    "cohere": re.compile(_line_labels("Chatbot", "User", "Bot"), re.IGNORECASE),
}


def _break_marker(match: re.Match[str]) -> str:
    cut = match.start(1) - match.start(0) + 1
    whole = match.group(0)
    return whole[:cut] + ZWSP + whole[cut:]


def neutralise_markers(text: str, family: Family) -> str:
    """Stop ``text`` from forging a turn in ``family``'s prompt format.

    Inserts U+200B after the first character of every role marker, e.g.
    ``[INST]`` -> ``[\\u200bINST]``, ``<|eot_id|>`` -> ``<\\u200b|eot_id|>``,
    a line starting ``Human:`` -> ``H\\u200buman:``.  Only U+200B is ever added
    (never removed or replaced), so ``result.replace("\\u200b", "")`` gives the
    input back and the text reads the same.  Idempotent.
    """
    try:
        pattern = _MARKERS[family]
    except KeyError:
        raise ValueError(f"unknown prompt family {family!r}; expected one of {sorted(_MARKERS)}") from None
    # U+200B is not whitespace to ``re``, so a broken marker never matches
    # again; a second pass only guards against overlapping matches.
    while True:
        new = pattern.sub(_break_marker, text)
        if new == text:
            return new
        text = new


# --------------------------------------------------------------------------
# Validation and turn normalisation
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Turn:
    role: str  # "user" or "assistant"
    text: str
    index: int  # index of the first input message merged into this turn
    attachments: tuple[Attachment, ...] = ()
    reasoning: tuple[Mapping[str, str], ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()

    def merged(self, other: _Turn) -> _Turn:
        text = "\n\n".join(t for t in (self.text, other.text) if t.strip())
        return _Turn(
            self.role,
            text,
            self.index,
            self.attachments + other.attachments,
            self.reasoning + other.reasoning,
            self.tool_calls + other.tool_calls,
            self.tool_results + other.tool_results,
        )

    @property
    def blank(self) -> bool:
        return not (self.text.strip() or self.attachments or self.tool_calls or self.tool_results)


def _validated(messages: Sequence[Mapping[str, Any]]) -> list[_Turn]:
    """Every message as a :class:`_Turn` (system ones too), raising on bad input."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a sequence of mappings, got {type(messages).__name__}")
    out: list[_Turn] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{i}] must be a mapping, got {type(message).__name__}")
        if "role" not in message:
            raise ValueError(f"messages[{i}] has no 'role'")
        role = message["role"]
        if role not in ROLES:
            raise ValueError(f"messages[{i}] has unsupported role {role!r}; expected one of {', '.join(ROLES)}")
        if "content" not in message:
            raise ValueError(f"messages[{i}] ({role}) has no 'content'")
        content = message["content"]
        if not isinstance(content, str):
            raise TypeError(f"messages[{i}] ({role}) content must be str, got {type(content).__name__}")
        attachments = tuple(message.get("attachments") or ())
        if attachments and role != "user":
            raise ValueError(f"messages[{i}] ({role}): files can only be sent in user messages")
        if not all(isinstance(a, Attachment) for a in attachments):
            raise TypeError(f"messages[{i}] attachments must be django_bedrock_stream.media.Attachment values")
        reasoning = tuple(message.get("reasoning") or ()) if role == "assistant" else ()
        for block in reasoning:
            if not (isinstance(block, Mapping) and _is_reasoning_block(block)):
                raise ValueError(
                    f"messages[{i}] reasoning blocks must be {{'text', 'signature'}} or {{'redacted'}} strings"
                )
        calls = _tool_values(message, "tool_calls", "assistant", i, _tool_call)
        results = _tool_values(message, "tool_results", "user", i, _tool_result)
        out.append(_Turn(role, content, i, attachments, reasoning, calls, results))
    return out


def _tool_values(message: Mapping[str, Any], key: str, role: str, index: int, make: Any) -> tuple[Any, ...]:
    items = message.get(key) or ()
    if items and message["role"] != role:
        raise ValueError(f"messages[{index}] ({message['role']}): {key} belong in {role} messages")
    if not isinstance(items, (list, tuple)) or not all(
        isinstance(item, Mapping) and isinstance(item.get("id"), str) and isinstance(item.get("name"), str)
        for item in items
    ):
        raise ValueError(f"messages[{index}] {key} must be a list of mappings with 'id' and 'name' strings")
    return tuple(make(item) for item in items)


def _tool_call(item: Mapping[str, Any]) -> ToolCall:
    return ToolCall(item["id"], item["name"], item.get("input"))


def _tool_result(item: Mapping[str, Any]) -> ToolResult:
    return ToolResult(item["id"], item["name"], output=item.get("output"), error=item.get("error") or "")


def _is_reasoning_block(block: Mapping[str, Any]) -> bool:
    if "redacted" in block:
        return isinstance(block["redacted"], str) and bool(block["redacted"])
    return isinstance(block.get("text"), str) and isinstance(block.get("signature"), str) and bool(block["signature"])


def extract_system(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """Join all system messages with a blank line, for the Messages API ``system`` field.

    Whitespace-only system messages are skipped; ``None`` when nothing is left,
    so callers can omit the field entirely.
    """
    parts = [t.text for t in _validated(messages) if t.role == "system" and t.text.strip()]
    return "\n\n".join(parts) if parts else None


def _turns(messages: Sequence[Mapping[str, Any]]) -> list[_Turn]:
    """Non-system turns, blank ones (no text, no file) skipped, same-role runs merged; starts with user."""
    turns: list[_Turn] = []
    for turn in _validated(messages):
        if turn.role == "system" or turn.blank:
            continue
        if turns and turns[-1].role == turn.role:
            turns[-1] = turns[-1].merged(turn)
        else:
            turns.append(turn)
    if not turns:
        raise ValueError("messages must contain at least one non-empty user message")
    if turns[0].role != "user":
        raise ValueError(
            f"messages[{turns[0].index}]: the conversation must start with a user message, "
            "not an assistant one (system messages aside)"
        )
    return turns


@dataclass(frozen=True)
class _TextConversation:
    system: str | None
    turns: list[_Turn]

    @property
    def prefill(self) -> bool:
        return self.turns[-1].role == "assistant"


def _text_conversation(messages: Sequence[Mapping[str, Any]], family: Family) -> _TextConversation:
    """Stripped, neutralised system text and turns for a text-prompt family (files refused)."""
    if any(m.get("attachments") for m in messages if isinstance(m, Mapping)):
        raise FileRefused(
            f"The {family} prompt format takes text only: files are not supported by this endpoint.",
            "unsupported_media",
        )
    if any(m.get("tool_calls") or m.get("tool_results") for m in messages if isinstance(m, Mapping)):
        raise ValueError(f"The {family} prompt format cannot carry tool calls or results.")
    system = extract_system(messages)
    turns = [_Turn(t.role, neutralise_markers(t.text.strip(), family), t.index) for t in _turns(messages)]
    clean_system = neutralise_markers(system.strip(), family) if system else None
    return _TextConversation(clean_system or None, turns)


# --------------------------------------------------------------------------
# Anthropic Claude
# --------------------------------------------------------------------------


def build_anthropic_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """Claude Text Completions prompt (``anthropic.claude-v2``/``-instant``).

    ``{system}\\n\\nHuman: {user}\\n\\nAssistant: {assistant}...\\n\\nAssistant:``;
    turns are concatenated with nothing in between (their ``\\n\\n`` prefix is
    the separator).  The system text goes first, before the first
    ``\\n\\nHuman:``, as Anthropic documents for Claude 2.1.  With a trailing
    assistant message the prompt ends ``\\n\\nAssistant: {prefill}``.
    """
    conv = _text_conversation(messages, "anthropic")
    labels = {"user": "Human", "assistant": "Assistant"}
    prompt = conv.system or ""
    prompt += "".join(f"\n\n{labels[t.role]}: {t.text}" for t in conv.turns)
    if not conv.prefill:
        prompt += "\n\nAssistant:"
    return prompt


def build_anthropic_messages(messages: Sequence[Mapping[str, Any]], *, cache: bool = False) -> list[dict[str, Any]]:
    """Claude Messages API ``messages`` list (send system via :func:`extract_system`).

    Roles strictly alternate and start with ``user`` (an opening assistant
    message raises ``ValueError`` rather than inventing a user turn).  Content
    is sent verbatim: roles are structural here, so there is nothing to
    neutralise.  A trailing assistant message (prefill) loses its trailing
    whitespace, which the API rejects.

    Files become ``image`` blocks and ``document`` blocks (PDF as base64; txt, md, csv and html as
    text); Office documents are refused (``FileRefused``). Reasoning goes back as ``thinking`` /
    ``redacted_thinking`` blocks. ``cache``: ``cache_control`` on the last user turn's last block.
    """
    out: list[dict[str, Any]] = []
    for turn in _structured_turns(messages):
        content: list[dict[str, Any]] = [_anthropic_reasoning(block) for block in turn.reasoning]
        content += anthropic_result_blocks(turn.tool_results)
        content += [_anthropic_file(a, turn.index) for a in turn.attachments]
        if turn.text.strip():
            content.append({"type": "text", "text": turn.text})
        content += anthropic_call_blocks(turn.tool_calls)
        out.append({"role": turn.role, "content": content})
    if cache:
        _last_user_content(out)[-1]["cache_control"] = dict(CACHE_CONTROL)
    return out


#: Prompt caching: Anthropic's block marker, and the block Converse (and Nova) take.
CACHE_CONTROL = {"type": "ephemeral"}
CACHE_POINT = {"cachePoint": {"type": "default"}}


def _last_user_content(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    return content


def _anthropic_reasoning(block: Mapping[str, str]) -> dict[str, Any]:
    if "redacted" in block:
        return {"type": "redacted_thinking", "data": block["redacted"]}
    return {"type": "thinking", "thinking": block["text"], "signature": block["signature"]}


def _anthropic_file(attachment: Attachment, index: int) -> dict[str, Any]:
    source: dict[str, Any]
    if attachment.kind == "image":
        source = {"type": "base64", "media_type": attachment.media_type, "data": attachment.base64}
        return {"type": "image", "source": source}
    if attachment.format == "pdf":
        source = {"type": "base64", "media_type": "application/pdf", "data": attachment.base64}
    elif attachment.format in ("txt", "md", "csv", "html"):
        source = {"type": "text", "media_type": "text/plain", "data": attachment.data.decode("utf-8")}
    else:
        raise FileRefused(
            f"messages[{index}]: Claude's Messages API takes images and PDF, txt, md, csv or html documents, "
            f"not {attachment.media_type}; send it through the Converse endpoint.",
            "unsupported_media",
        )
    block: dict[str, Any] = {"type": "document", "source": source}
    if attachment.name:
        block["title"] = attachment.name[:500]
    return block


def _structured_turns(messages: Sequence[Mapping[str, Any]]) -> list[_Turn]:
    """The turns of the structured APIs: verbatim, except that a prefill loses its trailing whitespace."""
    turns = _turns(messages)
    last = turns[-1]
    if last.role == "assistant":
        turns[-1] = dataclasses.replace(last, text=last.text.rstrip())
    return turns


# --------------------------------------------------------------------------
# Converse API (any model)
# --------------------------------------------------------------------------


def build_converse_messages(
    messages: Sequence[Mapping[str, Any]], *, binary: bool = True, documents: bool = True, cache: bool = False
) -> list[dict[str, Any]]:
    """Converse API ``messages`` list (send system via :func:`extract_system`).

    The same turns as :func:`build_anthropic_messages`, in Converse's content
    block shape ``{"text": ...}``: Bedrock rejects an opening assistant turn, a
    blank text block and a prefill ending in whitespace, so the first raises
    ``ValueError`` and the others never reach it (skipped, stripped).

    Files become ``image`` / ``document`` blocks (a document needs text beside it, as Bedrock
    requires; its ``name`` is made from the file name in the characters Bedrock allows, distinct
    across the request); reasoning goes back as ``reasoningContent`` blocks. ``binary``: bytes, as
    boto3 takes them (``False``: base64 text, for Nova's native invoke body). ``documents=False``
    refuses documents (``FileRefused``). ``cache``: a ``cachePoint`` after the last user turn.
    """
    names: set[str] = set()
    out: list[dict[str, Any]] = []
    for turn in _structured_turns(messages):
        content: list[dict[str, Any]] = [_converse_reasoning(block, binary, turn.index) for block in turn.reasoning]
        content += converse_result_blocks(turn.tool_results)
        for attachment in turn.attachments:
            data: bytes | str = attachment.data if binary else attachment.base64
            if attachment.kind == "image":
                content.append({"image": {"format": attachment.format, "source": {"bytes": data}}})
                continue
            if not documents:
                raise FileRefused(
                    f"messages[{turn.index}]: this endpoint takes images only (png, jpeg, gif, webp), "
                    f"not {attachment.media_type}; send documents through the Converse endpoint.",
                    "unsupported_media",
                )
            if not turn.text.strip():
                raise ValueError(f"messages[{turn.index}]: a message with a document needs text too")
            name = _document_name(attachment.name, names)
            content.append({"document": {"format": attachment.format, "name": name, "source": {"bytes": data}}})
        if turn.text.strip():
            content.append({"text": turn.text})
        content += converse_call_blocks(turn.tool_calls)
        out.append({"role": turn.role, "content": content})
    if cache:
        _last_user_content(out).append(dict(CACHE_POINT))
    return out


def _converse_reasoning(block: Mapping[str, str], binary: bool, index: int) -> dict[str, Any]:
    if "redacted" in block:
        data: bytes | str | None = decode_base64(block["redacted"]) if binary else block["redacted"]
        if data is None:
            raise ValueError(f"messages[{index}]: redacted reasoning must be base64")
        return {"reasoningContent": {"redactedContent": data}}
    return {"reasoningContent": {"reasoningText": {"text": block["text"], "signature": block["signature"]}}}


_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9\-()\[\] ]+")


def _document_name(filename: str | None, taken: set[str]) -> str:
    """A Converse document name: alphanumerics, single spaces, hyphens, parentheses and square
    brackets, at most 200 characters, distinct within the request (``report (2)``)."""
    stem = (filename or "").rsplit(".", 1)[0] if "." in (filename or "")[1:] else (filename or "")
    base = " ".join(_NAME_UNSAFE.sub("-", stem.replace("_", "-")).split())[:190].strip() or "document"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base} ({n})"
    taken.add(name)
    return name


# --------------------------------------------------------------------------
# Meta Llama
# --------------------------------------------------------------------------


def build_llama2_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """Llama 2 chat prompt, as Meta's reference ``chat_completion`` builds it.

    ``<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {assistant} </s>``
    per exchange, ending ``<s>[INST] {user} [/INST]``; a prefill ends
    ``[/INST] {assistant}`` with no ``</s>``.
    """
    conv = _text_conversation(messages, "llama2")
    parts: list[str] = []
    for n, turn in enumerate(conv.turns):
        if turn.role == "user":
            text = turn.text
            if n == 0 and conv.system:
                text = f"<<SYS>>\n{conv.system}\n<</SYS>>\n\n{text}"
            parts.append(f"<s>[INST] {text} [/INST]")
        else:
            last = n == len(conv.turns) - 1
            parts.append(f" {turn.text}" if last else f" {turn.text} </s>")
    return "".join(parts)


def _llama3_block(role: str, text: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n{text}"


def build_llama3_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """Llama 3 / 3.x instruct prompt (header + ``<|eot_id|>`` blocks).

    Ends with an open ``assistant`` header so the model answers; a prefill
    ends inside that assistant block, without ``<|eot_id|>``.
    """
    conv = _text_conversation(messages, "llama3")
    prompt = "<|begin_of_text|>"
    if conv.system:
        prompt += _llama3_block("system", conv.system) + "<|eot_id|>"
    for n, turn in enumerate(conv.turns):
        prompt += _llama3_block(turn.role, turn.text)
        if not (conv.prefill and n == len(conv.turns) - 1):
            prompt += "<|eot_id|>"
    if not conv.prefill:
        prompt += _llama3_block("assistant", "")
    return prompt


# --------------------------------------------------------------------------
# Mistral
# --------------------------------------------------------------------------


def build_mistral_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """Mistral / Mixtral instruct prompt.

    ``<s>[INST] {system}\\n\\n{user} [/INST] {assistant}</s>[INST] {user} [/INST]``.
    The format has no system slot, so the system text is prepended to the
    first user turn; a prefill ends ``[/INST] {assistant}`` with no ``</s>``.
    """
    conv = _text_conversation(messages, "mistral")
    parts = ["<s>"]
    for n, turn in enumerate(conv.turns):
        if turn.role == "user":
            text = f"{conv.system}\n\n{turn.text}" if n == 0 and conv.system else turn.text
            parts.append(f"[INST] {text} [/INST]")
        else:
            last = n == len(conv.turns) - 1
            parts.append(f" {turn.text}" if last else f" {turn.text}</s>")
    return "".join(parts)


# --------------------------------------------------------------------------
# Plain-text transcripts: Amazon Titan Text, Cohere Command (text)
# --------------------------------------------------------------------------


def _transcript(messages: Sequence[Mapping[str, Any]], family: Family, bot: str) -> str:
    conv = _text_conversation(messages, family)
    labels = {"user": "User", "assistant": bot}
    lines = [f"{labels[t.role]}: {t.text}" for t in conv.turns]
    if not conv.prefill:
        lines.append(f"{bot}:")
    transcript = "\n".join(lines)
    return f"{conv.system}\n\n{transcript}" if conv.system else transcript


def build_titan_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """Amazon Titan Text chat transcript: ``User: ...\\nBot: ...\\nBot:``.

    The format AWS's Titan docs use; system text, if any, is a preamble
    followed by a blank line.
    """
    return _transcript(messages, "titan", "Bot")


def build_cohere_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """Cohere Command (text generation) chat transcript: ``User: ...\\nChatbot: ...\\nChatbot:``.

    Same shape as Titan with Cohere's ``Chatbot`` speaker name.
    """
    return _transcript(messages, "cohere", "Chatbot")
