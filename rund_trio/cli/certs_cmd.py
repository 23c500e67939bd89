"""``rund-trio certs``: create (or complete) a development PKI."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rund_trio.errors import ConfigError

if TYPE_CHECKING:
    from rund_trio.tls.certs import ClientSpec

DEFAULT_OUT = "tls"
DEFAULT_CLIENT = "client"
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
SERVER_CURVES = ("P-521", "P-384")

_EPILOG = """\
files written into DIR (created 0700 if missing):
  ca.pem, ca-key.pem            the certificate authority (ECDSA P-521, SHA-512)
  server.pem, server-key.pem    the daemon's certificate (serverAuth)
  NAME.pem, NAME-key.pem        one per --client (P-521, clientAuth, CN=NAME)

Keys are created 0600, certificates 0644. Existing files are kept: running
again with a new --client signs it with the CA already in DIR. --force
regenerates everything, CA included.

A client certificate's SANs are DNS:NAME (email:NAME if NAME contains @),
plus every --san NAME=SAN given for it. Examples:
  rund-trio certs --client alice --client bob --san bob=email:bob@example.com
  rund-trio certs --client ops --san ops=URI:spiffe://example/ops --san ops=IP:10.0.0.7
  rund-trio certs --client nobody --no-san nobody
  rund-trio certs --server-curve P-384     # for grpcio (BoringSSL) clients
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``certs`` on ``subparsers`` with :func:`run` as its handler."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "certs",
        help="create a development PKI (CA, server and client certificates)",
        description="Create a development PKI for mutual TLS: a CA, a server "
        "certificate and client certificates, all ECDSA with SHA-512.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=DEFAULT_OUT,
        help=f"directory to write into (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--client",
        metavar="NAME",
        action="append",
        dest="clients",
        help=f"issue a client certificate NAME.pem; repeatable (default: {DEFAULT_CLIENT})",
    )
    parser.add_argument(
        "--san",
        metavar="NAME=SAN",
        action="append",
        dest="sans",
        default=[],
        help="add a SAN to client NAME's certificate, SAN being DNS:x, IP:x, email:x "
        "or URI:x; repeatable",
    )
    parser.add_argument(
        "--no-san",
        metavar="NAME",
        action="append",
        dest="no_sans",
        default=[],
        help="give client NAME a certificate without any SAN (an anonymous client, "
        "for testing); repeatable",
    )
    parser.add_argument(
        "--server-name",
        metavar="NAME",
        action="append",
        dest="server_names",
        help="a DNS name or IP address of the server; repeatable "
        f"(default: {', '.join(DEFAULT_SERVER_NAMES)})",
    )
    parser.add_argument(
        "--server-curve",
        choices=SERVER_CURVES,
        default="P-521",
        help="curve of the server key; P-384 for grpcio (BoringSSL) clients, "
        "which cannot use P-521 (default: P-521)",
    )
    parser.add_argument(
        "--days",
        metavar="N",
        type=int,
        default=365,
        help="validity of new certificates in days (default: 365)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="regenerate and overwrite every file, the CA included",
    )
    parser.set_defaults(handler=run)
    return parser


def _client_specs(args: argparse.Namespace) -> list[ClientSpec]:
    """Turn --client/--san/--no-san into ClientSpecs; ConfigError on a bad combination."""
    from rund_trio.tls.certs import ClientSpec

    names: list[str] = args.clients or [DEFAULT_CLIENT]
    extra: dict[str, list[str]] = {name: [] for name in names}
    for item in args.sans:
        name, equals, san = item.partition("=")
        if not equals or not name or not san:
            raise ConfigError(f"--san {item!r} must look like NAME=SAN, e.g. alice=DNS:alice.lan")
        if name not in extra:
            raise ConfigError(f"--san {item!r}: there is no --client {name}")
        extra[name].append(san)
    for name in args.no_sans:
        if name not in extra:
            raise ConfigError(f"--no-san {name}: there is no --client {name}")
        if extra[name]:
            raise ConfigError(f"client {name} cannot have both --no-san and --san")
    return [
        ClientSpec(name, extra_sans=tuple(extra[name]), no_san=name in args.no_sans)
        for name in names
    ]


def run(args: argparse.Namespace) -> int:
    """Generate the PKI; print one line per file written (and per file kept)."""
    from rund_trio.tls.certs import generate_pki

    if args.days < 1:
        raise ConfigError(f"--days must be at least 1, not {args.days}")
    result = generate_pki(
        Path(args.out),
        clients=_client_specs(args),
        server_names=args.server_names or DEFAULT_SERVER_NAMES,
        server_curve=args.server_curve,
        valid_days=args.days,
        overwrite=args.force,
    )
    for path in result.skipped:
        print(f"kept {path} (exists)")
    for path in result.written:
        print(f"wrote {path}")
    return 0
