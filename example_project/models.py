"""The example site's one table: which browser session started an anonymous completion."""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from django_bedrock_stream.models import Completion


class SessionCompletion(models.Model):
    """Links an anonymous :class:`~django_bedrock_stream.models.Completion` to the session that started it.

    Written by the ``stream_started`` receiver next to the Completion's own INSERT, so a stream never
    modifies the session: saving a session from every stream took a database connection per ASGI stream
    (the session middleware saves it before the body streams, on a thread that keeps its connection
    until the response closes).
    """

    completion = models.OneToOneField(
        Completion, on_delete=models.CASCADE, primary_key=True, related_name="example_session"
    )
    session_key = models.CharField(max_length=40, db_index=True)

    # Declared for mypy, whose settings (tests.settings) do not install this app.
    objects: ClassVar[models.Manager[SessionCompletion]] = models.Manager()

    def __str__(self) -> str:
        return f"{self.pk} · {self.session_key[:8]}…"
