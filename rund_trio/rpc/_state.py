"""A call's states, one table of transitions for both roles.

A call is OPEN until one side ends it. Only what this table allows happens:
an event or a send missing from it is a ``LocalProtocolError`` (or the peer's
``RemoteProtocolError``), so a bug shows where it is rather than as bytes a
client cannot read.
"""

from __future__ import annotations

import enum

from rund_trio.rpc._errors import LocalProtocolError

__all__ = ["CallEvent", "StreamState", "transition"]


class StreamState(enum.Enum):
    OPEN = "open"
    """Both sides may still send."""
    REMOTE_DONE = "remote_done"
    """The peer sent all it will (its request, or its END_STREAM); we may still send."""
    LOCAL_DONE = "local_done"
    """We sent all we will (the status, or the request's end); the peer may still send."""
    REJECTED = "rejected"
    """(server) The request broke a rule mid-way: the rest is dropped, the status is to send."""
    CLOSED = "closed"
    """Both sides are done, or the stream was reset."""


class CallEvent(enum.Enum):
    REMOTE_END = "remote_end"
    LOCAL_END = "local_end"
    REJECT = "reject"
    RESET = "reset"


_S, _E = StreamState, CallEvent
_TRANSITIONS: dict[StreamState, dict[CallEvent, StreamState]] = {
    _S.OPEN: {
        _E.REMOTE_END: _S.REMOTE_DONE,
        _E.LOCAL_END: _S.LOCAL_DONE,
        _E.REJECT: _S.REJECTED,
        _E.RESET: _S.CLOSED,
    },
    _S.REMOTE_DONE: {_E.LOCAL_END: _S.CLOSED, _E.REJECT: _S.REJECTED, _E.RESET: _S.CLOSED},
    _S.LOCAL_DONE: {_E.REMOTE_END: _S.CLOSED, _E.RESET: _S.CLOSED},
    _S.REJECTED: {_E.REMOTE_END: _S.REJECTED, _E.LOCAL_END: _S.CLOSED, _E.RESET: _S.CLOSED},
    _S.CLOSED: {_E.RESET: _S.CLOSED, _E.REMOTE_END: _S.CLOSED},
}


def transition(state: StreamState, event: CallEvent) -> StreamState:
    """The state after ``event``; raises ``LocalProtocolError`` if the table has no such move."""
    try:
        return _TRANSITIONS[state][event]
    except KeyError:
        raise LocalProtocolError(
            f"{event.value} is not allowed on a {state.value} stream"
        ) from None
