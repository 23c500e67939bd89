"""``client attach --detach-keys``: docker's key format, and the sequence
found in what is typed however the keystrokes arrive in chunks."""

from __future__ import annotations

import pytest

from rund_trio.cli.interactive import DEFAULT_DETACH_KEYS, DetachKeys, parse_detach_keys

CTRL_P, CTRL_Q = b"\x10", b"\x11"


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        (DEFAULT_DETACH_KEYS, CTRL_P + CTRL_Q),
        ("ctrl-a,x", b"\x01x"),
        ("CTRL-A,ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_", b"\x01\x00\x1b\x1c\x1d\x1e\x1f"),
        ("q", b"q"),
    ],
)
def test_detach_keys_are_read_as_docker_writes_them(text: str, keys: bytes) -> None:
    assert parse_detach_keys(text) == keys


@pytest.mark.parametrize("text", ["ctrl-1", "ctrl-", "ctrl-ab", "ab", "a,,b", "é"])
def test_a_detach_key_that_is_not_one_is_refused_saying_how_to_write_it(text: str) -> None:
    with pytest.raises(ValueError, match="ctrl-"):
        parse_detach_keys(text)


def typed(keys: DetachKeys, *chunks: bytes) -> list[bytes]:
    """What goes to the job for each chunk, up to the detach."""
    sent = []
    for chunk in chunks:
        sent.append(keys.filter(chunk))
        if keys.detached:
            break
    return sent


def test_keys_without_the_sequence_go_through_unchanged() -> None:
    keys = DetachKeys(CTRL_P + CTRL_Q)
    assert typed(keys, b"ls -l\r", b"\x03") == [b"ls -l\r", b"\x03"]
    assert not keys.detached


def test_the_sequence_detaches_and_is_not_sent_nor_what_follows_it() -> None:
    keys = DetachKeys(CTRL_P + CTRL_Q)
    assert typed(keys, b"abc" + CTRL_P + CTRL_Q + b"after") == [b"abc"]
    assert keys.detached


def test_a_sequence_split_across_chunks_detaches() -> None:
    keys = DetachKeys(CTRL_P + CTRL_Q)
    assert typed(keys, b"x" + CTRL_P, CTRL_Q) == [b"x", b""]
    assert keys.detached


def test_a_held_first_key_not_followed_by_the_second_is_sent_with_the_next_key() -> None:
    keys = DetachKeys(CTRL_P + CTRL_Q)
    assert typed(keys, CTRL_P, b"z", CTRL_P + CTRL_P, CTRL_Q) == [b"", CTRL_P + b"z", CTRL_P, b""]
    assert keys.detached


def test_a_repeated_first_key_still_finds_the_sequence_after_it() -> None:
    keys = DetachKeys(b"qqx")
    assert typed(keys, b"qqqx") == [b"q"]
    assert keys.detached
