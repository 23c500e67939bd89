"""What a client asks to run, validated before anything is started."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from ulid import ULID

from rund_trio.cgroups.limits import Limits
from rund_trio.errors import InvalidRequest, ResourceExhausted
from rund_trio.jobs.isolation_policy import IsolationRequest

MAX_ARGV_BYTES = 1024 * 1024
"""Default bound on a job's argv (``--max-argv-bytes``): the sum of each
argument's UTF-8 length plus its terminating NUL. Linux refuses much beyond
~2 MiB of argv+environment anyway."""

MAX_ENV_BYTES = 128 * 1024
"""Default bound on the environment a request adds (``--max-env-bytes``): each
entry's UTF-8 length plus its terminating NUL."""
MAX_ENV_ENTRIES = 1024
"""Bound on the number of environment entries a request adds."""
DAEMON_ENV = ("RUND_JOB_ID",)
"""Variables the daemon sets for every job and a request may not replace."""
DEFAULT_WORKING_DIR = "/"
PATH_MAX = 4096
"""The kernel's limit on a path, terminating NUL included."""
DEFAULT_TERM = "xterm"
DEFAULT_ROWS = 24
DEFAULT_COLS = 80
MAX_WINDOW = 65535
"""``struct winsize`` holds unsigned shorts."""


@dataclass(frozen=True)
class Terminal:
    """A pseudo-terminal for the job: its initial window and ``TERM``."""

    rows: int = DEFAULT_ROWS
    cols: int = DEFAULT_COLS
    term: str = DEFAULT_TERM


@dataclass(frozen=True)
class JobSpec:
    """A validated request to run ``argv`` under ``limits``."""

    argv: tuple[str, ...]
    limits: Limits = Limits()
    isolation: IsolationRequest = IsolationRequest()
    env: tuple[tuple[str, str], ...] = ()
    """Added to the daemon's default environment, in order (a later entry for
    a name wins)."""
    working_dir: str = DEFAULT_WORKING_DIR
    stdin: bool = False
    """A stdin pipe for Input; otherwise the job's stdin is /dev/null (or the
    terminal, which Input then cannot feed)."""
    terminal: Terminal | None = None


def parse_env(
    entries: Iterable[str],
    *,
    max_bytes: int | None = MAX_ENV_BYTES,
    max_entries: int = MAX_ENV_ENTRIES,
) -> tuple[tuple[str, str], ...]:
    """``NAME=VALUE`` entries as (name, value) pairs, in order.

    ``InvalidRequest`` for an entry without ``=``, an empty name, a NUL in a
    name or value, or a variable the daemon sets itself (``DAEMON_ENV``);
    ``ResourceExhausted`` beyond ``max_entries`` entries or ``max_bytes``
    bytes (None: no byte cap)."""
    pairs: list[tuple[str, str]] = []
    size = 0
    for index, entry in enumerate(entries):
        if len(pairs) >= max_entries:
            raise ResourceExhausted(
                f"the environment has more than {max_entries} entries; at most {max_entries} "
                "are allowed"
            )
        name, equals, value = entry.partition("=")
        where = f"environment entry {index + 1}"
        if not equals:
            raise InvalidRequest(
                f"{where} ({_clip(entry)!r}) is not NAME=VALUE: a name cannot be sent without a "
                "value (the client resolves -e NAME from its own environment)"
            )
        if not name:
            raise InvalidRequest(f"{where} ({_clip(entry)!r}) has an empty name")
        if "\0" in name:
            raise InvalidRequest(f"{where} has a NUL byte in its name {_clip(name)!r}")
        if "\0" in value:
            raise InvalidRequest(f"{where} ({name}) has a NUL byte in its value")
        if name in DAEMON_ENV:
            raise InvalidRequest(f"{name} is set by the daemon and cannot be replaced")
        size += len(entry.encode("utf-8", "surrogateescape")) + 1
        if max_bytes is not None and size > max_bytes:
            raise ResourceExhausted(
                f"the environment is over {max_bytes} bytes (at entry {index + 1}, {name}); at "
                f"most {max_bytes} bytes are allowed (--max-env-bytes)"
            )
        pairs.append((name, value))
    return tuple(pairs)


