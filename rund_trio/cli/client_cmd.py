"""``rund-trio client``: a thin command line over the daemon's API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from rund_trio.cli.durations import parse_duration
from rund_trio.cli.log_options import add_log_options
from rund_trio.cli.sizes import parse_size
from rund_trio.cli.tls_discovery import add_client_tls_options

if TYPE_CHECKING:
    import ssl

    from google.protobuf.wrappers_pb2 import UInt32Value, UInt64Value

    from rund_trio.api import rund_pb2 as pb
    from rund_trio.cli.tls_discovery import FoundTls
    from rund_trio.client.api import RundClient


class LimitFlag(NamedTuple):
    """A ``start``/``run`` option that sets one of the request's limit fields."""

    flag: str
    parse: Callable[[str], int]
    help: str
    field: Callable[[pb.JobStartRequest], UInt32Value | UInt64Value]
    """The request's wrapper field the value goes into."""

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


LIMIT_FLAGS = [
    LimitFlag(
        "--max-cpu-bandwidth",
        int,
        "CPU time in µs per 100000 µs period (cpu.max quota), e.g. 50000 for half a CPU",
        lambda request: request.max_cpu_bandwidth,
    ),
    LimitFlag(
        "--max-memory-usage",
        parse_size,
        "memory.max in bytes, e.g. 256M",
        lambda request: request.max_memory_usage,
    ),
    LimitFlag(
        "--max-rbps",
        parse_size,
        "read bytes per second (io.max rbps)",
        lambda request: request.max_rbps,
    ),
    LimitFlag(
        "--max-wbps",
        parse_size,
        "written bytes per second (io.max wbps)",
        lambda request: request.max_wbps,
    ),
    LimitFlag(
        "--max-riops", int, "read operations per second (io.max riops)", lambda r: r.max_riops
    ),
    LimitFlag(
        "--max-wiops", int, "write operations per second (io.max wiops)", lambda r: r.max_wiops
    ),
]


ACTIONS = ("start", "run", "stop", "status", "log", "ps", "wait", "rm", "prune", "input", "attach")
"""Every action of ``client``, in the order its help lists them."""


