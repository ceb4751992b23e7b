"""The on-disk spool: order, fidelity, bounds, locking, damage, and surviving SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import structlog

from avcc_stream.stream.spool import Spool, SpoolError, SpoolFile, SpoolLimits
from avcc_stream.stream.types import OutboundRecord

T0 = datetime(2026, 5, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc)


def make_record(i: int, camera: str = "gate-1", payload_size: int = 0) -> OutboundRecord:
    end = T0 + timedelta(seconds=i)
    return OutboundRecord(
        kind="count",
        camera=camera,
        record_id=f"{camera}:{end.isoformat()}",
        timestamp=end,
        payload={"camera": camera, "count": i + 0.5, "count_int": i, "pad": "x" * payload_size},
        retain=i % 2 == 1,
        extra={"seq_hint": i},
    )


def test_records_come_back_identical_and_in_order(tmp_path: Path) -> None:
    spool = SpoolFile(tmp_path / "mqtt.sqlite3")
    records = [make_record(i) for i in range(5)]
    spool.append(records[:2])
    spool.append(records[2])
    spool.append(records[3:])
    got = spool.peek(10)
    assert [item.record for item in got] == records
    assert got[0].record.timestamp.tzinfo is not None
    assert [item.seq for item in got] == sorted(item.seq for item in got)
    assert spool.stats.records == 5 and spool.stats.oldest_timestamp == records[0].timestamp

    assert spool.remove_through(got[1].seq) == 2
    assert [item.record for item in spool.peek(10)] == records[2:]
    assert spool.stats.removed_total == 2 and spool.stats.records == 3
    spool.close()


def test_spool_is_wal_and_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "mqtt.sqlite3"
    spool = SpoolFile(path, synchronous="full")
    assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    spool.append([make_record(i) for i in range(3)])
    spool.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    reopened = SpoolFile(path)
    assert reopened._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert [item.record for item in reopened.peek(10)] == [make_record(i) for i in range(3)]
    assert reopened.stats.records == 3
    # New records go after the old ones even after the spool was emptied once.
    reopened.remove_through(reopened.peek(10)[-1].seq)
    reopened.append(make_record(9))
    assert reopened.peek(1)[0].seq > 3
    reopened.close()


def test_a_drained_spool_gives_its_disk_space_back(tmp_path: Path) -> None:
    path = tmp_path / "mqtt.sqlite3"
    spool = SpoolFile(path)
    spool.append([make_record(i, payload_size=2000) for i in range(500)])
    spool._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    full_size = path.stat().st_size
    assert full_size > 500 * 2000
    spool.remove_through(spool.peek(1000)[-1].seq)
    assert path.stat().st_size < full_size / 20
    assert Path(f"{path}-wal").stat().st_size == 0
    spool.append(make_record(500))  # still usable afterwards
    assert spool.peek(1)[0].record == make_record(500)
    spool.close()


def test_record_bound_drops_oldest_and_counts_and_logs(tmp_path: Path) -> None:
    spool = SpoolFile(tmp_path / "mqtt.sqlite3", SpoolLimits(max_records=5, max_bytes=10**9))
    with structlog.testing.capture_logs() as logs:
        dropped = sum(spool.append(make_record(i)) for i in range(8))
    assert dropped == 3
    assert [item.record.payload["count_int"] for item in spool.peek(10)] == [3, 4, 5, 6, 7]
    assert spool.stats.dropped_total == 3 and spool.stats.records == 5
    warnings = [entry for entry in logs if entry["event"] == "spool_full_dropped_oldest"]
    assert warnings and warnings[0]["max_records"] == 5  # rate-limited: one line, not three
    assert len(warnings) == 1
    spool.close()


def test_byte_bound_drops_oldest_until_it_fits(tmp_path: Path) -> None:
    one = SpoolFile(tmp_path / "probe.sqlite3")
    one.append(make_record(0, payload_size=1000))
    record_bytes = one.stats.bytes
    one.close()

    spool = SpoolFile(tmp_path / "mqtt.sqlite3", SpoolLimits(max_records=1000, max_bytes=3 * record_bytes + 10))
    for i in range(6):
        spool.append(make_record(i, payload_size=1000))
    assert [item.record.payload["count_int"] for item in spool.peek(10)] == [3, 4, 5]
    assert spool.stats.bytes <= spool.limits.max_bytes
    assert spool.stats.dropped_total == 3
    spool.close()


def test_reopening_with_a_smaller_bound_trims_at_once(tmp_path: Path) -> None:
    path = tmp_path / "mqtt.sqlite3"
    spool = SpoolFile(path)
    spool.append([make_record(i) for i in range(10)])
    spool.close()
    smaller = SpoolFile(path, SpoolLimits(max_records=4))
    assert smaller.stats.records == 4 and smaller.stats.dropped_total == 6
    assert smaller.peek(1)[0].record.payload["count_int"] == 6
    smaller.close()


def test_a_second_process_cannot_open_the_same_spool(tmp_path: Path) -> None:
    path = tmp_path / "mqtt.sqlite3"
    first = SpoolFile(path)
    with pytest.raises(SpoolError, match="in use by another process"):
        SpoolFile(path)
    first.close()
    SpoolFile(path).close()  # released on close


def test_damaged_spool_is_moved_aside_and_a_fresh_one_starts(tmp_path: Path) -> None:
    path = tmp_path / "mqtt.sqlite3"
    path.write_bytes(b"this is not an sqlite database" * 200)
    with structlog.testing.capture_logs() as logs:
        spool = SpoolFile(path)
    assert spool.stats.records == 0
    spool.append(make_record(1))
    assert spool.peek(1)[0].record == make_record(1)
    spool.close()
    moved = list(tmp_path.glob("mqtt.sqlite3.corrupt-*"))
    assert moved and moved[0].read_bytes().startswith(b"this is not")
    assert any(entry["event"] == "spool_unreadable_moved_aside" for entry in logs)


def test_unserialisable_payload_is_a_clear_error(tmp_path: Path) -> None:
    spool = SpoolFile(tmp_path / "mqtt.sqlite3")
    bad = OutboundRecord("count", "gate-1", "gate-1:bad", T0, {"when": object()})
    with pytest.raises(ValueError, match="gate-1:bad.*JSON"):
        spool.append(bad)
    assert spool.stats.records == 0
    spool.close()


def test_async_spool_runs_sqlite_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: set[str] = set()
    original_append = SpoolFile.append

    def recording_append(self: SpoolFile, records):  # type: ignore[no-untyped-def]
        threads.add(threading.current_thread().name)
        return original_append(self, records)

    monkeypatch.setattr(SpoolFile, "append", recording_append)

    async def scenario() -> list[int]:
        spool = Spool.for_output(tmp_path, "mqtt", SpoolLimits(max_records=100))
        await spool.open()
        for i in range(3):
            await spool.append(make_record(i))
        assert spool.depth == 3
        head = await spool.peek(2)
        await spool.remove_through(head[-1].seq)
        left = [item.record.payload["count_int"] for item in await spool.peek(10)]
        await spool.close()
        return left

    assert asyncio.run(scenario()) == [2]
    assert threads and all(name.startswith("spool-mqtt") for name in threads)
    assert threading.main_thread().name not in threads
    assert (tmp_path / "spool" / "mqtt.sqlite3").exists()


WRITER = r"""
import sys
from avcc_stream.stream.spool import SpoolFile
sys.path.insert(0, sys.argv[2])
from test_spool import make_record
spool = SpoolFile(sys.argv[1], synchronous=sys.argv[3])
i = 0
while True:
    spool.append(make_record(i, payload_size=200))
    print(i, flush=True)  # printed only after the commit returned
    i += 1
