"""An audit log whose disk fills up or turns read-only: the daemon says so
(metrics, its own log), keeps serving unless ``--audit-required``, and
writes again once it can. Each test puts the audit log on a small tmpfs
(root only, as tests/integration/test_disk_faults.py)."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.errors import RpcError
from rund_trio.observe.audit_log import AuditLog
from rund_trio.observe.config import ObserveConfig
from tests.conftest import Daemon, Pki, start_daemon
from tests.integration.test_disk_faults import mount_tmpfs
from tests.observe.scrape import scrape

UNKNOWN_JOB = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


@pytest.fixture
def audit_dir(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs for the audit log."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "audit"
    try:
        mount_tmpfs(path, "size=64k")
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot mount a tmpfs here: {error}")
    yield path
    subprocess.run(["umount", "--lazy", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Take every free byte of ``directory``'s filesystem; return the filler."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as file:
        try:
            while True:
                file.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def audit_log(daemon: Daemon) -> AuditLog:
    audit = daemon.running.observability.audit
    assert audit is not None
    return audit.log


async def until_a_record_is_lost(daemon: Daemon, rund: RundClient) -> None:
    """Make refused calls until one's record does not fit (the file's last
    page may still have room for a few)."""
    for _ in range(100):
        with pytest.raises(RpcError):
            await rund.status(UNKNOWN_JOB)
        if audit_log(daemon).lost:
            return
    raise AssertionError("no audit record was lost on a full disk")


async def test_a_full_disk_is_reported_and_jobs_still_run(
    nursery: trio.Nursery,
    pki: Pki,
    tmp_path: Path,
    audit_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon = await start_daemon(
        nursery,
        pki,
        tmp_path,
        observe=ObserveConfig(metrics_addr="127.0.0.1:0", audit_log=str(audit_dir / "audit.log")),
    )
    filler = fill(audit_dir)
    async with daemon.client() as rund:
        with caplog.at_level(logging.ERROR, logger="rund_trio.observe.audit_log"):
            await until_a_record_is_lost(daemon, rund)
            for _ in range(3):
                with pytest.raises(RpcError):
                    await rund.status(UNKNOWN_JOB)
        metrics = await scrape(daemon)
        assert metrics["rund_audit_log_writable"] == 0
        assert metrics["rund_audit_records_lost_total"] >= 4
        errors = [r.getMessage() for r in caplog.records if "audit log" in r.getMessage()]
        assert len(errors) == 1  # once, not once per record
        assert "No space left on device" in errors[0]
        job = await rund.start(pb.JobStartRequest(name="true"))  # still served
        assert job

        filler.unlink()
        with pytest.raises(RpcError):
            await rund.status(UNKNOWN_JOB)
        assert (await scrape(daemon))["rund_audit_log_writable"] == 1
    rpcs = [line for line in (audit_dir / "audit.log").read_text().splitlines() if "rpc" in line]
    assert UNKNOWN_JOB in rpcs[-1]


async def test_with_audit_required_job_requests_are_unavailable_until_it_can_write(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, audit_dir: Path
) -> None:
    daemon = await start_daemon(
        nursery,
        pki,
        tmp_path,
        observe=ObserveConfig(audit_log=str(audit_dir / "audit.log"), audit_required=True),
    )
    filler = fill(audit_dir)
    async with daemon.client() as rund:
        await until_a_record_is_lost(daemon, rund)
        with pytest.raises(RpcError) as refused:
            await rund.start(pb.JobStartRequest(name="true"))
        assert refused.value.code == "UNAVAILABLE"
        assert "--audit-required" in refused.value.message
        assert not daemon.running.supervisor.jobs  # nothing ran unaudited

        filler.unlink()
        with pytest.raises(RpcError) as refused:  # its record is written: the log works again
            await rund.start(pb.JobStartRequest(name="true"))
        assert refused.value.code == "UNAVAILABLE"
        assert await rund.start(pb.JobStartRequest(name="true"))


async def test_an_audit_file_that_vanishes_into_a_read_only_place_loses_records_until_back(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, audit_dir: Path
) -> None:
    """A filesystem with an open file cannot be remounted read-only, so a
    read-only tmpfs is mounted over the log's directory instead: the file
    vanishes from its path, and creating it again fails."""
    audit = audit_dir / "audit.log"
    daemon = await start_daemon(nursery, pki, tmp_path, observe=ObserveConfig(audit_log=str(audit)))
    async with daemon.client() as rund:
        mount_tmpfs(audit_dir, "ro")
        try:
            with pytest.raises(RpcError):
                await rund.status(UNKNOWN_JOB)
            assert audit_log(daemon).error == "Read-only file system"
            assert await rund.start(pb.JobStartRequest(name="true"))  # still served
        finally:
            subprocess.run(["umount", str(audit_dir)], check=True)
        with pytest.raises(RpcError):
            await rund.status(UNKNOWN_JOB)
        assert audit_log(daemon).writable
    rpcs = [line for line in audit.read_text().splitlines() if '"event":"rpc"' in line]
    assert UNKNOWN_JOB in rpcs[-1]
