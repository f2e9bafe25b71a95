"""Model families: one small module each, all extending :class:`~.base.BedrockFamily`."""

from .anthropic import AnthropicFamily
from .anthropic_messages import AnthropicMessagesFamily
from .base import BedrockFamily, Delta
from .cohere import CohereFamily
from .converse import ConverseFamily
from .llama2 import Llama2Family
from .llama3 import Llama3Family
from .mistral import MistralFamily
from .nova import NovaFamily
from .titan import TitanFamily

FAMILIES: dict[str, type[BedrockFamily]] = {
    family.name: family
    for family in (
        AnthropicFamily,
        AnthropicMessagesFamily,
        CohereFamily,
        Llama2Family,
        Llama3Family,
        MistralFamily,
        NovaFamily,
        TitanFamily,
        ConverseFamily,
    )
}

__all__ = [
    "FAMILIES",
    "AnthropicFamily",
    "AnthropicMessagesFamily",
    "BedrockFamily",
    "CohereFamily",
    "ConverseFamily",
    "Delta",
    "Llama2Family",
    "Llama3Family",
    "MistralFamily",
    "NovaFamily",
    "TitanFamily",
]