def add_parser(subparsers: Any, action: str | None = None) -> None:
    """Add ``client`` and its actions. Given the action the command line names
    (its second argument), only that action's parser is built: a parser costs
    argparse several gettext look-ups (each a few stat calls), and building all
    of them was ~5 ms of every one-shot command. Anything else gets them all."""

    def wanted(name: str) -> bool:
        return action not in ACTIONS or name == action

    client = subparsers.add_parser(
        "client",
        help="talk to a daemon",
        description="Start, stop, inspect and follow jobs on a rund-trio daemon.",
    )
    actions = client.add_subparsers(dest="action", required=True, metavar="ACTION")

    # Of the class of the parsers above (their lean help formatter).
    connection = type(client)(add_help=False)
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
        (
            "run",
            "start a job, follow its output, exit with its exit code (128+signal if killed); "
            "with -it, Ctrl-P Ctrl-Q detaches (exit 0, the job runs on)",
        ),
    ]:
        if not wanted(name):
            continue
        parser = command_parser(name, help_text)
        if name == "run":
            parser.add_argument(
                "--grace",
                type=_grace_seconds,
                default=10.0,
                metavar="SECONDS",
                help="on Ctrl-C, SIGTERM or SIGHUP (a closed terminal), stop the job with "
                "SIGTERM, then SIGKILL after SECONDS; a second Ctrl-C kills it at once "
                "(default: %(default)s)",
            )
            _add_detach_keys(parser)
        limits = parser.add_argument_group("resource limits")
        for limit in LIMIT_FLAGS:
            limits.add_argument(
                limit.flag, type=limit.parse, default=None, metavar="N", help=limit.help
            )
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
        parser.set_defaults(
            handler=run_action,
            action_fn=_start if name == "start" else _run,
            one_shot=name == "start",
        )

    if wanted("stop"):
        stop = command_parser(
            "stop", "stop a job (its whole process tree) and print its final status"
        )
        stop.add_argument("job_id", metavar="ID")
        stop.add_argument(
            "--grace",
            type=float,
            default=None,
            metavar="SECONDS",
            help="send SIGTERM first and SIGKILL only after SECONDS (default: SIGKILL)",
        )
        stop.set_defaults(handler=run_action, action_fn=_stop, one_shot=True)

    if wanted("status"):
        status = command_parser("status", "print a job's status as JSON")
        status.add_argument("job_id", metavar="ID")
        status.set_defaults(handler=run_action, action_fn=_status, one_shot=True)

    if wanted("log"):
        log = command_parser(
            "log",
            "write a job's output (stdout and stderr, in the order the daemon read them) "
            "from the start until it ends",
        )
        log.add_argument("job_id", metavar="ID")
        add_log_options(log)
        log.set_defaults(handler=run_action, action_fn=_log)

    if wanted("ps"):
        ps = command_parser("ps", "list your jobs, newest first (running ones unless -a)")
        ps.add_argument("-a", "--all", action="store_true", help="ended jobs too")
        shown = ps.add_mutually_exclusive_group()
        shown.add_argument("-q", "--quiet", action="store_true", help="only the job ids")
        shown.add_argument(
            "--json", action="store_true", help="one JSON object per job and line (as status)"
        )
        ps.set_defaults(handler=run_action, action_fn=_ps, one_shot=True)

    if wanted("wait"):
        wait = command_parser(
            "wait",
            "wait until the jobs have ended, print each one's exit code (128+signal if killed), "
            "exit with the last one's",
        )
        wait.add_argument("job_ids", nargs="+", metavar="ID")
        wait.set_defaults(handler=run_action, action_fn=_wait, one_shot=True)

    if wanted("rm"):
        rm = command_parser("rm", "forget ended jobs: their record and their output")
        rm.add_argument("job_ids", nargs="+", metavar="ID")
        rm.add_argument(
            "-f", "--force", action="store_true", help="stop running jobs first (SIGKILL)"
        )
        rm.set_defaults(handler=run_action, action_fn=_rm, one_shot=True)

    if wanted("prune"):
        prune = command_parser("prune", "forget all your ended jobs (record and output)")
        prune.add_argument(
            "--older-than",
            type=parse_duration,
            default=None,
            metavar="DURATION",
            help="only jobs that ended longer ago than this, e.g. 1h or 7d",
        )
        prune.set_defaults(handler=run_action, action_fn=_prune, one_shot=True)

    if wanted("input"):
        feed = command_parser(
            "input", "send this command's stdin to a job started with -i, until end of file"
        )
        feed.add_argument("job_id", metavar="ID")
        feed.set_defaults(handler=run_action, action_fn=_input)

    if wanted("attach"):
        attach = command_parser(
            "attach",
            "follow a job's output from its start and send it this command's stdin (if it was "
            "started with -i; a terminal in raw mode if with -t); exit with its exit code. "
            "With -it, Ctrl-P Ctrl-Q detaches (exit 0, the job runs on)",
        )
        _add_detach_keys(attach)
        attach.add_argument("job_id", metavar="ID")
        attach.set_defaults(handler=run_action, action_fn=_attach)


def _add_detach_keys(parser: argparse.ArgumentParser) -> None:
    """``--detach-keys`` of ``run`` and ``attach``."""
    parser.add_argument(
        "--detach-keys",
        type=_detach_keys,
        default=None,
        metavar="KEYS",
        help="with a -it job, the keys that detach, leaving it running; docker's format: "
        "keys separated by commas, each a character or ctrl-<key> (a-z, @, [, \\, ], ^, _); "
        "default ctrl-p,ctrl-q; an empty string: none",
    )


