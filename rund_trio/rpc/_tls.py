"""TLS on the client, over any byte stream, through ``ssl.SSLObject`` and
memory BIOs (the standard library's public API; no I/O library's internals).

Each ``receive_some`` decrypts every record the bytes already received
contain straight into one buffer sized for them (``SSLObject.read(n,
buffer)``: no buffer per record, no join), handed over to the caller.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Protocol, cast

import anyio

from rund_trio.rpc._failures import io_errors

__all__ = ["RECORD_SIZE", "ByteStream", "ClientTls", "io_errors"]

RECORD_SIZE = 16 * 1024
"""The largest TLS record's plaintext."""


class ByteStream(Protocol):
    """What the client needs from a transport (trio's stream shape)."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...

    async def aclose(self) -> None: ...


class ClientTls:
    """A TLS client over ``transport``. ``handshake`` first; errors are
    ``ssl.SSLError``s, and ``anyio.EndOfStream`` when the peer hangs up
    during the handshake."""

    def __init__(
        self, transport: ByteStream, context: ssl.SSLContext, server_hostname: str | None
    ) -> None:
        self._transport = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        self._send_lock = anyio.Lock()

    async def handshake(self) -> None:
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                data = await self._transport.receive_some()
                if data:
                    self._incoming.write(data)
                    continue
                # Outside the except clause: the end carries no "want read" as
                # its context, which a caller walking causes would take for a TLS error.
            except ssl.SSLError:
                await self._flush_quietly()
                raise
            else:
                await self._flush()
                return
            raise anyio.EndOfStream

    @property
    def alpn_protocol(self) -> str | None:
        """The application protocol the server agreed to in the handshake
        (ALPN), or None when it chose none."""
        return self._ssl.selected_alpn_protocol()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._ssl.write(data)
        await self._flush()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Every complete record at hand (at least one), or ``b""`` at the end:
        decrypted into one new buffer, which is the caller's to keep."""
        while True:
            # Room for every record the received bytes hold (each record's
            # plaintext is shorter than the record), decrypted straight into it.
            buffer = bytearray(max(self._incoming.pending, RECORD_SIZE))
            filled = 0
            try:
                with memoryview(buffer) as view:
                    while filled < len(buffer):
                        # (with a buffer, read() returns a count; typeshed says bytes)
                        got = cast(int, self._ssl.read(RECORD_SIZE, view[filled:]))
                        if not got:
                            break
                        filled += got
            except ssl.SSLWantReadError:
                if not filled:
                    if self._outgoing.pending:  # e.g. a TLS 1.3 key update answered
                        await self._flush()
                    data = await self._transport.receive_some()
                    if not data:
                        self._incoming.write_eof()
                    else:
                        self._incoming.write(data)
                    continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                pass
            del buffer[filled:]
            return buffer

    async def aclose(self) -> None:
        with contextlib.suppress(ssl.SSLError):
            self._ssl.unwrap()
        await self._flush_quietly()
        await self._transport.aclose()

    async def _flush(self) -> None:
        async with self._send_lock:
            data = self._outgoing.read()
            if data:
                await self._transport.send_all(data)

    async def _flush_quietly(self) -> None:
        try:
            with anyio.move_on_after(1):
                await self._flush()
        except io_errors():  # closing anyway
            pass
