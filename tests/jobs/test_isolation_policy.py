"""The daemon's isolation policy, as pure logic."""

from __future__ import annotations

import pytest

from rund_trio.errors import ConfigError, FailedPrecondition, PermissionDenied
from rund_trio.isolation.id_range import IdRange
from rund_trio.isolation.spec import Namespaces
from rund_trio.jobs.isolation_policy import (
    IsolationPolicy,
    IsolationRequest,
    Network,
    Profile,
    parse_san_pattern,
    san_matches,
)


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
    policy = IsolationPolicy(namespaces=False, default_profile=Profile.HOST)
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
        IsolationPolicy(namespaces=False, default_profile=Profile.HOST, network=Network.ISOLATED),
        IsolationPolicy(namespaces=False, default_profile=Profile.HOST, rootfs="/srv/rootfs"),
        IsolationPolicy(allow_host_network=False),
        IsolationPolicy(namespaces=False, default_profile=Profile.HOST, hidden=("/etc/rund",)),
    ],
)
def test_contradicting_settings_are_a_config_error(policy: IsolationPolicy) -> None:
    with pytest.raises(ConfigError):
        policy.validate()


ALICE = ("DNS:alice", "email:alice@example.com")


def test_a_job_is_contained_unless_it_asks_otherwise() -> None:
    policy = IsolationPolicy()
    assert policy.profile_for(IsolationRequest(), ALICE) is Profile.CONTAINED
    assert policy.isolation_for(IsolationRequest(), ALICE).contained


def test_asking_for_a_host_job_without_a_grant_is_permission_denied() -> None:
    policy = IsolationPolicy(host_job_grants=("DNS:ops-*",))
    with pytest.raises(PermissionDenied, match="host jobs"):
        policy.isolation_for(IsolationRequest(profile=Profile.HOST), ALICE)


def test_a_granted_san_may_ask_for_a_host_job() -> None:
    policy = IsolationPolicy(host_job_grants=("DNS:ops-*", "email:*@example.com"))
    isolation = policy.isolation_for(IsolationRequest(profile=Profile.HOST), ALICE)
    assert not isolation.contained


def test_a_granted_san_still_gets_contained_jobs_unless_it_asks() -> None:
    policy = IsolationPolicy(host_job_grants=("DNS:alice",))
    assert policy.isolation_for(IsolationRequest(), ALICE).contained


def test_with_host_as_the_default_every_client_gets_host_jobs() -> None:
    policy = IsolationPolicy(default_profile=Profile.HOST)
    assert not policy.isolation_for(IsolationRequest(), ("DNS:bob",)).contained
    assert not policy.isolation_for(IsolationRequest(profile=Profile.HOST), ("DNS:bob",)).contained


def test_any_client_may_ask_for_a_contained_job_when_host_is_the_default() -> None:
    policy = IsolationPolicy(default_profile=Profile.HOST)
    assert policy.isolation_for(IsolationRequest(profile=Profile.CONTAINED), ("DNS:bob",)).contained


def test_without_namespaces_contained_jobs_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--no-namespaces cannot contain jobs"):
        IsolationPolicy(namespaces=False).validate()


def test_without_namespaces_a_contained_job_is_refused_not_run_weaker() -> None:
    policy = IsolationPolicy(namespaces=False, default_profile=Profile.HOST)
    request = IsolationRequest(profile=Profile.CONTAINED)
    with pytest.raises(FailedPrecondition, match="cannot contain them"):
        policy.isolation_for(request, ALICE)


def test_without_namespaces_a_host_job_gets_the_hosts_namespaces() -> None:
    policy = IsolationPolicy(namespaces=False, default_profile=Profile.HOST)
    isolation = policy.isolation_for(IsolationRequest(), ALICE)
    assert isolation.namespaces == Namespaces.none() and not isolation.contained


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("DNS:*.Ops.Example.COM.", "DNS:*.ops.example.com"),
        ("dns:alice", "DNS:alice"),
        ("email:Root@*", "email:Root@*"),
        ("uri:spiffe://example.org/admin/*", "URI:spiffe://example.org/admin/*"),
        ("IP:10.0.0.*", "IP:10.0.0.*"),
    ],
)
def test_host_job_patterns_are_written_as_identity_sans(text: str, canonical: str) -> None:
    assert parse_san_pattern(text) == canonical


@pytest.mark.parametrize("text", ["*", "alice", "CN:alice", "DNS:", "dirName:x"])
def test_a_host_job_pattern_without_a_known_kind_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="allow-host-jobs"):
        parse_san_pattern(text)


@pytest.mark.parametrize(
    ("pattern", "sans", "matches"),
    [
        ("DNS:*.ops.example.com", ("DNS:db1.ops.example.com",), True),
        ("DNS:*.ops.example.com", ("DNS:ops.example.com",), False),
        ("DNS:alice", ("email:alice",), False),  # the kind must match too
        ("email:*@example.com", ("DNS:x", "email:root@example.com"), True),
        ("URI:spiffe://example.org/admin/*", ("URI:spiffe://example.org/user/x",), False),
    ],
)
def test_a_pattern_matches_a_san_of_the_same_kind_by_glob(
    pattern: str, sans: tuple[str, ...], matches: bool
) -> None:
    assert san_matches(pattern, sans) is matches


def test_jobs_are_contained_by_default_in_the_daemons_id_range() -> None:
    ids = IdRange(300000, 400000, 65536)
    isolation = IsolationPolicy(id_range=ids).isolation_for(IsolationRequest())
    assert (isolation.contained, isolation.id_range) == (True, ids)


def test_the_host_profile_gets_no_user_namespace() -> None:
    policy = IsolationPolicy(default_profile=Profile.HOST)
    assert not policy.isolation_for(IsolationRequest()).contained


def test_a_uid_beyond_the_user_namespace_is_a_config_error() -> None:
    policy = IsolationPolicy(allowed_uids=frozenset({70000}))
    with pytest.raises(ConfigError, match="--allow-uid 70000 is outside"):
        policy.validate()


def test_a_user_namespace_range_holding_host_root_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="must not include 0"):
        IsolationPolicy(id_range=IdRange(0, 0, 65536)).validate()
