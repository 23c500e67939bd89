"""Contained jobs, started by the ``execute`` helper and by the fork server
alike (both run ``rund_trio.isolation.execute``): the same view from inside."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rund_trio.errors import InvalidRequest
from rund_trio.isolation.id_range import IdRange
from rund_trio.isolation.spec import Isolation, Namespaces
from rund_trio.process.forkserver import ForkServerSpawner
from rund_trio.process.helper import HelperSpawner
from tests.isolation.conftest import Finished, run_job

IDS = IdRange(2147418112, 2147418112, 65536)


@pytest.fixture(params=["helper", "forkserver"])
async def spawner(request: pytest.FixtureRequest) -> AsyncIterator[HelperSpawner]:
    if request.param == "helper":
        yield HelperSpawner()
        return
    fork_server = ForkServerSpawner()
    try:
        yield fork_server  # type: ignore[misc]  # the same spawn() interface
    finally:
        await fork_server.aclose()


async def contained(spawner: HelperSpawner, script: str, **isolation: object) -> Finished:
    return await run_job(
        "sh",
        "-c",
        script,
        isolation=Isolation(id_range=IDS, **isolation),  # type: ignore[arg-type]
        spawner=spawner,
    )


async def test_the_jobs_root_is_the_ranges_first_host_id(spawner: HelperSpawner) -> None:
    done = await contained(spawner, "id -u; cat /proc/self/uid_map /proc/self/gid_map")
    lines = [line.split() for line in done.stdout.splitlines()]
    assert lines == [["0"], ["0", str(IDS.uid_start), "65536"], ["0", str(IDS.gid_start), "65536"]]


async def test_capabilities_no_new_privs_and_seccomp_come_with_the_user_namespace(
    spawner: HelperSpawner,
) -> None:
    done = await contained(
        spawner, "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status"
    )
    fields = dict(line.split(":\t") for line in done.stdout.splitlines())
    caps = {
        name: int(fields[name], 16) for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
    }
    assert caps == {
        "CapInh": 0,
        "CapPrm": 0x800401FB,
        "CapEff": 0x800401FB,
        "CapBnd": 0x800401FB,
        "CapAmb": 0,
    }
    assert (fields["NoNewPrivs"], fields["Seccomp"]) == ("1", "2")


async def test_a_host_job_gets_neither_layer(spawner: HelperSpawner) -> None:
    done = await run_job(
        "grep",
        "-E",
        "^(CapBnd|NoNewPrivs|Seccomp):",
        "/proc/self/status",
        isolation=Isolation(contained=False),
        spawner=spawner,
    )
    fields = dict(line.split(":\t") for line in done.stdout.splitlines())
    assert (fields["NoNewPrivs"], fields["Seccomp"]) == ("0", "0")
    assert int(fields["CapBnd"], 16) > 0x800401FB


async def test_a_requested_uid_is_inside_the_namespace(spawner: HelperSpawner) -> None:
    done = await contained(spawner, "id -u; id -g; id -G", uid=1000)
    assert done.stdout.split() == ["1000", "1000", "1000"]


async def test_the_hosts_root_is_read_only_and_tmp_is_private(
    spawner: HelperSpawner, tmp_path: Path
) -> None:
    done = await contained(
        spawner, f"touch /etc/rund-test; test -e {tmp_path} || echo UNSEEN; touch /tmp/x; ls /tmp"
    )
    assert "Read-only file system" in done.stderr
    assert done.stdout.split() == ["UNSEEN", "x"]


async def test_a_cover_is_locked(spawner: HelperSpawner, job_visible_dir: Path) -> None:
    secret = job_visible_dir / "secret"
    secret.write_text("secret\n")
    secret.chmod(0o644)
    done = await contained(
        spawner, f"umount {secret} || echo REFUSED; cat {secret}", hidden=(str(secret),)
    )
    assert done.stdout.split() == ["REFUSED"]


async def test_processes_and_the_cgroup_are_the_jobs_own(spawner: HelperSpawner) -> None:
    done = await contained(spawner, "ps -e -o pid=,comm=; grep '^0::' /proc/self/cgroup")
    assert done.stdout.split() == ["1", "rund-init", "2", "sh", "3", "ps", "0::/"]


async def test_the_exit_code_passes_through(spawner: HelperSpawner) -> None:
    done = await contained(spawner, "exit 7")
    assert done.status.exit_code == 7


async def test_a_root_filesystem_is_read_only_too(
    spawner: HelperSpawner, busybox_rootfs: Path
) -> None:
    done = await contained(spawner, "cat /etc/marker; touch /x", rootfs=str(busybox_rootfs))
    assert done.stdout == "inside the rootfs\n"
    assert "Read-only file system" in done.stderr


def test_a_contained_uid_outside_the_range_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="outside a contained job's user namespace"):
        Isolation(uid=65536).validate()


def test_a_contained_job_without_namespaces_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="needs PID and mount namespaces"):
        Isolation(namespaces=Namespaces.none()).validate()
