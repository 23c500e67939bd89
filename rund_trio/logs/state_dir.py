"""The daemon's state directory: where job output is journaled.

Private to the daemon (mode 0700) and to one daemon at a time: it is
flock()ed, so a second daemon on it is refused, and a daemon that finds it
unlocked knows every journal in it was left by a predecessor that did not shut
down cleanly (SIGKILL, a crash, a power cut) and removes them. The lock dies
with the daemon, so a crashed one never blocks its successor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ulid import ULID

from rund_trio.errors import ConfigError
from rund_trio.locks import directory_held

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".log"
_JOURNAL_SUFFIXES = (JOURNAL_SUFFIX, ".idx")  # a journal and its index (logs.index)


def journal_path(state_dir: Path, job_id: str) -> Path:
    """Where job ``job_id``'s output is journaled."""
    return state_dir / f"{job_id}{JOURNAL_SUFFIX}"


def is_journal_name(name: str) -> bool:
    """True for ``<ULID>.log`` and ``<ULID>.idx``: the only files a daemon
    writes there (a journal and its index)."""
    suffix = next((s for s in _JOURNAL_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        return False
    stem = name[: -len(suffix)]
    try:
        return str(ULID.from_str(stem)) == stem
    except ValueError:
        return False


def remove_stale_journals(state_dir: Path) -> list[str]:
    """Delete the journals in ``state_dir`` (call with its lock held, before
    any job starts); their names. Other files are left alone."""
    removed = []
    for entry in os.scandir(state_dir):
        if is_journal_name(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(entry.name)
    return sorted(removed)


def _another_daemon(path: Path) -> str:
    return (
        f"another rund-trio daemon uses --state-dir {path}: "
        "give each daemon its own state directory"
    )


@contextmanager
def state_directory(path: Path | None) -> Iterator[Path]:
    """The directory job output goes to, private to the daemon (mode 0700)
    and locked for it while the block runs.

    A directory the daemon made itself is removed on exit; a given one is kept
    (the supervisor deletes the files it wrote there), and journals a crashed
    predecessor left in it are removed first.
    """
    if path is None:
        made = Path(tempfile.mkdtemp(prefix="rund-trio-"))
        try:
            with directory_held(made, _another_daemon(made)):
                yield made
        finally:
            shutil.rmtree(made, ignore_errors=True)
        return
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = path.stat().st_mode
    except OSError as error:
        raise ConfigError(f"cannot use --state-dir {path}: {error.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigError(
            f"--state-dir {path} is accessible to other users (mode {stat.S_IMODE(mode):o}); "
            "job output must stay private: chmod 700 it"
        )
    with directory_held(path, _another_daemon(path)):
        try:
            stale = remove_stale_journals(path)
        except OSError as error:
            raise ConfigError(
                f"cannot remove the job output an earlier daemon left in --state-dir {path}: "
                f"{error.strerror}"
            ) from None
        if stale:
            jobs = sum(1 for name in stale if name.endswith(JOURNAL_SUFFIX))
            log.warning("removed %d job output files left by an earlier daemon", jobs)
        yield path
