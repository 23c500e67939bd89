"""The daemon-wide budget of job output: the total and the free-space reserve."""

from __future__ import annotations

import pytest

from rund_trio.logs.budget import DiskBudget, Reserve, Room, describe_size
from rund_trio.logs.journal import OutputBook

GIB = 1024**3


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1024, "1 KiB"),
        (1536 * 1024, "1.5 MiB"),
        (GIB, "1 GiB"),
    ],
)
def test_sizes_are_described_in_binary_units(size: int, text: str) -> None:
    assert describe_size(size) == text


def test_the_default_reserve_is_the_smaller_of_1_gib_and_5_percent() -> None:
    assert Reserve().of(100 * GIB) == GIB
    assert Reserve().of(10 * GIB) == GIB // 2


def test_a_reserve_may_be_a_size_or_a_share_alone() -> None:
    assert Reserve(bytes=123, fraction=None).of(GIB) == 123
    assert Reserve(bytes=None, fraction=0.5).of(GIB) == GIB // 2
    assert Reserve(bytes=None, fraction=None).of(GIB) == 0


def test_the_total_bounds_the_room_and_refuses_new_jobs_once_reached() -> None:
    budget = DiskBudget(max_total=100, min_free=0)
    budget.observe_free(GIB)
    budget.charge(60)
    assert budget.room().bytes == 40
    assert budget.refusal() is None
    budget.charge(40)
    assert budget.room().bytes == 0
    assert budget.refusal() == "job output on this daemon reached --max-output-total (100 bytes)"


def test_the_reserve_bounds_the_room_by_the_free_space_seen_minus_what_was_written() -> None:
    budget = DiskBudget(max_total=None, min_free=1000, check_every=10**6)
    budget.observe_free(5000)
    budget.charge(1500)
    assert budget.room().bytes == 2500
    budget.charge(3000)
    assert budget.room().bytes == 0
    assert budget.refusal() == (
        "the state directory's filesystem is down to its reserve of free space "
        "(--min-free-disk 1000 bytes, 500 bytes free)"
    )


def test_free_space_is_checked_again_after_every_check_every_bytes() -> None:
    budget = DiskBudget(max_total=None, min_free=0, check_every=100)
    assert budget.check_due  # never observed
    budget.observe_free(GIB)
    budget.charge(99)
    assert not budget.check_due
    budget.charge(1)
    assert budget.check_due
    budget.observe_free(GIB)
    assert not budget.check_due


def test_the_tighter_limit_is_the_one_reported() -> None:
    budget = DiskBudget(max_total=100, min_free=0)
    budget.observe_free(50)
    assert budget.room().bytes == 50
    assert "--min-free-disk" in budget.room().limit


def test_a_budget_without_limits_has_unlimited_room() -> None:
    budget = DiskBudget(max_total=None, min_free=0)
    assert budget.room().bytes is None


def test_output_beyond_the_room_on_disk_is_dropped_with_the_reason() -> None:
    book = OutputBook(cap=None)
    assert book.admit(10, Room(4, "the disk is at its reserve")) == 4
    assert (book.recorded, book.dropped, book.error) == (4, 6, "the disk is at its reserve")


def test_once_output_was_cut_nothing_more_is_recorded_even_when_room_returns() -> None:
    book = OutputBook(cap=None)
    book.admit(10, Room(0, "full"))
    assert book.admit(10, Room(GIB, "")) == 0
    assert (book.recorded, book.dropped, book.error) == (0, 20, "full")


def test_output_beyond_the_cap_says_it_reached_the_cap() -> None:
    book = OutputBook(cap=1024)
    book.admit(2000)
    assert book.error == "the job's output reached --output-cap (1 KiB per job)"


def test_output_within_every_limit_leaves_no_error() -> None:
    book = OutputBook(cap=100)
    assert book.admit(100, Room(100, "")) == 100
    assert book.error is None
