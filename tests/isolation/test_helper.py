"""Jobs started through the ``execute`` helper (HelperSpawner), observed from
inside and from the host: real processes, as root."""

from __future__ import annotations

import errno
import os
import signal
import stat
from pathlib import Path

import pytest
import trio

from rund_trio.errors import SpawnError
from rund_trio.isolation.spec import Isolation, Namespaces
from rund_trio.process.base import ProcessSpec
from rund_trio.process.helper import HelperSpawner, cli_helper_command
from tests.isolation.conftest import PATH, finish, run_job

NO_ISOLATION = Isolation.none()
GLIBC_INTERNAL_SIGNALS = (1 << 31) | (1 << 32)  # signals 32 and 33 in a SigIgn mask


async def test_job_sees_only_its_own_processes() -> None:
    done = await run_job("sh", "-c", "ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '")
    # 1 rund-init, 2 sh, then the pipeline's processes: nothing from the host.
    pids = [int(pid) for pid in done.stdout.split()]
    assert pids[:2] == [1, 2]
    assert max(pids) < 10


async def test_job_is_pid_2_under_rund_init() -> None:
    done = await run_job("sh", "-c", "echo $$; cat /proc/1/comm")
    assert done.stdout.split() == ["2", "rund-init"]


async def test_ps_lists_only_the_job() -> None:
    done = await run_job("ps", "-e", "-o", "pid=,comm=")
    assert [line.split() for line in done.stdout.splitlines()] == [
        ["1", "rund-init"],
        ["2", "ps"],
    ]


async def test_hostname_is_the_jobs() -> None:
    done = await run_job("hostname", isolation=Isolation(hostname="rund-01hzx3k4m5n6"))
    assert done.stdout == "rund-01hzx3k4m5n6\n"
    assert os.uname().nodename != "rund-01hzx3k4m5n6"


