"""A job's journal on disk, with the one piece of shared state followers wait on."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from rund_trio.logs.budget import UNLIMITED
from rund_trio.logs.disk import StateDisk
from rund_trio.logs.journal import HEADER_SIZE, OutputBook, Stream, encode_header


class JournalFile:
    """The append-only output file of one job.

    Only the bytes below ``size`` are ever read: a record is counted there only
    once it was written whole, so a follower never sees a torn record, and a
    failed write (disk full, read-only) is overwritten by the next one.
    Appending never blocks on followers: they read the file at their own pace.
    """

    def __init__(self, path: Path, *, cap: int | None, disk: StateDisk | None = None) -> None:
        self.path = path
        self._disk = disk
        self.book = OutputBook(cap)
        self.size = 0
        self.closed = False
        self._fd: int | None = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        self._lot = trio.lowlevel.ParkingLot()

    def append(self, stream: Stream, data: bytes | bytearray) -> None:
        """Record one chunk of ``stream`` (what the cap and the disk allow of it).

        Synchronous and without a checkpoint, so records are never interleaved.
        """
        if self._fd is None:
            raise RuntimeError("append to a closed journal")
        room = self._disk.room().less(HEADER_SIZE) if self._disk is not None else UNLIMITED
        keep = self.book.admit(len(data), room)
        if not keep:
            return
        buffers: list[bytes | memoryview] = [encode_header(stream, keep), memoryview(data)[:keep]]
        try:
            written = os.pwritev(self._fd, buffers, self.size)
            total = HEADER_SIZE + keep
            while written < total:  # short writes only happen near a full disk
                rest = b"".join(buffers)[written:]
                written += os.pwrite(self._fd, rest, self.size + written)
        except OSError as error:
            self.book.lose(
                keep, f"cannot write job output to {self.path.parent}: {error.strerror or error}"
            )
            return
        self.size += HEADER_SIZE + keep
        if self._disk is not None:
            self._disk.charge(HEADER_SIZE + keep)
        self._lot.unpark_all()

    def close(self) -> None:
        """No more output will come; followers finish once they have read it all."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.closed = True
        self._lot.unpark_all()

    def remove(self) -> None:
        """Delete the file. Followers that have it open can still finish reading."""
        self.close()
        self.path.unlink(missing_ok=True)

    async def wait_beyond(self, offset: int) -> None:
        """Return once the journal holds more than ``offset`` bytes or is closed.

        Cancellation is safe: nothing is consumed.
        """
        while self.size <= offset and not self.closed:
            await self._lot.park()