def _detach_keys(text: str) -> bytes:
    """``--detach-keys``: the bytes they type (none for an empty string)."""
    if not text:
        return b""
    from rund_trio.cli.interactive import parse_detach_keys

    try:
        return parse_detach_keys(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _grace_seconds(text: str) -> float:
    """Seconds between SIGTERM and SIGKILL: 0 (SIGKILL at once) up to an hour,
    as the daemon allows."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to 3600")
    return seconds


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

    A unary action (``one_shot``: its calls each get one answer) runs on a
    blocking connection without an event loop: the command's whole life is a
    few round trips, and importing and starting one would cost more than
    they take. Any other runs on asyncio through anyio: the client library
    works under either, and the command never imports trio (the daemon's
    event loop)."""
    from rund_trio.cli.tls_discovery import client_tls

    if getattr(args, "command", None):
        check_text_command(args.command)
    tls = client_tls(args)
    ssl_context = tls.files.client_context()
    if getattr(args, "one_shot", False):
        return _run_one_shot(args, tls, ssl_context)
    return _run_on_asyncio(args, tls, ssl_context)


class _Signalled(BaseException):
    """SIGTERM or SIGHUP arrived during a one-shot action."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _run_one_shot(args: argparse.Namespace, tls: FoundTls, ssl_context: ssl.SSLContext) -> int:
    import signal

    from rund_trio.cli.main import start_up_done
    from rund_trio.client.api import RundClient
    from rund_trio.client.diagnose import Diagnosed
    from rund_trio.rpc._blocking import run_without_loop

    def interrupted(signum: int, frame: object) -> None:
        raise _Signalled(signum)

    previous = {
        signum: signal.signal(signum, interrupted) for signum in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        with RundClient.connect_blocking(args.addr, ssl_context) as client:
            start_up_done()
            result: int = run_without_loop(args.action_fn(client, args))
            return result
    except Diagnosed as error:
        raise tls.explain(error) from None
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except _Signalled as signalled:
        return 128 + signalled.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_on_asyncio(args: argparse.Namespace, tls: FoundTls, ssl_context: ssl.SSLContext) -> int:
    import signal

    import anyio

    from rund_trio.client.api import RundClient
    from rund_trio.client.diagnose import Diagnosed
    from rund_trio.errors import RundError

    # What the next signals do instead of ending the command, popped from the
    # end (``run``: stop the job, then kill it). One receiver for the whole
    # command: on asyncio a nested one takes the signals from this one, and a
    # second Ctrl-C was swallowed.
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

                async def on_signal(action: Any, signum: int) -> None:
                    # A Stop still waiting for its answer when the action ends
                    # (the job ended, so did its Log) loses its connection as
                    # ``act`` closes it: that answer is no longer needed.
                    try:
                        await action(signum)
                    except RundError as error:
                        if not results:
                            errors.append(error)
                            tasks.cancel_scope.cancel()

                tasks.start_soon(act)
                async for signum in signals:
                    if args.first_signal:
                        tasks.start_soon(on_signal, args.first_signal.pop(), signum)
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
    from rund_trio.cli.job_env import job_env
    from rund_trio.cli.local_stdin import window_size

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
    for limit in LIMIT_FLAGS:
        value = getattr(args, limit.dest)
        if value is not None:
            limit.field(request).value = value
    return request


def _print_status(status: pb.JobStatus) -> None:
    """One JSON object in protobuf's JSON mapping, fields in .proto order."""
    print(_status_json(status))


async def _start(client: RundClient, args: argparse.Namespace) -> int:
    from rund_trio.cli.local_stdin import note_stdin_not_sent

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
    detached = await interact(
        client,
        args.job_id,
        lambda: _copy_log(client, args.job_id),
        feed=status.stdin_open,
        terminal=status.tty,
        detach_keys=_chosen_detach_keys(args),
    )
    if detached:
        _say_detached(args.job_id)
        return 0
    return exit_code_of(await client.status(args.job_id))


def _chosen_detach_keys(args: argparse.Namespace) -> bytes:
    from rund_trio.cli.interactive import DEFAULT_DETACH_KEYS, parse_detach_keys

    keys: bytes | None = args.detach_keys
    return parse_detach_keys(DEFAULT_DETACH_KEYS) if keys is None else keys


def _say_detached(job_id: str) -> None:
    _say(f"detached from job {job_id}, which runs on (`client attach {job_id}` to come back)")


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
    import signal

    from rund_trio.cli.interactive import check_terminal_input, interact
    from rund_trio.cli.local_stdin import note_stdin_not_sent
    from rund_trio.errors import RpcError

    check_terminal_input(args.interactive, args.tty)
    request = _start_request(args)
    if not args.interactive:
        note_stdin_not_sent()
    job_id = await client.start(request)

    async def stop_gracefully(signum: int) -> None:
        await _stop_for(client, job_id, signum, args.grace)

    async def kill_now(signum: int) -> None:
        _say(f"killing job {job_id} now")
        await client.stop(job_id)

    args.first_signal[:] = [kill_now, stop_gracefully]  # popped from the end
    try:
        detached = await interact(
            client,
            job_id,
            lambda: _copy_log(client, job_id),
            feed=args.interactive,
            terminal=args.tty,
            detach_keys=_chosen_detach_keys(args),
        )
        if detached:
            _say_detached(job_id)
            return 0
    except RpcError as error:
        if error.code != "RESOURCE_EXHAUSTED":
            raise
        # Output beyond a cap was dropped: say so, but the job's own
        # exit code is still what the caller of `run` wants.
        _say(f"warning: {error.message}")
    except OSError as error:
        # The terminal or the reader is gone (EIO, a closed pipe): stop the
        # job as for a hang-up; a closed pipe then ends `run` as SIGPIPE
        # would (141, see cli.main).
        args.first_signal.clear()
        await _stop_for(client, job_id, signal.SIGHUP, args.grace, quiet=True)
        if isinstance(error, BrokenPipeError):
            raise
    finally:
        args.first_signal.clear()
    return exit_code_of(await client.status(job_id))


def _say(message: str) -> None:
    """One line on stderr, if there still is one."""
    import contextlib

    with contextlib.suppress(OSError):
        print(f"rund-trio: {message}", file=sys.stderr, flush=True)


async def _stop_for(
    client: RundClient,
    job_id: str,
    signum: int,
    grace: float,
    *,
    quiet: bool = False,
) -> None:
    """Stop ``job_id`` because of ``signum``: SIGTERM, then SIGKILL after
    ``grace``. Runs beside the Log being copied, which ends when the job does;
    a second signal meanwhile kills the job at once (see ``run_action``)."""
    import signal
    from datetime import timedelta

    if not quiet:
        how = (
            f"SIGTERM, then SIGKILL after {grace:g} s; Ctrl-C again to kill it now"
            if grace > 0
            else "SIGKILL"
        )
        _say(f"{signal.Signals(signum).name}: stopping job {job_id} ({how})")
    await client.stop(job_id, timedelta(seconds=grace) if grace > 0 else None)


_STATE_NAMES = {1: "running", 2: "exited", 3: "killed", 4: "stopped", 5: "lost"}


def _exit_column(status: pb.JobStatus) -> str:
    if status.HasField("exit_code"):
        return str(status.exit_code.value)
    if status.signal_name:
        return status.signal_name
    return "-"


def _duration_column(status: pb.JobStatus) -> str:
    from datetime import UTC, datetime

    started = status.started_at.ToDatetime(tzinfo=UTC)
    ended = status.ended_at.ToDatetime(tzinfo=UTC) if status.HasField("ended_at") else None
    seconds = max(0.0, ((ended or datetime.now(UTC)) - started).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s"


def _command_column(status: pb.JobStatus, width: int = 40) -> str:
    import shlex

    command = shlex.join([status.name, *status.args])
    return command if len(command) <= width else command[: width - 1] + "…"


def _status_json(status: pb.JobStatus) -> str:
    """One JSON object in protobuf's JSON mapping, fields in .proto order."""
    import json

    from google.protobuf import json_format

    mapped = json_format.MessageToDict(
        status, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    ordered = {f.name: mapped[f.name] for f in status.DESCRIPTOR.fields if f.name in mapped}
    return json.dumps(ordered)


async def _ps(client: RundClient, args: argparse.Namespace) -> int:
    from datetime import UTC

    from rund_trio.api import rund_pb2 as pb

    which = pb.JOB_LIST_FILTER_ALL if args.all else pb.JOB_LIST_FILTER_RUNNING
    rows = []
    async for status in client.all_jobs(which):
        if args.quiet:
            print(status.ulid)
        elif args.json:
            print(_status_json(status))
        else:
            started = status.started_at.ToDatetime(tzinfo=UTC).astimezone()
            rows.append(
                (
                    status.ulid,
                    _command_column(status),
                    _STATE_NAMES.get(status.state, str(status.state)),
                    _exit_column(status),
                    started.strftime("%Y-%m-%d %H:%M:%S"),
                    _duration_column(status),
                )
            )
    if not (args.quiet or args.json):
        header = ("ID", "COMMAND", "STATE", "EXIT", "STARTED", "DURATION")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print(
                "  ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
            )
    return 0


async def _wait(client: RundClient, args: argparse.Namespace) -> int:
    code = 0
    for job_id in args.job_ids:
        code = exit_code_of(await client.wait(job_id))
        print(code, flush=True)
    return code


async def _rm(client: RundClient, args: argparse.Namespace) -> int:
    from rund_trio.errors import RpcError

    failed = False
    for job_id in args.job_ids:
        try:
            await client.remove(job_id, force=args.force)
        except RpcError as error:
            _say(error.message)
            failed = True
            continue
        print(job_id, flush=True)
    return 1 if failed else 0


async def _prune(client: RundClient, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from rund_trio.api import rund_pb2 as pb
    from rund_trio.errors import RpcError

    cutoff = None
    if args.older_than is not None:
        cutoff = datetime.now(UTC) - timedelta(seconds=args.older_than)
    doomed = [
        status.ulid
        async for status in client.all_jobs(pb.JOB_LIST_FILTER_ENDED)
        if cutoff is None or status.ended_at.ToDatetime(tzinfo=UTC) < cutoff
    ]
    for job_id in doomed:
        try:
            await client.remove(job_id)
        except RpcError as error:
            if error.code != "NOT_FOUND":  # forgotten meanwhile: nothing to do
                raise
            continue
        print(job_id, flush=True)
    return 0
