"""Caps on running jobs and log streams, as plain bookkeeping."""

from __future__ import annotations

import pytest

from rund_trio.errors import ResourceExhausted
from rund_trio.jobs.quota import Quota


def test_units_are_granted_up_to_the_total_cap() -> None:
    quota = Quota("running jobs", total=2, per_client=None)
    quota.acquire("alice")
    quota.acquire("bob")
    with pytest.raises(ResourceExhausted, match="already has 2 running jobs, its limit"):
        quota.acquire("carol")
    assert quota.count == 2


def test_a_client_at_its_cap_is_refused_while_others_are_not() -> None:
    quota = Quota("running jobs", total=None, per_client=1)
    quota.acquire("alice")
    with pytest.raises(ResourceExhausted, match="you already have 1 running jobs"):
        quota.acquire("alice")
    quota.acquire("bob")
    assert (quota.held_by("alice"), quota.held_by("bob")) == (1, 1)


def test_a_released_unit_can_be_taken_again() -> None:
    quota = Quota("log streams", total=1, per_client=1)
    with quota.held("alice"), pytest.raises(ResourceExhausted):
        quota.acquire("alice")
    quota.acquire("alice")
    assert quota.count == 1


def test_releasing_what_is_not_held_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        Quota("log streams", total=None, per_client=None).release("alice")
