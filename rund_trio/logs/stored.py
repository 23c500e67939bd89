"""Journals of ended jobs, read back from the state directory: their whole
records found after a crash, and a journal object followers can read."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rund_trio.logs.index import index_path, intact_entries
from rund_trio.logs.journal import HEADER, HEADER_SIZE, Stream
from rund_trio.logs.journal_file import JournalFile


@dataclass(frozen=True)
class JournalExtent:
    """The whole records at the start of a journal file."""

    size: int
    """Bytes of whole records (headers included): what may be read."""
    payload: int
    """Bytes of output in them."""


def scan_journal(path: Path) -> JournalExtent:
    """The whole records at the start of the journal at ``path`` (none if it is
    missing). Reads only the headers; stops at the first header no recorder
    could have written or whose payload runs past the end of the file -- a
    record a crash cut short, or a tail a power cut zeroed. The file itself is
    never changed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return JournalExtent(0, 0)
    try:
        end = os.fstat(fd).st_size
        offset = payload = 0
        while offset + HEADER_SIZE <= end:
            header = os.pread(fd, HEADER_SIZE, offset)
            if len(header) < HEADER_SIZE:
                break
            stream, length = HEADER.unpack(header)
            if stream not in (Stream.STDOUT, Stream.STDERR) or length == 0:
                break
            if offset + HEADER_SIZE + length > end:
                break
            offset += HEADER_SIZE + length
            payload += length
        return JournalExtent(offset, payload)
    finally:
        os.close(fd)


class StoredJournal(JournalFile):
    """A closed journal of ``size`` readable bytes, for ``logs.follower.follow``.

    It owns no descriptor and never grows; followers read it to ``size`` and end."""

    def __init__(self, path: Path, size: int) -> None:  # no super(): nothing to open
        self.path = path
        self.index_path = index_path(path)
        self._disk = None
        self.size = size
        self.records = sum(
            1 for entry in intact_entries(self.index_path, path) if entry.end <= size
        )
        """The index entries of the records within ``size`` (a daemon killed
        mid-write may have left more, or a torn one: those are not read)."""
        self.closed = True
        self._fd = None
        self._index_fd = None

    async def wait_beyond(self, offset: int) -> None:
        raise RuntimeError("a stored journal never grows")
