"""List's page sizes and page tokens, as plain logic."""

from __future__ import annotations

import hmac

import pytest

from rund_trio.errors import InvalidRequest
from rund_trio.jobs.paging import (
    DEFAULT_PAGE_SIZE,
    PagePosition,
    decode_token,
    encode_token,
    page_size,
)
from rund_trio.jobs.spec import new_job_id


def mac_with(key: bytes) -> object:
    return lambda payload: hmac.digest(key, payload, "sha256")[:16]


MAC = mac_with(b"k" * 32)


def test_page_size_zero_is_the_default_and_bounds_are_refused() -> None:
    assert page_size(0) == DEFAULT_PAGE_SIZE
    assert page_size(1000) == 1000
    for absurd in (-1, 1001, 2**31 - 1):
        with pytest.raises(InvalidRequest, match="page_size must be between 1 and 1000"):
            page_size(absurd)


def test_a_token_round_trips_to_its_position() -> None:
    position = PagePosition(filter=2, after=new_job_id())
    assert decode_token(encode_token(position, MAC), 2, MAC) == position  # type: ignore[arg-type]


def test_a_token_under_another_key_is_refused() -> None:
    token = encode_token(PagePosition(0, new_job_id()), mac_with(b"x" * 32))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="not one this daemon gave out"):
        decode_token(token, 0, MAC)  # type: ignore[arg-type]


def test_a_token_for_another_filter_is_refused() -> None:
    token = encode_token(PagePosition(1, new_job_id()), MAC)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="another filter"):
        decode_token(token, 2, MAC)  # type: ignore[arg-type]


@pytest.mark.parametrize("token", ["", "a", "====", "é", "A" * 201])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidRequest):
        decode_token(token, 0, MAC)  # type: ignore[arg-type]
