"""The daemon's state directory: the job database and each job's output journal.

Private to the daemon (mode 0700) and to one daemon at a time: it is
flock()ed, so a second daemon on it is refused. The lock dies with the daemon,
so a crashed one never blocks its successor, which finds every retained job's
record and output where it was left (``jobs.store``).

Every file of a job is named ``<job id>.<something>`` (``<id>.log`` is its
journal); forgetting a job removes them all. A journal no record refers to is
an *orphan*: the output of a job whose Start never returned (the daemon died
between creating the journal and committing the job's row), or of a job
whose removal was cut short -- or of any job, if the database was moved aside.
Orphans are never deleted: they are moved into ``orphans/`` for a person to
look at and delete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
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


ORPHANS = "orphans"


def default_state_dir() -> Path:
    """Where a daemon keeps its state unless told: ``/var/lib/rund-trio`` as
    root, ``$XDG_STATE_HOME/rund-trio`` (``~/.local/state/rund-trio``) otherwise."""
    if os.geteuid() == 0:
        return Path("/var/lib/rund-trio")
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "rund-trio"


_CANONICAL_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
"""A ULID as ``str(ULID)`` spells it (a regular expression: parsing 10,000
names with ``ULID.from_str`` took a third of a second of start-up)."""


def _job_file_names(state_dir: Path) -> dict[str, list[str]]:
    """The files named ``<ULID>.<suffix>`` in ``state_dir``, by job id."""
    files: dict[str, list[str]] = {}
    for entry in os.scandir(state_dir):
        stem, dot, _ = entry.name.partition(".")
        is_job_file = dot and _CANONICAL_ULID.fullmatch(stem) is not None
        if is_job_file and entry.is_file(follow_symlinks=False):
            files.setdefault(stem, []).append(entry.name)
    return files


def set_aside_orphans(state_dir: Path, known: set[str]) -> int:
    """Move the files of jobs not in ``known`` into ``state_dir/orphans``
    (call with the lock held, before any job starts); how many jobs' files."""
    orphans = {
        job_id: names for job_id, names in _job_file_names(state_dir).items() if job_id not in known
    }
    if not orphans:
        return 0
    target = state_dir / ORPHANS
    target.mkdir(mode=0o700, exist_ok=True)
    for names in orphans.values():
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.replace(state_dir / name, target / name)
    return len(orphans)


def forget_job_files(state_dir: Path, job_id: str) -> None:
    """Delete every file of job ``job_id`` (``<id>.*``). Readers that have one
    open can still read it to its end."""
    prefix = f"{job_id}."
    for entry in os.scandir(state_dir):
        if entry.name.startswith(prefix):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def _another_daemon(path: Path) -> str:
    return (
        f"another rund-trio daemon uses --state-dir {path}: "
        "give each daemon its own state directory"
    )


def check_state_directory(path: Path) -> None:
    """What ``state_directory(path)`` would refuse, found without changing
    anything (the lock is only tried): ``ConfigError`` if ``path`` exists and
    is not a directory, is open to other users, or another daemon holds it."""
    if not path.exists():
        return
    if not path.is_dir():
        raise ConfigError(f"--state-dir {path} is not a directory")
    _check_private(path, path.stat().st_mode)
    with directory_held(path, _another_daemon(path)):
        pass


def _check_private(path: Path, mode: int) -> None:
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigError(
            f"--state-dir {path} is accessible to other users (mode {stat.S_IMODE(mode):o}); "
            "job output must stay private: chmod 700 it"
        )


@contextmanager
def state_directory(path: Path | None) -> Iterator[Path]:
    """The directory job output goes to, private to the daemon (mode 0700)
    and locked for it while the block runs.

    A directory the daemon made itself (``path`` None: a throwaway one, for
    tests and demos) is removed on exit; a given one is kept with everything
    in it.
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
    _check_private(path, mode)
    with directory_held(path, _another_daemon(path)):
        yield path
