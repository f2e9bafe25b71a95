"""Signals sent by the stream views. ``sender`` is always the view class.

Every signal is sent with ``send_robust`` / ``asend_robust``: a failing receiver is logged by Django
and never breaks the stream or the other receivers. ``completion`` is the
:class:`~django_bedrock_stream.models.Completion` instance for the stream (saved by the built-in
receivers unless ``BEDROCK_STREAM["PERSIST"]`` is False, in which case it is unsaved).
"""

from django.dispatch import Signal

#: Sent before Bedrock is called.
#: kwargs: ``request``, ``model_id``, ``completion``.
stream_started = Signal()

#: Sent for each text delta, and only when a receiver is connected (so it costs nothing otherwise).
#: kwargs: ``request``, ``token``.
token_received = Signal()

#: Sent when the model finished normally.
#: kwargs: ``request``, ``model_id``, ``text``, ``usage`` (``{"input_tokens", "output_tokens",
#: "cache_read_tokens", "cache_write_tokens"}``), ``stop_reason`` (Bedrock's raw value), ``parts``
#: (everything but the text: ``{"reasoning", "sources", "files", "tool_calls", "guardrail"}``, as
#: stored in ``Completion.parts``), ``completion``.
stream_completed = Signal()

#: Sent when Bedrock failed, before or during the stream.
#: kwargs: ``request``, ``model_id``, ``text`` (delivered so far), ``error``
#: (a :class:`~django_bedrock_stream.exceptions.BedrockStreamError`), ``completion``.
stream_failed = Signal()

#: Sent when the client went away before the end; the upstream stream is already closed.
#: kwargs: ``request``, ``model_id``, ``text`` (delivered so far), ``completion``.
stream_cancelled = Signal()

#: Always sent last, once per stream, whatever happened.
#: kwargs: ``request``, ``model_id``, ``text``, ``status`` (``completed`` | ``failed`` | ``cancelled``),
#: ``completion``.
stream_finished = Signal()

#: Sent after each run of a server-side tool in a run with tools (see ``tools`` on the views).
#: kwargs: ``request``, ``completion``, ``tool_name``, ``input`` (the model's input), ``output`` (None
#: when it failed), ``error`` ("" when it ran well: else what the model was told), ``duration`` (seconds).
tool_called = Signal()

#: Sent when a user's usage in a budget period reaches 80 % and 100 % of the limit, once per crossing
#: per period (a bucket of a rolling window), when a stream settles (``budgets.py``).
#: kwargs: ``user``, ``budget`` (a :class:`~django_bedrock_stream.budgets.Budget`: ``tokens`` or
#: ``cost``, ``period``), ``used`` (settled usage this period: tokens, or a Decimal amount of money),
#: ``limit`` (same unit), ``threshold`` (80 or 100).
budget_threshold_reached = Signal()
