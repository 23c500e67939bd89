"""``gated``: a service whose every call is checked before its handler runs."""

from __future__ import annotations

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from rund_trio.errors import Unavailable
from rund_trio.observe.gate import gated
from rund_trio.rpc import Cardinality, NonBlockingUnary, RPCSignature, Service, nonblocking_unary

UNARY = RPCSignature(Cardinality.UNARY_UNARY, StringValue, StringValue)


def refuse() -> None:
    raise Unavailable("the audit log cannot be written (--audit-required)")


def test_a_gated_nonblocking_method_stays_nonblocking_and_is_checked_before_it_answers() -> None:
    answered: list[StringValue] = []

    def echo(message: StringValue) -> StringValue:
        answered.append(message)
        return message

    service = Service("test.Now")
    nonblocking_unary(service, "Echo", echo, UNARY)
    handler = gated(service, refuse).methods["Echo"].method_fn
    assert isinstance(handler, NonBlockingUnary)
    with pytest.raises(Unavailable, match="--audit-required"):
        handler.answer(StringValue(value="x"))
    assert answered == []  # the handler never ran

    open_gate = gated(service, lambda: None).methods["Echo"].method_fn
    assert open_gate.answer(StringValue(value="y")) == StringValue(value="y")
