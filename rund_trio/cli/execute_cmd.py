"""``rund-trio execute``: the internal helper that sets up a job's process
(cgroup, namespaces, root filesystem, credentials) and execs it.

The daemon normally runs the same code faster, without the CLI's imports
(``rund_trio.process.helper.helper_command``); this subcommand exists for
debugging, e.g. ``rund-trio execute 3<spec.bin 4>status.txt``.
"""

from __future__ import annotations

import argparse
from typing import Any

from rund_trio.isolation import wire


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "execute",
        help="internal: set up a job's process and exec it",
        description=(
            "Internal: read a job spec from SPEC_FD, set up the job's cgroup, namespaces "
            "and root filesystem, and exec its program. Failures are written to "
            f"STATUS_FD and end with exit status {wire.EXIT_SETUP_FAILED}."
        ),
    )
    parser.add_argument("--spec-fd", type=int, default=wire.DEFAULT_SPEC_FD, metavar="SPEC_FD")
    parser.add_argument(
        "--status-fd", type=int, default=wire.DEFAULT_STATUS_FD, metavar="STATUS_FD"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rund_trio.isolation.execute import execute

    return execute(args.spec_fd, args.status_fd)
