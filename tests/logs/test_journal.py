"""The journal's framing and bookkeeping, without I/O."""

from __future__ import annotations

import pytest

from rund_trio.logs.journal import (
    CorruptJournal,
    OutputBook,
    Piece,
    RecordDecoder,
    Stream,
    coalesce,
    encode_header,
)


def record(stream: Stream, data: bytes) -> bytes:
    return encode_header(stream, len(data)) + data


def test_a_record_decodes_to_its_stream_and_payload() -> None:
    assert RecordDecoder().feed(record(Stream.STDERR, b"oops")) == [Piece(Stream.STDERR, b"oops")]


@pytest.mark.parametrize("slice_size", [1, 2, 5, 7, 1000])
def test_any_slicing_of_the_journal_yields_the_same_bytes_per_stream(slice_size: int) -> None:
    journal = (
        record(Stream.STDOUT, b"hello ")
        + record(Stream.STDERR, b"err")
        + record(Stream.STDOUT, b"world")
    )
    decoder = RecordDecoder()
    pieces = [
        piece
        for start in range(0, len(journal), slice_size)
        for piece in decoder.feed(journal[start : start + slice_size])
    ]
    out = b"".join(p.data for p in pieces if p.stream is Stream.STDOUT)
    err = b"".join(p.data for p in pieces if p.stream is Stream.STDERR)
    assert (out, err) == (b"hello world", b"err")
    assert decoder.at_record_boundary


def test_an_unknown_stream_byte_is_a_corrupt_journal() -> None:
    with pytest.raises(CorruptJournal):
        RecordDecoder().feed(b"\x09\x00\x00\x00\x01x")


def test_coalesce_joins_adjacent_pieces_of_a_stream_up_to_the_chunk_size() -> None:
    pieces = [Piece(Stream.STDOUT, b"ab"), Piece(Stream.STDOUT, b"cde"), Piece(Stream.STDERR, b"x")]
    assert coalesce(pieces, max_chunk=4) == [
        Piece(Stream.STDOUT, b"abcd"),
        Piece(Stream.STDOUT, b"e"),
        Piece(Stream.STDERR, b"x"),
    ]


def test_coalesce_never_merges_different_streams() -> None:
    pieces = [Piece(Stream.STDOUT, b"a"), Piece(Stream.STDERR, b"b"), Piece(Stream.STDOUT, b"c")]
    assert coalesce(pieces, max_chunk=100) == pieces


def test_output_under_the_cap_is_all_kept() -> None:
    book = OutputBook(cap=10)
    assert (book.admit(4), book.admit(6)) == (4, 6)
    assert (book.recorded, book.dropped, book.capped) == (10, 0, False)


def test_output_beyond_the_cap_is_dropped_and_counted() -> None:
    book = OutputBook(cap=10)
    assert (book.admit(8), book.admit(8), book.admit(3)) == (8, 2, 0)
    assert (book.recorded, book.dropped, book.capped) == (10, 9, True)


def test_output_that_could_not_be_written_is_counted_as_lost_and_recording_stops() -> None:
    book = OutputBook(cap=None)
    book.admit(5)
    book.lose(5, "No space left on device")
    assert book.admit(3) == 0
    assert (book.recorded, book.dropped, book.error) == (0, 8, "No space left on device")
