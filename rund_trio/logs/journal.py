"""The journal format and its bookkeeping, free of I/O.

A job's output journal is one append-only file of records, in the order the
daemon read the chunks from the job's pipes::

    record := stream (1 byte: 1 stdout, 2 stderr) | length (4 bytes, big endian) | payload

Per stream the concatenated payloads are exactly the bytes the process wrote.
``RecordDecoder`` turns any slicing of the file back into payload pieces;
``OutputBook`` decides how much output is kept under the per-job cap and the
room left on disk, and counts what was dropped.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from rund_trio.logs.budget import UNLIMITED, Room, describe_size

HEADER = struct.Struct(">BI")
HEADER_SIZE = HEADER.size


class Stream(enum.IntEnum):
    STDOUT = 1
    STDERR = 2


def encode_header(stream: Stream, length: int) -> bytes:
    """The header that precedes a payload of ``length`` bytes of ``stream``."""
    return HEADER.pack(stream, length)


class CorruptJournal(Exception):
    """The journal holds a record header that no recorder could have written."""


@dataclass(frozen=True)
class Piece:
    """A run of one stream's bytes, possibly part of a larger record."""

    stream: Stream
    data: bytes | memoryview
    recorded_at: int | None = None
    """When the daemon read it (ns since the epoch), where asked for."""


class RecordDecoder:
    """Incremental decoder of journal bytes into ``Piece``s.

    Feed it consecutive slices of the journal of any size; a record split across
    slices comes out as several pieces of the same stream, in order.
    """

    def __init__(self) -> None:
        self._header = bytearray()
        self._stream = Stream.STDOUT
        self._remaining = 0

    @classmethod
    def inside(cls, stream: Stream, remaining: int) -> RecordDecoder:
        """A decoder fed from inside a record of ``stream``, ``remaining``
        bytes before its end."""
        decoder = cls()
        decoder._stream, decoder._remaining = stream, remaining
        return decoder

    def feed(self, data: bytes) -> list[Piece]:
        """The pieces in ``data``: views of it, not copies."""
        pieces: list[Piece] = []
        view = memoryview(data)
        while view:
            if self._remaining:
                take = min(self._remaining, len(view))
                pieces.append(Piece(self._stream, view[:take]))
                self._remaining -= take
                view = view[take:]
                continue
            need = HEADER_SIZE - len(self._header)
            self._header += view[:need]
            view = view[need:]
            if len(self._header) < HEADER_SIZE:
                break
            stream_byte, length = HEADER.unpack(self._header)
            self._header.clear()
            try:
                self._stream = Stream(stream_byte)
            except ValueError:
                raise CorruptJournal(f"unknown stream {stream_byte}") from None
            self._remaining = length
        return pieces

    @property
    def at_record_boundary(self) -> bool:
        return not self._remaining and not self._header


def coalesce(pieces: list[Piece], max_chunk: int) -> list[Piece]:
    """Join adjacent pieces of the same stream into chunks of at most
    ``max_chunk`` bytes, so subscribers get few large messages."""
    chunks: list[Piece] = []
    pending: list[bytes | memoryview] = []
    pending_stream: Stream | None = None
    pending_size = 0

    def flush() -> None:
        nonlocal pending_size
        if pending_stream is not None and pending:
            chunks.append(Piece(pending_stream, b"".join(pending)))
        pending.clear()
        pending_size = 0

    for piece in pieces:
        data = piece.data
        if piece.stream is not pending_stream:
            flush()
            pending_stream = piece.stream
        while data:
            room = max_chunk - pending_size
            pending.append(data[:room])
            pending_size += min(room, len(data))
            data = data[room:]
            if pending_size >= max_chunk:
                flush()
    flush()
    return chunks


class OutputBook:
    """Accounts a job's output against its cap and the room left on disk.

    ``admit`` says how many bytes of a chunk to record; whatever is over a
    limit, or could not be written (``lose``), is counted as dropped and never
    hidden. Once output was dropped nothing more is recorded, so what was
    recorded is always a prefix of what the job wrote, and ``error`` says why
    it stopped.
    """

    def __init__(self, cap: int | None) -> None:
        if cap is not None and cap < 0:
            raise ValueError("the output cap cannot be negative")
        self.cap = cap
        self.recorded = 0
        self.dropped = 0
        self.error: str | None = None

    def admissible(self, room: Room = UNLIMITED) -> int | None:
        """How many bytes the next ``admit`` would keep in full (None: any
        number), without recording anything."""
        if self.error is not None:
            return 0
        limits = [
            limit
            for limit in (
                None if self.cap is None else max(0, self.cap - self.recorded),
                room.bytes,
            )
            if limit is not None
        ]
        return min(limits) if limits else None

    def admit(self, length: int, room: Room = UNLIMITED) -> int:
        """Record the arrival of ``length`` bytes, of which ``room`` may be
        written; return how many to keep."""
        keep = 0 if self.error is not None else length
        if self.cap is not None and keep > self.cap - self.recorded:
            keep = max(0, self.cap - self.recorded)
            self.error = (
                f"the job's output reached --output-cap ({describe_size(self.cap)} per job)"
            )
        if room.bytes is not None and keep > room.bytes:
            keep = room.bytes
            self.error = room.limit
        self.recorded += keep
        self.dropped += length - keep
        return keep

    def lose(self, length: int, reason: str) -> None:
        """``length`` admitted bytes could not be stored (e.g. the disk is full);
        nothing more is recorded after that."""
        self.recorded -= length
        self.dropped += length
        if self.error is None:
            self.error = reason

    @property
    def capped(self) -> bool:
        return self.cap is not None and self.recorded >= self.cap and self.dropped > 0
