"""Jobs started through the fork server (ForkServerSpawner): the behaviours
the ``execute`` helper is tested for, plus what the fork server adds: the job
is the daemon's child, the server is restarted after it died, cancellation and
concurrency. Real processes, as root."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from rund_trio.cgroups.discovery import read_location
from rund_trio.cgroups.tree import CgroupOptions, CgroupTree
from rund_trio.errors import InvalidRequest, SpawnError
from rund_trio.isolation.spec import Isolation, Namespaces
from rund_trio.process.base import ProcessSpec
from rund_trio.process.cgrouped import CgroupSpawner
from rund_trio.process.forkserver import ForkServerSpawner
from tests.isolation.conftest import HOST_PROFILE, PATH, Finished, finish
from tests.procs import live_pids, process_is_gone, wait_until_gone

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and mounts need root")

NO_ISOLATION = Isolation.none()
GLIBC_INTERNAL_SIGNALS = (1 << 31) | (1 << 32)  # signals 32 and 33 in a SigIgn mask
JOB = "01HZX3K8Q9V7N2M4P6R8T0W2Y4"


@pytest.fixture
async def spawner() -> AsyncIterator[ForkServerSpawner]:
    spawner = ForkServerSpawner()
    try:
        yield spawner
    finally:
        await spawner.aclose()


async def run_job(
    spawner: ForkServerSpawner,
    *argv: str,
    isolation: Isolation | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    job_id: str = "",
) -> Finished:
    spec = ProcessSpec(
        tuple(argv),
        {"PATH": PATH} if env is None else env,
        cwd,
        job_id,
        isolation=isolation or HOST_PROFILE,
    )
    return await finish(await spawner.spawn(spec))


def _stat_fields(pid: int) -> list[bytes]:
    with open(f"/proc/{pid}/stat", "rb") as stat_file:
        data = stat_file.read()
    return data[data.rindex(b")") + 2 :].split()


def our_children(*, besides: tuple[int | None, ...] = ()) -> list[int]:
    """This process's children, zombies included (an unreaped one is a leak)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in besides:
            continue
        try:
            if int(_stat_fields(int(name))[1]) == os.getpid():
                found.append(int(name))
        except (OSError, ValueError, IndexError):
            pass
    return found


# -- what a job sees -----------------------------------------------------------


async def test_job_is_pid_2_under_rund_init(spawner: ForkServerSpawner) -> None:
    done = await run_job(spawner, "sh", "-c", "echo $$; cat /proc/1/comm")
    assert done.stdout.split() == ["2", "rund-init"]


async def test_ps_lists_only_the_job(spawner: ForkServerSpawner) -> None:
    done = await run_job(spawner, "ps", "-e", "-o", "pid=,comm=")
    assert [line.split() for line in done.stdout.splitlines()] == [["1", "rund-init"], ["2", "ps"]]


async def test_hostname_comes_from_the_job_id(spawner: ForkServerSpawner) -> None:
    done = await run_job(spawner, "hostname", job_id=JOB)
    assert done.stdout == "rund-01hzx3k8q9v7\n"
    assert os.uname().nodename != "rund-01hzx3k8q9v7"


async def test_mount_made_by_job_is_not_visible_on_host(
    spawner: ForkServerSpawner, tmp_path: Path
) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    done = await run_job(spawner, "sh", "-c", f"mount -t tmpfs none {target} && ls {target}")
    assert done.status.exit_code == 0, done.stderr
    assert not os.path.ismount(target)


async def test_isolated_network_has_only_lo(spawner: ForkServerSpawner) -> None:
    done = await run_job(
        spawner, "ls", "/sys/class/net", isolation=Isolation(namespaces=Namespaces(net=True))
    )
    assert done.stdout.split() == ["lo"]


