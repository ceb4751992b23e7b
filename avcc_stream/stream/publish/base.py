"""The one interface every output implements, and the errors it may raise.

The contract (issue 7's spool relies on it): `publish` returns only once the record is
durably accepted by the output (MQTT QoS 1: the broker's PUBACK; Redis: the command's reply;
a file: written and flushed), and raises `PublisherUnavailable` within a bounded time when the
output is down. A publisher never drops a record silently and never buffers records of its
own: the caller decides whether to retry, spool or drop.
"""

from __future__ import annotations

import json
from typing import Protocol, runtime_checkable

from avcc_stream.stream.types import OutboundRecord


class PublishError(Exception):
    """The output refused the record for good (retrying the same record will not help)."""


class PublisherUnavailable(Exception):
    """The output is down or did not acknowledge in time; retry this record later."""


@runtime_checkable
class Publisher(Protocol):
    name: str

    @property
    def connected(self) -> bool:
        """True while the output is believed reachable (cheap; no I/O)."""

    async def start(self) -> None:
        """Connect; an unreachable output is not an error here (publish raises until it is back)."""

    async def publish(self, record: OutboundRecord) -> None:
        """Return once the record is durably accepted; raise PublisherUnavailable if it cannot be."""

    async def close(self) -> None:
        """Say goodbye cleanly (availability 'offline' where the output has one) and release it."""


def payload_json(record: OutboundRecord) -> bytes:
    """The record's payload as compact UTF-8 JSON (the MQTT message body)."""
    return json.dumps(record.payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
