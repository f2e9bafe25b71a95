"""One accessor over the ``BEDROCK_STREAM`` settings dict.

Read lazily (never at import time) and reset on ``setting_changed`` so that
``override_settings(BEDROCK_STREAM={...})`` works in tests, the way
``rest_framework.settings.api_settings`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from . import media

#: Every key users may set, with its default. Documented in the README's settings table.
DEFAULTS: dict[str, Any] = {
    # AWS region; None falls back to boto3's own resolution (AWS_REGION, ~/.aws/config), then us-east-1.
    "REGION": None,
    # Endpoint override (e.g. the built-in emulator). None keeps boto3's resolution, which honours
    # AWS_ENDPOINT_URL_BEDROCK_RUNTIME and AWS_ENDPOINT_URL.
    "ENDPOINT_URL": None,
    # A Bedrock API key, sent as "Authorization: Bearer ..." instead of SigV4-signing with AWS
    # credentials. None falls back to $AWS_BEARER_TOKEN_BEDROCK, then to SigV4.
    "API_KEY": None,
    # botocore.config.Config kwargs, merged over these defaults. botocore's 60 s read timeout is too
    # short for long generations, and its pool of 10 connections would cap concurrent streams.
    "CLIENT_CONFIG": {
        "read_timeout": 300,
        "connect_timeout": 10,
        "max_pool_connections": 1024,
        "retries": {"mode": "standard", "total_max_attempts": 3},
    },
    # Model ids a request's "model" field may pick, besides the view's own model_id.
    "ALLOWED_MODELS": [],
    # Default and server-side cap for max_tokens.
    "MAX_TOKENS": 1024,
    # Store a Completion row per stream through the built-in signal receivers.
    "PERSIST": True,
    # Seconds a streaming response may wait for the server to start reading it. A response that
    # middleware replaced is abandoned as soon as the server closes the one it sent instead; this is
    # the backstop for one never read at all: its Bedrock stream is then closed and its row settles
    # "cancelled". Keep it well above the worst delay between a view's return and its first byte.
    "RESPONSE_START_TIMEOUT": 10.0,
    # Let anonymous users call the stream views.
    "ALLOW_ANONYMOUS": False,
    # How the async (ASGI) path reaches Bedrock: "auto" (aiobotocore when installed, else threads),
    # "aiobotocore", or "thread" (boto3 on a dedicated, bounded thread pool).
    "ASYNC_TRANSPORT": "auto",
    # Size of the dedicated pool used by the "thread" transport.
    "THREAD_POOL_SIZE": 64,
    # Request limits enforced before anything is sent upstream.
    "MAX_MESSAGES": 100,
    "MAX_INPUT_CHARS": 100_000,
    # Most AI SDK message parts (any type) in one request, counted before validating them, so that a
    # body of many tiny parts is refused at once instead of holding the worker while it is validated.
    "MAX_PARTS": 1000,
    # Most JSON objects and arrays in a request body (every "{" and "[" counts, also inside strings),
    # counted before parsing it: parsing holds the GIL, and 2.5 MB of tiny objects would take 0.1-0.5 s.
    "MAX_JSON_CONTAINERS": 20_000,
    # Tools (tools.py): seconds one tool call may run (None: no limit); characters of one tool result
    # sent to the model (a longer one is cut, with a note saying so); threads running sync tools; seconds
    # a signed tool call id or approval request sent to the browser stays valid (None: no limit).
    "TOOL_TIMEOUT": 30.0,
    "TOOL_RESULT_MAX_CHARS": 20_000,
    "TOOL_THREAD_POOL_SIZE": 16,
    "TOOL_CALL_MAX_AGE": 86_400,
    # Per-user budgets (budgets.py), checked before Bedrock is called: {"default": {"tokens": 50_000,
    # "period": "day"}, "groups": {"<group>": {...}}, "users": {"<username>": {...}}}; a budget is
    # {"tokens": n} or {"cost": "5.00"} per "day" | "month" | "<n>h" | "<n>d". None: no budgets.
    "BUDGETS": None,
    # Count prompt-cache writes against token budgets too (input + output are always counted).
    "BUDGET_COUNTS_CACHE_WRITES": False,
    # Files in a request (AI SDK "file" parts), checked by content before anything is sent upstream.
    # The defaults are Bedrock's own limits: more or larger files would be refused by Bedrock anyway.
    "MAX_IMAGES": media.MAX_IMAGES,
    "MAX_IMAGE_BYTES": media.MAX_IMAGE_BYTES,  # 3.75 MB, decoded
    "MAX_DOCUMENTS": media.MAX_DOCUMENTS,
    "MAX_DOCUMENT_BYTES": media.MAX_DOCUMENT_BYTES,  # 4.5 MB, decoded
    # Cost (pricing.py): per model id (or profile id, or ARN), USD per 1,000 tokens as strings or
    # Decimals: {"input": "0.25", "output": "1.25", "cache_read": "0.03", "cache_write": "0.30"}, or a
    # model id string (an application inference profile ARN -> the model it runs). None: no costs.
    "PRICES": None,
    # The currency of PRICES and Completion.cost: a label only, nothing is converted.
    "PRICE_CURRENCY": "USD",
    # Fraction added to the base model's price through a profile prefix, e.g. {"global.": "0.10"}.
    "PRICE_SURCHARGES": {},
    # Resumable chat streams (resumable.py): every chunk of a chat's running stream is also appended to
    # a Redis stream at REDIS_URL (e.g. "redis://127.0.0.1:6379/0"), kept RESUME_TTL seconds after its
    # end and capped at RESUME_MAXLEN entries (one entry per network read), so a resume request on any
    # worker replays it and follows it live; stop requests reach the runner on any worker through it.
    "RESUMABLE": False,
    "REDIS_URL": None,
    "RESUME_TTL": 600,
    "RESUME_MAXLEN": 10_000,
    # What a client leaving does to its chat stream: "cancel" (the upstream call is closed) or
    # "continue" (the answer finishes and is stored). None: "continue" when RESUMABLE, else "cancel".
    "DISCONNECT": None,
    # Seconds of model silence after which the sse and ui protocols send a comment so proxies keep the
    # connection open (ASGI; see the README for WSGI). None or 0: never.
    "KEEPALIVE_SECONDS": 15,
    # Options of the Converse, Nova and Anthropic Messages families (see options.py and the README's
    # "Beyond text"), merged over these defaults; a view's ``converse_options`` is merged over them.
    "CONVERSE": {
        "temperature": None,
        "top_p": None,
        "stop_sequences": None,
        "reasoning_budget": None,  # Claude extended thinking: budget_tokens
        "reasoning_effort": None,  # Nova 2 reasoning: "low" | "medium" | "high"
        "additional_fields": {},  # sent as additionalModelRequestFields (invoke: merged into the body)
        "guardrail": None,  # Converse guardrailConfig
        "latency": None,  # "standard" | "optimized" (performanceConfig)
        "service_tier": None,  # "priority" | "default" | "flex" | "reserved"
        "prompt_cache": False,  # True, "system" or "history": cache points after the system prompt / history
        "request_metadata": True,  # Converse requestMetadata: the user id and the view, for cost attribution
    },
}


class StreamSettings:
    """Attribute access to ``settings.BEDROCK_STREAM`` merged over :data:`DEFAULTS`."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        """``settings.BEDROCK_STREAM``; one that is not a dict counts as empty (check E001 says so)."""
        value = getattr(settings, "BEDROCK_STREAM", None) or {}
        return dict(value) if isinstance(value, Mapping) else {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid BEDROCK_STREAM setting: {name!r}")
        if name not in self._cache:
            value = self.user_settings.get(name, DEFAULTS[name])
            if name in ("CLIENT_CONFIG", "CONVERSE"):
                value = {**DEFAULTS[name], **(value or {})}
            self._cache[name] = value
        return self._cache[name]

    def reload(self) -> None:
        self._cache.clear()


stream_settings = StreamSettings()


@receiver(setting_changed)
def _reload_settings(*, setting: str, **kwargs: Any) -> None:
    if setting == "BEDROCK_STREAM":
        stream_settings.reload()
        from . import client, pricing, receivers

        client.reset_clients()
        pricing.reset()
        receivers.connect()
