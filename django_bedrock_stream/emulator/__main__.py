"""``python -m django_bedrock_stream.emulator [--host 127.0.0.1] [--port 8787] [--tokens N] ...``"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ssl
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from .scenarios import Scenario, ScenarioError
from .server import EmulatorServer, EmulatorState, EmulatorTLS, MissingExtra


class TextSink(Protocol):
    """Where the emulator prints its banner: ``sys.stdout`` or anything with ``write``/``flush``."""

    def write(self, s: str, /) -> object: ...

    def flush(self) -> object: ...


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulator's options (shared with the ``bedrock_emulator`` management command)."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port (default 8787; 0 picks a free one)")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per default reply (default 12)")
    parser.add_argument("--delay-ms", type=float, default=None, help="pause between token events")
    parser.add_argument("--ttfb-ms", type=float, default=None, help="pause before the response headers")
    parser.add_argument("--replay-dir", default=None, help="directory of recorded .eventstream files for replay=")
    parser.add_argument(
        "--api-key", default=None, help="require this Bedrock API key (Authorization: Bearer) on model requests"
    )
    parser.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", default=None, help="the private key (PEM) when it is not in --tls-cert")
    parser.add_argument(
        "--tls-self-signed",
        action="store_true",
        help="serve HTTPS with a throwaway CA and certificate (needs trustme: the [tls] extra); "
        "the banner prints the CA file for AWS_CA_BUNDLE",
    )


class BadOptions(Exception):
    """Options that contradict each other; the message is one line for the terminal."""


def tls_from_options(options: dict[str, Any]) -> EmulatorTLS | None:
    """The HTTPS setup the ``--tls-*`` options ask for (``None``: plain HTTP).

    Raises :class:`BadOptions` for contradicting options, :class:`CannotServeTLS` for a certificate
    that cannot be loaded or trustme missing.
    """
    cert, key, self_signed = options.get("tls_cert"), options.get("tls_key"), options.get("tls_self_signed")
    if key and not cert:
        raise BadOptions("--tls-key needs --tls-cert")
    if cert and self_signed:
        raise BadOptions("use either --tls-cert or --tls-self-signed, not both")
    try:
        if cert:
            return EmulatorTLS.from_files(cert, key)
        if self_signed:
            return EmulatorTLS.self_signed([options.get("host") or ""])
    except MissingExtra as err:
        raise CannotServeTLS(f"--tls-self-signed: {err}") from None
    except (OSError, ssl.SSLError) as err:
        files = f"--tls-cert {cert}" + (f" / --tls-key {key}" if key else "")
        raise CannotServeTLS(f"cannot load {files}: {err.strerror or err}") from None
    return None


def scenario_from_options(options: dict[str, Any]) -> Scenario:
    values = {}
    for key in ("tokens", "delay_ms", "ttfb_ms"):
        if options.get(key) is not None:
            values[key] = options[key]
    return Scenario().merged(values)


class CannotListen(Exception):
    """The emulator could not open its port; the message is one line for the terminal."""


class CannotServeTLS(Exception):
    """The ``--tls-*`` options cannot be served; the message is one line for the terminal."""


def _cannot_listen(host: str, port: int, err: OSError) -> CannotListen:
    if err.errno == errno.EADDRINUSE:
        return CannotListen(f"port {port} is already in use (try --port {port + 1}, or --port 0 for a free one)")
    return CannotListen(f"cannot listen on {host}:{port}: {err.strerror or err}")


async def _serve(
    host: str,
    port: int,
    scenario: Scenario,
    replay_dir: str | None,
    out: TextSink,
    api_key: str | None = None,
    tls: EmulatorTLS | None = None,
) -> None:
    state = EmulatorState(scenario, replay_dir, api_key=api_key)
    server = EmulatorServer(state, host, port, tls.context if tls is not None else None)
    try:
        await server.start()
    except OSError as err:
        raise _cannot_listen(host, port, err) from err
    print(f"Bedrock emulator listening on {server.url}", file=out)
    print(f"  export AWS_ENDPOINT_URL_BEDROCK_RUNTIME={server.url}", file=out)
    if tls is not None and tls.ca_file is not None:
        print(f"  export AWS_CA_BUNDLE={tls.ca_file}", file=out)
    if server.state.replay_dir:
        print(f"  replay dir: {server.state.replay_dir}", file=out)
    if api_key is not None:
        print("  API key required: export AWS_BEARER_TOKEN_BEDROCK=<the --api-key value>", file=out)
    print("  Ctrl-C to stop.", file=out, flush=True)
    try:
        await server.serve_forever()
    finally:
        await server.close()


def run(
    host: str = "127.0.0.1",
    port: int = 8787,
    scenario: Scenario | None = None,
    replay_dir: str | None = None,
    out: TextSink = sys.stdout,
    err: TextSink | None = None,
    api_key: str | None = None,
    tls: EmulatorTLS | None = None,
) -> None:
    """Run the emulator in the foreground until Ctrl-C.

    A port that cannot be opened (already in use, say) is one line on ``err`` (default stderr) and
    exit status 2, not a traceback. ``api_key``: require ``Authorization: Bearer <api_key>``.
    ``tls``: serve HTTPS (see :func:`tls_from_options`); closed on the way out.
    """
    try:
        asyncio.run(_serve(host, port, scenario or Scenario(), replay_dir, out, api_key, tls))
    except KeyboardInterrupt:
        print("Bedrock emulator stopped.", file=out)
    except CannotListen as problem:
        print(f"bedrock_emulator: {problem}", file=err or sys.stderr, flush=True)
        raise SystemExit(2) from None
    finally:
        if tls is not None:
            tls.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m django_bedrock_stream.emulator", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        scenario = scenario_from_options(vars(args))
        tls = tls_from_options(vars(args))
    except (ScenarioError, BadOptions) as e:
        parser.error(str(e))
    except CannotServeTLS as problem:
        print(f"bedrock_emulator: {problem}", file=sys.stderr, flush=True)
        return 2
    run(args.host, args.port, scenario, args.replay_dir, api_key=args.api_key, tls=tls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
