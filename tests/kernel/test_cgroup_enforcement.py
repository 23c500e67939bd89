"""A real daemon on a real cgroup v2 kernel: the kernel enforces each job's limits.

Run inside the VM by ``scripts/test-kernel.sh``; skipped elsewhere. Each test
drives a daemon as a client would — ``RundClient`` over mutual TLS on loopback
— with the daemon's defaults (jobs in new PID, mount, UTS and IPC namespaces,
each in a cgroup leaf of its own), and reads cgroupfs and /proc only to check
what the daemon did. ``print`` lines carry the measured numbers (``-rP`` or a
failure's captured output shows them).
"""

from __future__ import annotations

import errno
import signal
from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.cgroups.devices import IoDevice
from rund_trio.cgroups.stats import parse_flat_keyed
from rund_trio.cgroups.tree import CgroupOptions
from rund_trio.jobs.isolation_policy import IsolationPolicy, Profile
from tests.conftest import Daemon, Pki
from tests.kernel.conftest import DAEMON_PIDS_MAX
from tests.kernel.daemon import (
    SLOW,
    ForkServer,
    cgroup_pids,
    comm,
    cpu_seconds,
    daemon_process,
    is_alive,
    job_leaves,
    proc_stat,
    read_output_until,
    seconds,
    start_kernel_daemon,
    start_request,
    wait_job_done,
)

pytestmark = pytest.mark.kernel

MiB = 1 << 20


async def test_a_job_over_its_memory_limit_is_oom_killed_and_status_says_so(
    kernel_daemon: Daemon,
) -> None:
    limit = 20 * MiB
    async with kernel_daemon.client() as rund:
        with trio.fail_after(SLOW):
            job_id = await rund.start(
                start_request(
                    "python3", "-S", "-c", "b = bytearray(100 << 20)", max_memory_usage=limit
                )
            )
            _out, err, status = await wait_job_done(rund, job_id)
    print(
        f"OOM: state {pb.JobState.Name(status.state)} signal {status.signal.value} "
        f"oom_killed {status.oom_killed} memory_peak {status.memory_peak} "
        f"({status.memory_peak / limit:.1%} of the limit); stderr {err!r}"
    )
    assert status.state == pb.JOB_STATE_KILLED
    assert status.killed and not status.stopped
    assert status.signal.value == signal.SIGKILL and status.signal_name == "SIGKILL"
    assert not status.HasField("exit_code")
    assert status.oom_killed
    assert 0.9 * limit <= status.memory_peak <= limit


async def test_a_busy_loop_gets_no_more_cpu_than_its_bandwidth(kernel_daemon: Daemon) -> None:
    async with kernel_daemon.client() as rund:
        with trio.fail_after(SLOW):
            job_id = await rund.start(
                start_request("sh", "-c", "echo go; while :; do :; done", max_cpu_bandwidth=20000)
            )
            await read_output_until(rund, job_id, b"go")
            # Each Status is a snapshot taken somewhere between its request and
            # its reply: time the window from the midpoints.
            t0 = trio.current_time()
            before = await rund.status(job_id)
            t1 = trio.current_time()
            await trio.sleep(2.5)  # the measurement window itself, not a wait for an event
            t2 = trio.current_time()
            after = await rund.status(job_id)
            t3 = trio.current_time()
            stopped = await rund.stop(job_id)
    window = (t2 + t3) / 2 - (t0 + t1) / 2
    used = cpu_seconds(after) - cpu_seconds(before)
    share = used / window
    print(
        f"CPU at max_cpu_bandwidth 20000: {used:.3f} s of CPU in {window:.3f} s = {share:.1%} "
        f"(Status round trips {t1 - t0:.3f} s, {t3 - t2:.3f} s); throttled "
        f"{after.cpu_throttled_periods} periods, {seconds(after.cpu_throttled_time):.3f} s"
    )
    assert 0.10 <= share <= 0.25
    assert after.cpu_throttled_periods > 0
    assert seconds(after.cpu_throttled_time) > 0
    assert stopped.stopped and stopped.cpu_throttled_periods >= after.cpu_throttled_periods


