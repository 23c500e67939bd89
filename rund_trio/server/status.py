"""The one place where exceptions become gRPC statuses."""

from __future__ import annotations

import logging

from rund_trio import errors
from rund_trio.rpc._status import MAX_MESSAGE_CHARS, Status, StatusCode, bounded_message

log = logging.getLogger(__name__)

__all__ = ["MAX_MESSAGE_CHARS", "bounded_message", "status_for_exception"]

_CODES: list[tuple[type[errors.RundError], StatusCode]] = [
    (errors.InvalidRequest, StatusCode.INVALID_ARGUMENT),
    (errors.JobNotFound, StatusCode.NOT_FOUND),
    (errors.PermissionDenied, StatusCode.PERMISSION_DENIED),
    (errors.FailedPrecondition, StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhausted, StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unimplemented, StatusCode.UNIMPLEMENTED),
    (errors.UnknownService, StatusCode.NOT_FOUND),
    (errors.Unavailable, StatusCode.UNAVAILABLE),
]


def status_for_exception(error: Exception) -> Status:
    """The status a client gets for ``error``: the precise code and the error's
    own message (bounded) for every ``RundError``; INTERNAL, with the details
    only in the daemon's log, for anything else (a bug)."""
    for error_type, code in _CODES:
        if isinstance(error, error_type):
            return Status(code, bounded_message(str(error)))
    log.error("internal error while serving a request", exc_info=error)
    return Status(StatusCode.INTERNAL, "internal error (see the daemon's log)")
