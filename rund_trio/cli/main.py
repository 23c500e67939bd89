"""Entry point of the ``rund-trio`` command."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from rund_trio.errors import RundError, sole_exception


def package_version() -> str:
    """The installed package's version, from its metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rund-trio")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed: run `just setup`)"


class _VersionAction(argparse.Action):
    """``--version``: the version is read from the package's metadata only when
    asked for (importing ``importlib.metadata`` costs every command a little)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **_: Any) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="show program's version number and exit",
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(f"rund-trio {package_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from rund_trio.cli import certs_cmd, client_cmd, execute_cmd, serve_cmd

    parser = argparse.ArgumentParser(
        prog="rund-trio",
        description="Run commands on this machine for remote clients, over gRPC with mutual TLS.",
    )
    parser.add_argument("--version", action=_VersionAction)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_cmd.add_parser(subparsers)
    client_cmd.add_parser(subparsers)
    certs_cmd.add_parser(subparsers)
    execute_cmd.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` (default: this process's arguments); its exit status.

    Run as the program (``argv`` None), a one-shot client command leaves at
    once when it is done (``exit_now``), without the interpreter's teardown."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for serve --config's precedence
    code = _run(args)
    if argv is None and getattr(args, "one_shot", False):
        exit_now(code)
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        result: int = args.handler(args)
        return result
    except BaseException as raised:
        error = sole_exception(raised)
        if isinstance(error, RundError):
            print(f"rund-trio: {error}", file=sys.stderr)
            return 1
        if isinstance(error, KeyboardInterrupt):
            return 130
        if isinstance(error, BrokenPipeError):
            # The reader went away (`... | head`): quiet, as a killed-by-SIGPIPE
            # tool would be; keep Python from failing again on the final flush.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + signal.SIGPIPE
        raise


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` once what it printed is written, skipping
    the interpreter's teardown (freeing every module and object: a good part
    of a one-shot command's life, and nothing of it is needed). A reader gone
    away meanwhile ends it as SIGPIPE would; another write error is said."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = 128 + signal.SIGPIPE
    except OSError as error:
        with contextlib.suppress(OSError):
            print(f"rund-trio: cannot write the output: {error.strerror}", file=sys.stderr)
        code = code or 1
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(code)
