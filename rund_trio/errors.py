"""Every error rund-trio raises on purpose, in one hierarchy.

Each class says what went wrong in words a person understands; the server maps
the class to a gRPC status code (``rund_trio.server.status``) and the CLI prints
the message as one line. Anything that is not a ``RundError`` is a bug.
"""

from __future__ import annotations


class RundError(Exception):
    """Base of every error rund-trio raises on purpose."""


class ConfigError(RundError):
    """The daemon or the client was configured wrongly (files, flags, addresses)."""


class InvalidRequest(RundError):
    """A request is malformed whatever the state of the machine (INVALID_ARGUMENT)."""


class JobNotFound(RundError):
    """No job with that id is visible to the caller (NOT_FOUND).

    Raised alike for jobs that do not exist and for jobs of other clients, so
    that the existence of other clients' jobs never leaks.
    """

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class PermissionDenied(RundError):
    """The caller may not do this at all (PERMISSION_DENIED)."""


class FailedPrecondition(RundError):
    """The request is valid but this machine cannot honour it (FAILED_PRECONDITION)."""


class Unsupported(FailedPrecondition):
    """A feature (a limit, an isolation option) this host cannot enforce."""


class SpawnError(FailedPrecondition):
    """The job's program could not be executed; carries the OS reason."""

    def __init__(self, program: str, errno: int, reason: str) -> None:
        super().__init__(f"cannot execute {program!r}: {reason}")
        self.program = program
        self.errno = errno
        self.reason = reason


class ResourceExhausted(RundError):
    """A configured cap was reached (RESOURCE_EXHAUSTED)."""


class Unimplemented(RundError):
    """The daemon does not offer what the request asks for (UNIMPLEMENTED)."""


class UnknownService(RundError):
    """A health check names a service the daemon does not serve (NOT_FOUND)."""


class Unavailable(RundError):
    """The daemon cannot serve requests right now; retrying later may work (UNAVAILABLE)."""


class ConnectionFailed(RundError):
    """The client could not reach the daemon or lost its connection."""


class RpcError(RundError):
    """The daemon answered a request with an error status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


def sole_exception(error: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (as trio
    nurseries and anyio task groups wrap what a block raised), else ``error``."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
