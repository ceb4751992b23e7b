"""How fast the spool takes and gives back records, on this machine (not a test).

    .venv/bin/python scripts/bench_spool.py [--records 5000] [--dir /var/lib/avcc-stream]

Append: one record per transaction, as the daemon spools during an outage (synchronous
NORMAL and FULL), straight on SpoolFile and through the asyncio facade (thread hop).
Replay: SpoolingPublisher draining a backlog into an output that accepts at once, so the
figure is the spool's own cost per record (peek + delete), not a broker's.
Also prints the encoded size of typical count and hotspots records, for sizing max_bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avcc_stream.stream.backoff import ExponentialBackoff  # noqa: E402
from avcc_stream.stream.publish.spooling import SpoolingPublisher  # noqa: E402
from avcc_stream.stream.records import count_record, hotspots_record  # noqa: E402
from avcc_stream.stream.spool import Spool, SpoolFile  # noqa: E402
from avcc_stream.stream.types import CountResult, OutboundRecord  # noqa: E402

T0 = datetime(2026, 5, 1, tzinfo=timezone.utc)


def window_records(second: int) -> tuple[OutboundRecord, OutboundRecord]:
    result = CountResult(
        camera="gate-1", window_start=T0 + timedelta(seconds=second), window_end=T0 + timedelta(seconds=second + 1),
        count=37.2, model="cc-av-lowres", audio=True, latency_ms=85.0,
        patch_counts=np.random.default_rng(second).random((4, 4)) * 4, pir=None, frame_size=(1920, 1080),
    )
    return count_record(result), hotspots_record(result, top_k=3)


class AcceptingOutput:
    name = "bench"
    connected = True
    accepted = 0

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def publish(self, record: OutboundRecord) -> None:
        self.accepted += 1


def bench_sync_append(directory: Path, records: list[OutboundRecord], synchronous: str) -> float:
    spool = SpoolFile(directory / f"sync-{synchronous}.sqlite3", synchronous=synchronous)  # type: ignore[arg-type]
    start = time.perf_counter()
    for record in records:
        spool.append(record)
    elapsed = time.perf_counter() - start
    spool.close()
    return len(records) / elapsed


async def bench_async(directory: Path, records: list[OutboundRecord], synchronous: str) -> tuple[float, float]:
    state = directory / f"async-{synchronous}"
    spool = Spool.for_output(state, "bench", synchronous=synchronous)  # type: ignore[arg-type]
    await spool.open()
    start = time.perf_counter()
    for record in records:
        await spool.append(record)
    append_rate = len(records) / (time.perf_counter() - start)
    await spool.close()

    output = AcceptingOutput()
    publisher = SpoolingPublisher(
        output, Spool.for_output(state, "bench", synchronous=synchronous),  # type: ignore[arg-type]
        backoff=ExponentialBackoff(initial_s=0.01, max_s=0.1),
    )
    start = time.perf_counter()
    await publisher.start()
    while publisher.stats.spooling:
        await asyncio.sleep(0.001)
    replay_rate = output.accepted / (time.perf_counter() - start)
    assert output.accepted == len(records)
    await publisher.close()
    return append_rate, replay_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the spool files (default: a temp dir)")
    args = parser.parse_args()

    records = [record for second in range(args.records // 2) for record in window_records(second)]
    count, hotspots = window_records(0)
    probe = tempfile.TemporaryDirectory(dir=args.dir)
    sizes = SpoolFile(Path(probe.name) / "size.sqlite3")
    sizes.append(count)
    count_bytes = sizes.stats.bytes
    sizes.append(hotspots)
    hotspots_bytes = sizes.stats.bytes - count_bytes
    sizes.close()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        filesystem = subprocess.run(["df", "-T", tmp], capture_output=True, text=True).stdout.splitlines()[-1].split()[1]
        print(f"spool files in {tmp} ({filesystem}), {len(records)} records, {os.cpu_count()} CPUs")
        print(f"encoded size: count record {count_bytes} B, hotspots record (4x4 grid) {hotspots_bytes} B")
        for synchronous in ("normal", "full"):
            sync_rate = bench_sync_append(directory, records, synchronous)
            async_append, replay = asyncio.run(bench_async(directory, records, synchronous))
            print(
                f"synchronous={synchronous:6}  append {sync_rate:8.0f} rec/s (SpoolFile), "
                f"{async_append:8.0f} rec/s (Spool, thread hop);  replay {replay:8.0f} rec/s"
            )
    probe.cleanup()


if __name__ == "__main__":
    main()
