"""Host jobs (not contained; the host profile): the covers hold against a
host job that is not root, and a root host job reaches what the README says
(everything: it is trusted with the host)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from rund_trio.jobs.isolation_policy import IsolationPolicy, Profile
from tests.conftest import Pki
from tests.escape.conftest import Target, make_target, run_job

NOBODY = 65534


@pytest.fixture
async def host_target(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, job_visible_dir: Path
) -> AsyncIterator[Target]:
    isolation = IsolationPolicy(
        default_profile=Profile.HOST,
        allowed_uids=frozenset({NOBODY}),
        allowed_gids=frozenset({NOBODY}),
    )
    yield await make_target(nursery, pki, tmp_path, job_visible_dir, isolation)


async def test_a_host_job_not_root_cannot_unmount_the_covers(host_target: Target) -> None:
    """Layer: no capability (umount needs CAP_SYS_ADMIN)."""
    done = await run_job(
        host_target.daemon,
        f"umount {host_target.key} && echo UNMOUNTED; cat {host_target.key}; "
        f"grep -r . {host_target.state_dir} 2>&1; true",
        uid=NOBODY,
    )
    assert "UNMOUNTED" not in done.stdout
    assert not host_target.leaked(done.stdout + done.stderr)


async def test_a_host_job_not_root_cannot_unmount_them_from_a_user_namespace(
    host_target: Target,
) -> None:
    """Layer: mount lock (its own user namespace's mount namespace is a copy
    of the job's, in which the covers are locked)."""
    done = await run_job(
        host_target.daemon,
        f"unshare -Urm sh -c 'umount {host_target.key} && echo UNMOUNTED; "
        f"cat {host_target.key}' 2>&1; true",
        uid=NOBODY,
    )
    assert "UNMOUNTED" not in done.stdout
    assert not host_target.leaked(done.stdout + done.stderr)


async def test_a_root_host_job_can_undo_the_covers_as_documented(host_target: Target) -> None:
    """A host job running as root is the host's root: the README says so."""
    done = await run_job(
        host_target.daemon, f"umount {host_target.key} && head -n 1 {host_target.key}"
    )
    assert done.stdout.strip().startswith("-----BEGIN")