def parse_working_dir(path: str) -> str:
    """The job's starting directory: ``/`` when empty, else an absolute path
    (``InvalidRequest`` for a relative one, a NUL, or one over ``PATH_MAX``).
    Whether the job can enter it is only known when it starts."""
    if not path:
        return DEFAULT_WORKING_DIR
    if "\0" in path:
        raise InvalidRequest("the working directory contains a NUL byte")
    if not path.startswith("/"):
        raise InvalidRequest(
            f"the working directory {_clip(path)!r} is not absolute: the daemon has no "
            "directory of yours to resolve it against"
        )
    if len(path.encode("utf-8", "surrogateescape")) >= PATH_MAX:
        raise InvalidRequest(f"the working directory is longer than {PATH_MAX - 1} bytes")
    return path


def parse_terminal(tty: bool, rows: int, cols: int, term: str) -> Terminal | None:
    """The terminal a request asks for, None without ``tty``. ``InvalidRequest``
    for a size or ``TERM`` given without ``tty``, a size over ``MAX_WINDOW``, or
    a ``TERM`` that is not a short printable name."""
    if not tty:
        if rows or cols or term:
            raise InvalidRequest("a terminal size or TERM was given for a job without a tty")
        return None
    check_window(rows, cols)
    if term and (len(term) > 64 or not term.isprintable() or " " in term or "=" in term):
        raise InvalidRequest(f"TERM {_clip(term)!r} is not a terminal type name")
    return Terminal(rows or DEFAULT_ROWS, cols or DEFAULT_COLS, term or DEFAULT_TERM)


def check_window(rows: int, cols: int) -> None:
    """``InvalidRequest`` for a window dimension above ``MAX_WINDOW``."""
    for what, value in (("rows", rows), ("columns", cols)):
        if not 0 <= value <= MAX_WINDOW:
            raise InvalidRequest(f"a terminal's {what} must be 0 to {MAX_WINDOW}, not {value}")


def _clip(text: str, length: int = 60) -> str:
    return text if len(text) <= length else text[:length] + "..."


def parse_job_spec(
    name: str,
    args: list[str] | tuple[str, ...],
    limits: Limits,
    isolation: IsolationRequest | None = None,
    *,
    max_argv_bytes: int | None = MAX_ARGV_BYTES,
    env: Iterable[str] = (),
    max_env_bytes: int | None = MAX_ENV_BYTES,
    working_dir: str = "",
    stdin: bool = False,
    terminal: Terminal | None = None,
) -> JobSpec:
    """Validate a Start request's command: ``InvalidRequest`` for malformed
    content, ``ResourceExhausted`` for an argv over ``max_argv_bytes`` (None: no cap)
    or an environment over its caps (``parse_env``)."""
    if not name:
        raise InvalidRequest("the command name is empty")
    argv = (name, *args)
    for index, argument in enumerate(argv):
        if "\0" in argument:
            where = "the command name" if index == 0 else f"argument {index}"
            raise InvalidRequest(f"{where} contains a NUL byte")
    size = sum(len(argument.encode("utf-8", "surrogateescape")) + 1 for argument in argv)
    if max_argv_bytes is not None and size > max_argv_bytes:
        raise ResourceExhausted(
            f"the command line is {size} bytes; at most {max_argv_bytes} bytes are allowed "
            "(--max-argv-bytes)"
        )
    return JobSpec(
        argv=argv,
        limits=limits,
        isolation=isolation or IsolationRequest(),
        env=parse_env(env, max_bytes=max_env_bytes),
        working_dir=parse_working_dir(working_dir),
        stdin=stdin,
        terminal=terminal,
    )


def parse_job_id(text: str) -> str:
    """The canonical form of a job id; ``InvalidRequest`` if it is no ULID."""
    try:
        return _canonical_job_id(text)
    except (ValueError, TypeError):
        raise InvalidRequest(f"{text!r} is not a valid job id (a 26-character ULID)") from None


@functools.lru_cache(maxsize=4096)
def _canonical_job_id(text: str) -> str:
    # Every Status parses the id again: the ids asked about recently are few.
    return str(ULID.from_str(text))


_last_id: ULID | None = None


def new_job_id() -> str:
    """A new ULID, greater than every one this process made before: ids
    sort in the order jobs were started (List's "newest first"), even within
    one millisecond."""
    global _last_id
    candidate = ULID()
    if _last_id is not None and int(candidate) <= int(_last_id):
        candidate = ULID.from_int(int(_last_id) + 1)
    _last_id = candidate
    return str(candidate)
