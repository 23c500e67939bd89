"""The state directory's filesystem as job output sees it: one ``DiskBudget``
for the whole daemon, fed by ``fstatvfs`` on the directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rund_trio.logs.budget import CHECK_EVERY, DiskBudget, Reserve, Room

log = logging.getLogger(__name__)


class StateDisk:
    """Where every job's journal is written; shared by all journals."""

    def __init__(
        self,
        directory: Path,
        *,
        max_total: int | None,
        reserve: Reserve,
        check_every: int = CHECK_EVERY,
    ) -> None:
        self.directory = directory
        self._fd: int | None = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        stats = os.fstatvfs(self._fd)
        self.budget = DiskBudget(
            max_total=max_total,
            min_free=reserve.of(stats.f_blocks * stats.f_frsize),
            check_every=check_every,
        )
        self.budget.observe_free(stats.f_bavail * stats.f_frsize)

    def _observe(self) -> None:
        if self._fd is None:
            return
        try:
            stats = os.fstatvfs(self._fd)
        except OSError as error:  # keep the estimate; the writes themselves will fail loudly
            log.warning("cannot read the free space of %s: %s", self.directory, error)
            return
        self.budget.observe_free(stats.f_bavail * stats.f_frsize)

    def room(self) -> Room:
        """Bytes that may still be written; cheap: ``fstatvfs`` only when due."""
        if self.budget.check_due:
            self._observe()
        return self.budget.room()

    def charge(self, written: int) -> None:
        self.budget.charge(written)

    def refusal(self) -> str | None:
        """Why a new job may not start, from the filesystem's state right now."""
        self._observe()
        return self.budget.refusal()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
