"""Placeholder for `rund-trio execute` (owned by the isolation work, which
replaces this file whole): registers the subcommand so the CLI loads."""

from __future__ import annotations

from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("execute", help="internal: set up a job's process and exec it")
    parser.set_defaults(handler=lambda args: 2)
