"""A contained root job cannot change the host's file system, nor become the
host's root through a setuid binary on it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import rund_trio
from tests.escape.conftest import JOB_UID, Target, run_job

CRON_DIR = Path("/etc/cron.d")


async def test_planting_a_cron_job_fails(target: Target) -> None:
    """Layers: read-only (the host's tree), user namespace (the job's root
    does not own /etc/cron.d)."""
    planted = CRON_DIR / "rund-escape"
    done = await run_job(
        target.daemon,
        f"mkdir -p {CRON_DIR} && echo '* * * * * root id' > {planted} && echo PLANTED; true",
    )
    assert "PLANTED" not in done.stdout
    assert not planted.exists()
    assert "Read-only file system" in done.stderr


async def test_changing_the_daemons_installed_package_fails(target: Target) -> None:
    """Layer: read-only (the host's tree)."""
    package = Path(rund_trio.__file__).parent
    probe = package / "planted.py"
    done = await run_job(
        target.daemon,
        f"echo 'import os' >> {package}/__init__.py && echo CHANGED; "
        f"touch {probe} && echo PLANTED; true",
    )
    assert "CHANGED" not in done.stdout and "PLANTED" not in done.stdout
    assert not probe.exists()


async def test_writing_a_world_writable_host_directory_fails(
    target: Target, job_visible_dir: Path
) -> None:
    """Layer: read-only (even where file modes would allow it)."""
    open_dir = job_visible_dir / "open"
    open_dir.mkdir()
    open_dir.chmod(0o1777)
    done = await run_job(target.daemon, f"touch {open_dir}/planted && echo PLANTED; true")
    assert "PLANTED" not in done.stdout
    assert not (open_dir / "planted").exists()


async def test_tmp_is_private_and_writable(target: Target, tmp_path: Path) -> None:
    """Not an attack: the job's /tmp is its own tmpfs (the host's is unseen)."""
    done = await run_job(
        target.daemon, f"touch /tmp/mine && ls /tmp; test -e {tmp_path} || echo UNSEEN"
    )
    assert done.stdout.split() == ["mine", "UNSEEN"]
    assert not Path("/tmp/mine").exists()


async def test_a_setuid_root_binary_does_not_give_root(
    target: Target, job_visible_dir: Path
) -> None:
    """Layers: nosuid (the host's tree), user namespace (the file's owner,
    the host's root, is not mapped in the job's: the kernel ignores the bit),
    and, with the caps profile, no_new_privs."""
    setuid_id = job_visible_dir / "id"
    shutil.copy("/usr/bin/id", setuid_id)
    os.chown(setuid_id, 0, 0)
    setuid_id.chmod(0o4755)
    done = await run_job(target.daemon, f"{setuid_id}", uid=JOB_UID)
    assert done.exit_code == 0, done.stderr
    assert done.stdout.startswith(f"uid={JOB_UID}")
    assert "euid=" not in done.stdout


async def test_the_jobs_root_owns_none_of_the_hosts_files(
    target: Target, job_visible_dir: Path
) -> None:
    """Layer: user namespace (host files show as nobody, and a file only the
    host's root may read stays unreadable to the job's root)."""
    root_only = job_visible_dir / "root-only"
    root_only.write_text("the host root's\n")
    root_only.chmod(0o600)
    done = await run_job(target.daemon, f"stat -c %U {root_only}; cat {root_only} 2>&1; true")
    lines = done.stdout.splitlines()
    assert lines[0] == "nobody"
    assert "Permission denied" in lines[1]
