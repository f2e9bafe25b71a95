"""``python manage.py bedrock_emulator [--port 8787] ...``: run the built-in Bedrock emulator."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from django_bedrock_stream.emulator.__main__ import (
    BadOptions,
    CannotServeTLS,
    add_arguments,
    run,
    scenario_from_options,
    tls_from_options,
)
from django_bedrock_stream.emulator.scenarios import ScenarioError


class Command(BaseCommand):
    help = (
        "Run the built-in Amazon Bedrock Runtime emulator. Point boto3 at it with "
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:PORT (any dummy credentials); "
        "--tls-self-signed or --tls-cert serve HTTPS (https://…), which API keys need."
    )
    # The emulator does not touch the project; don't let unrelated check failures stop it.
    requires_system_checks: list = []

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            scenario = scenario_from_options(options)
            tls = tls_from_options(options)
        except (ScenarioError, BadOptions, CannotServeTLS) as e:
            raise CommandError(str(e)) from e
        run(
            options["host"],
            options["port"],
            scenario,
            options.get("replay_dir"),
            out=_Out(self.stdout),
            err=_Out(self.stderr),
            api_key=options.get("api_key"),
            tls=tls,
        )


class _Out:
    """print()-friendly view of the command's OutputWrapper (which would add its own newlines)."""

    def __init__(self, wrapper: OutputWrapper) -> None:
        self._wrapper = wrapper

    def write(self, s: str) -> None:
        self._wrapper.write(s, ending="")

    def flush(self) -> None:
        self._wrapper.flush()
