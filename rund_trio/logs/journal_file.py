"""A job's journal on disk, with the one piece of shared state followers wait on."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from rund_trio.logs.budget import UNLIMITED, Room
from rund_trio.logs.disk import StateDisk
from rund_trio.logs.journal import HEADER_SIZE, OutputBook, Stream, encode_header

SPLICE_SIZE = 1024 * 1024
"""Most bytes taken from a job's pipe at once (its size: ``process.pipes``)."""
_SPLICE_NONBLOCK = getattr(os, "SPLICE_F_NONBLOCK", 2)


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
        self.stream_bytes = dict.fromkeys(Stream, 0)
        """Payload bytes recorded per stream (``book.recorded`` is their sum)."""
        self.closed = False
        self._fd: int | None = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        self._lot = trio.lowlevel.ParkingLot()

    def _open_fd(self) -> int:
        if self._fd is None:
            raise RuntimeError("append to a closed journal")
        return self._fd

    def _room(self) -> Room:
        return self._disk.room().less(HEADER_SIZE) if self._disk is not None else UNLIMITED

    def _lose(self, length: int, error: OSError) -> None:
        reason = f"cannot write job output to {self.path.parent}: {error.strerror or error}"
        self.book.lose(length, reason)

    def _commit(self, stream: Stream, payload: int) -> None:
        self.size += HEADER_SIZE + payload
        self.stream_bytes[stream] += payload
        if self._disk is not None:
            self._disk.charge(HEADER_SIZE + payload)
        self._lot.unpark_all()

    def append(self, stream: Stream, data: bytes | bytearray) -> None:
        """Record one chunk of ``stream`` (what the cap and the disk allow of it).

        Synchronous and without a checkpoint, so records are never interleaved.
        """
        fd = self._open_fd()
        keep = self.book.admit(len(data), self._room())
        if not keep:
            return
        buffers: list[bytes | memoryview] = [encode_header(stream, keep), memoryview(data)[:keep]]
        try:
            written = os.pwritev(fd, buffers, self.size)
            total = HEADER_SIZE + keep
            while written < total:  # short writes only happen near a full disk
                rest = b"".join(buffers)[written:]
                written += os.pwrite(fd, rest, self.size + written)
        except OSError as error:
            self._lose(keep, error)
            return
        self._commit(stream, keep)

    def append_from_pipe(self, stream: Stream, pipe: int) -> int:
        """Record what the non-blocking ``pipe`` holds (up to ``SPLICE_SIZE``)
        as one chunk of ``stream``; return the bytes taken from the pipe, 0 at
        its end. ``BlockingIOError`` if it is empty.

        The bytes go from the pipe to the file inside the kernel (splice(2)),
        never through the daemon's memory. Where the cap or the disk leaves no
        room they are read and ``append``ed, so the drop is counted as there;
        where the write fails they are read and counted as lost. Synchronous,
        like ``append``.
        """
        fd = self._open_fd()
        room = self._room()
        admissible = self.book.admissible(room)
        if admissible != 0:
            limit = SPLICE_SIZE if admissible is None else min(SPLICE_SIZE, admissible)
            try:
                moved = os.splice(
                    pipe, fd, limit, offset_dst=self.size + HEADER_SIZE, flags=_SPLICE_NONBLOCK
                )
            except BlockingIOError:
                raise
            except OSError as error:  # e.g. the disk is full: the chunk is lost
                data = os.read(pipe, limit)
                self._lose(self.book.admit(len(data), room), error)
                return len(data)
            else:
                if moved:
                    self.book.admit(moved, room)
                    try:
                        os.pwrite(fd, encode_header(stream, moved), self.size)
                    except OSError as error:
                        self._lose(moved, error)
                    else:
                        self._commit(stream, moved)
                return moved
        data = os.read(pipe, SPLICE_SIZE)
        if data:
            self.append(stream, data)
        return len(data)

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
