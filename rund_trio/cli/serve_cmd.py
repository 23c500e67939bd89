"""``rund-trio serve``: run the daemon until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rund_trio.cli.options import add_tls_options, tls_files
from rund_trio.cli.sizes import parse_reserve, parse_size


def parse_user(text: str) -> tuple[int, int]:
    """``UID`` or ``UID:GID`` (the group defaults to the uid)."""
    uid, _, gid = text.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not UID or UID:GID (numbers)")
    return int(uid), int(gid or uid)


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
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="directory for job output, mode 0700 (default: a fresh private directory "
        "under the system temp directory, removed at exit)",
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
        help="output of all jobs together kept in the state directory for the daemon's "
        "lifetime; beyond it output is dropped and Start is refused (default: %(default)s; "
        "0: no cap)",
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
    from rund_trio.jobs.isolation_policy import IsolationPolicy, Network
    from rund_trio.logs.budget import Reserve
    from rund_trio.server.app import ServeConfig, serve
    from rund_trio.server.transport import TransportConfig
    from rund_trio.wire.heap import keep_stream_buffers_in_heap

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = ServeConfig(
        tls=tls_files(args),
        addr=args.addr,
        state_dir=args.state_dir,
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
