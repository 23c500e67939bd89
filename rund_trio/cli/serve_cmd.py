"""``rund-trio serve``: run the daemon until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rund_trio.cli.options import add_tls_options, tls_files
from rund_trio.cli.sizes import parse_size


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
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import signal

    import trio

    from rund_trio.cgroups.devices import parse_io_device
    from rund_trio.cgroups.tree import CgroupOptions
    from rund_trio.isolation.spec import Isolation
    from rund_trio.server.app import ServeConfig, serve
    from rund_trio.server.transport import TransportConfig

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = ServeConfig(
        tls=tls_files(args),
        addr=args.addr,
        state_dir=args.state_dir,
        output_cap=args.output_cap,
        shutdown_grace=args.shutdown_grace,
        transport=TransportConfig(handshake_timeout=args.handshake_timeout),
        cgroups=None
        if args.no_cgroups
        else CgroupOptions(
            root=args.cgroup_root,
            io_devices=tuple(parse_io_device(device) for device in args.io_device) or None,
            pids_max=args.pids_max or None,
        ),
        isolation=Isolation.none() if args.no_namespaces else Isolation(),
    )

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
