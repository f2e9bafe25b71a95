from collections.abc import AsyncIterator

import pytest

from django_bedrock_stream.client import aclose_clients

pytest_plugins = ["django_bedrock_stream.testing"]


@pytest.fixture(autouse=True)
async def _close_bedrock_clients() -> AsyncIterator[None]:
    """Each async test runs on its own loop: close the aiobotocore clients made on it."""
    yield
    await aclose_clients()