"""


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_committed_records_survive_sigkill(tmp_path: Path, synchronous: str) -> None:
    path = tmp_path / "mqtt.sqlite3"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(Path(__file__).parent), synchronous],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    last_committed = -1
    try:
        assert writer.stdout is not None
        deadline = time.monotonic() + 60
        while last_committed < 300 and time.monotonic() < deadline:
            line = writer.stdout.readline()
            if not line:
                break
            last_committed = int(line)
    finally:
        os.kill(writer.pid, signal.SIGKILL)  # mid-write: it appends as fast as it can
        writer.wait(timeout=10)
    # The writer may have run ahead of our reading: its last printed line is the truth.
    for line in writer.stdout:
        if line.strip():
            last_committed = int(line)
    assert writer.returncode == -signal.SIGKILL
    assert last_committed >= 300, writer.stderr.read() if writer.stderr else ""

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    spool = SpoolFile(path)
    counts = [item.record.payload["count_int"] for item in spool.peek(100_000)]
    # Everything reported committed is there, in order, with no holes; at most the one
    # append in flight at the kill may also have made it.
    assert counts[: last_committed + 1] == list(range(last_committed + 1))
    assert counts == list(range(len(counts))) and len(counts) <= last_committed + 2
    print(f"{synchronous}: committed {last_committed + 1}, found {len(counts)} after SIGKILL")
    assert spool.peek(1)[0].record == make_record(0, payload_size=200)
    spool.close()
