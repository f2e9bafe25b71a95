"""System checks, one function per concern, with stable ids ``bedrock_stream.<E|W>NNN``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register as register_check

from .conf import DEFAULTS


def check_settings_keys(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    user = getattr(settings, "BEDROCK_STREAM", None)
    if user is None:
        return []
    if not isinstance(user, dict):
        return [Error("BEDROCK_STREAM must be a dict.", id="bedrock_stream.E001")]
    return [
        Warning(
            f"Unknown BEDROCK_STREAM key {key!r}.",
            hint=f"Valid keys: {', '.join(sorted(DEFAULTS))}.",
            id="bedrock_stream.W001",
        )
        for key in sorted(set(user) - set(DEFAULTS))
    ]


def register() -> None:
    register_check(check_settings_keys, Tags.compatibility)