async def test_direct_reads_take_as_long_as_the_read_bandwidth_implies(
    host_kernel_daemon: Daemon, disk: tuple[Path, IoDevice]
) -> None:
    path, _device = disk
    dd = ("dd", f"if={path}", "of=/dev/null", "bs=64k", "count=64", "iflag=direct")  # 4 MiB
    async with host_kernel_daemon.client() as rund:
        with trio.fail_after(SLOW):
            free_id = await rund.start(start_request(*dd))
            _out, free_err, free = await wait_job_done(rund, free_id)
            limited_id = await rund.start(start_request(*dd, max_rbps=MiB))
            _out, limited_err, limited = await wait_job_done(rund, limited_id)
    # The daemon's own clock: from the program running to its process reaped.
    free_s = seconds(free.ended_at) - seconds(free.started_at)
    limited_s = seconds(limited.ended_at) - seconds(limited.started_at)
    print(
        f"4 MiB of direct reads from {path}: {free_s:.2f} s unlimited, {limited_s:.2f} s at "
        f"max_rbps 1 MiB/s; io_read_bytes {free.io_read_bytes} / {limited.io_read_bytes}"
    )
    assert free.exit_code.value == 0, free_err
    assert limited.exit_code.value == 0, limited_err
    assert 3.0 <= limited_s <= 8.0
    assert free_s < limited_s / 2
    assert limited.io_read_bytes >= 4 * MiB


FORK_UNTIL_REFUSED = """
import os, sys
children = 0
while True:
    try:
        pid = os.fork()
    except OSError as error:
        print(children, error.errno, flush=True)
        break
    if pid == 0:
        os.pause()
        os._exit(0)
    children += 1
os.pause()
"""


async def test_a_fork_bomb_stops_at_pids_max(
    kernel_daemon: Daemon, daemon_cgroup_root: Path
) -> None:
    async with kernel_daemon.client() as rund:
        with trio.fail_after(SLOW):
            job_id = await rund.start(start_request("python3", "-S", "-c", FORK_UNTIL_REFUSED))
            leaf = daemon_cgroup_root / job_id
            out = await read_output_until(rund, job_id, b"\n")
            children, error = (int(word) for word in out.split())
            current = int((leaf / "pids.current").read_text())
            in_leaf = cgroup_pids(leaf)
            events = parse_flat_keyed((leaf / "pids.events").read_text())
            stopped = await rund.stop(job_id)
    print(
        f"fork bomb under pids.max {DAEMON_PIDS_MAX}: {children} children before "
        f"{errno.errorcode[error]}; pids.current {current}, {len(in_leaf)} pids in the leaf, "
        f"pids.events max {events.get('max')}"
    )
    assert not leaf.exists()
    assert error == errno.EAGAIN
    assert current == DAEMON_PIDS_MAX and len(in_leaf) <= current
    # The helper, rund-init and python itself, then its children up to the cap.
    assert children == DAEMON_PIDS_MAX - 3
    assert events["max"] >= 1
    assert stopped.stopped and stopped.signal.value == signal.SIGKILL
    assert not any(is_alive(pid) for pid in in_leaf)


# Three subshells with two sleeps each, and one sleep that left the session
# (setsid): each says "up" once it has started, and so does the job itself.
TREE = (
    "for i in 1 2 3; do (sleep 1000 & sleep 1000 & echo up; wait) & done; "
    "setsid sh -c 'echo up; exec sleep 1000' & "
    "echo up; wait"
)


