"""anyio's TLS stream, receiving every record already at hand in one call.

``anyio.streams.tls.TLSStream.receive`` returns one TLS record (at most
16 KiB) per call, so a 1 MiB Log message took 64 trips through purerpc's
read loop and h2's parser. This stream decrypts, in the same call, every
further record the bytes already received contain.

Each record is read with a buffer of one record's size: ``SSLObject.read(n)``
allocates ``n`` bytes before shrinking them, and purerpc asks for 1 MiB, which
made every 16 KiB record cost an mmap/munmap of 1 MiB.
"""

from __future__ import annotations

import ssl

from anyio.streams.tls import TLSStream

__all__ = ["TlsStream"]


RECORD_SIZE = 16 * 1024
"""The largest TLS record's plaintext."""


class TlsStream(TLSStream):
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
