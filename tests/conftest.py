from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from django_bedrock_stream.client import aclose_clients

from .recorded import RECORDED_DIR

pytest_plugins = ["django_bedrock_stream.testing"]


@pytest.fixture
def recorded_dir() -> Path:
    """The recorded Bedrock captures. Only the test suite knows where they are (the package never
    looks outside itself); a test that needs them is skipped where they are absent."""
    if not RECORDED_DIR.is_dir():
        pytest.skip(f"recorded Bedrock captures not found at {RECORDED_DIR} (../shared/fixtures/recorded beside the repo)")
    return RECORDED_DIR


@pytest.fixture(autouse=True)
async def _close_bedrock_clients() -> AsyncIterator[None]:
    """Each async test runs on its own loop: close the aiobotocore clients made on it."""
    yield
    await aclose_clients()
