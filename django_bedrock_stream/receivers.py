"""The built-in receivers that persist :class:`~django_bedrock_stream.models.Completion` rows.

Connected in ``AppConfig.ready()``. Two writes per stream: an INSERT when it starts and one UPDATE
when it ends, so a crash mid-stream leaves a ``streaming`` row for ``bedrock_reap`` to settle.
"""

from __future__ import annotations

from typing import Any

from .conf import stream_settings
from .models import Completion

FINAL_FIELDS = [
    "text",
    "status",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "error",
    "error_code",
    "time_to_first_token",
    "finished_at",
]


def create_completion(*, completion: Completion, **kwargs: Any) -> None:
    if stream_settings.PERSIST and completion.pk is None:
        completion.save(force_insert=True)


def finish_completion(*, completion: Completion, **kwargs: Any) -> None:
    if stream_settings.PERSIST and completion.pk is not None:
        completion.save(update_fields=FINAL_FIELDS)
