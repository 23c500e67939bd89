"""A contained root job cannot reach processes outside it, the kernel's
settings, or another cgroup."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.escape.conftest import Target, run_job

PTRACE = (
    'perl -e \'require "syscall.ph"; my $r = syscall(&SYS_ptrace, 16, {pid}, 0, 0); '
    'print $r == 0 ? "ATTACHED\\n" : "refused: $!\\n"\''
)


@pytest.fixture
def host_process() -> Iterator[int]:
    """A process of the host's (root, outside every job)."""
    process = subprocess.Popen(["sleep", "1000"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


async def test_ptrace_of_a_host_process_fails(target: Target, host_process: int) -> None:
    """Layers: pid namespace (the host's processes have no pid in the job's),
    user namespace (no CAP_SYS_PTRACE over the host's)."""
    done = await run_job(
        target.daemon,
        PTRACE.format(pid=host_process) + f"; cat /proc/{host_process}/environ 2>&1; true",
    )
    assert "ATTACHED" not in done.stdout
    assert "refused" in done.stdout


async def test_ptrace_of_rund_init_fails(target: Target) -> None:
    """Layer: rund-init is not dumpable (it was the host's root before it
    became the namespace's: nothing may attach to it)."""
    done = await run_job(target.daemon, PTRACE.format(pid=1))
    assert "ATTACHED" not in done.stdout
    assert "refused" in done.stdout


async def test_writing_proc_sys_fails(target: Target) -> None:
    """Layers: read-only (/proc/sys is bound read-only), user namespace
    (the host's sysctls belong to the host's root)."""
    # The same value written back: harmless should the test ever fail.
    done = await run_job(
        target.daemon,
        "cat /proc/sys/kernel/pid_max > /tmp/v && cat /tmp/v > /proc/sys/kernel/pid_max "
        "&& echo WRITTEN; true",
    )
    assert "WRITTEN" not in done.stdout


async def test_proc_files_docker_masks_are_masked(target: Target) -> None:
    """Layer: masked /proc (files are the null device: reads are empty and a
    write to /proc/sysrq-trigger goes nowhere)."""
    done = await run_job(
        target.daemon,
        "for f in kcore keys timer_list sched_debug sysrq-trigger; do "
        "test -e /proc/$f && wc -c < /proc/$f; done 2>&1; ls /sys/firmware | wc -l; "
        "test -e /proc/sysrq-trigger && stat -c %t:%T /proc/sysrq-trigger | sed s/1:3/0/; true",
    )
    assert set(done.stdout.split()) <= {"0"}


async def test_moving_out_of_its_cgroup_fails(target: Target) -> None:
    """Layers: cgroup namespace (the job's cgroup is its root /), read-only
    /sys/fs/cgroup, user namespace (the cgroup files are the host's root's)."""
    done = await run_job(
        target.daemon,
        "cat /proc/self/cgroup | grep '^0::'; "
        "echo $$ > /sys/fs/cgroup/cgroup.procs && echo MOVED; "
        "echo $$ > /sys/fs/cgroup/../cgroup.procs && echo MOVED-UP; "
        "grep '^0::' /proc/self/cgroup",
    )
    assert "MOVED" not in done.stdout
    assert done.stdout.split() == ["0::/", "0::/"]
