"""A contained job's terminal as the daemon holds it: the master comes later,
through the socket the job's ``rund-init`` sends it over (played here by the
test, with a pty of the test's own)."""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
import termios
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from rund_trio.errors import FailedPrecondition
from rund_trio.jobs.spec import Terminal
from rund_trio.jobs.stdio import JobStdio, TerminalMaster, open_stdio


def contained_stdio(rows: int = 24, cols: int = 80) -> tuple[JobStdio, socket.socket]:
    """The daemon's side of a contained ``-it`` job and the job's end of the socket."""
    stdio, ends = open_stdio(True, Terminal(rows, cols), own_devpts=True)
    assert stdio is not None and ends.terminal is not None and ends.stdin is None
    return stdio, socket.socket(fileno=ends.terminal)


def terminal_of(stdio: JobStdio) -> TerminalMaster:
    assert stdio.terminal is not None
    return stdio.terminal


def send_master(job_end: socket.socket) -> int:
    """What ``rund-init`` does: the window size read, a new pty, its master
    sent back; the slave."""
    job_end.recv(64)
    master, slave = os.openpty()
    job_end.sendmsg([b"t"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))])
    os.close(master)
    return slave


def window_size(fd: int) -> tuple[int, int]:
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
    return rows, cols


async def test_the_jobs_end_is_a_socket_whose_first_packet_is_the_window_size() -> None:
    stdio, job_end = contained_stdio(33, 101)
    with job_end:
        assert job_end.type == socket.SOCK_SEQPACKET
        assert job_end.recv(64) == struct.pack("HHHH", 33, 101, 0, 0)
        assert not job_end.get_inheritable()
    await stdio.aclose()


async def test_the_master_sent_back_carries_the_jobs_output_and_input() -> None:
    stdio, job_end = contained_stdio()
    with job_end:
        slave = send_master(job_end)
    try:
        tty = termios.tcgetattr(slave)
        tty[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, tty)
        os.write(slave, b"out\n")
        with trio.fail_after(5):
            assert await terminal_of(stdio).receive_some() == b"out\r\n"
            assert await stdio.feed(chunks(b"typed\n")) == 6
        assert os.read(slave, 64) == b"typed\n"
    finally:
        os.close(slave)
        await stdio.aclose()


async def test_the_received_master_is_not_inherited_by_other_jobs() -> None:
    stdio, job_end = contained_stdio()
    with job_end:
        slave = send_master(job_end)
    try:
        os.write(slave, b"x")
        with trio.fail_after(5):
            await terminal_of(stdio).receive_some()
        fd = terminal_of(stdio)._fd
        assert fd is not None and fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    finally:
        os.close(slave)
        await stdio.aclose()


async def test_a_resize_before_the_master_came_is_applied_when_it_comes() -> None:
    stdio, job_end = contained_stdio(24, 80)
    terminal_of(stdio).resize(40, 120)
    with job_end:
        slave = send_master(job_end)
    try:
        os.write(slave, b"x")
        with trio.fail_after(5):
            await terminal_of(stdio).receive_some()
        assert window_size(slave) == (40, 120)
        terminal_of(stdio).resize(50, 132)
        assert window_size(slave) == (50, 132)
    finally:
        os.close(slave)
        await stdio.aclose()


async def test_packets_without_an_fd_are_skipped() -> None:
    stdio, job_end = contained_stdio()
    with job_end:
        job_end.send(b"a stray line on the helper's stderr\n")
        slave = send_master(job_end)
    try:
        os.write(slave, b"x")
        with trio.fail_after(5):
            assert await terminal_of(stdio).receive_some() == b"x"
    finally:
        os.close(slave)
        await stdio.aclose()


async def test_a_job_that_ended_without_sending_a_master_has_a_terminal_at_end_of_file() -> None:
    stdio, job_end = contained_stdio()
    job_end.recv(64)
    job_end.close()  # rund-init failed before its terminal (the helper reports why)
    with trio.fail_after(5):
        assert await terminal_of(stdio).receive_some() == b""
        with pytest.raises(FailedPrecondition, match="the job ended"):
            await stdio.feed(chunks(b"lost\n"))
    await stdio.aclose()


async def test_a_job_that_ended_before_reading_the_window_size_has_no_terminal() -> None:
    stdio, job_end = contained_stdio()
    job_end.close()  # unread data: the daemon's end is reset
    with trio.fail_after(5):
        assert await terminal_of(stdio).receive_some() == b""
    await stdio.aclose()


async def test_closing_before_the_master_came_ends_a_waiting_reader() -> None:
    stdio, job_end = contained_stdio()
    received: list[bytes] = []
    with job_end:
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                received.append(await terminal_of(stdio).receive_some())

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            await stdio.aclose()
    assert received == [b""]


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
