"""The record index of a job's journal: where each record is and when it was read.

Beside each journal ``<ULID>.log`` the daemon keeps ``<ULID>.idx``, one
fixed-size entry per journal record, in the same order::

    entry := offset (8 bytes) | length (4) | stream (1) | 3 zero bytes | recorded_at (8)

little endian; ``offset`` is where the record's header starts in the journal,
``length`` its payload size, ``recorded_at`` the wall-clock time (ns since the
epoch, never decreasing within a job) at which the daemon read the payload
from the job's pipe. Fixed-size entries make the index searchable from both
ends without reading the journal: ``--since`` is a binary search,
``--tail`` walks the records backwards from the last one.

Crash safety: an entry is appended only once its record is in the journal, and
a live daemon only reads the entries it counted as written. A file left by a
daemon that died mid-write may end in a torn entry, or in an entry whose record
never fully reached the journal; ``intact_entries`` keeps the longest prefix
that agrees with the journal and ignores the rest.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from rund_trio.logs.journal import HEADER, HEADER_SIZE, Stream

ENTRY = struct.Struct("<QIB3xq")
ENTRY_SIZE = ENTRY.size
INDEX_SUFFIX = ".idx"


def index_path(journal: Path) -> Path:
    """Where the index of ``journal`` lives."""
    return journal.with_suffix(INDEX_SUFFIX)


@dataclass(frozen=True)
class Entry:
    """One journal record, as the index describes it."""

    offset: int
    """Where the record's header starts in the journal."""
    length: int
    """Its payload's size."""
    stream: Stream
    recorded_at: int
    """When the daemon read it: ns since the epoch."""

    @property
    def payload_offset(self) -> int:
        return self.offset + HEADER_SIZE

    @property
    def end(self) -> int:
        """The journal offset just past the record."""
        return self.offset + HEADER_SIZE + self.length

    def encode(self) -> bytes:
        return ENTRY.pack(self.offset, self.length, self.stream, self.recorded_at)


class CorruptIndex(Exception):
    """An index entry that no daemon could have written."""


def decode_entry(data: bytes) -> Entry:
    offset, length, stream, recorded_at = ENTRY.unpack(data)
    try:
        return Entry(offset, length, Stream(stream), recorded_at)
    except ValueError:
        raise CorruptIndex(f"unknown stream {stream}") from None


def read_entry(fd: int, number: int) -> Entry:
    """Entry ``number`` (from 0) of the index open as ``fd``; the caller knows
    it was written."""
    data = os.pread(fd, ENTRY_SIZE, number * ENTRY_SIZE)
    if len(data) != ENTRY_SIZE:
        raise CorruptIndex(f"entry {number} is missing")
    return decode_entry(data)


def read_entries(fd: int, first: int, count: int) -> list[Entry]:
    """Entries ``first`` to ``first + count - 1``, all known to be written."""
    data = os.pread(fd, count * ENTRY_SIZE, first * ENTRY_SIZE)
    if len(data) != count * ENTRY_SIZE:
        raise CorruptIndex(f"entries {first} to {first + count - 1} are missing")
    return [decode_entry(data[at : at + ENTRY_SIZE]) for at in range(0, len(data), ENTRY_SIZE)]


def first_recorded_at_or_after(fd: int, count: int, when: int) -> int:
    """The number of the first of the ``count`` entries recorded at or after
    ``when`` (ns since the epoch); ``count`` if none. A binary search: the
    times never decrease."""
    low, high = 0, count
    while low < high:
        middle = (low + high) // 2
        if read_entry(fd, middle).recorded_at < when:
            low = middle + 1
        else:
            high = middle
    return low


def intact_entries(index: Path, journal: Path) -> list[Entry]:
    """The entries of a journal a daemon may have left mid-write (it was killed):
    the longest prefix of whole entries whose records are whole in the journal
    and carry the same header. Reads the whole index; for recovery, not for
    the live path."""
    try:
        data = index.read_bytes()
        journal_size = journal.stat().st_size
        fd = os.open(journal, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    entries: list[Entry] = []
    expected_offset = 0
    try:
        for at in range(0, len(data) - ENTRY_SIZE + 1, ENTRY_SIZE):
            try:
                entry = decode_entry(data[at : at + ENTRY_SIZE])
            except CorruptIndex:
                break
            if entry.offset != expected_offset or entry.end > journal_size:
                break
            header = os.pread(fd, HEADER_SIZE, entry.offset)
            if header != HEADER.pack(entry.stream, entry.length):
                break
            if entries and entry.recorded_at < entries[-1].recorded_at:
                break
            entries.append(entry)
            expected_offset = entry.end
    finally:
        os.close(fd)
    return entries
