"""``rund-trio client``: a thin command line over the daemon's API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rund_trio.cli.log_options import add_log_options
from rund_trio.cli.sizes import parse_size
from rund_trio.cli.tls_discovery import add_client_tls_options

if TYPE_CHECKING:
    from rund_trio.api import rund_pb2 as pb
    from rund_trio.client.api import RundClient

LIMIT_FLAGS: list[tuple[str, str, Callable[[str], int], str]] = [
    (
        "--max-cpu-bandwidth",
        "max_cpu_bandwidth",
        int,
        "CPU time in µs per 100000 µs period (cpu.max quota), e.g. 50000 for half a CPU",
    ),
    ("--max-memory-usage", "max_memory_usage", parse_size, "memory.max in bytes, e.g. 256M"),
    ("--max-rbps", "max_rbps", parse_size, "read bytes per second (io.max rbps)"),
    ("--max-wbps", "max_wbps", parse_size, "written bytes per second (io.max wbps)"),
    ("--max-riops", "max_riops", int, "read operations per second (io.max riops)"),
    ("--max-wiops", "max_wiops", int, "write operations per second (io.max wiops)"),
]


def add_parser(subparsers: Any) -> None:
    client = subparsers.add_parser(
        "client",
        help="talk to a daemon",
        description="Start, stop, inspect and follow jobs on a rund-trio daemon.",
    )
    actions = client.add_subparsers(dest="action", required=True, metavar="ACTION")

    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("connection")
    import os

    group.add_argument(
        "--addr",
        default=os.environ.get("RUND_ADDR", "localhost:8000"),
        help="daemon address host:port (default: %(default)s; env RUND_ADDR)",
    )
    add_client_tls_options(group)

    def command_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, help=help_text, description=help_text, parents=[connection]
        )
        return parser

    for name, help_text in [
        ("start", "start a job and print its id"),
        ("run", "start a job, follow its output, exit with its exit code (128+signal if killed)"),
    ]:
        parser = command_parser(name, help_text)
        limits = parser.add_argument_group("resource limits")
        for flag, _, kind, flag_help in LIMIT_FLAGS:
            limits.add_argument(flag, type=kind, default=None, metavar="N", help=flag_help)
        isolation = parser.add_argument_group("isolation")
        isolation.add_argument(
            "--network",
            choices=["host", "isolated"],
            default=None,
            help="the host's network, or one of its own with only loopback "
            "(default: the daemon's choice)",
        )
        isolation.add_argument(
            "--host",
            action="store_true",
            help="run as a host job, with the daemon's own powers instead of contained "
            "(only for certificates the daemon grants it: serve --allow-host-jobs)",
        )
        isolation.add_argument("--uid", type=int, default=None, help="run as this user id")
        isolation.add_argument(
            "--gid", type=int, default=None, help="run as this group id (default: --uid)"
        )
        add_job_io_options(parser, name)
        parser.add_argument(
            "command",
            nargs="+",
            metavar="CMD",
            help="the program and its arguments; put -- before it",
        )
        parser.set_defaults(handler=run_action, action_fn=_start if name == "start" else _run)

    stop = command_parser("stop", "stop a job (its whole process tree) and print its final status")
    stop.add_argument("job_id", metavar="ID")
    stop.add_argument(
        "--grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="send SIGTERM first and SIGKILL only after SECONDS (default: SIGKILL)",
    )
    stop.set_defaults(handler=run_action, action_fn=_stop)

    status = command_parser("status", "print a job's status as JSON")
    status.add_argument("job_id", metavar="ID")
    status.set_defaults(handler=run_action, action_fn=_status)

    log = command_parser(
        "log",
        "write a job's output (stdout and stderr, in the order the daemon read them) "
        "from the start until it ends",
    )
    log.add_argument("job_id", metavar="ID")
    add_log_options(log)
    log.set_defaults(handler=run_action, action_fn=_log)

    feed = command_parser(
        "input", "send this command's stdin to a job started with -i, until end of file"
    )
    feed.add_argument("job_id", metavar="ID")
    feed.set_defaults(handler=run_action, action_fn=_input)

    attach = command_parser(
        "attach",
        "follow a job's output from its start and send it this command's stdin (if it was "
        "started with -i; a terminal in raw mode if with -t); exit with its exit code",
    )
    attach.add_argument("job_id", metavar="ID")
    attach.set_defaults(handler=run_action, action_fn=_attach)


def add_job_io_options(parser: argparse.ArgumentParser, action: str) -> None:
    """-e, --env-file, -w, -i, -t of ``start`` and ``run``."""
    io = parser.add_argument_group("environment, directory, input")
    io.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="set a variable in the job's environment; NAME alone takes this shell's value "
        "(left out if unset). Repeatable. Default environment: PATH, HOME=/, LANG, RUND_JOB_ID",
    )
    io.add_argument(
        "--env-file",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="read variables from FILE (docker's format: NAME=VALUE or NAME per line, "
        "# comments); -e entries come after",
    )
    io.add_argument(
        "-w",
        "--workdir",
        default="",
        metavar="DIR",
        help="the absolute directory the job starts in (default: / , inside its root "
        "filesystem when it has one)",
    )
    io.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="give the job a stdin: "
        + (
            "send this command's stdin to it until end of file"
            if action == "run"
            else "feed it later with `client input ID` or `client attach ID`"
        )
        + " (default: its stdin is /dev/null)",
    )
    io.add_argument(
        "-t",
        "--tty",
        action="store_true",
        help="give the job a pseudo-terminal (usually with -i: -it); its output is "
        "recorded as stdout",
    )


def run_action(args: argparse.Namespace) -> int:
    """Run one client action; SIGINT, SIGTERM or SIGHUP end it quietly with 128 + signal.

    The client runs on asyncio through anyio: a one-shot command starts faster
    without importing trio (the daemon's event loop), and the client library
    works under either."""
    import signal

    import anyio

    from rund_trio.cli.tls_discovery import client_tls
    from rund_trio.client.api import RundClient
    from rund_trio.client.diagnose import Diagnosed
    from rund_trio.errors import RundError

    if getattr(args, "command", None):
        check_text_command(args.command)
    tls = client_tls(args)
    ssl_context = tls.files.client_context()
    # What the first signal does instead of ending the command (``run``: stop
    # the job). One receiver for the whole command: on asyncio a nested one
    # takes the signals from this one, and a second Ctrl-C was swallowed.
    args.first_signal = []

    async def main() -> int:
        results: list[int] = []
        errors: list[RundError] = []
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async with anyio.create_task_group() as tasks:

                async def act() -> None:
                    try:
                        async with RundClient.connect(args.addr, ssl_context) as client:
                            results.append(await args.action_fn(client, args))
                    except RundError as error:
                        errors.append(error)
                    tasks.cancel_scope.cancel()

                tasks.start_soon(act)
                async for signum in signals:
                    if args.first_signal:
                        tasks.start_soon(args.first_signal.pop())
                        continue
                    results.append(128 + signum)
                    tasks.cancel_scope.cancel()
                    break
        if errors:
            raise tls.explain(errors[0]) if isinstance(errors[0], Diagnosed) else errors[0]
        return results[0]

    return anyio.run(main, backend="asyncio")


def check_text_command(command: list[str]) -> None:
    """Refuse a command line with bytes that are not UTF-8 (Python hands them
    over as lone surrogates): the API carries a job's arguments as protobuf
    strings, so they cannot be sent as they are, and changing them silently
    would run another command than the one typed."""
    from rund_trio.errors import InvalidRequest

    for index, argument in enumerate(command):
        try:
            argument.encode("utf-8")
        except UnicodeEncodeError:
            raw = argument.encode("utf-8", "surrogateescape")
            where = "the command name" if index == 0 else f"argument {index} of the command"
            raise InvalidRequest(
                f"{where} is not valid UTF-8 ({raw!r}); the API carries text only: pass such "
                "bytes through a file or let the job produce them (e.g. printf '\\377')"
            ) from None


def _start_request(args: argparse.Namespace) -> pb.JobStartRequest:
    import os

    from rund_trio.api import rund_pb2 as pb
    from rund_trio.cli.interactive import window_size
    from rund_trio.cli.job_env import job_env

    request = pb.JobStartRequest(name=args.command[0], args=args.command[1:])
    request.env.extend(job_env(args.env, args.env_file, os.environ))
    request.working_dir = args.workdir
    request.stdin = args.interactive
    if args.tty:
        request.tty = True
        size = window_size()
        if size is not None:
            request.tty_rows, request.tty_cols = size
        request.tty_term = os.environ.get("TERM", "")
    if args.network is not None:
        request.network = {"host": pb.JOB_NETWORK_HOST, "isolated": pb.JOB_NETWORK_ISOLATED}[
            args.network
        ]
    if args.host:
        request.profile = pb.JOB_PROFILE_HOST
    if args.uid is not None:
        request.uid.value = args.uid
    if args.gid is not None:
        request.gid.value = args.gid
    for _, field, _, _ in LIMIT_FLAGS:
        value = getattr(args, field)
        if value is not None:
            getattr(request, field).value = value
    return request


def _print_status(status: pb.JobStatus) -> None:
    """One JSON object in protobuf's JSON mapping, fields in .proto order."""
    import json

    from google.protobuf import json_format

    mapped = json_format.MessageToDict(
        status, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    ordered = {f.name: mapped[f.name] for f in status.DESCRIPTOR.fields if f.name in mapped}
    print(json.dumps(ordered))


async def _start(client: RundClient, args: argparse.Namespace) -> int:
    from rund_trio.cli.interactive import note_stdin_not_sent

    request = _start_request(args)
    if not args.interactive:
        note_stdin_not_sent()
    print(await client.start(request))
    return 0


async def _input(client: RundClient, args: argparse.Namespace) -> int:
    from rund_trio.cli.interactive import stdin_chunks

    await client.input(args.job_id, stdin_chunks())
    return 0


async def _attach(client: RundClient, args: argparse.Namespace) -> int:
    from rund_trio.cli.interactive import check_terminal_input, interact

    status = await client.status(args.job_id)
    check_terminal_input(status.stdin_open, status.tty)
    await interact(
        client,
        args.job_id,
        lambda: _copy_log(client, args.job_id),
        feed=status.stdin_open,
        terminal=status.tty,
    )
    return exit_code_of(await client.status(args.job_id))


async def _stop(client: RundClient, args: argparse.Namespace) -> int:
    from datetime import timedelta

    grace = timedelta(seconds=args.grace) if args.grace is not None else None
    _print_status(await client.stop(args.job_id, grace))
    return 0


async def _status(client: RundClient, args: argparse.Namespace) -> int:
    _print_status(await client.status(args.job_id))
    return 0


async def _copy_log(client: RundClient, job_id: str, **options: Any) -> None:
    from rund_trio.cli.log_options import copy_log
    from rund_trio.wire.heap import keep_stream_buffers_in_heap

    keep_stream_buffers_in_heap()
    await copy_log(client, job_id, sys.stdout.buffer, sys.stderr.buffer, **options)


async def _log(client: RundClient, args: argparse.Namespace) -> int:
    await _copy_log(
        client,
        args.job_id,
        follow=args.follow,
        tail_lines=args.tail,
        since=args.since,
        timestamps=args.timestamps,
    )
    return 0


def exit_code_of(status: pb.JobStatus) -> int:
    """The shell's convention: the exit code, or 128 + the signal that killed it."""
    if status.HasField("exit_code"):
        return status.exit_code.value
    if status.HasField("signal"):
        return 128 + status.signal.value
    return 1


async def _run(client: RundClient, args: argparse.Namespace) -> int:
    from functools import partial

    from rund_trio.cli.interactive import check_terminal_input, interact, note_stdin_not_sent
    from rund_trio.errors import RpcError

    check_terminal_input(args.interactive, args.tty)
    request = _start_request(args)
    if not args.interactive:
        note_stdin_not_sent()
    job_id = await client.start(request)
    args.first_signal.append(partial(client.stop, job_id))  # a second one ends `run` at once
    try:
        await interact(
            client,
            job_id,
            lambda: _copy_log(client, job_id),
            feed=args.interactive,
            terminal=args.tty,
        )
    except RpcError as error:
        if error.code != "RESOURCE_EXHAUSTED":
            raise
        # Output beyond a cap was dropped: say so, but the job's own
        # exit code is still what the caller of `run` wants.
        print(f"rund-trio: warning: {error.message}", file=sys.stderr)
    finally:
        args.first_signal.clear()
    return exit_code_of(await client.status(job_id))
