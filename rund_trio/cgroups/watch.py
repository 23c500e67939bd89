"""Waiting for a cgroup file to change, without sleep-polling.

The kernel signals a change of ``cgroup.events`` (and ``memory.events``,
``pids.events``) as an inotify ``IN_MODIFY`` and as ``POLLPRI``. trio's
``wait_readable`` cannot wait for ``POLLPRI`` alone (cgroupfs files always
poll readable), so ``FileWatcher`` uses inotify through ``ctypes``: one inotify
fd for the whole daemon (the per-user limit on inotify instances is small,
128 by default, while watches are plentiful), and any number of concurrent
waiters. One waiter at a time sleeps in ``wait_readable`` on the fd and wakes
the others after each batch of events; each waiter then re-checks its own
condition, so an event meant for another file only costs a spurious re-check.

Only where inotify is unavailable (no ``inotify_init1``, or the instance or
watch limit is reached) does a wait fall back to re-checking every
``FALLBACK_INTERVAL`` seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Callable
from pathlib import Path

import trio

__all__ = ["FALLBACK_INTERVAL", "FileWatcher"]

FALLBACK_INTERVAL = 0.05
"""Seconds between re-checks when inotify cannot be used."""

_IN_MODIFY = 0x00000002
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


class _Inotify:
    """The three inotify calls, through ctypes. Raises OSError like os.* does."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._init1 = libc.inotify_init1
        self._init1.argtypes = [ctypes.c_int]
        self._init1.restype = ctypes.c_int
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._add.restype = ctypes.c_int
        self._rm = libc.inotify_rm_watch
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        self._rm.restype = ctypes.c_int

    @staticmethod
    def _check(result: int, what: str) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
        return result

    def init(self) -> int:
        return self._check(self._init1(_IN_NONBLOCK | _IN_CLOEXEC), "inotify_init1")

    def add_watch(self, fd: int, path: Path, mask: int) -> int:
        return self._check(self._add(fd, os.fsencode(path), mask), f"inotify_add_watch {path}")

    def rm_watch(self, fd: int, wd: int) -> None:
        self._rm(fd, wd)  # EINVAL once the watched file is gone: nothing to undo


class FileWatcher:
    """Waits until a condition on a file holds, waking on each change of the file.

    One instance serves any number of concurrent waits in one trio run. Create
    it anywhere; the inotify fd is opened on first use. ``close`` releases it.
    """

    def __init__(self) -> None:
        self._api: _Inotify | None = None
        self._fd: int | None = None
        self._unavailable: str | None = None
        self._refs: dict[int, int] = {}
        self._reading = False
        self._batch = trio.Event()

    @property
    def uses_inotify(self) -> bool:
        """False once inotify turned out to be unusable (waits then re-check periodically)."""
        return self._unavailable is None

    def _ensure_fd(self) -> int | None:
        if self._fd is not None:
            return self._fd
        if self._unavailable is not None:
            return None
        try:
            self._api = _Inotify()
            self._fd = self._api.init()
        except (OSError, AttributeError) as exc:  # AttributeError: no such libc symbol
            self._unavailable = str(exc)
            return None
        return self._fd

    def _add(self, path: Path) -> int | None:
        """Watch ``path``; None means "fall back to periodic re-checks"."""
        fd = self._ensure_fd()
        if fd is None or self._api is None:
            return None
        try:
            wd = self._api.add_watch(fd, path, _IN_MODIFY)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path)) from exc
            return None  # ENOSPC (watch limit), ENOMEM, ...: degrade, do not fail
        self._refs[wd] = self._refs.get(wd, 0) + 1
        return wd

    def _release(self, wd: int) -> None:
        n = self._refs.get(wd, 0) - 1
        if n > 0:
            self._refs[wd] = n
            return
        self._refs.pop(wd, None)
        if self._fd is not None and self._api is not None:
            self._api.rm_watch(self._fd, wd)

    def _drain(self, fd: int) -> None:
        while True:
            try:
                if not os.read(fd, 65536):
                    return
            except BlockingIOError:
                return

    async def _next_batch(self, fd: int) -> None:
        """Return after the next batch of inotify events has been read (by anyone)."""
        if self._reading:
            await self._batch.wait()
            return
        self._reading = True
        try:
            await trio.lowlevel.wait_readable(fd)
            self._drain(fd)
        finally:
            self._reading = False
            batch, self._batch = self._batch, trio.Event()
            batch.set()

    async def wait_for(self, path: Path, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` is true, re-checking it whenever ``path`` changes.

        The watch is set before the first check, so a change between the check
        and the wait is never missed. If ``path`` does not exist, the condition
        is checked once and ``FileNotFoundError`` raised if it is false.

        Cancellation: safe at any point; the watch is removed and nothing else
        changes. Other waiters are unaffected.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            wd = self._add(path)
        except FileNotFoundError:
            if condition():
                return
            raise
        try:
            while not condition():
                fd = self._fd
                if wd is None or fd is None:
                    await trio.sleep(FALLBACK_INTERVAL)
                else:
                    await self._next_batch(fd)
        finally:
            if wd is not None:
                self._release(wd)

    def close(self) -> None:
        """Close the inotify fd. Call only when no ``wait_for`` is running."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            # Outside a trio run (RuntimeError) nobody can be waiting on it.
            with contextlib.suppress(RuntimeError):
                trio.lowlevel.notify_closing(fd)
            os.close(fd)
        self._refs.clear()