async def test_rootfs_becomes_slash(spawner: ForkServerSpawner, busybox_rootfs: Path) -> None:
    done = await run_job(
        spawner, "sh", "-c", "cat /etc/marker; cat /proc/1/comm",
        isolation=Isolation(rootfs=str(busybox_rootfs)),
    )  # fmt: skip
    assert done.status.exit_code == 0, done.stderr
    assert done.stdout.split() == ["inside", "the", "rootfs", "rund-init"]


async def test_runs_as_given_uid_and_gid(spawner: ForkServerSpawner) -> None:
    done = await run_job(spawner, "sh", "-c", "id -u; id -g; id -G", isolation=Isolation(uid=65534))
    assert done.stdout.split() == ["65534", "65534", "65534"]


async def test_env_and_cwd_reach_the_job(spawner: ForkServerSpawner, tmp_path: Path) -> None:
    done = await run_job(
        spawner, "sh", "-c", 'echo "$GREETING"; pwd',
        env={"PATH": PATH, "GREETING": "hi"}, cwd=str(tmp_path),
    )  # fmt: skip
    assert done.stdout.split() == ["hi", str(tmp_path)]


@pytest.mark.parametrize("isolation", [None, NO_ISOLATION], ids=["isolated", "no-isolation"])
async def test_job_gets_no_extra_fds(
    spawner: ForkServerSpawner, isolation: Isolation | None
) -> None:
    # Above all not the fork server's socket, nor another job's pipes.
    done = await run_job(spawner, "ls", "/proc/self/fd", isolation=isolation)
    assert done.stdout.split() == ["0", "1", "2", "3"]  # 3: ls's own directory fd


async def test_job_stdin_is_dev_null(spawner: ForkServerSpawner) -> None:
    done = await run_job(spawner, "readlink", "/proc/self/fd/0")
    assert done.stdout == "/dev/null\n"


@pytest.mark.parametrize("isolation", [None, NO_ISOLATION], ids=["isolated", "no-isolation"])
async def test_job_starts_with_default_signal_dispositions(
    spawner: ForkServerSpawner, isolation: Isolation | None
) -> None:
    done = await run_job(spawner, "grep", "SigIgn", "/proc/self/status", isolation=isolation)
    ignored = int(done.stdout.split()[1], 16)
    assert ignored & ~GLIBC_INTERNAL_SIGNALS == 0


async def test_job_leads_its_own_session(spawner: ForkServerSpawner) -> None:
    process = await spawner.spawn(ProcessSpec(("sleep", "1000"), {"PATH": PATH}))
    try:
        fields = _stat_fields(process.pid)
        assert int(fields[2]) == int(fields[3]) == process.pid  # process group, session
        assert spawner.server_pid is not None
        assert int(_stat_fields(spawner.server_pid)[3]) != process.pid
    finally:
        process.signal_tree(signal.SIGKILL)
        await finish(process)


# -- how a job ends ------------------------------------------------------------


@pytest.mark.parametrize("isolation", [None, NO_ISOLATION], ids=["isolated", "no-isolation"])
async def test_exit_code_passes_through(
    spawner: ForkServerSpawner, isolation: Isolation | None
) -> None:
    done = await run_job(spawner, "sh", "-c", "exit 3", isolation=isolation)
    assert (done.status.exit_code, done.status.signal) == (3, None)


@pytest.mark.parametrize("isolation", [None, NO_ISOLATION], ids=["isolated", "no-isolation"])
async def test_signal_that_killed_the_job_passes_through(
    spawner: ForkServerSpawner, isolation: Isolation | None
) -> None:
    done = await run_job(spawner, "sh", "-c", "kill -TERM $$", isolation=isolation)
    assert (done.status.exit_code, done.status.signal) == (None, signal.SIGTERM)


async def test_core_dumping_signal_passes_through(spawner: ForkServerSpawner) -> None:
    done = await run_job(spawner, "sh", "-c", "kill -SEGV $$")
    assert done.status.signal == signal.SIGSEGV


async def test_signal_tree_sigterm_ends_a_job_without_handlers(spawner: ForkServerSpawner) -> None:
    process = await spawner.spawn(ProcessSpec(("sleep", "1000"), {"PATH": PATH}))
    process.signal_tree(signal.SIGTERM)
    done = await finish(process)
    assert done.status.signal == signal.SIGTERM