async def test_mount_made_by_job_is_not_visible_on_host(tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    done = await run_job(
        "sh", "-c", f"mount -t tmpfs none {target} && touch {target}/inside && ls {target}"
    )
    assert done.status.exit_code == 0, done.stderr
    assert done.stdout == "inside\n"
    assert not os.path.ismount(target)
    assert list(target.iterdir()) == []


async def test_isolated_network_has_only_lo_and_it_is_up() -> None:
    done = await run_job(
        "sh",
        "-c",
        "ls /sys/class/net; cat /sys/class/net/lo/flags",
        isolation=Isolation(namespaces=Namespaces(net=True)),
    )
    interfaces, flags = done.stdout.split()
    assert interfaces == "lo"
    assert int(flags, 16) & 0x1  # IFF_UP


async def test_isolated_network_can_use_loopback() -> None:
    code = (
        "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen();"
        "c = socket.create_connection(s.getsockname()); print('connected')"
    )
    done = await run_job(
        "python3", "-c", code, isolation=Isolation(namespaces=Namespaces(net=True))
    )
    assert done.stdout == "connected\n", done.stderr


async def test_host_network_by_default() -> None:
    host = sorted(os.listdir("/sys/class/net"))
    done = await run_job("ls", "/sys/class/net")
    assert done.stdout.split() == host


async def test_rootfs_becomes_slash(busybox_rootfs: Path) -> None:
    done = await run_job(
        "sh", "-c", "cat /etc/marker; ls /", isolation=Isolation(rootfs=str(busybox_rootfs))
    )
    assert done.status.exit_code == 0, done.stderr
    lines = done.stdout.split()
    assert lines[:3] == ["inside", "the", "rootfs"]
    assert {"bin", "dev", "etc", "proc", "tmp"} <= set(lines[3:])


async def test_host_files_are_unreachable_from_rootfs(busybox_rootfs: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host only\n")
    done = await run_job(
        "sh",
        "-c",
        f"cat {secret} || echo unreachable; ls /usr 2>/dev/null || echo no-usr",
        isolation=Isolation(rootfs=str(busybox_rootfs)),
    )
    assert done.stdout.split() == ["unreachable", "no-usr"]


async def test_rootfs_has_proc_dev_and_tmp(busybox_rootfs: Path) -> None:
    done = await run_job(
        "sh",
        "-c",
        "echo x > /dev/null && ls /dev && touch /tmp/f && ls /proc/1/comm && cat /proc/1/comm",
        isolation=Isolation(rootfs=str(busybox_rootfs)),
    )
    assert done.status.exit_code == 0, done.stderr
    names = done.stdout.split()
    assert {"null", "zero", "random", "urandom", "tty", "fd", "shm"} <= set(names)
    assert names[-1] == "rund-init"
    assert not (busybox_rootfs / "tmp" / "f").exists()  # /tmp is a tmpfs


async def test_rootfs_does_not_leave_mounts_on_host(busybox_rootfs: Path) -> None:
    await run_job("true", isolation=Isolation(rootfs=str(busybox_rootfs)))
    with open("/proc/self/mountinfo") as mountinfo:
        assert str(busybox_rootfs) not in mountinfo.read()


async def test_orphaned_grandchildren_die_with_the_job() -> None:
    marker = "4242.25"  # an argument no other process on the host has
    done = await run_job("sh", "-c", f"sleep {marker} & echo started")
    assert done.stdout == "started\n"
    # finish() read stdout to its end: the orphan holding it is already gone.
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                assert cmdline.read() != b"sleep\0" + marker.encode() + b"\0"
        except FileNotFoundError:
            pass


@pytest.mark.parametrize("isolation", [None, NO_ISOLATION], ids=["isolated", "no-isolation"])
async def test_exit_code_passes_through(isolation: Isolation | None) -> None:
    done = await run_job("sh", "-c", "exit 3", isolation=isolation)
    assert (done.status.exit_code, done.status.signal) == (3, None)


@pytest.mark.parametrize("isolation", [None, NO_ISOLATION], ids=["isolated", "no-isolation"])
async def test_signal_that_killed_the_job_passes_through(isolation: Isolation | None) -> None:
    done = await run_job("sh", "-c", "kill -TERM $$", isolation=isolation)
    assert (done.status.exit_code, done.status.signal) == (None, signal.SIGTERM)


async def test_core_dumping_signal_passes_through() -> None:
    done = await run_job("sh", "-c", "kill -SEGV $$")
    assert done.status.signal == signal.SIGSEGV


async def test_signal_tree_sigterm_ends_a_job_without_handlers() -> None:
    process = await HelperSpawner().spawn(ProcessSpec(("sleep", "1000"), {"PATH": PATH}))
    process.signal_tree(signal.SIGTERM)
    done = await finish(process)
    assert done.status.signal == signal.SIGTERM


async def test_signal_tree_sigkill_ends_the_whole_namespace() -> None:
    process = await HelperSpawner().spawn(
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


async def test_missing_program_is_spawn_error_enoent() -> None:
    with pytest.raises(SpawnError) as caught:
        await run_job("no-such-program-rund")
    assert caught.value.errno == errno.ENOENT
    assert caught.value.reason.startswith("exec: ENOENT")
    assert caught.value.program == "no-such-program-rund"


async def test_missing_program_without_isolation_is_spawn_error_enoent() -> None:
    with pytest.raises(SpawnError) as caught:
        await run_job("/no/such/program", isolation=NO_ISOLATION)
    assert caught.value.errno == errno.ENOENT


async def test_not_executable_is_spawn_error_eacces(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(SpawnError) as caught:
        await run_job(str(script))
    assert caught.value.errno == errno.EACCES
    assert "EACCES" in caught.value.reason


async def test_setup_failure_names_its_step(tmp_path: Path) -> None:
    with pytest.raises(SpawnError) as caught:
        await run_job("true", isolation=Isolation(rootfs=str(tmp_path / "missing")))
    assert caught.value.errno == errno.ENOENT
    assert caught.value.reason.startswith("rootfs: ENOENT")


async def test_runs_as_given_uid_and_gid() -> None:
    done = await run_job("sh", "-c", "id -u; id -g; id -G", isolation=Isolation(uid=65534))
    assert done.stdout.split() == ["65534", "65534", "65534"]


async def test_bad_cwd_is_spawn_error_naming_chdir() -> None:
    with pytest.raises(SpawnError) as caught:
        await run_job("true", cwd="/no/such/dir")
    assert caught.value.reason.startswith("chdir: ENOENT")


async def test_env_and_cwd_reach_the_job(tmp_path: Path) -> None:
    done = await run_job(
        "sh", "-c", 'echo "$GREETING"; pwd', env={"PATH": PATH, "GREETING": "hi"}, cwd=str(tmp_path)
    )
    assert done.stdout.split() == ["hi", str(tmp_path)]


async def test_job_starts_with_default_signal_dispositions() -> None:
    # Python ignores SIGPIPE; the job must not inherit that (nor SIG_IGN from
    # the helper): "SigIgn" of the job's status is zero but for signals 32 and
    # 33, the C library's own, which glibc's posix_spawn leaves ignored.
    done = await run_job("grep", "SigIgn", "/proc/self/status")
    ignored = int(done.stdout.split()[1], 16)
    assert ignored & ~GLIBC_INTERNAL_SIGNALS == 0


async def test_job_gets_no_extra_fds() -> None:
    done = await run_job("ls", "/proc/self/fd")
    assert done.stdout.split() == ["0", "1", "2", "3"]  # 3: ls's own directory fd


async def test_cgroup_is_joined_before_the_job_runs() -> None:
    root = "/sys/fs/cgroup"
    if not os.path.exists(f"{root}/cgroup.subtree_control"):
        root = "/sys/fs/cgroup/unified"
    if not os.path.exists(f"{root}/cgroup.procs"):
        pytest.skip("no cgroup v2 hierarchy mounted")
    leaf = f"{root}/rund-isolation-test-{os.getpid()}"
    os.mkdir(leaf)
    try:
        done = await run_job(
            "cat", "/proc/self/cgroup", isolation=Isolation(cgroup_dir=leaf, contained=False)
        )
        assert f"0::/{os.path.basename(leaf)}" in done.stdout.splitlines()
    finally:
        os.rmdir(leaf)


async def test_usage_counts_the_jobs_cpu_and_memory() -> None:
    process = await HelperSpawner().spawn(
        ProcessSpec(("sh", "-c", "while :; do :; done"), {"PATH": PATH})
    )
    try:
        await trio.sleep(0.5)
        usage = process.usage()
        assert usage.user_time + usage.system_time > 0.02
        assert 0 < usage.memory_current < 50 * 1024 * 1024
        assert usage.memory_peak >= usage.memory_current
    finally:
        process.signal_tree(signal.SIGKILL)
        await finish(process)


async def test_cancelled_spawn_leaves_no_helper_behind() -> None:
    before = set(os.listdir("/proc"))
    with trio.move_on_after(0.001):
        await HelperSpawner().spawn(ProcessSpec(("sleep", "1000"), {"PATH": PATH}))
        pytest.skip("the spawn finished before the deadline")
    children = [
        pid
        for pid in set(os.listdir("/proc")) - before
        if pid.isdigit() and _ppid(pid) == os.getpid()
    ]
    assert children == []


def _ppid(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            data = stat_file.read()
    except OSError:
        return 0
    return int(data[data.rindex(b")") + 2 :].split()[1])


async def test_cli_subcommand_runs_the_helper() -> None:
    spawner = HelperSpawner(command=cli_helper_command())
    done = await run_job("sh", "-c", "echo $$", spawner=spawner)
    assert done.stdout == "2\n"


CONTAINED = Isolation(contained=True)


def proc_status(text: str) -> dict[str, str]:
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())}


async def test_a_contained_job_through_the_helper_is_confined_as_through_the_fork_server() -> None:
    done = await run_job("cat", "/proc/self/status", isolation=CONTAINED)
    status = proc_status(done.stdout)
    assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "2")
    assert int(status["CapBnd"], 16) == int(status["CapEff"], 16) == 0x800401FB
    assert int(status["CapAmb"], 16) == 0


async def test_a_contained_job_in_a_root_filesystem_is_confined(busybox_rootfs: Path) -> None:
    (busybox_rootfs / "proc").mkdir(exist_ok=True)
    isolation = Isolation(rootfs=str(busybox_rootfs), contained=True)
    done = await run_job("cat", "/proc/self/status", isolation=isolation)
    assert proc_status(done.stdout)["Seccomp"] == "2", done.stderr


async def test_the_program_pid_is_the_jobs_program_under_rund_init() -> None:
    spec = ProcessSpec(("sleep", "1000"), {"PATH": PATH})
    process = await HelperSpawner().spawn(spec)
    try:
        assert process.program_pid != process.pid
        with trio.fail_after(10):
            while Path(f"/proc/{process.program_pid}/cmdline").read_bytes() != b"sleep\x001000\x00":
                await trio.sleep(0.01)
        os.kill(process.program_pid, signal.SIGKILL)
        done = await finish(process)
    finally:
        process.signal_tree(signal.SIGKILL)
    assert (done.status.signal, done.status.exit_code) == (signal.SIGKILL, None)
