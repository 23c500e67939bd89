"""TLS on the server, over any trio stream, through ``ssl.SSLObject`` and
memory BIOs (the standard library's public API), as ``_tls.ClientTls`` does
on the client.

Unlike ``trio.SSLStream``, whose ``receive_some`` returns one TLS record
(16 KiB at most) per call, each ``receive_some`` here decrypts every record
the bytes already received contain: a client streaming into the daemon (a
job's stdin) costs the connection's read loop one pass per read from the
socket, not one per 16 KiB.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

import trio

from rund_trio.rpc._tls import RECORD_SIZE

__all__ = ["ServerTls"]


class ServerTls(trio.abc.Stream):
    """A TLS server over ``transport``: ``do_handshake`` first. Failures are
    ``trio.BrokenResourceError`` with the ``ssl.SSLError`` (or the
    transport's error) as their cause, as with ``trio.SSLStream``."""

    def __init__(self, transport: trio.abc.Stream, context: ssl.SSLContext) -> None:
        self.transport_stream = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._send_lock = trio.StrictFIFOLock()
        """Held from taking bytes out of ``_outgoing`` until they are sent, so
        that what the reader and the writer produce goes out in order."""
        self._deferred = b""
        """Bytes the handshake left (TLS 1.3 session tickets), sent ahead of
        the first write (see ``do_handshake``)."""

    def getpeercert(self, binary_form: bool = False) -> Any:
        """As ``ssl.SSLObject.getpeercert``."""
        return self._ssl.getpeercert(binary_form)

    async def do_handshake(self) -> None:
        """Complete the handshake. Cancellation leaves the stream unusable."""
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                if await self._fill():
                    continue
                # Outside the except clause: no "want read" as the end's context.
            except ssl.SSLError as error:
                # No alert is sent (as trio.SSLStream): the client sees the
                # connection closed, which its diagnosis explains (client.diagnose).
                raise trio.BrokenResourceError from error
            else:
                if self._ssl.version() != "TLSv1.3":
                    await self._flush()  # (before 1.3 the server's last flight ends it)
                    return
                # What TLS 1.3 leaves queued here (session tickets) goes out
                # with the first write, not now and not from a read: it would
                # wait for a client that is sending its first request and reads
                # only after, and over a stream that buffers nothing neither
                # side would move.
                self._deferred = self._outgoing.read()
                return
            raise trio.BrokenResourceError("the client hung up during the TLS handshake")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._ssl.write(data)
        except ssl.SSLError as error:
            raise trio.BrokenResourceError from error
        await self._flush()

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Every complete record at hand (at least one; at most ``max_bytes``
        if given), or ``b""`` at the end of the stream."""
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        pieces: list[bytes] = []
        taken = 0
        while max_bytes is None or taken < max_bytes:
            size = RECORD_SIZE if max_bytes is None else min(RECORD_SIZE, max_bytes - taken)
            try:
                piece = self._ssl.read(size)
            except ssl.SSLWantReadError:
                if pieces:
                    break
                if self._outgoing.pending:  # e.g. a TLS 1.3 key update answered
                    await self._flush()
                await self._fill()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            except ssl.SSLError as error:
                raise trio.BrokenResourceError from error
            if not piece:
                break
            pieces.append(piece)
            taken += len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def aclose(self) -> None:
        """Send close_notify (without waiting for the client's) and close the
        transport."""
        with contextlib.suppress(ssl.SSLError):  # want read: the client's is not awaited
            self._ssl.unwrap()
        try:
            await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # closing anyway
        finally:
            await self.transport_stream.aclose()

    async def _fill(self) -> bool:
        """Bytes from the transport into the TLS object; False at its end."""
        data = await self.transport_stream.receive_some()
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    async def _flush(self) -> None:
        """Send what TLS has produced, in order. A checkpoint, as before, but
        one scheduler pass cheaper when nobody else is sending: an unheld
        lock is taken at once (``acquire_nowait`` fails while others queue,
        so FIFO order holds) and the send itself is the checkpoint."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._send_lock.acquire_nowait()
        except trio.WouldBlock:
            await self._send_lock.acquire()
        try:
            data = self._outgoing.read()
            if self._deferred:
                data, self._deferred = self._deferred + data, b""
            if data:
                await self.transport_stream.send_all(data)
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._send_lock.release()
