"""The events and statuses of the gRPC core are immutable values, as the
frozen dataclasses they replace were."""

from __future__ import annotations

import pytest

from rund_trio.rpc._events import ConnectionClosed, RequestEnded, ResponseReceived, StreamReset
from rund_trio.rpc._status import Status, StatusCode


def test_values_of_one_type_with_equal_fields_are_equal_and_hash_alike() -> None:
    assert StreamReset(1, 8) == StreamReset(1, 8)
    assert hash(StreamReset(1, 8)) == hash(StreamReset(1, 8))
    assert StreamReset(1, 8) != StreamReset(1, 9)


def test_values_of_different_types_are_never_equal() -> None:
    assert RequestEnded(1) != ResponseReceived(1)


def test_repr_names_the_type_and_each_field() -> None:
    assert repr(Status(StatusCode.OK)) == "Status(code=<StatusCode.OK: 0>, message='')"
    assert repr(ConnectionClosed("gone")) == "ConnectionClosed(reason='gone', error=False)"


def test_a_field_cannot_be_assigned_or_deleted() -> None:
    event = StreamReset(1, 8)
    with pytest.raises(AttributeError):
        event.error_code = 0
    with pytest.raises(AttributeError):
        del event.stream_id
    assert event == StreamReset(1, 8)
