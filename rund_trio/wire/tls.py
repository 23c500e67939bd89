"""anyio's TLS stream, receiving every record already at hand in one call.

``anyio.streams.tls.TLSStream.receive`` returns one TLS record (at most
16 KiB) per call, so a 1 MiB Log message took 64 trips through purerpc's
read loop and h2's parser. This stream decrypts, in the same call, every
further record the bytes already received contain.

Each record is read with a buffer of one record's size: ``SSLObject.read(n)``
allocates ``n`` bytes before shrinking them, and purerpc asks for 1 MiB, which
made every 16 KiB record cost an mmap/munmap of 1 MiB. And the socket is read
``SOCKET_READ_SIZE`` at a time rather than anyio's 64 KiB, so a stream of
large messages costs few trips through the read loop.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import Any

import anyio.abc
from anyio.streams.tls import TLSStream

__all__ = ["TlsStream"]


RECORD_SIZE = 16 * 1024
"""The largest TLS record's plaintext."""


SOCKET_READ_SIZE = 256 * 1024


class _LargeReads(anyio.abc.ByteStream):
    """``stream``, read at least ``SOCKET_READ_SIZE`` bytes at a time."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream

    async def receive(self, max_bytes: int = SOCKET_READ_SIZE) -> bytes:
        return await self._stream.receive(max(max_bytes, SOCKET_READ_SIZE))

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._stream.extra_attributes


class TlsStream(TLSStream):
    @classmethod
    async def wrap(  # type: ignore[override]
        cls, transport_stream: anyio.abc.ByteStream, **options: Any
    ) -> TLSStream:
        return await super().wrap(_LargeReads(transport_stream), **options)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        first = await super().receive(min(max_bytes, RECORD_SIZE))
        pieces = [first]
        size = len(first)
        while size < max_bytes:
            try:
                more = self._ssl_object.read(min(max_bytes - size, RECORD_SIZE))
            except ssl.SSLError:  # nothing complete left (or an error the next call reports)
                break
            if not more:
                break
            pieces.append(more)
            size += len(more)
        return first if len(pieces) == 1 else b"".join(pieces)
