"""Parsing cgroup accounting files."""

from __future__ import annotations

from pathlib import Path

from rund_trio.cgroups.stats import (
    CgroupStats,
    parse_flat_keyed,
    parse_io_stat,
    parse_single_value,
    read_stats,
)

CPU_STAT = """\
usage_usec 2500000
user_usec 2000000
system_usec 500000
core_sched.force_idle_usec 0
nr_periods 30
nr_throttled 25
throttled_usec 1900000
nr_bursts 0
burst_usec 0
"""
IO_STAT = """\
254:0 rbytes=4194304 wbytes=8192 rios=64 wios=2 dbytes=0 dios=0
8:0 rbytes=1000 wbytes=24 rios=1 wios=1 dbytes=0 dios=0
"""
MEMORY_EVENTS = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n"


def test_parsers() -> None:
    cpu = parse_flat_keyed(CPU_STAT)
    assert cpu["usage_usec"] == 2500000 and cpu["nr_throttled"] == 25
    assert parse_io_stat(IO_STAT) == {
        "rbytes": 4195304,
        "wbytes": 8216,
        "rios": 65,
        "wios": 3,
        "dbytes": 0,
        "dios": 0,
    }
    assert parse_io_stat("") == {}
    assert parse_single_value("123\n") == 123
    assert parse_single_value("max\n") is None
    assert parse_flat_keyed("bad line here\nx y\nok 1\n") == {"ok": 1}


def test_read_stats_full(tmp_path: Path) -> None:
    (tmp_path / "cpu.stat").write_text(CPU_STAT)
    (tmp_path / "memory.current").write_text("1048576\n")
    (tmp_path / "memory.peak").write_text("2097152\n")
    (tmp_path / "memory.events").write_text(MEMORY_EVENTS)
    (tmp_path / "pids.current").write_text("3\n")
    (tmp_path / "io.stat").write_text(IO_STAT)
    s = read_stats(tmp_path)
    assert s == CgroupStats(
        cpu_usage_usec=2500000,
        cpu_user_usec=2000000,
        cpu_system_usec=500000,
        cpu_nr_throttled=25,
        cpu_throttled_usec=1900000,
        memory_current=1048576,
        memory_peak=2097152,
        memory_oom_kills=1,
        pids_current=3,
        io_read_bytes=4195304,
        io_write_bytes=8216,
    )
    assert s.user_seconds == 2.0 and s.system_seconds == 0.5


def test_read_stats_without_controllers(tmp_path: Path) -> None:
    """A plain cgroup2 leaf (hybrid host): only cpu.stat's basic keys."""
    (tmp_path / "cpu.stat").write_text("usage_usec 10\nuser_usec 7\nsystem_usec 3\n")
    s = read_stats(tmp_path)
    assert (s.cpu_usage_usec, s.cpu_user_usec, s.cpu_system_usec) == (10, 7, 3)
    assert s.cpu_nr_throttled is None and s.memory_current is None and s.io_read_bytes is None


def test_read_stats_of_a_gone_cgroup(tmp_path: Path) -> None:
    assert read_stats(tmp_path / "gone") == CgroupStats()
