"""``rund-trio serve``: run the daemon until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rund_trio.cli.durations import parse_duration
from rund_trio.cli.options import add_tls_options, tls_files
from rund_trio.cli.sizes import parse_reserve, parse_size


def parse_user(text: str) -> tuple[int, int]:
    """``UID`` or ``UID:GID`` (the group defaults to the uid)."""
    uid, _, gid = text.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not UID or UID:GID (numbers)")
    return int(uid), int(gid or uid)


def _san_pattern(text: str) -> str:
    from rund_trio.errors import ConfigError
    from rund_trio.jobs.isolation_policy import parse_san_pattern

    try:
        return parse_san_pattern(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_count(text: str) -> int:
    """A whole number of zero or more."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of zero or more")
    return int(text)


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the daemon",
        description="Run the job daemon: serve the JobController API over mutual TLS "
        "until SIGINT or SIGTERM, then kill every job and exit.",
    )
    parser.add_argument(
        "--addr",
        default=":8000",
        help="address to listen on: host:port, [::1]:port, or :port for every interface "
        "(default: %(default)s)",
    )
    add_tls_options(parser, cert="tls/server.pem", key="tls/server-key.pem", env_prefix=None)
    state = parser.add_mutually_exclusive_group()
    state.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory for job records and output, mode 0700, kept across restarts "
        "(default: /var/lib/rund-trio as root, else $XDG_STATE_HOME/rund-trio, "
        "by default ~/.local/state/rund-trio)",
    )
    state.add_argument(
        "--temp-state-dir",
        action="store_true",
        help="use a fresh private directory under the system temp directory instead, "
        "removed at exit with every job record (tests, demos)",
    )
    parser.add_argument(
        "--retain-jobs",
        type=parse_count,
        default=10_000,
        metavar="N",
        help="most ended jobs kept (record and output); the ones that ended first are "
        "forgotten first (default: %(default)s; 0: no limit)",
    )
    parser.add_argument(
        "--retain-for",
        type=parse_duration,
        default="7d",
        metavar="DURATION",
        help="forget ended jobs this long after they ended, e.g. 12h, 30d "
        "(default: %(default)s; 0: no limit)",
    )
    parser.add_argument(
        "--output-cap",
        type=parse_size,
        default="1G",
        help="output kept per job, e.g. 512M or 2G; the rest is dropped and counted "
        "(default: %(default)s; 0 keeps none)",
    )
    parser.add_argument(
        "--max-output-total",
        type=parse_size,
        default="10G",
        metavar="SIZE",
        help="output of all retained jobs together in the state directory; beyond it "
        "output is dropped and Start is refused until jobs are removed or forgotten "
        "(default: %(default)s; 0: no cap)",
    )
    parser.add_argument(
        "--min-free-disk",
        type=parse_reserve,
        default=None,
        metavar="SIZE|PERCENT%",
        help="free space job output never eats into on the state directory's filesystem; "
        "below it output is dropped and Start is refused (default: 1G or 5%% of the "
        "filesystem, whichever is smaller; 0: none)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="at shutdown, send jobs SIGTERM and wait this long before SIGKILL (default: 0)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds a client has to complete the TLS handshake (default: %(default)s)",
    )
    cgroups = parser.add_argument_group("resource control (cgroup v2)")
    cgroups.add_argument(
        "--cgroup-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="the cgroup v2 directory for job cgroups (default: rund-trio below the "
        "daemon's own cgroup); one daemon per directory",
    )
    cgroups.add_argument(
        "--io-device",
        action="append",
        default=[],
        metavar="DEV",
        help="block device io limits apply to, as MAJ:MIN or /dev/NAME; repeatable "
        "(default: the machine's whole disks)",
    )
    cgroups.add_argument(
        "--pids-max",
        type=int,
        default=4096,
        metavar="N",
        help="most processes a job may have, so a fork bomb stays inside it "
        "(default: %(default)s; 0 for no cap)",
    )
    cgroups.add_argument(
        "--no-cgroups",
        action="store_true",
        help="do not put jobs in cgroups (every resource limit is then refused)",
    )
    isolation = parser.add_argument_group("isolation")
    isolation.add_argument(
        "--no-namespaces",
        action="store_true",
        help="run jobs in the daemon's namespaces instead of new PID, mount, UTS and IPC ones",
    )
    isolation.add_argument(
        "--network",
        choices=["host", "isolated"],
        default=None,
        help="network of jobs that do not choose one: the host's, or a namespace with only "
        "loopback (default: host, or isolated with --forbid-host-network)",
    )
    isolation.add_argument(
        "--forbid-host-network",
        action="store_true",
        help="never give a job the host's network",
    )
    isolation.add_argument(
        "--rootfs",
        type=Path,
        default=None,
        metavar="DIR",
        help="a root filesystem every job pivots into (see README: building one)",
    )
    isolation.add_argument(
        "--run-as",
        type=parse_user,
        default=None,
        metavar="UID[:GID]",
        help="user (and group) of jobs that do not choose one (default: the daemon's own)",
    )
    isolation.add_argument(
        "--allow-uid",
        type=int,
        action="append",
        default=[],
        metavar="UID",
        help="a uid clients may ask to run a job as; repeatable (default: none; "
        "root only if listed)",
    )
    isolation.add_argument(
        "--allow-gid",
        type=int,
        action="append",
        default=[],
        metavar="GID",
        help="a gid clients may ask for; repeatable",
    )
    isolation.add_argument(
        "--hide",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="a file or directory no job may read, e.g. a CA key on this machine; repeatable "
        "(the state directory and --key are always hidden; needs namespaces)",
    )
    isolation.add_argument(
        "--default-profile",
        choices=["contained", "host"],
        default="contained",
        help="profile of jobs that do not ask for one: contained (a user namespace, the "
        "host read-only, narrowed capabilities, no_new_privs, a seccomp filter) or host "
        "(the daemon's own powers, for a daemon that trusts every client; the only one "
        "--no-namespaces can run) (default: %(default)s)",
    )
    isolation.add_argument(
        "--allow-host-jobs",
        type=_san_pattern,
        action="append",
        default=[],
        metavar="SAN-PATTERN",
        help="clients whose certificate has a SAN matching KIND:PATTERN (KIND DNS, IP, email "
        "or URI; PATTERN a glob, e.g. DNS:*.ops.example.com) may ask for host jobs "
        "(client --host); repeatable (default: none)",
    )
    isolation.add_argument(
        "--userns-range",
        default=None,
        metavar="START:COUNT",
        help="host uids and gids START.. that contained jobs' ids 0..COUNT-1 map to "
        "(default: the rund-trio entries of /etc/subuid and /etc/subgid, else 2147418112:65536)",
    )
    caps = parser.add_argument_group("caps (beyond them: RESOURCE_EXHAUSTED)")
    caps.add_argument(
        "--max-running-jobs",
        type=int,
        default=4096,
        metavar="N",
        help="jobs running at once (default: %(default)s; 0: no cap)",
    )
    caps.add_argument(
        "--max-running-jobs-per-client",
        type=int,
        default=1024,
        metavar="N",
        help="jobs running at once per client certificate (default: %(default)s; 0: no cap)",
    )
    caps.add_argument(
        "--max-log-streams-per-client",
        type=int,
        default=256,
        metavar="N",
        help="Log streams open at once per client certificate (default: %(default)s; 0: no cap)",
    )
    caps.add_argument(
        "--max-request-size",
        type=parse_size,
        default="4M",
        metavar="SIZE",
        help="largest request message, e.g. 64K or 16M, refused from its length prefix "
        "(default: %(default)s)",
    )
    caps.add_argument(
        "--max-argv-bytes",
        type=parse_size,
        default="1M",
        metavar="SIZE",
        help="largest command line a job may have: its arguments' bytes and NULs "
        "(default: %(default)s; 0: no cap, Linux then refuses beyond ~2M)",
    )
    caps.add_argument(
        "--max-streams-per-connection",
        type=int,
        default=1024,
        metavar="N",
        help="requests one connection may have open at once; a client that opens more "
        "loses the connection (default: %(default)s)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import signal

    import trio

    from rund_trio.cgroups.devices import parse_io_device
    from rund_trio.cgroups.tree import CgroupOptions
    from rund_trio.isolation import id_range
    from rund_trio.jobs.isolation_policy import IsolationPolicy, Network, Profile
    from rund_trio.logs.budget import Reserve
    from rund_trio.logs.state_dir import default_state_dir
    from rund_trio.rpc import TransportConfig
    from rund_trio.server.app import ServeConfig, serve
    from rund_trio.wire.heap import keep_stream_buffers_in_heap

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = ServeConfig(
        tls=tls_files(args),
        addr=args.addr,
        state_dir=None if args.temp_state_dir else (args.state_dir or default_state_dir()),
        retain_jobs=args.retain_jobs or None,
        retain_for=args.retain_for or None,
        output_cap=args.output_cap,
        max_output_total=args.max_output_total or None,
        min_free_disk=args.min_free_disk or Reserve(),
        shutdown_grace=args.shutdown_grace,
        transport=TransportConfig(
            handshake_timeout=args.handshake_timeout,
            max_request_size=args.max_request_size,
            max_streams_per_connection=args.max_streams_per_connection,
        ),
        cgroups=None
        if args.no_cgroups
        else CgroupOptions(
            root=args.cgroup_root,
            io_devices=tuple(parse_io_device(device) for device in args.io_device) or None,
            pids_max=args.pids_max or None,
        ),
        max_running_jobs=args.max_running_jobs or None,
        max_running_jobs_per_client=args.max_running_jobs_per_client or None,
        max_log_streams_per_client=args.max_log_streams_per_client or None,
        max_argv_bytes=args.max_argv_bytes or None,
        isolation=IsolationPolicy(
            namespaces=not args.no_namespaces,
            network=Network(args.network or ("isolated" if args.forbid_host_network else "host")),
            allow_host_network=not args.forbid_host_network,
            rootfs=str(args.rootfs.resolve()) if args.rootfs else None,
            run_as=args.run_as,
            allowed_uids=frozenset(args.allow_uid),
            allowed_gids=frozenset(args.allow_gid),
            hidden=tuple(str(path.absolute()) for path in args.hide),
            default_profile=Profile(args.default_profile),
            host_job_grants=tuple(args.allow_host_jobs),
            # Without namespaces no job is contained and the range is unused.
            id_range=id_range.DEFAULT
            if args.no_namespaces
            else id_range.configured(args.userns_range),
        ),
    )

    keep_stream_buffers_in_heap()

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(serve, config)
                async for signum in signals:
                    logging.getLogger("rund_trio").info(
                        "%s: shutting down", signal.Signals(signum).name
                    )
                    break
                nursery.cancel_scope.cancel()

    trio.run(main)
    return 0
