"""A job's journal on disk, with the one piece of shared state followers wait on."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

import trio

from rund_trio.logs.budget import UNLIMITED, Room
from rund_trio.logs.disk import StateDisk
from rund_trio.logs.index import ENTRY_SIZE, Entry, index_path
from rund_trio.logs.journal import HEADER_SIZE, OutputBook, Stream, encode_header

RECORD_OVERHEAD = HEADER_SIZE + ENTRY_SIZE
"""Bytes a record costs on disk beyond its payload: its header and its index entry."""
SPLICE_SIZE = 1024 * 1024
"""Most bytes taken from a job's pipe at once (its size: ``process.pipes``)."""
_SPLICE_NONBLOCK = getattr(os, "SPLICE_F_NONBLOCK", 2)


class JournalFile:
    """The append-only output file of one job.

    Only the bytes below ``size`` are ever read: a record is counted there only
    once it was written whole, so a follower never sees a torn record, and a
    failed write (disk full, read-only) is overwritten by the next one.
    Appending never blocks on followers: they read the file at their own pace.

    Each record also gets an entry in the journal's index (``logs.index``),
    written after the record and counted in ``records`` only once both are
    written: a record whose entry cannot be written is not counted either.
    """

    def __init__(
        self,
        path: Path,
        *,
        cap: int | None,
        disk: StateDisk | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.path = path
        self.index_path = index_path(path)
        self._disk = disk
        self._clock = clock
        self.book = OutputBook(cap)
        self.size = 0
        self.stream_bytes = dict.fromkeys(Stream, 0)
        """Payload bytes recorded per stream (``book.recorded`` is their sum)."""
        self.records = 0
        """Records (and index entries) written whole."""
        self.last_recorded_at = 0
        self.closed = False
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        self._fd: int | None = os.open(path, flags, 0o600)
        try:
            self._index_fd: int | None = os.open(self.index_path, flags, 0o600)
        except BaseException:
            os.close(self._fd)
            path.unlink(missing_ok=True)
            raise
        self._lot = trio.lowlevel.ParkingLot()

    def _open_fd(self) -> int:
        if self._fd is None:
            raise RuntimeError("append to a closed journal")
        return self._fd

    def _room(self) -> Room:
        return (
            self._disk.room().less(HEADER_SIZE + ENTRY_SIZE)
            if self._disk is not None
            else UNLIMITED
        )

    def _lose(self, length: int, error: OSError) -> None:
        reason = f"cannot write job output to {self.path.parent}: {error.strerror or error}"
        self.book.lose(length, reason)

    def _commit(self, stream: Stream, payload: int) -> None:
        """Count the record just written at ``size``, once its index entry is."""
        recorded_at = max(self._clock(), self.last_recorded_at)
        entry = Entry(self.size, payload, stream, recorded_at)
        try:
            assert self._index_fd is not None
            written = os.pwrite(self._index_fd, entry.encode(), self.records * ENTRY_SIZE)
            if written != ENTRY_SIZE:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as error:  # the record will be overwritten by the next one
            self._lose(payload, error)
            return
        self.records += 1
        self.last_recorded_at = recorded_at
        self.size += HEADER_SIZE + payload
        self.stream_bytes[stream] += payload
        if self._disk is not None:
            self._disk.charge(RECORD_OVERHEAD + payload)
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
        if self._index_fd is not None:
            os.close(self._index_fd)
            self._index_fd = None
        self.closed = True
        self._lot.unpark_all()

    def remove(self) -> None:
        """Delete the file. Followers that have it open can still finish reading."""
        self.close()
        self.path.unlink(missing_ok=True)
        self.index_path.unlink(missing_ok=True)

    async def wait_for_records(self, count: int) -> None:
        """Return once more than ``count`` records are written or the journal is
        closed. Cancellation is safe: nothing is consumed."""
        while self.records <= count and not self.closed:
            await self._lot.park()

    async def wait_beyond(self, offset: int) -> None:
        """Return once the journal holds more than ``offset`` bytes or is closed.

        Cancellation is safe: nothing is consumed.
        """
        while self.size <= offset and not self.closed:
            await self._lot.park()
