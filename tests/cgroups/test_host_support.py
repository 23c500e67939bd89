"""serve's options against what the host offers: an explicit one it cannot
honour stops start-up, a default one is a warning."""

from __future__ import annotations

from typing import Any

import pytest

from rund_trio.cgroups.tree import CgroupOptions, CgroupTree
from rund_trio.errors import ConfigError
from rund_trio.jobs.isolation_policy import IsolationPolicy
from rund_trio.server.host_support import Requested, check_host_support
from tests.cgroups.test_tree import OPTIONS, location

WITHOUT_PIDS = ("cpu", "io", "memory")


def tree_with(make_fs: Any, controllers: tuple[str, ...]) -> CgroupTree:
    fs = make_fs(controllers)
    fs.make("/", subtree=controllers)
    fs.make("/rund.service", procs=[fs.current_pid])
    return CgroupTree.setup(
        OPTIONS, location=location(fs, "/rund.service"), fs=fs, pid=fs.current_pid
    )


def disabled_tree(make_fs: Any) -> CgroupTree:
    return CgroupTree.setup(OPTIONS, location=None, fs=make_fs())


def check(requested: Requested, tree: CgroupTree | None, **kw: Any) -> list[str]:
    cgroups = None if tree is None else CgroupOptions(pids_max=100)
    return check_host_support(requested, cgroups, tree, IsolationPolicy(**kw), euid=0)


def test_an_explicit_pids_max_without_a_pids_controller_stops_start_up(make_fs: Any) -> None:
    with pytest.raises(
        ConfigError, match=r"--pids-max 100 cannot be enforced on this host: no pids controller"
    ):
        check(Requested(pids_max=100), tree_with(make_fs, WITHOUT_PIDS))


def test_an_explicit_pids_max_with_no_cgroups_stops_start_up() -> None:
    with pytest.raises(ConfigError, match=r"cgroups are off \(--no-cgroups\)"):
        check(Requested(pids_max=100), None)


def test_pids_max_0_asks_for_nothing_and_is_accepted_anywhere() -> None:
    assert check(Requested(pids_max=0), None) == []


def test_the_default_pids_max_without_a_pids_controller_is_a_warning(make_fs: Any) -> None:
    warnings = check(Requested(), tree_with(make_fs, WITHOUT_PIDS))
    assert any(
        w.startswith("the default --pids-max 100 is not enforced: no pids controller")
        for w in warnings
    )


def test_a_full_cgroup_tree_gives_no_warning(make_fs: Any) -> None:
    assert (
        check(
            Requested(pids_max=100, io_devices=True),
            tree_with(make_fs, ("cpu", "io", "memory", "pids")),
        )
        == []
    )


def test_explicit_io_devices_without_an_io_controller_stop_start_up(make_fs: Any) -> None:
    with pytest.raises(
        ConfigError, match="--io-device cannot be used on this host: no io controller"
    ):
        check(Requested(io_devices=True), tree_with(make_fs, ("cpu", "memory", "pids")))


def test_an_explicit_cgroup_root_without_usable_cgroups_stops_start_up(make_fs: Any) -> None:
    with pytest.raises(ConfigError, match="--cgroup-root cannot be used: no cgroup v2 hierarchy"):
        check(Requested(cgroup_root=True), disabled_tree(make_fs))


def test_disabled_cgroups_are_a_warning_when_nothing_was_asked_for(make_fs: Any) -> None:
    warnings = check(Requested(), disabled_tree(make_fs))
    assert warnings[0].startswith("cgroups disabled: no cgroup v2 hierarchy")


def test_a_rootfs_that_is_not_a_directory_stops_start_up(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="is not a directory"):
        check(Requested(rootfs=True), None, rootfs=str(tmp_path / "missing"))


def test_run_as_another_user_without_root_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="--run-as 1000:1000 needs the daemon to run as root"):
        check_host_support(
            Requested(run_as=True), None, None, IsolationPolicy(run_as=(1000, 1000)), euid=4242
        )
