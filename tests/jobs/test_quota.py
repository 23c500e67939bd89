"""Caps on running jobs and log streams, as plain bookkeeping."""

from __future__ import annotations

import pytest

from rund_trio.errors import ResourceExhausted
from rund_trio.jobs.quota import Quota


def test_units_are_granted_up_to_the_total_cap() -> None:
    quota = Quota("running jobs", total=2, per_client=None)
    quota.acquire({"alice"})
    quota.acquire({"bob"})
    with pytest.raises(ResourceExhausted, match="already has 2 running jobs, its limit"):
        quota.acquire({"carol"})
    assert quota.count == 2


def test_a_client_at_its_cap_is_refused_while_others_are_not() -> None:
    quota = Quota("running jobs", total=None, per_client=1)
    quota.acquire({"alice"})
    with pytest.raises(ResourceExhausted, match="you already have 1 running jobs"):
        quota.acquire({"alice"})
    quota.acquire({"bob"})
    assert (quota.held_by({"alice"}), quota.held_by({"bob"})) == (1, 1)


def test_a_released_unit_can_be_taken_again() -> None:
    quota = Quota("log streams", total=1, per_client=1)
    with quota.held({"alice"}), pytest.raises(ResourceExhausted):
        quota.acquire({"alice"})
    quota.acquire({"alice"})
    assert quota.count == 1


def test_releasing_what_is_not_held_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        Quota("log streams", total=None, per_client=None).release({"alice"})


def test_certificates_sharing_a_san_share_one_cap() -> None:
    quota = Quota("running jobs", total=None, per_client=2)
    quota.acquire({"DNS:alice", "email:alice@example.com"})
    quota.acquire({"email:alice@example.com"})  # her laptop's certificate
    with pytest.raises(ResourceExhausted, match="you already have 2 running jobs"):
        quota.acquire({"email:alice@example.com"})
    with pytest.raises(ResourceExhausted, match="you already have 2 running jobs"):
        quota.acquire({"DNS:alice", "email:alice@example.com"})
    assert quota.held_by({"DNS:bob"}) == 0


def test_a_certificate_bridging_two_others_counts_against_both_but_they_stay_apart() -> None:
    quota = Quota("running jobs", total=None, per_client=1)
    quota.acquire({"DNS:a", "DNS:b"})
    with pytest.raises(ResourceExhausted):
        quota.acquire({"DNS:a"})
    with pytest.raises(ResourceExhausted):
        quota.acquire({"DNS:b"})
    quota.release({"DNS:a", "DNS:b"})
    quota.acquire({"DNS:a"})
    quota.acquire({"DNS:b"})  # a and b share nothing: no common cap
    assert quota.count == 2