async def test_signal_tree_sigkill_ends_the_whole_namespace(spawner: ForkServerSpawner) -> None:
    process = await spawner.spawn(
        ProcessSpec(("sh", "-c", "trap '' TERM; sleep 1000 & wait"), {"PATH": PATH})
    )
    await trio.sleep(0.2)
    process.signal_tree(signal.SIGTERM)  # ignored by the job
    with trio.move_on_after(0.3):
        await process.wait()
        pytest.fail("the job ended despite ignoring SIGTERM")
    process.signal_tree(signal.SIGKILL)
    done = await finish(process)
    assert done.status.signal == signal.SIGKILL


# -- the job is the daemon's child -----------------------------------------------


@pytest.mark.parametrize("isolation", [None, NO_ISOLATION], ids=["isolated", "no-isolation"])
async def test_job_process_is_the_daemons_child_reaped_with_rusage(
    spawner: ForkServerSpawner, isolation: Isolation | None
) -> None:
    process = await spawner.spawn(
        ProcessSpec(
            ("sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"),
            {"PATH": PATH},
            isolation=isolation,
        )
    )
    assert int(_stat_fields(process.pid)[1]) == os.getpid()
    # Only a parent may wait for a process: this must not raise ECHILD.
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    done = await finish(process)
    assert done.status.exit_code == 0
    # wait4's rusage: the shell's CPU time, reaped through rund-init.
    assert done.status.user_time + done.status.system_time > 0.01
    with pytest.raises(ChildProcessError):  # reaped: gone for good
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG)


async def test_fork_server_has_no_children_but_template_builders_and_stays_out_of_the_way(
    spawner: ForkServerSpawner,
) -> None:
    process = await spawner.spawn(ProcessSpec(("sleep", "1000"), {"PATH": PATH}))
    try:
        server = spawner.server_pid
        assert server is not None
        assert int(_stat_fields(server)[1]) == os.getpid()
        with open(f"/proc/{server}/comm") as comm:
            assert comm.read() == "rund-forkserver\n"
        with open(f"/proc/{server}/task/{server}/children") as children:
            pids = children.read().split()
        names = set()
        for pid in pids:
            with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/comm") as comm:
                names.add(comm.read())
        assert names <= {"rund-template\n"}
    finally:
        process.signal_tree(signal.SIGKILL)
        await finish(process)


async def test_usage_counts_the_jobs_cpu_and_memory(spawner: ForkServerSpawner) -> None:
    process = await spawner.spawn(ProcessSpec(("sh", "-c", "while :; do :; done"), {"PATH": PATH}))
    try:
        await trio.sleep(0.5)
        usage = process.usage()
        assert usage.user_time + usage.system_time > 0.02
        assert 0 < usage.memory_current < 50 * 1024 * 1024
    finally:
        process.signal_tree(signal.SIGKILL)
        await finish(process)


# -- errors ----------------------------------------------------------------------


async def test_missing_program_is_spawn_error_enoent(spawner: ForkServerSpawner) -> None:
    with pytest.raises(SpawnError) as caught:
        await run_job(spawner, "no-such-program-rund")
    assert caught.value.errno == errno.ENOENT
    assert caught.value.reason.startswith("exec: ENOENT")
    assert caught.value.program == "no-such-program-rund"
    assert our_children(besides=(spawner.server_pid,)) == []


async def test_missing_program_without_isolation_is_spawn_error_enoent(
    spawner: ForkServerSpawner,
) -> None:
    with pytest.raises(SpawnError) as caught:
        await run_job(spawner, "/no/such/program", isolation=NO_ISOLATION)
    assert caught.value.errno == errno.ENOENT
    assert our_children(besides=(spawner.server_pid,)) == []


