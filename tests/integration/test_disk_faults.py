"""The state directory full or read-only: Start fails with a clear status,
a job whose output could not be written says so, and the daemon keeps serving.

Each test mounts a small tmpfs as the daemon's state directory (root only)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.errors import RpcError
from rund_trio.logs.budget import Reserve
from tests.conftest import Pki, start_daemon

MIB = 1024**2
PAGE = os.sysconf("SC_PAGE_SIZE")


def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"{options},mode=0700", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/state`` (where ``start_daemon`` puts its state), a 1 MiB tmpfs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "state"
    try:
        mount_tmpfs(path, "size=1m")
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot mount a tmpfs here: {error}")
    yield path
    subprocess.run(["umount", "--lazy", str(path)], check=True)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def database_bytes(state_dir: Path) -> int:
    """Disk space taken by the job database (with its WAL and shared memory files)."""
    return sum(path.stat().st_blocks * 512 for path in state_dir.glob("jobs.sqlite3*"))


async def drain(rund: RundClient, job_id: str) -> tuple[bytes, RpcError | None]:
    received = b""
    try:
        async for chunk in rund.log(job_id):
            received += chunk.stdout
    except RpcError as error:
        return received, error
    return received, None


async def test_a_job_that_fills_the_disk_says_its_output_was_lost_and_others_keep_running(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, state_dir: Path, job_visible_dir: Path
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path, min_free_disk=Reserve(0, None))
    go = job_visible_dir / "go"
    os.mkfifo(go)
    async with daemon.client() as rund:
        bystander = await rund.start(pb.JobStartRequest(name="sleep", args=["300"]))
        filler = await rund.start(
            pb.JobStartRequest(name="sh", args=["-c", f"cat {go}; head -c {2 * MIB} /dev/zero"])
        )
        # Something else takes most of the disk behind the daemon's back.
        (state_dir / "other").write_bytes(bytes(900 * 1024))
        await trio.to_thread.run_sync(lambda: go.write_bytes(b""))
        received, error = await drain(rund, filler)
        status = await rund.status(filler)
        bystander_status = await rund.status(bystander)
        stopped = await rund.stop(bystander)
    assert status.state == pb.JOB_STATE_EXITED
    assert status.output_error == f"cannot write job output to {state_dir}: No space left on device"
    assert status.output_bytes == len(received) and received == bytes(len(received))
    assert status.output_bytes + status.output_dropped_bytes == 2 * MIB
    assert error is not None and error.code == "RESOURCE_EXHAUSTED"
    assert bystander_status.state == pb.JOB_STATE_RUNNING and stopped.stopped


async def test_output_stops_at_the_free_space_reserve_and_start_is_refused_there(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, state_dir: Path
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path)  # reserve: 5% of 1 MiB
    reserve = Reserve().of(MIB)
    database_before = database_bytes(state_dir)
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="head", args=["-c", "2M", "/dev/zero"]))
        received, error = await drain(rund, job_id)
        status = await rund.status(job_id)
        with pytest.raises(RpcError) as refused:
            await rund.start(pb.JobStartRequest(name="true"))
    assert status.output_error.startswith(
        "the state directory's filesystem is down to its reserve of free space "
        "(--min-free-disk 51.2 KiB, "
    )
    assert len(received) == status.output_bytes > 0
    assert status.output_bytes + status.output_dropped_bytes == 2 * MIB
    assert error is not None and error.code == "RESOURCE_EXHAUSTED"
    # The disk is never filled: at most the journal's last page is over the
    # estimate; the reserve is left to the rest, the job database included.
    database_growth = database_bytes(state_dir) - database_before
    assert free_bytes(state_dir) + database_growth >= reserve - PAGE
    assert refused.value.code == "RESOURCE_EXHAUSTED"
    assert "--min-free-disk" in refused.value.message


async def test_start_on_a_read_only_state_directory_fails_cleanly_and_works_once_writable(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, state_dir: Path
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path)
    # A read-only bind mount over it: the job database's open files (a
    # filesystem with files open for writing cannot be remounted read-only)
    # keep working, every new file is refused.
    subprocess.run(["mount", "--bind", str(state_dir), str(state_dir)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(state_dir)], check=True)
    async with daemon.client() as rund:
        with pytest.raises(RpcError) as error:
            await rund.start(pb.JobStartRequest(name="true"))
        subprocess.run(["umount", str(state_dir)], check=True)
        job_id = await rund.start(pb.JobStartRequest(name="echo", args=["writable again"]))
        received, end = await drain(rund, job_id)
    assert error.value.code == "FAILED_PRECONDITION"
    assert error.value.message == (
        f"cannot create the job's output file in {state_dir}: Read-only file system"
    )
    assert (received, end) == (b"writable again\n", None)


async def test_start_is_resource_exhausted_when_the_output_file_cannot_be_created_for_lack_of_space(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, state_dir: Path
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path)
    subprocess.run(["mount", "-o", "remount,nr_inodes=1", str(state_dir)], check=False)
    inodes = os.statvfs(state_dir)
    if inodes.f_ffree:
        pytest.skip("this kernel cannot shrink a tmpfs's inode count")
    async with daemon.client() as rund:
        with pytest.raises(RpcError) as error:
            await rund.start(pb.JobStartRequest(name="true"))
    assert error.value.code == "RESOURCE_EXHAUSTED"
    assert error.value.message == (
        f"cannot create the job's output file in {state_dir}: No space left on device"
    )
