"""Entry point of the ``rund-trio`` command."""

from __future__ import annotations

import argparse
import contextlib
import gc
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


COMMANDS = ("serve", "client", "certs", "execute")
"""The commands, in the order the help lists them; each has a module
``rund_trio.cli.<name>_cmd`` with ``add_parser(subparsers)``."""


def _terminal_columns() -> int:
    """What ``shutil.get_terminal_size().columns`` says: $COLUMNS, else the
    width of the terminal on stdout, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            if sys.__stdout__ is None:
                raise ValueError("no stdout")
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
        except (AttributeError, ValueError, OSError):
            columns = 80
    return columns


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter at the width argparse would choose, found without
    importing ``shutil`` (it pulls bz2, lzma and fnmatch: a few ms of every
    command, as argparse makes a formatter in each ``add_argument``)."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose formatter is ``_HelpFormatter`` unless told
    otherwise; subparsers are of the class of their parent, so all are."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser(command: str | None = None, action: str | None = None) -> argparse.ArgumentParser:
    """The whole command line's parser. Given the first argument ``command``,
    when it names a command, only that command's parser is built and only its
    module imported (the others cost a one-shot client command several ms);
    anything else (``--help``, a typo, None) gets every command. ``action``,
    the second argument, does the same for ``client``'s actions."""
    import importlib

    parser = _Parser(
        prog="rund-trio",
        description="Run commands on this machine for remote clients, over gRPC with mutual TLS.",
    )
    parser.add_argument("--version", action=_VersionAction)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command in COMMANDS:
        module = importlib.import_module(f"rund_trio.cli.{command}_cmd")
        if command == "client":  # the one command with actions (each a parser)
            module.add_parser(subparsers, action)
        else:
            module.add_parser(subparsers)
        return parser
    for name in COMMANDS:
        importlib.import_module(f"rund_trio.cli.{name}_cmd").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` (default: this process's arguments); its exit status.

    Run as the program (``argv`` None), a one-shot client command leaves at
    once when it is done (``exit_now``), without the interpreter's teardown,
    and starts up without garbage collections (``start_up_done``)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    gc.disable()
    try:
        parser = build_parser(*arguments[:2])
        args = parser.parse_args(arguments)
        args.argv = arguments  # for serve --config's precedence
        one_shot = argv is None and getattr(args, "one_shot", False)
        if not one_shot:
            gc.enable()
        code = _run(args)
    finally:
        gc.enable()
    if one_shot:
        exit_now(code)
    return code


def start_up_done() -> None:
    """A one-shot command has loaded what it needs (imports, connection):
    collections resume, without the objects made so far. Start-up allocates
    much and frees little, so the full collection it would trigger (~8 ms,
    attributed to whichever import ran then) finds nearly nothing, and the
    process, leaving with ``os._exit``, never frees those objects anyway.
    Elsewhere (collections never stopped) it does nothing."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


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
