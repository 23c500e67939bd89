"""Job records on disk: an SQLite database in the state directory.

One row per retained job (its command, owner, times, ending, final usage and
output counts) and one row per (SAN of its owner, job) so that a caller's jobs
are found by an index probe per SAN of the caller, as in ``jobs.table``. The
output itself stays in the per-job journal files beside the database.

Durability. The database is in WAL mode. Every commit is written to the WAL
before it returns, so a SIGKILL of the daemon at any instant loses nothing
committed: the kernel still has it. A Start returns its id only after the
job's row is committed that way. A job's end is committed with
``synchronous=FULL`` -- the WAL reaches stable storage before the commit
returns, and the job's journal is fsync()ed before that -- so after a power
cut too every ended job is still known with all its output, and so is every
job started before it. What a power cut can take is only what was never
synced: rows of jobs started within the last second (the supervisor calls
``flush`` every second; their journals are then orphans, set aside, never
deleted), a removal as recent, and the unsynced tail of a running job's
output. Syncing every Start as well would cost an fsync per Start (3.4 ms
p50 on the benchmark VM, a fifth of Start's latency); NORMAL
everywhere would let a power cut forget ended jobs a client already saw end.
Commits are grouped -- every write waiting while one commits goes into the
next transaction -- so the fsyncs do not grow with concurrent job ends.

Versions. ``PRAGMA application_id`` marks the file as rund-trio's and
``PRAGMA user_version`` holds the schema version. A file that is not a
rund-trio database, is damaged, or was written by a newer schema is refused
with a ``ConfigError`` saying what to do; nothing is ever deleted or rewritten
to "repair" it.

Threads. Writes run in a worker thread (one at a time) on their own
connection, so an fsync never blocks the event loop; reads run on the caller's
thread on a second connection (WAL readers never wait for the writer).
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from rund_trio.errors import ConfigError, RundError
from rund_trio.jobs.isolation_policy import Profile
from rund_trio.jobs.state import JobSnapshot, JobState, OutputCounts
from rund_trio.process.base import ResourceUsage

DATABASE_NAME = "jobs.sqlite3"
APPLICATION_ID = 0x52554E44  # "RUND"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    argv TEXT NOT NULL,
    owner TEXT NOT NULL,
    pid INTEGER NOT NULL,
    state TEXT NOT NULL,
    started_us INTEGER NOT NULL,
    ended_us INTEGER,
    exit_code INTEGER,
    signal INTEGER,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    usage TEXT,
    output_recorded INTEGER NOT NULL DEFAULT 0,
    output_dropped INTEGER NOT NULL DEFAULT 0,
    output_error TEXT,
    journal_size INTEGER NOT NULL DEFAULT 0,
    profile TEXT NOT NULL
);
CREATE INDEX jobs_by_end ON jobs (ended_us, id) WHERE ended_us IS NOT NULL;
CREATE TABLE job_sans (
    san TEXT NOT NULL,
    job_id TEXT NOT NULL,
    ended INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (san, job_id)
) WITHOUT ROWID;
CREATE INDEX job_sans_by_state ON job_sans (san, ended, job_id);
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


Offload = Callable[[Callable[[list["_Write"]], None], list["_Write"]], Awaitable[None]]


class StoreError(RundError):
    """The database could not be written (disk full, I/O error)."""


def _us(moment: datetime) -> int:
    return round(moment.timestamp() * 1_000_000)


def _moment(us: int | None) -> datetime | None:
    return None if us is None else datetime.fromtimestamp(us / 1_000_000, UTC)


@dataclass(frozen=True)
class StoredJob:
    """A job as its row says, with what is needed to read its output (its
    owner is only ever matched in SQL, never read back)."""

    snapshot: JobSnapshot
    journal_size: int


def _snapshot_of(row: sqlite3.Row) -> StoredJob:
    usage = ResourceUsage(**json.loads(row["usage"])) if row["usage"] else ResourceUsage()
    started = _moment(row["started_us"])
    assert started is not None
    snapshot = JobSnapshot(
        job_id=row["id"],
        argv=tuple(json.loads(row["argv"])),
        pid=row["pid"],
        state=JobState(row["state"]),
        started_at=started,
        ended_at=_moment(row["ended_us"]),
        exit_code=row["exit_code"],
        signal=row["signal"],
        stop_requested=bool(row["stop_requested"]),
        usage=usage,
        output=OutputCounts(row["output_recorded"], row["output_dropped"], row["output_error"]),
        profile=Profile(row["profile"]),
    )
    return StoredJob(snapshot, row["journal_size"])


def _refuse(path: Path, reason: str) -> ConfigError:
    return ConfigError(
        f"cannot use the job database {path}: {reason}. Nothing was changed: move it aside "
        f"(with its -wal and -shm files, e.g. mv {path} {path}.damaged) to start with no job "
        "history, or restore it from a backup"
    )


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    return connection


class JobStore:
    """The job records of one state directory; see the module docstring."""

    def __init__(
        self,
        path: Path,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
        *,
        offload: Offload | None = None,
    ) -> None:
        self.path = path
        self._offload = offload
        self._writer = writer
        self._reader = reader
        self._limiter = trio.CapacityLimiter(1)
        self._pending: list[_Write] = []
        self._dirty = False
        """Commits since the last durable one: a power cut could take them."""
        self.token_key: bytes = self._load_token_key()

    @classmethod
    def open(cls, state_dir: Path, *, offload: Offload | None = None) -> JobStore:
        """Open (or create) the database in ``state_dir``, whose lock the caller
        holds. ``ConfigError`` for a file this version cannot use as is.

        Commits run through ``offload`` (default: a worker thread); tests under
        trio's autojump clock commit inline, so that no thread wait lets
        virtual time jump."""
        path = state_dir / DATABASE_NAME
        try:
            writer = _connect(path)
        except sqlite3.Error as error:
            raise _refuse(path, str(error)) from None
        try:
            cls._check(path, writer)
            writer.execute("PRAGMA journal_mode=WAL")
            writer.execute("PRAGMA synchronous=FULL")  # per commit: see _commit
            # Checkpoint every 256 pages (1 MiB) and keep the WAL no larger
            # than that once checkpointed: the database's own disk use stays small.
            writer.execute("PRAGMA wal_autocheckpoint=256")
            writer.execute(f"PRAGMA journal_size_limit={1024**2}")
            cls._migrate(writer)
            reader = _connect(path)
            reader.execute("PRAGMA query_only=1")
        except sqlite3.DatabaseError as error:
            writer.close()
            raise _refuse(path, str(error)) from None
        except BaseException:
            writer.close()
            raise
        os.chmod(path, 0o600)
        return cls(path, writer, reader, offload=offload)

    @classmethod
    @contextmanager
    def opened(cls, state_dir: Path, *, offload: Offload | None = None) -> Iterator[JobStore]:
        """``open``, closed when the block exits."""
        store = cls.open(state_dir, offload=offload)
        try:
            yield store
        finally:
            store.close()

    @staticmethod
    def _check(path: Path, connection: sqlite3.Connection) -> None:
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        tables = connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        if application_id not in (0, APPLICATION_ID) or (application_id == 0 and tables):
            raise _refuse(path, "it is not a rund-trio job database")
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"the job database {path} was written by a newer rund-trio (schema version "
                f"{version}; this one reads up to {SCHEMA_VERSION}): run that newer version, "
                "or give this one another --state-dir"
            )
        if tables:
            problems = [row[0] for row in connection.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise _refuse(path, "it is damaged (" + "; ".join(problems) + ")")

    @staticmethod
    def _migrate(connection: sqlite3.Connection) -> None:
        if connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        # One transaction: a crash leaves either no schema or all of it.
        connection.executescript(
            f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA application_id={APPLICATION_ID}; "
            f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
        )

    def _load_token_key(self) -> bytes:
        row = self._writer.execute("SELECT value FROM meta WHERE key = 'page_token_key'").fetchone()
        if row is not None:
            return bytes(row[0])
        key = os.urandom(32)
        self._writer.execute("INSERT INTO meta (key, value) VALUES ('page_token_key', ?)", (key,))
        return key

    def close(self) -> None:
        self._reader.close()
        self._writer.close()

    # --- writes -------------------------------------------------------------

    async def _write(
        self,
        apply: Callable[[sqlite3.Connection], None],
        sync: Path | None = None,
        *,
        durable: bool = False,
    ) -> None:
        """Apply ``apply`` in a committed transaction, grouped with the writes
        that wait meanwhile. With ``sync`` (a journal) that file is fsync()ed
        first and the commit is durable (``synchronous=FULL``), as it is with
        ``durable``; otherwise it survives the daemon but not necessarily a
        power cut. Returns once committed;
        ``StoreError`` if the commit failed. Not cancellable once queued: the
        caller learns the outcome of what it asked for (shield if needed)."""
        write = _Write(apply, sync, durable or sync is not None)
        self._pending.append(write)
        async with self._limiter:
            if not write.done:
                batch, self._pending = self._pending, []
                if self._offload is None:
                    await trio.to_thread.run_sync(self._commit, batch)
                else:
                    await self._offload(self._commit, batch)
        if write.error is not None:
            raise StoreError(f"cannot write the job database {self.path}: {write.error}")

    def _commit(self, batch: list[_Write]) -> None:
        error: str | None = None
        durable = any(write.durable for write in batch)
        try:
            for write in batch:
                if write.sync is not None:
                    _fsync(write.sync)
            self._writer.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                for write in batch:
                    write.apply(self._writer)
                self._writer.execute("COMMIT")
                self._dirty = not durable
            except BaseException:
                if self._writer.in_transaction:  # SQLite may have rolled back itself
                    self._writer.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as raised:
            error = str(raised)
        for write in batch:
            write.done = True
            write.error = error

    async def flush(self) -> None:
        """Make every commit so far durable, if any is not yet: a tiny commit
        with ``synchronous=FULL`` syncs the WAL and so every frame before it."""

        def apply(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('synced', 1)")

        if self._dirty:
            await self._write(apply, durable=True)

    async def insert(self, snapshot: JobSnapshot, owner: frozenset[str]) -> None:
        """Record a job that just started."""

        def apply(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO jobs (id, argv, owner, pid, state, started_us, profile) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    snapshot.job_id,
                    json.dumps(snapshot.argv),
                    json.dumps(sorted(owner)),
                    snapshot.pid,
                    snapshot.state.value,
                    _us(snapshot.started_at),
                    snapshot.profile.value,
                ),
            )
            db.executemany(
                "INSERT INTO job_sans (san, job_id) VALUES (?, ?)",
                [(san, snapshot.job_id) for san in owner],
            )

        await self._write(apply)

    async def finish(self, snapshot: JobSnapshot, journal: Path, journal_size: int) -> None:
        """Record a job's end, once ``journal`` (fsync()ed first) is complete."""
        await self._write(lambda db: _finish(db, snapshot, journal_size), sync=journal)

    async def delete(self, job_ids: Sequence[str]) -> list[tuple[str, int]]:
        """Forget ``job_ids``; the (id, journal size) of those that were there."""
        deleted: list[tuple[str, int]] = []

        def apply(db: sqlite3.Connection) -> None:
            for job_id in job_ids:
                row = db.execute(
                    "DELETE FROM jobs WHERE id = ? RETURNING journal_size", (job_id,)
                ).fetchone()
                if row is not None:
                    db.execute("DELETE FROM job_sans WHERE job_id = ?", (job_id,))
                    deleted.append((job_id, row[0]))

        await self._write(apply)
        return deleted

    def mark_lost(self, extents: Callable[[str], tuple[int, int]], now: datetime) -> list[str]:
        """At start-up, before anything else: every job recorded as running
        ended with the daemon that ran it (``JobState.LOST``). ``extents`` gives
        a job's (journal size, output bytes) from its journal. Returns their ids."""
        rows = self._writer.execute(
            "SELECT id, started_us FROM jobs WHERE state = ?", (JobState.RUNNING.value,)
        ).fetchall()
        if not rows:
            return []
        self._writer.execute("BEGIN IMMEDIATE")
        try:
            for row in rows:
                size, payload = extents(row["id"])
                self._writer.execute(
                    "UPDATE jobs SET state = ?, ended_us = ?, output_recorded = ?, "
                    "output_error = ?, journal_size = ? WHERE id = ?",
                    (
                        JobState.LOST.value,
                        max(row["started_us"], _us(now)),
                        payload,
                        "the daemon ended while the job ran: output after that was not recorded",
                        size,
                        row["id"],
                    ),
                )
                self._writer.execute("UPDATE job_sans SET ended = 1 WHERE job_id = ?", (row["id"],))
            self._writer.execute("COMMIT")
        except BaseException:
            self._writer.execute("ROLLBACK")
            raise
        return [row["id"] for row in rows]

    # --- reads --------------------------------------------------------------

    def ids(self) -> set[str]:
        return {row[0] for row in self._reader.execute("SELECT id FROM jobs")}

    def totals(self) -> tuple[int, int]:
        """(ended jobs, bytes of journal) retained."""
        ended, size = self._reader.execute(
            "SELECT count(ended_us), coalesce(sum(journal_size), 0) FROM jobs"
        ).fetchone()
        return int(ended), int(size)

    def find(self, job_id: str, sans: Iterable[str]) -> StoredJob | None:
        """The job ``job_id`` if its owner shares a SAN with ``sans``: one index
        probe per SAN, whether the job exists or not."""
        for san in sans:
            row = self._reader.execute(
                "SELECT jobs.* FROM job_sans JOIN jobs ON jobs.id = job_sans.job_id "
                "WHERE job_sans.san = ? AND job_sans.job_id = ?",
                (san, job_id),
            ).fetchone()
            if row is not None:
                return _snapshot_of(row)
        return None

    def page(
        self, sans: Iterable[str], ended: bool | None, before: str | None, limit: int
    ) -> list[StoredJob]:
        """Up to ``limit`` jobs owned by a certificate sharing a SAN with
        ``sans``, newest first (by id), with ids below ``before`` (None: from
        the newest); ``ended`` None for all, else ended or running only."""
        where = "san = ?"
        extra: list[Any] = []
        if ended is not None:
            where += " AND ended = ?"
            extra.append(int(ended))
        if before is not None:
            where += " AND job_id < ?"
            extra.append(before)
        ids: set[str] = set()
        for san in sans:
            rows = self._reader.execute(
                f"SELECT job_id FROM job_sans WHERE {where} ORDER BY job_id DESC LIMIT ?",
                (san, *extra, limit),
            )
            ids.update(row[0] for row in rows)
        chosen = sorted(ids, reverse=True)[:limit]
        if not chosen:
            return []
        marks = ",".join("?" * len(chosen))
        found = self._reader.execute(
            f"SELECT * FROM jobs WHERE id IN ({marks}) ORDER BY id DESC", chosen
        ).fetchall()
        return [_snapshot_of(row) for row in found]

    def ended_beyond(self, keep: int | None, ended_before: datetime | None) -> list[str]:
        """Ended jobs retention forgets: all but the ``keep`` most recently
        ended, and those that ended before ``ended_before``."""
        doomed: list[str] = []
        if keep is not None:
            doomed += [
                row[0]
                for row in self._reader.execute(
                    "SELECT id FROM jobs WHERE ended_us IS NOT NULL "
                    "ORDER BY ended_us DESC, id DESC LIMIT -1 OFFSET ?",
                    (keep,),
                )
            ]
        if ended_before is not None:
            doomed += [
                row[0]
                for row in self._reader.execute(
                    "SELECT id FROM jobs WHERE ended_us IS NOT NULL AND ended_us < ?",
                    (_us(ended_before),),
                )
            ]
        return list(dict.fromkeys(doomed))

    def page_token_mac(self, payload: bytes) -> bytes:
        return hmac.digest(self.token_key, payload, "sha256")[:16]


def _finish(db: sqlite3.Connection, snapshot: JobSnapshot, journal_size: int) -> None:
    assert snapshot.ended_at is not None
    db.execute(
        "UPDATE jobs SET state = ?, ended_us = ?, exit_code = ?, signal = ?, stop_requested = ?, "
        "usage = ?, output_recorded = ?, output_dropped = ?, output_error = ?, journal_size = ? "
        "WHERE id = ?",
        (
            snapshot.state.value,
            max(_us(snapshot.ended_at), _us(snapshot.started_at)),
            snapshot.exit_code,
            snapshot.signal,
            int(snapshot.stop_requested),
            json.dumps(dataclasses.asdict(snapshot.usage)),
            snapshot.output.recorded_bytes,
            snapshot.output.dropped_bytes,
            snapshot.output.error,
            journal_size,
            snapshot.job_id,
        ),
    )
    db.execute("UPDATE job_sans SET ended = 1 WHERE job_id = ?", (snapshot.job_id,))


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Write:
    apply: Callable[[sqlite3.Connection], None]
    sync: Path | None
    durable: bool
    done: bool = False
    error: str | None = None
