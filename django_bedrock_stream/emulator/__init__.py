"""A local Amazon Bedrock Runtime emulator that unmodified boto3 clients cannot tell from the real thing.

Run it standalone with ``python -m django_bedrock_stream.emulator`` (or ``manage.py bedrock_emulator``),
or in-process::

    from django_bedrock_stream.emulator import BedrockEmulator

    with BedrockEmulator(port=0) as emu:
        os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = emu.url

This package does not import Django.
"""

from .eventstream import encode_event, encode_exception, encode_message
from .scenarios import Scenario
from .server import BedrockEmulator

__all__ = ["BedrockEmulator", "Scenario", "encode_event", "encode_exception", "encode_message"]
