"""The record index beside each journal: one entry per record, crash-tolerant."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from rund_trio.logs.index import ENTRY_SIZE, Entry, intact_entries, read_entries
from rund_trio.logs.journal import HEADER_SIZE, Stream
from rund_trio.logs.journal_file import JournalFile


def ticking(*times: int) -> Iterator[int]:
    yield from times


def written(journal: JournalFile) -> list[Entry]:
    fd = os.open(journal.index_path, os.O_RDONLY)
    try:
        return read_entries(fd, 0, journal.records)
    finally:
        os.close(fd)


def test_each_record_gets_an_entry_with_its_place_stream_and_time(tmp_path: Path) -> None:
    clock = ticking(100, 200)
    journal = JournalFile(tmp_path / "job.log", cap=None, clock=lambda: next(clock))
    journal.append(Stream.STDOUT, b"out")
    journal.append(Stream.STDERR, b"error")
    assert written(journal) == [
        Entry(0, 3, Stream.STDOUT, 100),
        Entry(HEADER_SIZE + 3, 5, Stream.STDERR, 200),
    ]


def test_recorded_times_never_decrease_when_the_clock_is_set_back(tmp_path: Path) -> None:
    clock = ticking(500, 100, 700)
    journal = JournalFile(tmp_path / "job.log", cap=None, clock=lambda: next(clock))
    for data in (b"a", b"b", b"c"):
        journal.append(Stream.STDOUT, data)
    assert [entry.recorded_at for entry in written(journal)] == [500, 500, 700]


def test_output_over_the_cap_gets_no_entry(tmp_path: Path) -> None:
    journal = JournalFile(tmp_path / "job.log", cap=2, clock=lambda: 1)
    journal.append(Stream.STDOUT, b"ab")
    journal.append(Stream.STDOUT, b"cd")
    assert journal.records == 1
    assert os.path.getsize(journal.index_path) == ENTRY_SIZE


def make_journal(tmp_path: Path) -> JournalFile:
    journal = JournalFile(tmp_path / "job.log", cap=None, clock=lambda: 7)
    journal.append(Stream.STDOUT, b"one")
    journal.append(Stream.STDERR, b"two")
    journal.close()
    return journal


def test_an_index_left_whole_is_read_back_whole(tmp_path: Path) -> None:
    journal = make_journal(tmp_path)
    assert len(intact_entries(journal.index_path, journal.path)) == 2


def test_a_torn_last_entry_is_ignored(tmp_path: Path) -> None:
    journal = make_journal(tmp_path)
    os.truncate(journal.index_path, 2 * ENTRY_SIZE - 5)
    assert [entry.length for entry in intact_entries(journal.index_path, journal.path)] == [3]


def test_an_entry_whose_record_is_not_whole_in_the_journal_is_ignored(tmp_path: Path) -> None:
    journal = make_journal(tmp_path)
    os.truncate(journal.path, journal.size - 1)
    assert len(intact_entries(journal.index_path, journal.path)) == 1


def test_an_entry_over_a_record_whose_header_was_never_written_is_ignored(
    tmp_path: Path,
) -> None:
    """A splice landed the payload but the daemon died before the header."""
    journal = make_journal(tmp_path)
    with open(journal.path, "r+b") as file:
        file.seek(HEADER_SIZE + 3)
        file.write(bytes(HEADER_SIZE))
    assert len(intact_entries(journal.index_path, journal.path)) == 1


def test_zeros_after_the_last_entry_are_ignored(tmp_path: Path) -> None:
    journal = make_journal(tmp_path)
    with open(journal.index_path, "ab") as file:
        file.write(bytes(ENTRY_SIZE * 3))
    assert len(intact_entries(journal.index_path, journal.path)) == 2


def test_a_missing_index_has_no_entries(tmp_path: Path) -> None:
    journal = make_journal(tmp_path)
    journal.index_path.unlink()
    assert intact_entries(journal.index_path, journal.path) == []


def test_removing_a_journal_removes_its_index(tmp_path: Path) -> None:
    journal = make_journal(tmp_path)
    journal.remove()
    assert not journal.index_path.exists()
