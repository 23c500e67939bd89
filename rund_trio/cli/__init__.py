"""The ``rund-trio`` command line: one module per subcommand.

Each subcommand module exposes ``add_parser(subparsers)`` and the parser's
``handler`` default, a function ``(argparse.Namespace) -> int``. Modules import
what their command needs lazily, so ``rund-trio client start`` does not pay for
the daemon's imports.
"""
