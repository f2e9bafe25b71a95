"""Model ids, inference profile ids and ARNs: what base model a request is for. Standard library only
(the emulator routes by it without Django)."""

from __future__ import annotations

import re

#: Model providers, to tell a cross-region inference profile's prefix (``us.``, ``eu.``, ``global.``…)
#: from the provider that starts a base model id.
PROVIDERS = (
    "anthropic", "cohere", "meta", "mistral", "amazon", "ai21", "deepseek", "openai", "qwen",
    "writer", "stability", "twelvelabs", "luma", "moonshot", "minimax", "google", "nvidia",
)


def base_model_id(model_id: str) -> str:
    """The base model id behind an inference profile id (``us.meta.llama3…`` -> ``meta.llama3…``) or
    an ARN's last segment; a plain model id as it is."""
    mid = model_id
    if mid.startswith("arn:"):
        mid = mid.rsplit("/", 1)[-1]
    first, dot, rest = mid.partition(".")
    if dot and first not in PROVIDERS and rest.split(".", 1)[0] in PROVIDERS:
        mid = rest
    return mid


_ACCOUNT_IN_ARN = re.compile(r"^(arn:aws[\w-]*:bedrock:[\w-]*:)\d{12}(:)")


def public_model_id(model_id: str) -> str:
    """A model id as clients may see it: an ARN's AWS account id becomes ``***`` (an application
    inference profile ARN carries the account's id, which a client has no business knowing)."""
    return _ACCOUNT_IN_ARN.sub(r"\1***\2", model_id)
