"""Where the client finds its certificate files, from any directory.

Each of the CA, the certificate and the key comes from, in this order: its
flag (``--ca``/``--cert``/``--key``), its environment variable (``RUND_CA``,
``RUND_CERT``, ``RUND_KEY``), else the first of ``./tls/`` and
``$XDG_CONFIG_HOME/rund-trio/`` (default ``~/.config/rund-trio/``) that holds
a ``ca.pem``: ``ca.pem``, ``client.pem`` and ``client-key.pem`` from there.

When nothing is found the error says where the client looked, and never
advises ``rund-trio certs`` there: a new CA would not be the daemon's.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from rund_trio.client.diagnose import Diagnosed, Side
from rund_trio.errors import ConfigError
from rund_trio.tls.context import TlsFiles, TlsLabels

FILE_NAMES = {"ca": "ca.pem", "cert": "client.pem", "key": "client-key.pem"}
FLAGS = {"ca": "--ca", "cert": "--cert", "key": "--key"}
ENV = {"ca": "RUND_CA", "cert": "RUND_CERT", "key": "RUND_KEY"}

GET_FILES = (
    "copy the daemon's ca.pem and a client certificate made with its CA "
    "(`rund-trio certs --out <the daemon's tls directory> --client NAME` on its host) "
    "into one of them, or give --ca/--cert/--key; do not run `rund-trio certs` in a new "
    "directory: the daemon would not trust its new CA"
)


def add_client_tls_options(group: argparse._ArgumentGroup) -> None:
    for name, what in (
        ("ca", "the CA that signed the daemon's certificate"),
        ("cert", "this client's certificate"),
        ("key", "this client's private key"),
    ):
        group.add_argument(
            FLAGS[name],
            type=Path,
            default=None,
            help=f"{what} (default: ${ENV[name]}, else {FILE_NAMES[name]} in ./tls/ or "
            "$XDG_CONFIG_HOME/rund-trio/)",
        )


class FoundTls(NamedTuple):
    """The client's files and, for messages, where each came from."""

    files: TlsFiles
    origins: Mapping[str, str]
    """By file ("ca", "cert", "key"): the flag, the variable or the directory."""

    def where(self, name: str) -> str:
        """``--ca tls/ca.pem``, or ``--ca /home/me/.config/rund-trio/ca.pem,
        found in $XDG_CONFIG_HOME/rund-trio/``."""
        path, origin = getattr(self.files, name), self.origins[name]
        return f"{FLAGS[name]} {path}" + ("" if origin == f"from {FLAGS[name]}" else f", {origin}")

    def explain(self, error: Diagnosed) -> Diagnosed:
        """``error`` with the file it is about, and where that file came from."""
        side = error.diagnosis.side
        if side is Side.DAEMON_CERT:
            return Diagnosed(type(error.diagnosis)(side, f"{error} ({self.where('ca')})"))
        if side is Side.CLIENT_CERT:
            return Diagnosed(type(error.diagnosis)(side, f"{error} ({self.where('cert')})"))
        return error


def search_directories(cwd: Path, env: Mapping[str, str]) -> list[tuple[Path, str]]:
    """The directories searched, each with how messages name it."""
    config_home = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")) / ".config")
    return [
        (cwd / "tls", "./tls/"),
        (Path(config_home) / "rund-trio", "$XDG_CONFIG_HOME/rund-trio/"),
    ]


def find_client_tls(
    given: Mapping[str, Path | None], *, cwd: Path, env: Mapping[str, str]
) -> FoundTls:
    """The client's three files (see the module docstring); ``ConfigError``
    naming where the client looked when one cannot be found."""
    paths: dict[str, Path] = {}
    origins: dict[str, str] = {}
    for name in FILE_NAMES:
        flag_value = given.get(name)
        if flag_value is not None:
            paths[name], origins[name] = flag_value, f"from {FLAGS[name]}"
        elif env.get(ENV[name]):
            paths[name], origins[name] = Path(env[ENV[name]]), f"from ${ENV[name]}"
    missing = [name for name in FILE_NAMES if name not in paths]
    if missing:
        searched = search_directories(cwd, env)
        found = next(((d, label) for d, label in searched if (d / "ca.pem").is_file()), None)
        if found is None:
            looked = " and ".join(f"{label} ({directory})" for directory, label in searched)
            raise ConfigError(
                f"no {', '.join(FILE_NAMES[name] for name in missing)} for this client: "
                f"not given ({', '.join(FLAGS[n] for n in missing)} or "
                f"${', $'.join(ENV[n] for n in missing)}) and not in {looked}; {GET_FILES}"
            )
        directory, label = found
        for name in missing:
            paths[name], origins[name] = directory / FILE_NAMES[name], f"found in {label}"
    for name, path in paths.items():
        if not path.is_file():
            raise ConfigError(
                f"this client's {FILE_NAMES[name].removesuffix('.pem')} file {path} "
                f"({origins[name]}) does not exist; {GET_FILES}"
            )
    labels = TlsLabels(**{name: FLAGS[name] for name in FILE_NAMES})
    files = TlsFiles(ca=paths["ca"], cert=paths["cert"], key=paths["key"], labels=labels)
    return FoundTls(files, origins)


def client_tls(args: argparse.Namespace) -> FoundTls:
    """``find_client_tls`` for parsed command-line arguments, here and now."""
    given = {"ca": args.ca, "cert": args.cert, "key": args.key}
    return find_client_tls(given, cwd=Path.cwd(), env=os.environ)
