"""The daemon's isolation policy, as pure logic."""

from __future__ import annotations

import pytest

from rund_trio.errors import ConfigError, FailedPrecondition, PermissionDenied
from rund_trio.isolation.id_range import IdRange
from rund_trio.isolation.spec import Namespaces
from rund_trio.jobs.isolation_policy import IsolationPolicy, IsolationRequest, Network


def test_by_default_a_job_gets_new_namespaces_and_the_host_network() -> None:
    isolation = IsolationPolicy().isolation_for(IsolationRequest())
    assert isolation.namespaces == Namespaces(pid=True, mount=True, uts=True, ipc=True, net=False)
    assert (isolation.uid, isolation.gid, isolation.rootfs) == (None, None, None)


def test_a_job_may_ask_for_an_isolated_network() -> None:
    isolation = IsolationPolicy().isolation_for(IsolationRequest(network=Network.ISOLATED))
    assert isolation.namespaces.net


def test_the_daemon_may_make_isolated_networks_the_default() -> None:
    policy = IsolationPolicy(network=Network.ISOLATED)
    assert policy.isolation_for(IsolationRequest()).namespaces.net


def test_the_host_network_is_refused_when_the_daemon_forbids_it() -> None:
    policy = IsolationPolicy(network=Network.ISOLATED, allow_host_network=False)
    with pytest.raises(FailedPrecondition, match="host network"):
        policy.isolation_for(IsolationRequest(network=Network.HOST))


def test_without_namespaces_an_isolated_network_is_refused() -> None:
    policy = IsolationPolicy(namespaces=False)
    assert policy.isolation_for(IsolationRequest()).namespaces == Namespaces.none()
    with pytest.raises(FailedPrecondition, match="without namespaces"):
        policy.isolation_for(IsolationRequest(network=Network.ISOLATED))


def test_every_job_gets_the_daemons_root_filesystem() -> None:
    policy = IsolationPolicy(rootfs="/srv/rootfs")
    assert policy.isolation_for(IsolationRequest()).rootfs == "/srv/rootfs"


def test_every_job_gets_the_daemons_hidden_paths() -> None:
    policy = IsolationPolicy(hidden=("/var/lib/rund", "/etc/rund/key.pem"))
    assert policy.isolation_for(IsolationRequest()).hidden == ("/var/lib/rund", "/etc/rund/key.pem")


def test_jobs_run_as_the_configured_user_by_default() -> None:
    isolation = IsolationPolicy(run_as=(1000, 100)).isolation_for(IsolationRequest())
    assert (isolation.uid, isolation.gid) == (1000, 100)


def test_an_allowed_uid_may_be_chosen_and_its_gid_follows_it() -> None:
    policy = IsolationPolicy(allowed_uids=frozenset({65534}), allowed_gids=frozenset({65534}))
    isolation = policy.isolation_for(IsolationRequest(uid=65534))
    assert (isolation.uid, isolation.gid) == (65534, 65534)


def test_a_uid_not_allowed_is_refused() -> None:
    policy = IsolationPolicy(allowed_uids=frozenset({1000}), allowed_gids=frozenset({1000}))
    with pytest.raises(PermissionDenied, match=r"uid 1001 \(allowed: 1000\)"):
        policy.isolation_for(IsolationRequest(uid=1001))


def test_root_cannot_be_chosen_unless_allowed() -> None:
    policy = IsolationPolicy(run_as=(1000, 1000), allowed_uids=frozenset({1000}))
    with pytest.raises(PermissionDenied, match="uid 0"):
        policy.isolation_for(IsolationRequest(uid=0, gid=1000))


def test_a_gid_not_allowed_is_refused() -> None:
    policy = IsolationPolicy(allowed_uids=frozenset({1000}), allowed_gids=frozenset({1000}))
    with pytest.raises(PermissionDenied, match="gid 0"):
        policy.isolation_for(IsolationRequest(uid=1000, gid=0))


@pytest.mark.parametrize(
    "policy",
    [
        IsolationPolicy(namespaces=False, network=Network.ISOLATED),
        IsolationPolicy(namespaces=False, rootfs="/srv/rootfs"),
        IsolationPolicy(allow_host_network=False),
        IsolationPolicy(namespaces=False, hidden=("/etc/rund",)),
    ],
)
def test_contradicting_settings_are_a_config_error(policy: IsolationPolicy) -> None:
    with pytest.raises(ConfigError):
        policy.validate()


def test_jobs_are_contained_by_default_in_the_daemons_id_range() -> None:
    ids = IdRange(300000, 400000, 65536)
    isolation = IsolationPolicy(id_range=ids).isolation_for(IsolationRequest())
    assert (isolation.contained, isolation.id_range) == (True, ids)


def test_without_namespaces_no_job_is_contained() -> None:
    isolation = IsolationPolicy(namespaces=False).isolation_for(IsolationRequest())
    assert not isolation.contained


def test_the_host_profile_keeps_todays_powers() -> None:
    assert not IsolationPolicy(contained=False).isolation_for(IsolationRequest()).contained


def test_a_uid_beyond_the_user_namespace_is_a_config_error() -> None:
    policy = IsolationPolicy(allowed_uids=frozenset({70000}))
    with pytest.raises(ConfigError, match="--allow-uid 70000 is outside"):
        policy.validate()


def test_a_user_namespace_range_holding_host_root_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="must not include 0"):
        IsolationPolicy(id_range=IdRange(0, 0, 65536)).validate()
