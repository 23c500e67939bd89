"""List's pages: the page size rules and the opaque page token. No I/O.

A token names where the previous page stopped (the id of its last job) and the
filter it was for, and carries a MAC under a key kept in the job database, so
a token this daemon (or one before it on the same state directory) did not
give out is refused rather than read: it is opaque to clients. It says nothing
about other clients' jobs; a page is always limited to the caller's own.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from ulid import ULID

from rund_trio.errors import InvalidRequest

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_VERSION = b"1"
_MAC_SIZE = 16

Mac = Callable[[bytes], bytes]


def page_size(requested: int) -> int:
    """The page size for a request's ``page_size``: 0 is the default;
    ``InvalidRequest`` below 0 or above ``MAX_PAGE_SIZE``."""
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if not 0 < requested <= MAX_PAGE_SIZE:
        raise InvalidRequest(
            f"page_size must be between 1 and {MAX_PAGE_SIZE} (0 for {DEFAULT_PAGE_SIZE}), "
            f"got {requested}"
        )
    return requested


@dataclass(frozen=True)
class PagePosition:
    filter: int
    after: str
    """The id of the last job of the previous page: the next page starts below it."""


def encode_token(position: PagePosition, mac: Mac) -> str:
    payload = _VERSION + bytes([position.filter]) + position.after.encode("ascii")
    return base64.urlsafe_b64encode(payload + mac(payload)).decode("ascii").rstrip("=")


def decode_token(token: str, filter_: int, mac: Mac) -> PagePosition:
    """The position ``token`` names; ``InvalidRequest`` for anything this
    daemon did not give out for the same filter."""
    malformed = InvalidRequest(
        "page_token is not one this daemon gave out: pass the next_page_token of the "
        "previous List answer unchanged, or none for the first page"
    )
    if len(token) > 200:
        raise malformed
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise malformed from None
    payload, tag = raw[:-_MAC_SIZE], raw[-_MAC_SIZE:]
    if len(raw) <= _MAC_SIZE + 2 or not hmac.compare_digest(mac(payload), tag):
        raise malformed
    if payload[:1] != _VERSION:
        raise malformed
    if payload[1] != filter_:
        raise InvalidRequest("page_token belongs to a List with another filter")
    after = payload[2:].decode("ascii", "replace")
    try:
        ULID.from_str(after)
    except ValueError:
        raise malformed from None
    return PagePosition(filter_, after)
