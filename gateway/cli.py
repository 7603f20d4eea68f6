"""Command line: ``gateway serve|demo|check-config|check-connectors|scim-token``.

Every sub-command is one ``_cmd_<name>(args) -> int`` function plus one block in
:func:`build_parser` that declares its options (each with a help text; the defaults are
shown by ``--help``). Commands that read a configuration file take ``--config PATH``; the
positional ``PATH`` is accepted too. Exit status: 0 success, 1 failure (e.g. a bad
configuration), 2 wrong usage or a port that is already taken.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from gateway.errors import ConfigError, GatewayError


def check_config(path: str, *, no_secrets: bool = False) -> int:
    """Print every problem of the file at ``path``; exit status 0 only when there are none.

    ``no_secrets`` lints a file where the secrets are not available: each secret whose
    environment variable or file is missing is listed as "not checked" instead of failing.
    """
    from gateway.config_report import check_file

    report = check_file(path, os.environ, lint_secrets=no_secrets)
    for line in report.unchecked:
        print(f"  not checked: {line}")
    if report.problems:
        count = len(report.problems)
        print(f"{path}: {count} problem{'s' if count > 1 else ''}:", file=sys.stderr)
        for problem in report.problems:
            print(f"  - {problem}", file=sys.stderr)
        if not no_secrets and report.secret_problems:
            print(
                "  (secrets come from the environment or files; `gateway check-config "
                "--no-secrets` checks everything else without them)",
                file=sys.stderr,
            )
        return 1
    note = f" ({len(report.unchecked)} secret(s) not checked)" if report.unchecked else ""
    print(f"{path}: OK{note}")
    return 0


async def _check_connectors(path: str) -> int:
    from gateway.app import build_services
    from gateway.config import load_settings

    settings = load_settings(path)
    services = build_services(settings)
    failures = 0
    try:
        for name, runtime in services.apps.items():
            try:
                await runtime.connector.test_connection()
            except GatewayError as exc:
                failures += 1
                print(f"app {name} ({runtime.settings.connector}): FAILED: {exc.reason}")
            else:
                print(f"app {name} ({runtime.settings.connector}): OK")
    finally:
        for runtime in services.apps.values():
            await runtime.connector.aclose()
        for client in services.clients:
            await client.aclose()
    return 1 if failures else 0


def check_connectors(path: str) -> int:
    try:
        return asyncio.run(_check_connectors(path))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config: {problem}", file=sys.stderr)
        return 1


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.serve import serve

    return serve(args.config, args.host, args.port, args.workers, args.tls_cert, args.tls_key)


def _cmd_check_config(args: argparse.Namespace) -> int:
    return check_config(args.config, no_secrets=args.no_secrets)


def _cmd_check_connectors(args: argparse.Namespace) -> int:
    return check_connectors(args.config)


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.sandbox.demo import PortInUse
    from gateway.sandbox.demo_run import run_demo
    from gateway.serve import port_busy_message

    try:
        return run_demo(args.port, write_config=args.write_config)
    except PortInUse as exc:
        print(f"{port_busy_message(exc.port)} (the demo uses {exc.first}-{exc.last})",
              file=sys.stderr)  # fmt: skip
        return 2


def _cmd_scim_token(args: argparse.Namespace) -> int:
    """Print a new SCIM bearer credential (for the IdP) and the line for the config file."""
    from gateway.scim.credentials import new_token

    token, hashed = new_token()
    print(f"credential (give it to the IdP's SCIM client; it is not stored): {token}")
    print(f'config ([idp.<name>.scim]): token_hashes = ["{hashed}"]')
    return 0


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _version() -> str:
    try:
        return metadata.version("gateway")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def _add_config(parser: argparse.ArgumentParser) -> None:
    """``--config PATH``, and the positional ``PATH`` that some commands always took."""
    parser.add_argument("--config", metavar="PATH", help="the gateway's TOML configuration file")
    parser.add_argument("path", nargs="?", metavar="PATH", help="same as --config PATH")


def _resolve_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    positional = getattr(args, "path", None)
    if positional is not None and args.config is not None and positional != args.config:
        parser.error("give the configuration file once (--config PATH or PATH)")
    args.config = args.config or positional
    if args.config is None:
        parser.error("the configuration file is required (--config PATH)")


Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The ``gateway`` argument parser: one block per sub-command."""
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="SSO gateway: employees sign in with OpenID Connect or SAML and land in "
        "their LMS.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"gateway {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, run: Command, config: bool) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=summary, description=summary, formatter_class=_Formatter
        )
        sub.set_defaults(run=run, needs_config=config)
        if config:
            _add_config(sub)
        return sub

    p = command("serve", "run the gateway", _cmd_serve, config=True)
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")  # noqa: S104
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument(
        "--workers", type=int, default=1,
        help="worker processes (more than 1 needs [store] backend = \"redis\")",
    )  # fmt: skip
    p.add_argument(
        "--tls-cert", metavar="PATH",
        help="serve HTTPS with this PEM certificate chain (with --tls-key; without a proxy)",
    )  # fmt: skip
    p.add_argument("--tls-key", metavar="PATH", help="the PEM private key of --tls-cert")

    p = command(
        "check-config", "validate a configuration file and print every problem",
        _cmd_check_config, config=True,
    )  # fmt: skip
    p.add_argument(
        "--no-secrets", action="store_true",
        help="lint without the secrets: a secret whose environment variable or file is "
        "missing is listed as 'not checked' instead of being a problem",
    )  # fmt: skip

    command(
        "check-connectors", "test every app's LMS credentials", _cmd_check_connectors,
        config=True,
    )  # fmt: skip

    p = command(
        "demo", "run the gateway with demo IdPs and LMS simulators on 127.0.0.1", _cmd_demo,
        config=False,
    )  # fmt: skip
    p.add_argument(
        "--port", type=int, default=8000,
        help="gateway port; the demo's other servers take the next 7 ports (0: any free ports)",
    )  # fmt: skip
    p.add_argument(
        "--write-config", metavar="PATH",
        help="where to write the demo's configuration (TOML; secrets as env references, their "
        "values in PATH with .env instead of .toml); default: a file in the demo's temporary "
        "directory, printed at start",
    )  # fmt: skip
    command(
        "scim-token", "make a SCIM bearer credential and its token_hashes line",
        _cmd_scim_token, config=False,
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gateway`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.needs_config:
        _resolve_config(parser, args)
    run: Command = args.run
    return run(args)
