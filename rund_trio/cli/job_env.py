"""A job's environment as the client assembles it from ``--env-file`` and
``-e``, by docker's rules: files first, then ``-e`` in order (a later entry
for a name wins on the daemon); ``NAME`` alone takes the client's own value
and is left out when the client has none. Nothing else of the client's
environment is sent."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from rund_trio.errors import ConfigError


def resolve_entry(entry: str, environ: Mapping[str, str]) -> str | None:
    """``NAME=VALUE`` as it is; ``NAME`` as ``NAME=<the client's value>``, or
    None when the client has no such variable (docker's ``-e NAME``)."""
    if "=" in entry:
        return entry
    value = environ.get(entry)
    return None if value is None else f"{entry}={value}"


def read_env_file(path: Path, environ: Mapping[str, str]) -> list[str]:
    """The entries of a docker env file: one ``NAME=VALUE`` or ``NAME`` per
    line, leading whitespace ignored, blank lines and lines starting with
    ``#`` skipped, the value taken literally (no quotes, no expansion).
    ``ConfigError`` for an unreadable file, bytes that are not UTF-8, an empty
    name, or a name with whitespace."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read the env file {path}: {error.strerror}") from None
    entries: list[str] = []
    for number, line_bytes in enumerate(raw.removeprefix(b"\xef\xbb\xbf").splitlines(), 1):
        try:
            line = line_bytes.decode("utf-8").lstrip()
        except UnicodeDecodeError:
            raise ConfigError(f"{path} line {number} is not valid UTF-8") from None
        if not line or line.startswith("#"):
            continue
        name = line.split("=", 1)[0]
        if not name:
            raise ConfigError(f"{path} line {number} has no variable name: {line!r}")
        if any(character.isspace() for character in name):
            raise ConfigError(f"{path} line {number}: the name {name!r} contains whitespace")
        resolved = resolve_entry(line, environ)
        if resolved is not None:
            entries.append(resolved)
    return entries


def job_env(entries: Iterable[str], files: Iterable[Path], environ: Mapping[str, str]) -> list[str]:
    """The ``env`` of a Start request: every file's entries, then ``entries``."""
    env: list[str] = []
    for file in files:
        env.extend(read_env_file(file, environ))
    for entry in entries:
        if not entry.split("=", 1)[0]:
            raise ConfigError(f"-e {entry!r} has no variable name (use -e NAME=VALUE)")
        resolved = resolve_entry(entry, environ)
        if resolved is not None:
            env.append(resolved)
    return env