async def test_not_executable_is_spawn_error_eacces(
    spawner: ForkServerSpawner, tmp_path: Path
) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(SpawnError) as caught:
        await run_job(spawner, str(script))
    assert caught.value.errno == errno.EACCES
    assert "EACCES" in caught.value.reason


async def test_setup_failure_names_its_step(spawner: ForkServerSpawner, tmp_path: Path) -> None:
    with pytest.raises(SpawnError) as caught:
        await run_job(spawner, "true", isolation=Isolation(rootfs=str(tmp_path / "missing")))
    assert caught.value.reason.startswith("rootfs: ENOENT")
    with pytest.raises(SpawnError) as caught:
        await run_job(spawner, "true", cwd="/no/such/dir")
    assert caught.value.reason.startswith("chdir: ENOENT")


async def test_invalid_spec_is_rejected_before_anything_starts() -> None:
    spawner = ForkServerSpawner()
    with pytest.raises(InvalidRequest):
        await spawner.spawn(ProcessSpec(("true",), isolation=Isolation(hostname="-bad")))
    assert spawner.server_pid is None
    await spawner.aclose()


async def test_closed_spawner_refuses_and_its_server_is_gone() -> None:
    spawner = ForkServerSpawner()
    await run_job(spawner, "true")
    server = spawner.server_pid
    assert server is not None
    await spawner.aclose()
    with pytest.raises(ChildProcessError):  # exited at end of file, and reaped
        os.waitid(os.P_PID, server, os.WEXITED | os.WNOHANG)
    with pytest.raises(SpawnError) as caught:
        await run_job(spawner, "true")
    assert caught.value.errno == errno.ESHUTDOWN


async def test_a_bad_server_command_is_spawn_error() -> None:
    spawner = ForkServerSpawner(command=["/no/such/python"])
    with pytest.raises(SpawnError) as caught:
        await run_job(spawner, "true")
    assert caught.value.errno == errno.ENOENT
    await spawner.aclose()


async def test_a_server_that_dies_at_start_is_spawn_error() -> None:
    spawner = ForkServerSpawner(command=["/bin/true"])
    with pytest.raises(SpawnError) as caught:
        await run_job(spawner, "true")
    assert caught.value.reason.startswith("forkserver:")
    await spawner.aclose()
    assert our_children() == []


# -- cgroups ---------------------------------------------------------------------


async def test_cgroup_is_joined_before_the_job_runs(
    spawner: ForkServerSpawner, host_cgroup: Path
) -> None:
    leaf = host_cgroup / "job"
    leaf.mkdir()
    done = await run_job(
        spawner,
        "cat",
        "/proc/self/cgroup",
        isolation=Isolation(cgroup_dir=str(leaf), contained=False),
    )
    mount_point = read_location()
    assert mount_point is not None
    relative = "/" + str(leaf.relative_to(mount_point.mount.mount_point))
    assert f"0::{relative}" in done.stdout.splitlines()


async def test_under_cgroup_spawner_the_whole_job_is_in_its_leaf(
    spawner: ForkServerSpawner, host_cgroup: Path
) -> None:
    tree = CgroupTree.discover(CgroupOptions(root=host_cgroup, io_devices=()))
    try:
        cgrouped = CgroupSpawner(spawner, tree)
        process = await cgrouped.spawn(
            ProcessSpec(("sh", "-c", "sleep 1000 & sleep 1000"), {"PATH": PATH}, job_id=JOB)
        )
        try:
            await trio.sleep(0.2)
            leaf = next(path for path in host_cgroup.rglob(f"*{JOB}*") if path.is_dir())
            pids = {int(pid) for pid in (leaf / "cgroup.procs").read_text().split()}
            # rund-execute, rund-init, sh and its two sleeps; not the fork server.
            assert process.pid in pids
            assert len(pids) == 5
            assert spawner.server_pid not in pids
        finally:
            process.signal_tree(signal.SIGKILL)
            await process.wait()
            await process.aclose()
        assert not leaf.exists()
    finally:
        tree.close()