@pytest.mark.parametrize(
    "isolation",
    [
        pytest.param(None, id="namespaces"),
        pytest.param(
            IsolationPolicy(namespaces=False, default_profile=Profile.HOST), id="no-namespaces"
        ),
    ],
)
async def test_stop_leaves_no_process_of_a_tree_that_forked_and_setsid(
    nursery: trio.Nursery,
    pki: Pki,
    tmp_path: Path,
    daemon_cgroup_root: Path,
    isolation: IsolationPolicy | None,
) -> None:
    options = CgroupOptions(root=daemon_cgroup_root, io_devices=(), pids_max=DAEMON_PIDS_MAX)
    overrides = {} if isolation is None else {"isolation": isolation}
    daemon = await start_kernel_daemon(nursery, pki, tmp_path, options, **overrides)
    async with daemon.client() as rund:
        with trio.fail_after(SLOW):
            job_id = await rund.start(start_request("sh", "-c", TREE))
            leaf = daemon_cgroup_root / job_id
            await read_output_until(rund, job_id, b"up", 5)
            main_pid = (await rund.status(job_id)).pid
            tree = cgroup_pids(leaf)
            name = {pid: comm(pid) for pid in tree}
            session = {pid: int((proc_stat(pid) or ["0"] * 4)[3]) for pid in tree}
            status = await rund.stop(job_id)
    print(f"the tree before Stop: {len(tree)} processes {sorted(name.items())}, sessions {session}")
    assert main_pid in tree
    sleeps = [pid for pid in tree if name[pid] == "sleep"]
    assert len(sleeps) == 7
    escaped = [pid for pid in sleeps if session[pid] == pid]  # setsid: a session of its own
    assert len(escaped) == 1
    assert status.stopped and status.signal.value == signal.SIGKILL
    assert not leaf.exists()
    alive = [pid for pid in tree if is_alive(pid)]
    assert alive == []


async def test_a_jobs_cgroup_is_removed_when_the_job_ends_by_itself(
    kernel_daemon: Daemon, daemon_cgroup_root: Path
) -> None:
    async with kernel_daemon.client() as rund:
        with trio.fail_after(SLOW):
            job_id = await rund.start(start_request("cat", "/proc/self/cgroup"))
            out, _err, status = await wait_job_done(rund, job_id)
    leaf = daemon_cgroup_root / job_id
    assert out.decode() == "0::/\n"  # a contained job's cgroup namespace: its leaf is its /
    assert status.state == pb.JOB_STATE_EXITED and status.exit_code.value == 0
    assert not leaf.exists()
    assert job_leaves(daemon_cgroup_root) == []


async def test_stale_cgroups_are_cleaned_when_a_killed_daemon_starts_again(
    fork_server: ForkServer, pki: Pki, tmp_path: Path, daemon_cgroup_root: Path
) -> None:
    with trio.fail_after(SLOW):
        # Without namespaces: the job's own process dies with the daemon
        # (PR_SET_PDEATHSIG), but a child of it can outlive them both.
        async with daemon_process(
            fork_server,
            pki,
            daemon_cgroup_root,
            tmp_path / "state1",
            "--no-namespaces",
            "--default-profile",
            "host",
        ) as first:
            async with first.client() as rund:
                # "started" once the child runs sleep (not before its exec)
                job_id = await rund.start(
                    start_request(
                        "sh",
                        "-c",
                        'sleep 1000 & until [ "$(cat /proc/$!/comm)" = sleep ]; do :; done; '
                        "echo started; wait",
                    )
                )
                await read_output_until(rund, job_id, b"started")
            leaf = daemon_cgroup_root / job_id
            sleeps = [pid for pid in cgroup_pids(leaf) if comm(pid) == "sleep"]
            first.send_signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
        # The daemon is gone; its job's child is not.
        assert len(sleeps) == 1 and is_alive(sleeps[0])
        assert (leaf / "cgroup.procs").read_text().split()
        assert job_leaves(daemon_cgroup_root) == [job_id]

        async with daemon_process(
            fork_server, pki, daemon_cgroup_root, tmp_path / "state2"
        ) as second:
            # Listening: start-up, the stale leaves' removal included, is over.
            assert not leaf.exists()
            assert not is_alive(sleeps[0])
            assert "removed 1 job cgroups left by an earlier daemon" in second.log_text()
            second.send_signal(signal.SIGTERM)
            assert await second.wait() == 0
    assert not daemon_cgroup_root.exists()  # a clean shutdown leaves no subtree either
