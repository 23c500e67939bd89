"""Command-line options shared by subcommands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rund_trio.tls.context import TlsFiles


def add_tls_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    cert: str,
    key: str,
    env_prefix: str | None,
) -> None:
    """--ca/--cert/--key, defaulting to the development PKI in tls/ (or, for the
    client, to RUND_CA, RUND_CERT, RUND_KEY when set)."""

    def default(name: str, fallback: str) -> str:
        if env_prefix is None:
            return fallback
        return os.environ.get(f"{env_prefix}{name.upper()}", fallback)

    env_note = f" (env {env_prefix}%s)" if env_prefix else ""
    parser.add_argument(
        "--ca",
        type=Path,
        default=default("ca", "tls/ca.pem"),
        help="CA certificate that peers must be signed by (default: %(default)s)"
        + (env_note % "CA" if env_note else ""),
    )
    parser.add_argument(
        "--cert",
        type=Path,
        default=default("cert", cert),
        help="this side's certificate (default: %(default)s)"
        + (env_note % "CERT" if env_note else ""),
    )
    parser.add_argument(
        "--key",
        type=Path,
        default=default("key", key),
        help="this side's private key (default: %(default)s)"
        + (env_note % "KEY" if env_note else ""),
    )


def tls_files(args: argparse.Namespace) -> TlsFiles:
    from rund_trio.tls.context import TlsFiles

    return TlsFiles(ca=args.ca, cert=args.cert, key=args.key)