async def test_unjoinable_cgroup_is_spawn_error_naming_it(
    spawner: ForkServerSpawner, tmp_path: Path
) -> None:
    with pytest.raises(SpawnError) as caught:
        await run_job(spawner, "true", isolation=Isolation(cgroup_dir=str(tmp_path / "no-cgroup")))
    assert caught.value.reason.startswith("cgroup: ENOENT")


# -- the server's life -------------------------------------------------------------


async def _wait_gone(pid: int) -> None:
    with trio.fail_after(5):
        while not process_is_gone(pid):
            await trio.sleep(0.01)


@pytest.mark.parametrize("settle", [True, False], ids=["after-it-died", "while-it-dies"])
async def test_server_is_restarted_after_being_killed(
    spawner: ForkServerSpawner, settle: bool
) -> None:
    assert (await run_job(spawner, "true")).status.exit_code == 0
    first = spawner.server_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    if settle:
        await _wait_gone(first)
    done = await run_job(spawner, "sh", "-c", "echo $$")
    assert done.stdout == "2\n"
    assert spawner.server_pid not in (None, first)
    with pytest.raises(ChildProcessError):  # the dead server was reaped
        os.waitid(os.P_PID, first, os.WEXITED | os.WNOHANG)


async def test_jobs_outlive_a_killed_server(spawner: ForkServerSpawner) -> None:
    process = await spawner.spawn(ProcessSpec(("sh", "-c", "sleep 0.5; echo done"), {"PATH": PATH}))
    assert spawner.server_pid is not None
    os.kill(spawner.server_pid, signal.SIGKILL)
    done = await finish(process)
    assert (done.status.exit_code, done.stdout) == (0, "done\n")


async def test_server_exits_when_the_daemon_end_closes(spawner: ForkServerSpawner) -> None:
    await run_job(spawner, "true")
    server = spawner.server_pid
    assert server is not None
    await spawner.aclose()
    assert process_is_gone(server)


# -- cancellation and concurrency -------------------------------------------------


@pytest.mark.parametrize("delay", [0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05])
async def test_cancelled_spawn_leaves_nothing_behind(
    spawner: ForkServerSpawner, delay: float
) -> None:
    await run_job(spawner, "true")  # the server is up: cancel during the job's start
    marker = f"4243.{int(delay * 10000)}"
    process = None
    with trio.move_on_after(delay):
        process = await spawner.spawn(ProcessSpec(("sleep", marker), {"PATH": PATH}))
    if process is not None:  # the spawn finished first: the process is ours to end
        process.signal_tree(signal.SIGKILL)
        await finish(process)
    assert our_children(besides=(spawner.server_pid,)) == []
    # The job's PID namespace ends with its rund-init, which the kernel kills
    # (parent death signal) as the reaped helper exits: asynchronously, so
    # what is left of it is awaited, not looked for once. A survivor would
    # time out here.
    with trio.fail_after(10):
        for pid in live_pids(cmdline=b"sleep\0" + marker.encode() + b"\0"):
            await wait_until_gone(pid)


async def test_cancelled_while_queued_for_the_server(spawner: ForkServerSpawner) -> None:
    async def start(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await run_job(spawner, "true")

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            await nursery.start(start)
        nursery.cancel_scope.cancel()
    assert our_children(besides=(spawner.server_pid,)) == []
    assert (await run_job(spawner, "sh", "-c", "echo ok")).stdout == "ok\n"


async def test_200_concurrent_spawns_all_work(spawner: ForkServerSpawner) -> None:
    results: dict[int, Finished] = {}

    async def one(index: int) -> None:
        results[index] = await run_job(spawner, "sh", "-c", f"echo $$ {index}; exit {index % 7}")

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for index in range(200):
                nursery.start_soon(one, index)
    assert sorted(results) == list(range(200))
    for index, done in results.items():
        assert done.stdout == f"2 {index}\n", done.stderr
        assert done.status.exit_code == index % 7
    assert our_children(besides=(spawner.server_pid,)) == []
