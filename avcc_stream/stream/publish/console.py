"""JSON-lines publisher: one line per record on standard output or appended to a file.

For the demo and for debugging: `{"kind": "count", "topic": "crowd/gate1/count", ...payload}`.
Writes happen in a worker thread (a slow terminal or disk never blocks the event loop), one at
a time so lines keep their order; a record counts as accepted once its line is flushed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import IO

from avcc_stream.stream.publish.base import PublisherUnavailable
from avcc_stream.stream.types import OutboundRecord


class ConsolePublisher:
    name = "console"

    def __init__(self, path: Path | None = None, stream: IO[str] | None = None, topic_prefix: str = "crowd") -> None:
        self.path = path
        self.topic_prefix = topic_prefix
        self._stream = stream
        self._owns_stream = False
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._stream is not None and not self._stream.closed

    async def start(self) -> None:
        if self._stream is not None:
            return
        if self.path is None:
            self._stream = sys.stdout
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = await asyncio.to_thread(open, self.path, "a", encoding="utf-8")
            self._owns_stream = True

    def line(self, record: OutboundRecord) -> str:
        topic = f"{self.topic_prefix}/{record.camera}/{record.kind}"
        return json.dumps({"kind": record.kind, "topic": topic, **record.payload},
                          separators=(",", ":"), ensure_ascii=False) + "\n"

    async def publish(self, record: OutboundRecord) -> None:
        stream = self._stream
        if stream is None or stream.closed:
            raise PublisherUnavailable("console publisher is not started")
        text = self.line(record)
        async with self._lock:
            try:
                await asyncio.to_thread(self._write, stream, text)
            except OSError as exc:
                raise PublisherUnavailable(f"cannot write records to {self.path or 'stdout'}: {exc}") from exc

    @staticmethod
    def _write(stream: IO[str], text: str) -> None:
        stream.write(text)
        stream.flush()

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None and self._owns_stream:
            await asyncio.to_thread(stream.close)
