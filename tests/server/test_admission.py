"""Connection admission (``rund_trio.server.admission``), on its own: the
handshake caps, the per-client cap and the descriptor reserve."""

from __future__ import annotations

import pytest

from rund_trio.errors import ConfigError
from rund_trio.server.admission import (
    Admission,
    AdmissionLimits,
    DescriptorBudget,
    Shed,
    fit_fd_reserve,
    raise_descriptor_limit,
)


def admission(fds_in_use: int = 100, fd_limit: int = 20_000, **limits: int | None) -> Admission:
    return Admission(
        AdmissionLimits(**limits),  # type: ignore[arg-type]
        fds_in_use=lambda: fds_in_use,
        fd_limit=lambda: fd_limit,
    )


def test_handshakes_beyond_the_cap_are_shed() -> None:
    gate = admission(max_handshakes=2, max_handshakes_per_source=None)
    first = gate.try_begin_handshake("192.0.2.1")
    second = gate.try_begin_handshake("192.0.2.2")
    assert first is not None and second is not None
    assert gate.try_begin_handshake("192.0.2.3") is None
    assert gate.last_shed is Shed.HANDSHAKES
    assert gate.shed[Shed.HANDSHAKES] == 1


def test_a_finished_handshake_frees_its_slot() -> None:
    gate = admission(max_handshakes=1, max_handshakes_per_source=None)
    ticket = gate.try_begin_handshake("192.0.2.1")
    assert ticket is not None
    gate.end_handshake(ticket)
    assert gate.try_begin_handshake("192.0.2.1") is not None


def test_ending_a_handshake_twice_frees_one_slot() -> None:
    gate = admission(max_handshakes=2, max_handshakes_per_source=None)
    ticket = gate.try_begin_handshake("192.0.2.1")
    assert ticket is not None and gate.try_begin_handshake("192.0.2.2") is not None
    gate.end_handshake(ticket)
    gate.end_handshake(ticket)
    assert gate.handshakes == 1


def test_one_source_cannot_take_every_handshake_slot() -> None:
    gate = admission(max_handshakes=10, max_handshakes_per_source=2)
    assert gate.try_begin_handshake("192.0.2.66") is not None
    assert gate.try_begin_handshake("192.0.2.66") is not None
    assert gate.try_begin_handshake("192.0.2.66") is None
    assert gate.last_shed is Shed.SOURCE
    assert gate.try_begin_handshake("192.0.2.1") is not None, "others still get in"


def test_per_source_counts_are_forgotten_when_they_reach_zero() -> None:
    gate = admission(max_handshakes_per_source=1)
    ticket = gate.try_begin_handshake("192.0.2.1")
    assert ticket is not None
    gate.end_handshake(ticket)
    assert gate.by_source == {}


def test_connections_are_shed_when_the_descriptor_reserve_would_be_touched() -> None:
    assert admission(fds_in_use=18_976, fd_reserve=1024).try_begin_handshake("h") is not None
    low = admission(fds_in_use=18_977, fd_reserve=1024)
    assert low.try_begin_handshake("h") is None
    assert low.last_shed is Shed.DESCRIPTORS


def test_a_zero_reserve_never_sheds_for_descriptors() -> None:
    assert admission(fds_in_use=20_000, fd_reserve=0).try_begin_handshake("h") is not None


def test_no_caps_admit_everything() -> None:
    gate = admission(max_handshakes=None, max_handshakes_per_source=None)
    assert all(gate.try_begin_handshake("h") for _ in range(10_000))


def test_a_clients_connections_beyond_its_cap_are_refused() -> None:
    gate = admission(max_connections_per_client=2)
    alice = frozenset({"DNS:alice"})
    leases = [gate.try_admit(alice), gate.try_admit(alice)]
    assert None not in leases
    assert gate.try_admit(alice) is None
    assert gate.last_shed is Shed.CLIENT
    assert gate.try_admit(frozenset({"DNS:bob"})) is not None, "other clients are unaffected"


def test_a_released_connection_lets_its_client_connect_again() -> None:
    gate = admission(max_connections_per_client=1)
    lease = gate.try_admit("alice")
    assert lease is not None
    gate.release(lease)
    gate.release(lease)
    assert gate.by_client == {}
    assert gate.try_admit("alice") is not None


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"max_handshakes": 0}, "--max-handshakes must be at least 1"),
        ({"max_handshakes_per_source": -1}, "--max-handshakes-per-source must be at least 1"),
        ({"max_connections_per_client": 0}, "--max-connections-per-client must be at least 1"),
        ({"fd_reserve": -1}, "--fd-reserve must be 0 or more"),
    ],
)
def test_bad_limits_are_config_errors(limits: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AdmissionLimits(**limits)  # type: ignore[arg-type]


def test_descriptors_are_counted_at_most_once_an_interval() -> None:
    now = [0.0]
    budget = DescriptorBudget(interval=1.0, clock=lambda: now[0])
    first = budget.in_use()
    assert first > 0
    extra = open("/dev/null")  # noqa: SIM115
    try:
        assert budget.in_use() == first, "still the cached count"
        now[0] = 1.0
        assert budget.in_use() == first + 1
    finally:
        extra.close()


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    import resource

    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, old[1]))
        assert raise_descriptor_limit() == (1024, old[1])
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (old[1], old[1])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def test_the_default_reserve_is_kept_under_a_high_descriptor_limit() -> None:
    assert fit_fd_reserve(20_000, 1024, explicit=False) == (1024, None)


def test_the_default_reserve_shrinks_under_a_limit_of_1024_so_connections_still_fit() -> None:
    reserve, warning = fit_fd_reserve(1024, 1024, explicit=False)
    assert reserve == 256
    assert warning is not None and "only 1024" in warning and "ulimit -n" in warning


def test_an_explicit_reserve_that_leaves_no_room_for_connections_is_refused() -> None:
    with pytest.raises(ConfigError, match="--fd-reserve 1000 leaves fewer than 256"):
        fit_fd_reserve(1024, 1000, explicit=True)


def test_no_reserve_fits_any_limit() -> None:
    assert fit_fd_reserve(64, 0, explicit=True) == (0, None)
