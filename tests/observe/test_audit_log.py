"""The audit log file on its own: rotation by size and a kept count."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from rund_trio.observe.audit_log import PATH_CHECK_EVERY, AuditLog


def record(n: int) -> bytes:
    return b'{"n":%d}\n' % n  # 8 bytes for n < 10


def test_a_record_that_would_pass_the_size_rotates_the_file_first(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(str(path), max_size=16, keep=2)
    for n in range(5):
        assert log.write(record(n))
    log.close()
    assert path.read_bytes() == record(4)
    assert (tmp_path / "audit.log.1").read_bytes() == record(2) + record(3)
    assert (tmp_path / "audit.log.2").read_bytes() == record(0) + record(1)
    assert not (tmp_path / "audit.log.3").exists()
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {0o600}


def test_the_oldest_rotated_file_is_dropped_beyond_the_kept_count(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(str(path), max_size=8, keep=1)
    for n in range(4):
        assert log.write(record(n))
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.log", "audit.log.1"]
    assert (tmp_path / "audit.log.1").read_bytes() == record(2)


def test_without_a_size_the_file_is_never_rotated(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(str(path), max_size=None)
    for n in range(10):
        assert log.write(record(n % 10))
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["audit.log"]
    assert log.records == 10 and log.lost == 0


def test_a_file_renamed_away_is_replaced_at_the_path_within_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr("rund_trio.observe.audit_log.time.monotonic", lambda: clock[0])
    path = tmp_path / "audit.log"
    log = AuditLog(str(path))
    assert log.write(record(0))
    path.rename(tmp_path / "rotated")
    assert log.write(record(1))  # within the second: still the renamed file
    clock[0] += PATH_CHECK_EVERY
    assert log.write(record(2))
    log.close()
    assert (tmp_path / "rotated").read_bytes() == record(0) + record(1)
    assert path.read_bytes() == record(2)


def test_a_deleted_file_is_created_again_at_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(str(path))
    assert log.write(record(0))
    path.unlink()
    assert log.write(record(1))
    log.close()
    assert path.read_bytes() == record(1)
