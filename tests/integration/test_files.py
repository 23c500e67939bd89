"""What the daemon keeps on disk stays private: its state directory is 0700,
job output files 0600, and a job -- even one running as root -- finds the
state directory and the daemon's private key covered in its mount namespace
(default isolation, no root filesystem)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.errors import ConfigError
from rund_trio.jobs.isolation_policy import IsolationPolicy, Profile
from tests.conftest import Daemon, Pki, start_daemon

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def run(daemon: Daemon, script: str) -> tuple[pb.JobStatus, str, str]:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="sh", args=["-c", script]))
        out, err = bytearray(), bytearray()
        async for chunk in rund.log(job_id):
            out += chunk.stdout
            err += chunk.stderr
        return await rund.status(job_id), out.decode(), err.decode()


async def start_secret_job(daemon: Daemon) -> str:
    """A job of bob's that prints a secret and keeps running."""
    async with daemon.client("bob") as bob:
        job_id = await bob.start(
            pb.JobStartRequest(name="sh", args=["-c", "echo bobs-secret; exec sleep 60"])
        )
        async for chunk in bob.log(job_id):
            assert chunk.stdout == b"bobs-secret\n"
            break
    return job_id


async def test_the_state_directory_the_daemon_makes_is_0700(daemon: Daemon) -> None:
    assert mode(daemon.running.state_dir) == 0o700


async def test_the_default_state_directory_is_0700(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path, state_dir=None)
    assert mode(daemon.running.state_dir) == 0o700


async def test_job_output_files_are_0600(daemon: Daemon) -> None:
    job_id = await start_secret_job(daemon)
    assert mode(daemon.running.state_dir / f"{job_id}.log") == 0o600


async def test_a_state_directory_other_users_can_enter_is_refused(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o711)
    with pytest.raises(ConfigError, match=r"accessible to other users \(mode 711\)"):
        await start_daemon(nursery, pki, tmp_path, state_dir=shared)


async def test_a_job_cannot_read_another_jobs_output_through_the_state_directory(
    daemon: Daemon,
) -> None:
    job_id = await start_secret_job(daemon)
    state = daemon.running.state_dir
    status, out, err = await run(daemon, f"ls -A {state}; cat {state}/{job_id}.log")
    assert "bobs-secret" not in out
    assert out == ""  # an empty directory: no file names either
    assert "No such file or directory" in err
    assert status.exit_code.value != 0


async def test_a_host_job_reads_nothing_of_the_daemons_private_key(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    """(Contained jobs: tests/escape.)"""
    daemon = await start_daemon(
        nursery, pki, tmp_path, isolation=IsolationPolicy(default_profile=Profile.HOST)
    )
    key = daemon.pki.files.server.key
    assert b"PRIVATE KEY" in key.read_bytes()
    status, out, _ = await run(daemon, f"cat {key}")
    assert (status.exit_code.value, out) == (0, "")  # it reads as /dev/null


async def test_a_host_job_running_as_another_user_cannot_uncover_the_state_directory(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    """(Contained jobs: tests/escape.)"""
    daemon = await start_daemon(
        nursery,
        pki,
        tmp_path,
        isolation=IsolationPolicy(run_as=(NOBODY, NOBODY), default_profile=Profile.HOST),
    )
    state = daemon.running.state_dir
    _, out, err = await run(daemon, f"umount {state}; grep -c ' {state} ' /proc/self/mountinfo")
    assert "umount" in err  # refused: without CAP_SYS_ADMIN mounts cannot be undone
    assert out.strip() == "1"  # the state directory is still covered


async def test_a_path_given_to_hide_is_hidden_from_jobs(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "ca-key.pem").write_text("the CA's key\n")
    daemon = await start_daemon(
        nursery, pki, tmp_path, isolation=IsolationPolicy(hidden=(str(secrets),))
    )
    _, out, err = await run(daemon, f"cat {secrets}/ca-key.pem")
    assert out == "" and "No such file or directory" in err


async def test_hiding_a_path_that_does_not_exist_is_refused(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=f"cannot hide {missing} from jobs: No such file"):
        await start_daemon(
            nursery, pki, tmp_path, isolation=IsolationPolicy(hidden=(str(missing),))
        )
