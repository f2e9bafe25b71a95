"""pytest fixtures for testing against the built-in Bedrock emulator.

Load them from a ``conftest.py``::

    pytest_plugins = ["django_bedrock_stream.testing"]

Fixtures:

* ``bedrock_emulator_server`` (session): one :class:`~django_bedrock_stream.emulator.BedrockEmulator`
  on a free port, with ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` and dummy AWS credentials/region set in
  ``os.environ`` for the session (restored afterwards).
* ``bedrock_emulator`` (function): the same emulator after ``reset()`` (request log, throttle
  counters and scenario defaults cleared).

Named ``replay=`` captures are looked up in ``$BEDROCK_EMULATOR_REPLAY_DIR`` (read when the session's
emulator starts); a path works anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from django_bedrock_stream.emulator import BedrockEmulator

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Variables that would make boto3 look elsewhere for credentials/config.
_UNSET = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE")



@pytest.fixture(scope="session")
def bedrock_emulator_server() -> Iterator[BedrockEmulator]:
    emu = BedrockEmulator(port=0)
    emu.start()
    values = dict(_ENV, AWS_ENDPOINT_URL_BEDROCK_RUNTIME=emu.url)
    saved = {k: os.environ.get(k) for k in list(values) + list(_UNSET)}
    os.environ.update(values)
    for k in _UNSET:
        os.environ.pop(k, None)
    try:
        yield emu
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        emu.stop()


@pytest.fixture
def bedrock_emulator(bedrock_emulator_server: BedrockEmulator) -> Iterator[BedrockEmulator]:
    bedrock_emulator_server.reset()
    yield bedrock_emulator_server
    bedrock_emulator_server.reset()

