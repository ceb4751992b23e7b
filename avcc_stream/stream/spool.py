"""A bounded, crash-safe, in-order on-disk queue of OutboundRecords for one output.

While an output (MQTT, Redis) is unreachable, its records wait here and are replayed in
order once it accepts again (see `publish/spooling.py`). One SQLite file per output, under
the service's state directory (`$STATE_DIRECTORY`, /var/lib/avcc-stream under systemd).

Durability: WAL journal, `synchronous=NORMAL` by default. A committed append is in the WAL
file before `append()` returns, so it survives the process being killed (SIGKILL, OOM
killer, a crash): the kernel still writes the page cache out. What NORMAL gives up is the
last commits before a *power loss or kernel crash* (the WAL is fsynced at checkpoints, not
at every commit); the file is never corrupted by it. FULL fsyncs every commit, which costs
an fsync per record (per second per camera) on SD cards and eMMC that many edge boxes run
on, while a power loss also loses every window still in memory and every second the box
is off. Deployments that want power-loss durability set `synchronous="full"`.

Bound: `SpoolLimits.max_records` and `max_bytes` (encoded record content, not file size).
Past either, the oldest records are dropped (drop-oldest: the newest counts are the ones a
venue acts on), counted in `SpoolStats.dropped_total` and logged at most once a minute.

Threading: `SpoolFile` is synchronous and must stay on one thread; `Spool` is the asyncio
facade that runs every SQLite call on its own single worker thread, so the loop never
blocks on disk.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, TypeVar

import structlog

from avcc_stream.stream.types import OutboundRecord

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
DROP_LOG_INTERVAL_S = 60.0
Synchronous = Literal["normal", "full"]
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: never reused, so order is total
    kind TEXT NOT NULL,
    camera TEXT NOT NULL,
    record_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,                -- ISO 8601 with offset, as created
    payload TEXT NOT NULL,                  -- JSON
    retain INTEGER NOT NULL,
    extra TEXT NOT NULL,                    -- JSON
    size INTEGER NOT NULL                   -- encoded bytes, counted against max_bytes
)
"""
_COLUMNS = "seq, kind, camera, record_id, timestamp, payload, retain, extra"


class SpoolError(RuntimeError):
    """The spool cannot store or read records (disk full, permissions, locked by another process)."""


@dataclass(frozen=True)
class SpoolLimits:
    """Past either bound the oldest records are dropped."""

    max_records: int = 1_000_000
    max_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_bytes < 1:
            raise ValueError(f"spool limits must be positive, got {self}")


@dataclass(frozen=True)
class SpoolStats:
    """A snapshot; cheap to read from any thread (no I/O)."""

    records: int = 0
    bytes: int = 0
    oldest_timestamp: datetime | None = None
    appended_total: int = 0  # since this process opened the spool
    removed_total: int = 0  # delivered and deleted
    dropped_total: int = 0  # dropped by the bound
    max_records: int = 0
    max_bytes: int = 0


@dataclass(frozen=True)
class SpooledRecord:
    seq: int  # position in the spool; pass to `remove_through` once delivered
    record: OutboundRecord


def _encode(record: OutboundRecord) -> tuple[str, str, str, str, str, int, str, int]:
    try:
        payload = json.dumps(record.payload, separators=(",", ":"))
        extra = json.dumps(record.extra, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"cannot spool record {record.record_id!r} ({record.kind}): payload and extra "
            f"must be JSON-serialisable: {exc}"
        ) from None
    timestamp = record.timestamp.isoformat()
    size = sum(
        len(text.encode("utf-8"))
        for text in (record.kind, record.camera, record.record_id, timestamp, payload, extra)
    )
    return (
        record.kind, record.camera, record.record_id, timestamp, payload,
        int(record.retain), extra, size,
    )


def _decode(row: tuple) -> SpooledRecord:
    seq, kind, camera, record_id, timestamp, payload, retain, extra = row
    return SpooledRecord(
        seq=seq,
        record=OutboundRecord(
            kind=kind,
            camera=camera,
            record_id=record_id,
            timestamp=datetime.fromisoformat(timestamp),
            payload=json.loads(payload),
            retain=bool(retain),
            extra=json.loads(extra),
        ),
    )


