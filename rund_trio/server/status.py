"""The one place where exceptions become gRPC statuses."""

from __future__ import annotations

import logging

from purerpc.grpclib.status import Status, StatusCode

from rund_trio import errors

log = logging.getLogger(__name__)

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


MAX_MESSAGE_CHARS = 1000
"""Longest status message sent. Messages quote what the client sent (a
program name can be megabytes), and clients refuse headers beyond a few tens
of KiB (grpc-message is percent-encoded: up to 12 bytes per character)."""


def bounded_message(message: str) -> str:
    """``message``, or its start and end around an ellipsis if it is longer
    than ``MAX_MESSAGE_CHARS`` (its end usually says why)."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    half = (MAX_MESSAGE_CHARS - 5) // 2
    return f"{message[:half]} … {message[-half:]}"


def status_for_exception(error: Exception) -> Status:
    """The status a client gets for ``error``: the precise code and the error's
    own message (bounded) for every ``RundError``; INTERNAL, with the details
    only in the daemon's log, for anything else (a bug)."""
    for error_type, code in _CODES:
        if isinstance(error, error_type):
            return Status(code, status_message=bounded_message(str(error)))
    log.error("internal error while serving a request", exc_info=error)
    return Status(StatusCode.INTERNAL, status_message="internal error (see the daemon's log)")
