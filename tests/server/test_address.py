"""Listen and dial addresses as users write them."""

from __future__ import annotations

import pytest

from rund_trio.address import parse_address
from rund_trio.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":8000", (None, 8000)),
        ("localhost:8000", ("localhost", 8000)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:8000", ("::1", 8000)),
        ("[::]:65535", ("::", 65535)),
    ],
)
def test_addresses_are_split_into_host_and_port(
    text: str, expected: tuple[str | None, int]
) -> None:
    assert parse_address(text, default_host=None) == expected


def test_a_missing_host_takes_the_default() -> None:
    assert parse_address(":8000", default_host="localhost") == ("localhost", 8000)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("nonsense", "expected host:port"),
        ("::1:8000", "write IPv6 addresses as [address]:port"),
        ("[::1]8000", "expected [IPv6 address]:port"),
        ("host:http", "the port must be a number"),
        ("host:70000", "the port must be a number from 0 to 65535"),
    ],
)
def test_malformed_addresses_say_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        parse_address(text, default_host=None)