class SpoolFile:
    """The synchronous spool. Not thread-safe: use it from one thread (or through `Spool`)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        limits: SpoolLimits = SpoolLimits(),
        *,
        synchronous: Synchronous = "normal",
        name: str | None = None,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        self.path = Path(path)
        self.limits = limits
        self.name = name or self.path.stem
        self._lock_file = self._take_lock()
        try:
            try:
                self._db = self._connect(synchronous)
            except sqlite3.DatabaseError as exc:
                if getattr(exc, "sqlite_errorname", "") not in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
                    raise
                self._quarantine(exc)
                self._db = self._connect(synchronous)
        except sqlite3.Error as exc:
            self._lock_file.close()
            raise SpoolError(f"cannot open spool {str(self.path)!r}: {exc}") from exc
        except BaseException:
            self._lock_file.close()
            raise
        self._appended = self._removed = self._dropped = 0
        self._unlogged_drops = 0
        self._last_drop_log = float("-inf")
        records, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records"
        ).fetchone()
        self._records, self._bytes = int(records), int(size)
        self.stats = self._snapshot()
        if self._records:
            log.info(
                "spool_opened_with_backlog", output=self.name, path=str(self.path),
                records=self._records, bytes=self._bytes,
                oldest=str(self.stats.oldest_timestamp),
            )
        # A spool reopened under smaller limits is trimmed at once, not at the next append.
        self._run_in_transaction(lambda: self._enforce_limits())

    # -- opening ---------------------------------------------------------------------------

    def _take_lock(self):
        """One process per spool: two daemons replaying one file would double every record."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock_file = open(self.path.with_name(self.path.name + ".lock"), "a+")
        except OSError as exc:
            raise SpoolError(
                f"cannot create spool {str(self.path)!r}: {exc.strerror or exc} (is the state "
                "directory writable by the daemon? see state_dir in the config)"
            ) from None
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise SpoolError(
                f"spool {str(self.path)!r} is in use by another process; each daemon "
                "instance needs its own state directory"
            ) from None
        return lock_file

    def _connect(self, synchronous: Synchronous) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None)  # we issue BEGIN/COMMIT ourselves
        try:
            # auto_vacuum only takes effect if set before anything is written to a new file
            # (switching to WAL writes the header): a no-op on an existing spool.
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise SpoolError(f"spool {str(self.path)!r}: SQLite refused WAL mode ({mode})")
            db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            db.execute("PRAGMA journal_size_limit=16777216")  # WAL shrinks back after checkpoints
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SpoolError(
                    f"spool {str(self.path)!r} has schema version {version}, newer than this "
                    f"avcc-stream understands ({SCHEMA_VERSION}); was it downgraded?"
                )
            if version == 0:
                db.execute(_SCHEMA)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("SELECT COUNT(*) FROM records").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def _quarantine(self, exc: sqlite3.DatabaseError) -> None:
        """A damaged spool is moved aside (kept for inspection) so the daemon keeps running."""
        suffix = time.strftime(".corrupt-%Y%m%dT%H%M%S")
        moved = []
        for candidate in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            if candidate.exists():
                target = candidate.with_name(candidate.name + suffix)
                candidate.rename(target)
                moved.append(str(target))
        log.error(
            "spool_unreadable_moved_aside", output=self.name, path=str(self.path),
            error=str(exc), moved_to=moved,
        )

    # -- queue operations ------------------------------------------------------------------

    def append(self, records: OutboundRecord | Sequence[OutboundRecord]) -> int:
        """Store records at the tail (durably, see module doc). Returns how many old records
        the bound dropped to make room (possibly some of these, if they alone exceed it)."""
        if isinstance(records, OutboundRecord):
            records = [records]
        rows = [_encode(record) for record in records]
        if not rows:
            return 0

        def insert() -> int:
            self._db.executemany(
                "INSERT INTO records (kind, camera, record_id, timestamp, payload, retain, "
                "extra, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._records += len(rows)
            self._bytes += sum(row[-1] for row in rows)
            self._appended += len(rows)
            return self._enforce_limits()

        return self._run_in_transaction(insert)

    def peek(self, limit: int = 100) -> list[SpooledRecord]:
        """The oldest `limit` records, oldest first, without removing them."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM records ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        return [_decode(row) for row in rows]

    def remove_through(self, seq: int) -> int:
        """Delete every record up to and including `seq` (they were delivered)."""

        def delete() -> int:
            count, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records WHERE seq <= ?", (seq,)
            ).fetchone()
            if count:
                self._db.execute("DELETE FROM records WHERE seq <= ?", (seq,))
                self._records -= count
                self._bytes -= size
                self._removed += count
            return int(count)

        removed = self._run_in_transaction(delete)
        if removed and self._records == 0:
            self._give_back_space()
        return removed

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            self._lock_file.close()

    # -- internals -------------------------------------------------------------------------

    def _run_in_transaction(self, work: Callable[[], T]) -> T:
        saved = (self._records, self._bytes, self._appended, self._removed, self._dropped)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            (self._records, self._bytes, self._appended, self._removed, self._dropped) = saved
            raise SpoolError(f"spool {str(self.path)!r}: {exc}") from exc
        except BaseException:
            (self._records, self._bytes, self._appended, self._removed, self._dropped) = saved
            raise
        self.stats = self._snapshot()
        return result

    def _enforce_limits(self) -> int:
        """Inside a transaction: drop the oldest records until both bounds hold."""
        excess_records = self._records - self.limits.max_records
        excess_bytes = self._bytes - self.limits.max_bytes
        if excess_records <= 0 and excess_bytes <= 0:
            return 0
        dropped = dropped_bytes = 0
        last_seq = None
        for seq, size in self._db.execute("SELECT seq, size FROM records ORDER BY seq"):
            if dropped >= excess_records and dropped_bytes >= excess_bytes:
                break
            dropped += 1
            dropped_bytes += size
            last_seq = seq
        if last_seq is not None:
            self._db.execute("DELETE FROM records WHERE seq <= ?", (last_seq,))
        self._records -= dropped
        self._bytes -= dropped_bytes
        self._dropped += dropped
        self._note_drops(dropped)
        return dropped

    def _note_drops(self, dropped: int) -> None:
        # A full spool during a long outage drops on every append: log a summary a minute.
        self._unlogged_drops += dropped
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            log.warning(
                "spool_full_dropped_oldest", output=self.name,
                dropped=self._unlogged_drops, dropped_total=self._dropped,
                max_records=self.limits.max_records, max_bytes=self.limits.max_bytes,
            )
            self._unlogged_drops = 0
            self._last_drop_log = now

    def _give_back_space(self) -> None:
        """After a backlog drained, return its pages and WAL to the file system."""
        try:
            # executescript steps the pragma to the end; execute() would free one page.
            self._db.executescript("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
        except sqlite3.Error as exc:  # housekeeping only: the data is already consistent
            log.warning("spool_vacuum_failed", output=self.name, error=str(exc))

    def _snapshot(self) -> SpoolStats:
        oldest = None
        if self._records:
            row = self._db.execute("SELECT timestamp FROM records ORDER BY seq LIMIT 1").fetchone()
            oldest = datetime.fromisoformat(row[0]) if row else None
        return SpoolStats(
            records=self._records,
            bytes=self._bytes,
            oldest_timestamp=oldest,
            appended_total=self._appended,
            removed_total=self._removed,
            dropped_total=self._dropped,
            max_records=self.limits.max_records,
            max_bytes=self.limits.max_bytes,
        )


class Spool:
    """asyncio facade over `SpoolFile`: every SQLite call runs on one dedicated thread."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        limits: SpoolLimits = SpoolLimits(),
        *,
        synchronous: Synchronous = "normal",
        name: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.limits = limits
        self.synchronous: Synchronous = synchronous
        self.name = name or self.path.stem
        self._file: SpoolFile | None = None
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def for_output(
        cls,
        state_dir: str | os.PathLike[str],
        output: str,
        limits: SpoolLimits = SpoolLimits(),
        *,
        synchronous: Synchronous = "normal",
    ) -> Spool:
        """The spool of output `output` (e.g. "mqtt") in the daemon's state directory."""
        return cls(
            Path(state_dir) / "spool" / f"{output}.sqlite3", limits,
            synchronous=synchronous, name=output,
        )

    async def open(self) -> None:
        if self._file is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"spool-{self.name}")
        try:
            self._file = await self._call(
                SpoolFile, self.path, self.limits, synchronous=self.synchronous, name=self.name
            )
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    @property
    def is_open(self) -> bool:
        return self._file is not None

    @property
    def stats(self) -> SpoolStats:
        """Depth, bytes, drops and bounds; no I/O, safe from any thread (metrics, /healthz)."""
        if self._file is None:
            return SpoolStats(max_records=self.limits.max_records, max_bytes=self.limits.max_bytes)
        return self._file.stats

    @property
    def depth(self) -> int:
        return self.stats.records

    async def append(self, records: OutboundRecord | Sequence[OutboundRecord]) -> int:
        return await self._call(self._opened().append, records)

    async def peek(self, limit: int = 100) -> list[SpooledRecord]:
        return await self._call(self._opened().peek, limit)

    async def remove_through(self, seq: int) -> int:
        return await self._call(self._opened().remove_through, seq)

    async def close(self) -> None:
        if self._file is None:
            return
        spool_file, self._file = self._file, None
        try:
            await self._call(spool_file.close)
        finally:
            assert self._executor is not None
            self._executor.shutdown(wait=False)  # its last job is done: nothing to wait for
            self._executor = None

    def _opened(self) -> SpoolFile:
        if self._file is None:
            raise SpoolError(f"spool {self.name!r} is not open (call open() first)")
        return self._file

    async def _call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
