"""Refusing every call of a service while a condition does not hold
(``--audit-required``: no job request is served unaudited)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from rund_trio.rpc import Cardinality, NonBlockingUnary, Service


def gated(service: Service, check: Callable[[], None]) -> Service:
    """``service`` with ``check()`` called before each call's handler; what
    it raises (a ``RundError``) is the call's status, and the handler never runs."""
    guarded = Service(service.name)
    for name, bound in service.methods.items():
        guarded.add_method(name, _guard(bound.method_fn, bound.signature, check), bound.signature)
    return guarded


def _guard(method_fn: Callable[..., Any], signature: Any, check: Callable[[], None]) -> Any:
    if isinstance(method_fn, NonBlockingUnary):
        answer = method_fn.answer

        def at_once(message: Any) -> Any:
            check()
            return answer(message)

        return NonBlockingUnary(at_once, method_fn.request_type)

    if signature.cardinality in (Cardinality.UNARY_STREAM, Cardinality.STREAM_STREAM):

        async def streaming(message: Any, request: Any) -> AsyncIterator[Any]:
            check()
            async with aclosing(method_fn(message, request=request)) as responses:
                async for response in responses:
                    yield response

        return streaming

    async def unary(message: Any, request: Any) -> Any:
        check()
        return await method_fn(message, request=request)

    return unary
