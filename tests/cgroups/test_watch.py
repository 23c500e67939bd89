"""FileWatcher: inotify-driven waits, many waiters on one fd, and the fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from rund_trio.cgroups import watch
from rund_trio.cgroups.watch import FileWatcher


def has(path: Path, text: str) -> bool:
    return text in path.read_text()


async def test_waits_for_the_condition_not_just_a_change(tmp_path: Path) -> None:
    f = tmp_path / "cgroup.events"
    f.write_text("populated 1\n")
    w = FileWatcher()
    done = trio.Event()

    async def waiter() -> None:
        await w.wait_for(f, lambda: has(f, "populated 0"))
        done.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            f.write_text("populated 1\nfrozen 1\n")
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()
            f.write_text("populated 0\n")
    assert done.is_set()
    assert w.uses_inotify
    w.close()


async def test_returns_at_once_when_already_true(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_text("populated 0\n")
    w = FileWatcher()
    with trio.fail_after(1):
        await w.wait_for(f, lambda: True)
    w.close()


async def test_many_waiters_one_fd_and_leader_cancellation(tmp_path: Path) -> None:
    """Three waiters on two files; the one reading the fd is cancelled; no event is lost."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("0\n")
    b.write_text("0\n")
    w = FileWatcher()
    finished: list[str] = []

    async def waiter(name: str, path: Path, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await w.wait_for(path, lambda: path.read_text() == "1\n")
        finished.append(name)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            cancel_a1 = trio.CancelScope()

            async def a1() -> None:
                with cancel_a1:
                    await w.wait_for(a, lambda: a.read_text() == "1\n")
                finished.append("a1-cancelled")

            nursery.start_soon(a1)  # first: becomes the reader of the inotify fd
            await trio.testing.wait_all_tasks_blocked()
            await nursery.start(waiter, "a2", a)
            await nursery.start(waiter, "b", b)
            await trio.testing.wait_all_tasks_blocked()
            cancel_a1.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert finished == ["a1-cancelled"]
            b.write_text("1\n")
            await trio.testing.wait_all_tasks_blocked()
            assert finished == ["a1-cancelled", "b"]
            a.write_text("1\n")
    assert finished == ["a1-cancelled", "b", "a2"]
    assert w._refs == {}  # every watch released
    w.close()


async def test_missing_file(tmp_path: Path) -> None:
    w = FileWatcher()
    with pytest.raises(FileNotFoundError):
        await w.wait_for(tmp_path / "gone", lambda: False)
    await w.wait_for(tmp_path / "gone", lambda: True)
    w.close()


async def test_fallback_without_inotify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_inotify(self: object) -> int:
        raise OSError(24, "inotify_init1: Too many open files")

    monkeypatch.setattr(watch._Inotify, "init", no_inotify)
    f = tmp_path / "cgroup.events"
    f.write_text("populated 1\n")
    w = FileWatcher()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.wait_for, f, lambda: has(f, "populated 0"))
            await trio.testing.wait_all_tasks_blocked()
            f.write_text("populated 0\n")
    assert not w.uses_inotify


async def test_cancellation_removes_the_watch(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_text("")
    w = FileWatcher()
    with trio.move_on_after(0.05):
        await w.wait_for(f, lambda: False)
    assert w._refs == {}
    w.close()
    w.close()  # twice is fine
