"""Model options decided by the server: sampling, reasoning, guardrails, latency, service tier, prompt
caching and cost attribution.

They come from ``BEDROCK_STREAM["CONVERSE"]``, then a view's ``converse_options``, then the request
fields the view allowlists in ``request_options`` (a client never sets anything else). The Converse
family sends them all; Nova's and Anthropic's invoke formats send what their body has a field for (see
each family's ``build_body``). Everything sent to ``converse_stream`` is checked against the installed
botocore's service model, so a key boto3 would refuse is reported as a configuration error instead.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .prompts import CACHE_POINT

__all__ = ["REQUEST_OPTIONS", "ConverseOptions", "check_converse_body"]

#: The options a view may let a request set (``request_options``). Guardrails, prompt caching,
#: request metadata and raw model fields are the server's alone.
REQUEST_OPTIONS = (
    "temperature",
    "top_p",
    "stop_sequences",
    "reasoning_budget",
    "reasoning_effort",
    "latency",
    "service_tier",
)
REASONING_EFFORTS = ("low", "medium", "high")
LATENCIES = ("standard", "optimized")
SERVICE_TIERS = ("priority", "default", "flex", "reserved")
PROMPT_CACHE = (False, True, "system", "history")
GUARDRAIL_KEYS = ("guardrailIdentifier", "guardrailVersion", "trace", "streamProcessingMode")
#: Claude's smallest thinking budget.
MIN_REASONING_BUDGET = 1024

# requestMetadata: at most 16 pairs, keys 1-256 and values 0-256 characters of this set.
_METADATA_CHARS = re.compile(r"[^a-zA-Z0-9\s:_@$#=/+,.-]")


@dataclass(frozen=True)
class ConverseOptions:
    """The resolved options of one request (see the README's "Beyond text")."""

    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: tuple[str, ...] = ()
    #: Claude extended thinking: ``{"thinking": {"type": "enabled", "budget_tokens": N}}``. The
    #: budget is added to ``max_tokens``, which then still bounds the answer.
    reasoning_budget: int | None = None
    #: Nova 2 reasoning: ``{"reasoningConfig": {"type": "enabled", "maxReasoningEffort": ...}}``.
    reasoning_effort: str | None = None
    #: Model-native fields: Converse's ``additionalModelRequestFields``; merged into invoke bodies.
    additional_fields: Mapping[str, Any] = field(default_factory=dict)
    #: Converse ``guardrailConfig``.
    guardrail: Mapping[str, Any] | None = None
    latency: str | None = None
    service_tier: str | None = None
    prompt_cache: bool | str = False
    #: Converse ``requestMetadata`` (the view fills it: user id and view name).
    request_metadata: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> ConverseOptions:
        """Validate merged option values (settings, view, allowlisted request fields); a bad value is
        a configuration error (request fields were validated already)."""
        known = {f.name for f in fields(cls)} - {"request_metadata"}
        unknown = set(values) - known - {"request_metadata"}
        if unknown:
            raise ImproperlyConfigured(
                f"Unknown Converse option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}."
            )
        kwargs = {name: values[name] for name in known if values.get(name) is not None}
        kwargs["stop_sequences"] = tuple(kwargs.get("stop_sequences") or ())
        kwargs["additional_fields"] = dict(kwargs.get("additional_fields") or {})
        options = cls(**kwargs, request_metadata=_clean_metadata(metadata or {}))
        options._check()
        return options

    def inference_config(self, max_tokens: tuple[str, int], top_p: str) -> dict[str, Any]:
        """``inferenceConfig``: ``max_tokens`` as (field name, value), then the sampling options set
        (Converse says ``topP``, Nova's native format ``top_p``)."""
        inference: dict[str, Any] = {max_tokens[0]: max_tokens[1]}
        for key, value in (("temperature", self.temperature), (top_p, self.top_p),
                           ("stopSequences", list(self.stop_sequences))):
            if value or value == 0:
                inference[key] = value
        return inference

    def system_blocks(self, system: str | None) -> list[dict[str, Any]] | None:
        """The ``system`` blocks of Converse and Nova, with a cache point after them when asked."""
        if not system:
            return None
        return [{"text": system}, *([dict(CACHE_POINT)] if self.cache_system else [])]

    def _check(self) -> None:
        def bad(name: str, expected: str) -> ImproperlyConfigured:
            return ImproperlyConfigured(f"Converse option {name}={getattr(self, name)!r}: expected {expected}.")

        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if value is not None and (type(value) not in (int, float) or not 0 <= value <= 1):
                raise bad(name, "a number from 0 to 1")
        if not all(isinstance(s, str) and s for s in self.stop_sequences):
            raise bad("stop_sequences", "a list of non-empty strings")
        budget = self.reasoning_budget
        if budget is not None and (type(budget) is not int or budget < MIN_REASONING_BUDGET):
            raise bad("reasoning_budget", f"an integer of at least {MIN_REASONING_BUDGET}")
        for name, allowed in (
            ("reasoning_effort", REASONING_EFFORTS),
            ("latency", LATENCIES),
            ("service_tier", SERVICE_TIERS),
        ):
            if getattr(self, name) is not None and getattr(self, name) not in allowed:
                raise bad(name, " or ".join(repr(a) for a in allowed))
        if self.prompt_cache not in PROMPT_CACHE or type(self.prompt_cache) not in (bool, str):
            raise bad("prompt_cache", "False, True, 'system' or 'history'")
        if not isinstance(self.additional_fields, Mapping):
            raise bad("additional_fields", "a dict")
        guardrail = self.guardrail
        if guardrail is not None:
            if not isinstance(guardrail, Mapping) or not {"guardrailIdentifier", "guardrailVersion"} <= set(guardrail):
                raise bad("guardrail", "a dict with guardrailIdentifier and guardrailVersion")
            if set(guardrail) - set(GUARDRAIL_KEYS):
                raise bad("guardrail", f"only the keys {', '.join(GUARDRAIL_KEYS)}")

    # -- what the families read ------------------------------------------------------------------
    @property
    def cache_system(self) -> bool:
        """A cache point after the system prompt."""
        return self.prompt_cache in (True, "system")

    @property
    def cache_history(self) -> bool:
        """A cache point after the conversation (the last user turn): the next turn reads it all back."""
        return self.prompt_cache in (True, "history")

    def max_tokens(self, answer_tokens: int) -> int:
        """The model's ``max_tokens``: thinking counts within it, so the budget is added."""
        return answer_tokens + (self.reasoning_budget or 0)

    def thinking(self) -> dict[str, Any] | None:
        """Claude's ``thinking`` field, or ``None``."""
        if self.reasoning_budget is None:
            return None
        return {"type": "enabled", "budget_tokens": self.reasoning_budget}

    def reasoning_config(self) -> dict[str, Any] | None:
        """Nova 2's ``reasoningConfig`` field, or ``None``."""
        if self.reasoning_effort is None:
            return None
        return {"type": "enabled", "maxReasoningEffort": self.reasoning_effort}


def _clean_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    """requestMetadata values Bedrock accepts: characters outside its set become ``_``, keys and
    values at most 256 characters, at most 16 pairs."""
    out: dict[str, str] = {}
    for key, value in list(metadata.items())[:16]:
        clean_key = _METADATA_CHARS.sub("_", str(key))[:256]
        if clean_key:
            out[clean_key] = _METADATA_CHARS.sub("_", str(value))[:256]
    return out


# -- what the installed botocore accepts ------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _converse_shape() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """The ConverseStream request's members, its content blocks' and its system blocks', as the
    installed botocore knows them (read once)."""
    from botocore.loaders import create_loader
    from botocore.model import ServiceModel

    model = ServiceModel(create_loader().load_service_model("bedrock-runtime", "service-2"), "bedrock-runtime")
    request = model.operation_model("ConverseStream").input_shape
    content = request.members["messages"].member.members["content"].member
    system = request.members["system"].member
    return frozenset(request.members), frozenset(content.members), frozenset(system.members)


def check_converse_body(body: dict[str, Any]) -> dict[str, Any]:
    """``body``, ready for boto3's parameter validation: ``requestMetadata`` (sent by default) is
    dropped when the installed botocore does not know it; any other field it does not know is a
    configuration error naming the botocore version to upgrade from."""
    request, content, system = _converse_shape()
    if "requestMetadata" in body and "requestMetadata" not in request:
        body = {key: value for key, value in body.items() if key != "requestMetadata"}
    missing = [key for key in body if key not in request]
    blocks = [*(b for m in body.get("messages", ()) for b in m["content"]), *body.get("system", ())]
    if any("cachePoint" in block for block in blocks) and ("cachePoint" not in content or "cachePoint" not in system):
        missing.append("cachePoint")
    if missing:
        import botocore

        raise ImproperlyConfigured(
            f"botocore {botocore.__version__} cannot send {', '.join(missing)} to converse_stream; "
            "upgrade boto3 (and aiobotocore) or turn the option off."
        )
    return body
