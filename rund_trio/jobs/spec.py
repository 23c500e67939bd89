"""What a client asks to run, validated before anything is started."""

from __future__ import annotations

from dataclasses import dataclass

from ulid import ULID

from rund_trio.cgroups.limits import Limits
from rund_trio.errors import InvalidRequest, ResourceExhausted
from rund_trio.jobs.isolation_policy import IsolationRequest

MAX_ARGV_BYTES = 1024 * 1024
"""Default bound on a job's argv (``--max-argv-bytes``): the sum of each
argument's UTF-8 length plus its terminating NUL. Linux refuses much beyond
~2 MiB of argv+environment anyway."""


@dataclass(frozen=True)
class JobSpec:
    """A validated request to run ``argv`` under ``limits``."""

    argv: tuple[str, ...]
    limits: Limits = Limits()
    isolation: IsolationRequest = IsolationRequest()


def parse_job_spec(
    name: str,
    args: list[str] | tuple[str, ...],
    limits: Limits,
    isolation: IsolationRequest | None = None,
    *,
    max_argv_bytes: int | None = MAX_ARGV_BYTES,
) -> JobSpec:
    """Validate a Start request's command: ``InvalidRequest`` for malformed
    content, ``ResourceExhausted`` for an argv over ``max_argv_bytes`` (None: no cap)."""
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
    return JobSpec(argv=argv, limits=limits, isolation=isolation or IsolationRequest())


def parse_job_id(text: str) -> str:
    """The canonical form of a job id; ``InvalidRequest`` if it is no ULID."""
    try:
        return str(ULID.from_str(text))
    except (ValueError, TypeError):
        raise InvalidRequest(f"{text!r} is not a valid job id (a 26-character ULID)") from None


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
