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
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

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


def _validated(messages: Sequence[Mapping[str, str]]) -> list[tuple[int, str, str]]:
    """Return ``(index, role, content)`` triples, raising on bad input."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a sequence of mappings, got {type(messages).__name__}")
    out: list[tuple[int, str, str]] = []
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
        out.append((i, role, content))
    return out


def extract_system(messages: Sequence[Mapping[str, str]]) -> str | None:
    """Join all system messages with a blank line, for the Messages API ``system`` field.

    Whitespace-only system messages are skipped; ``None`` when nothing is left,
    so callers can omit the field entirely.
    """
    parts = [content for _, role, content in _validated(messages) if role == "system" and content.strip()]
    return "\n\n".join(parts) if parts else None


def _turns(messages: Sequence[Mapping[str, str]]) -> list[_Turn]:
    """Non-system turns, blank ones skipped, same-role runs merged; starts with user."""
    turns: list[_Turn] = []
    for i, role, content in _validated(messages):
        if role == "system" or not content.strip():
            continue
        if turns and turns[-1].role == role:
            turns[-1] = _Turn(role, f"{turns[-1].text}\n\n{content}", turns[-1].index)
        else:
            turns.append(_Turn(role, content, i))
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


def _text_conversation(messages: Sequence[Mapping[str, str]], family: Family) -> _TextConversation:
    """Stripped, neutralised system text and turns for a text-prompt family."""
    system = extract_system(messages)
    turns = [_Turn(t.role, neutralise_markers(t.text.strip(), family), t.index) for t in _turns(messages)]
    clean_system = neutralise_markers(system.strip(), family) if system else None
    return _TextConversation(clean_system or None, turns)


# --------------------------------------------------------------------------
# Anthropic Claude
# --------------------------------------------------------------------------


def build_anthropic_prompt(messages: Sequence[Mapping[str, str]]) -> str:
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


def build_anthropic_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Claude Messages API ``messages`` list (send system via :func:`extract_system`).

    Roles strictly alternate and start with ``user`` (an opening assistant
    message raises ``ValueError`` rather than inventing a user turn).  Content
    is sent verbatim: roles are structural here, so there is nothing to
    neutralise.  A trailing assistant message (prefill) loses its trailing
    whitespace, which the API rejects.
    """
    return [{"role": t.role, "content": [{"type": "text", "text": t.text}]} for t in _structured_turns(messages)]


def _structured_turns(messages: Sequence[Mapping[str, str]]) -> list[_Turn]:
    """The turns of the structured APIs: verbatim, except that a prefill loses its trailing whitespace."""
    turns = _turns(messages)
    if turns[-1].role == "assistant":
        turns[-1] = _Turn("assistant", turns[-1].text.rstrip(), turns[-1].index)
    return turns


# --------------------------------------------------------------------------
# Converse API (any model)
# --------------------------------------------------------------------------


def build_converse_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Converse API ``messages`` list (send system via :func:`extract_system`).

    The same turns as :func:`build_anthropic_messages`, in Converse's content
    block shape ``{"text": ...}``: Bedrock rejects an opening assistant turn, a
    blank text block and a prefill ending in whitespace, so the first raises
    ``ValueError`` and the others never reach it (skipped, stripped).
    """
    return [{"role": t.role, "content": [{"text": t.text}]} for t in _structured_turns(messages)]


# --------------------------------------------------------------------------
# Meta Llama
# --------------------------------------------------------------------------


def build_llama2_prompt(messages: Sequence[Mapping[str, str]]) -> str:
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


def build_llama3_prompt(messages: Sequence[Mapping[str, str]]) -> str:
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


def build_mistral_prompt(messages: Sequence[Mapping[str, str]]) -> str:
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


def _transcript(messages: Sequence[Mapping[str, str]], family: Family, bot: str) -> str:
    conv = _text_conversation(messages, family)
    labels = {"user": "User", "assistant": bot}
    lines = [f"{labels[t.role]}: {t.text}" for t in conv.turns]
    if not conv.prefill:
        lines.append(f"{bot}:")
    transcript = "\n".join(lines)
    return f"{conv.system}\n\n{transcript}" if conv.system else transcript


def build_titan_prompt(messages: Sequence[Mapping[str, str]]) -> str:
    """Amazon Titan Text chat transcript: ``User: ...\\nBot: ...\\nBot:``.

    The format AWS's Titan docs use; system text, if any, is a preamble
    followed by a blank line.
    """
    return _transcript(messages, "titan", "Bot")


def build_cohere_prompt(messages: Sequence[Mapping[str, str]]) -> str:
    """Cohere Command (text generation) chat transcript: ``User: ...\\nChatbot: ...\\nChatbot:``.

    Same shape as Titan with Cohere's ``Chatbot`` speaker name.
    """
    return _transcript(messages, "cohere", "Chatbot")
