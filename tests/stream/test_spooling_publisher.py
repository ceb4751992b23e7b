"""SpoolingPublisher's logic against an in-process fake output (outages on demand).

The same behaviour against real mosquitto, stopped and restarted on its port, is in
tests/stream/test_spooling_mqtt.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from avcc_stream.stream.backoff import ExponentialBackoff
from avcc_stream.stream.publish.base import PublishError, PublisherUnavailable
from avcc_stream.stream.publish.spooling import SpoolingPublisher
from avcc_stream.stream.spool import Spool, SpoolFile, SpoolLimits
from avcc_stream.stream.types import OutboundRecord
from tests.stream.test_spool import make_record


class FakeOutput:
    """Accepts records while `up`; raises PublisherUnavailable at once while down."""

    name = "fake"

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.accepted: list[OutboundRecord] = []
        self.starts = 0
        self.closed = False
        self.lose_ack_of: set[str] = set()  # accept these, then report failure (once)
        self.refuse: set[str] = set()  # never take these (a bad record)
        self.crash_on: set[str] = set()  # a bug in the output (once per id)
        self.hang = False  # True: publish hangs until it is False again

    @property
    def connected(self) -> bool:
        return self.up

    async def start(self) -> None:
        if not self.up:
            raise PublisherUnavailable("broker unreachable")
        self.starts += 1

    async def publish(self, record: OutboundRecord) -> None:
        await asyncio.sleep(0)  # a real output yields while waiting for its acknowledgement
        while self.hang:
            await asyncio.sleep(0.01)
        if not self.up:
            raise PublisherUnavailable("broker unreachable")
        if record.record_id in self.refuse:
            raise PublishError("payload too large for this output")
        if record.record_id in self.crash_on:
            self.crash_on.discard(record.record_id)
            raise KeyError("bug")
        self.accepted.append(record)
        if record.record_id in self.lose_ack_of:
            self.lose_ack_of.discard(record.record_id)
            raise PublisherUnavailable("connection lost before PUBACK")

    async def close(self) -> None:
        self.closed = True

    def accepted_counts(self) -> list[int]:
        return [record.payload["count_int"] for record in self.accepted]


def fast_backoff() -> ExponentialBackoff:
    return ExponentialBackoff(initial_s=0.005, max_s=0.02, rng=random.Random(7))


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll a condition; fail with `what` if it never holds (a bound, not a timing claim)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.005)


def drained(publisher: SpoolingPublisher) -> bool:
    """The backlog is delivered and records go straight through again."""
    return not publisher.stats.spooling and publisher.spool.depth == 0


def make_publisher(tmp_path: Path, output: FakeOutput, **kwargs) -> SpoolingPublisher:  # type: ignore[no-untyped-def]
    limits = kwargs.pop("limits", SpoolLimits())
    kwargs.setdefault("backoff", fast_backoff())
    return SpoolingPublisher(output, Spool.for_output(tmp_path, "fake", limits), **kwargs)


def test_output_up_records_go_straight_through_without_touching_the_spool(tmp_path: Path) -> None:
    async def scenario() -> None:
        output = FakeOutput()
        publisher = make_publisher(tmp_path, output)
        await publisher.start()
        for i in range(5):
            await publisher.publish(make_record(i))
        assert output.accepted_counts() == [0, 1, 2, 3, 4]
        stats = publisher.stats
        assert stats.direct_total == 5 and stats.spooled_total == 0
        assert stats.spool.appended_total == 0 and not stats.spooling
        assert publisher.connected and publisher.name == "fake"
        await publisher.close()
        assert output.closed

    asyncio.run(scenario())


def test_outage_spools_in_order_and_replays_everything_once_the_output_is_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        output = FakeOutput()
        publisher = make_publisher(tmp_path, output)
        await publisher.start()
        for i in range(3):
            await publisher.publish(make_record(i))
        output.up = False
        for i in range(3, 13):
            await publisher.publish(make_record(i))  # returns: stored, not lost
        assert output.accepted_counts() == [0, 1, 2]
        assert publisher.spool.depth == 10 and publisher.stats.spooling
        assert not publisher.connected

        output.up = True
        # Records published during the replay queue behind the backlog.
        for i in range(13, 18):
            await publisher.publish(make_record(i))
        await wait_until(lambda: drained(publisher), "spool drained")
        assert output.accepted_counts() == list(range(18))
        assert [r.timestamp for r in output.accepted] == [make_record(i).timestamp for i in range(18)]
        assert not publisher.stats.spooling

        await publisher.publish(make_record(18))  # straight through again
        assert output.accepted_counts()[-1] == 18
        assert publisher.stats.direct_total >= 4
        await publisher.close()

    asyncio.run(scenario())


def test_lost_acknowledgement_gives_only_a_duplicate_with_the_same_id(tmp_path: Path) -> None:
    async def scenario() -> None:
        output = FakeOutput()
        publisher = make_publisher(tmp_path, output)
        await publisher.start()
        output.lose_ack_of = {make_record(2).record_id, make_record(5).record_id}
        for i in range(8):
            if i == 5:
                output.up = False
            await publisher.publish(make_record(i))
            if i == 5:
                output.up = True
        await wait_until(lambda: drained(publisher), "spool drained")
        ids = [r.record_id for r in output.accepted]
        first_seen = list(dict.fromkeys(ids))
        assert first_seen == [make_record(i).record_id for i in range(8)]  # no loss, in order
        # Record 2's PUBACK was lost on the direct path, record 5's during the replay: each
        # arrives twice, back to back, with the same id.
        assert len(ids) - len(first_seen) == 2
        assert ids.count(make_record(2).record_id) == 2 and ids.count(make_record(5).record_id) == 2
        assert ids.index(make_record(2).record_id) + 1 == ids.index(make_record(3).record_id) - 1
        await publisher.close()

    asyncio.run(scenario())


def test_bound_drops_the_oldest_records_of_a_long_outage_and_counts_them(tmp_path: Path) -> None:
    async def scenario() -> None:
        output = FakeOutput(up=True)
        publisher = make_publisher(tmp_path, output, limits=SpoolLimits(max_records=5))
        await publisher.start()
        output.up = False
        for i in range(12):
            await publisher.publish(make_record(i))
        assert publisher.spool.depth == 5 and publisher.stats.spool.dropped_total == 7
        output.up = True
        await wait_until(lambda: drained(publisher), "spool drained")
        assert output.accepted_counts() == [7, 8, 9, 10, 11]
        await publisher.close()

    asyncio.run(scenario())


def test_backlog_left_by_a_previous_run_is_replayed_before_new_records(tmp_path: Path) -> None:
    leftover = SpoolFile(tmp_path / "spool" / "fake.sqlite3")
    leftover.append([make_record(i) for i in range(4)])
    leftover.close()

    async def scenario() -> None:
        output = FakeOutput()
        publisher = make_publisher(tmp_path, output)
        await publisher.start()
        await publisher.publish(make_record(4))
        await publisher.publish(make_record(5))
        await wait_until(lambda: drained(publisher), "spool drained")
        assert output.accepted_counts() == [0, 1, 2, 3, 4, 5]
        await publisher.close()

    asyncio.run(scenario())


def test_output_down_at_start_up_does_not_stop_the_daemon(tmp_path: Path) -> None:
    async def scenario() -> None:
        output = FakeOutput(up=False)
        publisher = make_publisher(tmp_path, output)
        await publisher.start()  # no exception: the daemon keeps counting
        for i in range(3):
            await publisher.publish(make_record(i))
        assert publisher.spool.depth == 3 and output.starts == 0
        output.up = True
        await wait_until(lambda: drained(publisher), "spool drained")
        assert output.starts == 1 and output.accepted_counts() == [0, 1, 2]
        await publisher.close()
        assert output.closed

    asyncio.run(scenario())


def test_an_output_that_hangs_is_timed_out_into_the_spool(tmp_path: Path) -> None:
    async def scenario() -> None:
        output = FakeOutput()
        publisher = make_publisher(tmp_path, output, publish_timeout_s=0.05)
        await publisher.start()
        output.hang = True
        await publisher.publish(make_record(0))  # returns after the guard timeout
        await publisher.publish(make_record(1))  # queued behind it without waiting
        assert publisher.spool.depth == 2 and output.accepted == []
        output.hang = False
        await wait_until(lambda: drained(publisher), "spool drained")
        assert output.accepted_counts() == [0, 1]
        await publisher.close()

    asyncio.run(scenario())


def test_a_record_the_output_refuses_for_good_is_dropped_and_replay_goes_on(tmp_path: Path) -> None:
    async def scenario() -> None:
        output = FakeOutput(up=False)
        publisher = make_publisher(tmp_path, output)
        await publisher.start()
        for i in range(4):
            await publisher.publish(make_record(i))
        output.refuse = {make_record(1).record_id}
        output.up = True
        await wait_until(lambda: drained(publisher), "spool drained")
        assert output.accepted_counts() == [0, 2, 3]
        assert publisher.stats.rejected_total == 1
        await publisher.close()

    asyncio.run(scenario())


def test_an_unexpected_error_in_the_output_keeps_the_record_for_a_retry(tmp_path: Path) -> None:
    async def scenario() -> None:
        output = FakeOutput(up=False)
        publisher = make_publisher(tmp_path, output)
        await publisher.start()
        for i in range(3):
            await publisher.publish(make_record(i))
        output.crash_on = {make_record(1).record_id}
        output.up = True
        await wait_until(lambda: drained(publisher), "spool drained")
        assert output.accepted_counts() == [0, 1, 2] and publisher.stats.rejected_total == 0
        await publisher.close()

    asyncio.run(scenario())


def test_close_lets_a_publish_in_progress_finish_into_the_spool(tmp_path: Path) -> None:
    async def scenario() -> None:
        output = FakeOutput()
        publisher = make_publisher(tmp_path, output, publish_timeout_s=0.2)
        await publisher.start()
        output.hang = True
        in_flight = asyncio.create_task(publisher.publish(make_record(0)))
        await asyncio.sleep(0.05)
        await publisher.close()
        await in_flight  # neither lost nor an error: it timed out into the spool
        assert publisher.stats.spooled_total == 1 and publisher.stats.lost_total == 0

    asyncio.run(scenario())
    leftover = SpoolFile(tmp_path / "spool" / "fake.sqlite3")
    assert [item.record for item in leftover.peek(10)] == [make_record(0)]
    leftover.close()


def test_a_refused_start_releases_the_spool(tmp_path: Path) -> None:
    class RefusingOutput(FakeOutput):
        async def start(self) -> None:
            raise PublishError("not authorised")

    async def scenario() -> None:
        publisher = make_publisher(tmp_path, RefusingOutput())
        with pytest.raises(PublishError, match="not authorised"):
            await publisher.start()
        assert not publisher.spool.is_open

    asyncio.run(scenario())
    SpoolFile(tmp_path / "spool" / "fake.sqlite3").close()  # not locked any more


def test_close_keeps_the_backlog_on_disk_for_the_next_start(tmp_path: Path) -> None:
    async def first_run() -> None:
        output = FakeOutput(up=False)
        publisher = make_publisher(tmp_path, output)
        await publisher.start()
        for i in range(4):
            await publisher.publish(make_record(i))
        await publisher.close()

    async def second_run() -> list[int]:
        output = FakeOutput(up=True)
        publisher = make_publisher(tmp_path, output)
        await publisher.start()
        await wait_until(lambda: drained(publisher), "spool drained")
        await publisher.close()
        return output.accepted_counts()

    asyncio.run(first_run())
    assert asyncio.run(second_run()) == [0, 1, 2, 3]


def test_flapping_output_loses_nothing_and_keeps_order(tmp_path: Path) -> None:
    """Random outages while records keep coming: everything arrives, in order, duplicates
    only of records whose acknowledgement was lost."""

    async def scenario() -> None:
        rng = random.Random(1234)
        output = FakeOutput()
        publisher = make_publisher(tmp_path, output)
        await publisher.start()

        async def flap() -> None:
            for _ in range(40):
                output.up = not output.up
                await asyncio.sleep(rng.uniform(0.0, 0.01))
            output.up = True

        flapper = asyncio.create_task(flap())
        for i in range(300):
            if rng.random() < 0.05:
                output.lose_ack_of.add(make_record(i).record_id)
            await publisher.publish(make_record(i))
            if i % 7 == 0:
                await asyncio.sleep(0.001)
        await flapper
        await wait_until(lambda: drained(publisher), "spool drained")
        ids = [r.record_id for r in output.accepted]
        assert list(dict.fromkeys(ids)) == [make_record(i).record_id for i in range(300)]
        assert publisher.stats.spooled_total > 0  # the flapping really did cause outages
        # A duplicate is only ever the immediate resend of the same record.
        seen: set[str] = set()
        for position, record_id in enumerate(ids):
            assert record_id not in seen or ids[position - 1] == record_id
            seen.add(record_id)
        assert len(ids) > 300  # some acknowledgements were lost, so some resends happened
        await publisher.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("jitter", [0.0, 0.5])
def test_backoff_grows_exponentially_up_to_its_cap_with_bounded_jitter(jitter: float) -> None:
    backoff = ExponentialBackoff(initial_s=0.5, max_s=4.0, jitter=jitter, rng=random.Random(3))
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    delays = [backoff.next_delay() for _ in ceilings]
    for delay, ceiling in zip(delays, ceilings):
        assert ceiling * (1 - jitter) <= delay <= ceiling
    if jitter == 0.0:
        assert delays == ceilings
    backoff.reset()
    assert backoff.next_delay() <= 0.5
    with pytest.raises(ValueError, match="initial_s"):
        ExponentialBackoff(initial_s=5, max_s=1)


def test_replay_starts_as_soon_as_the_output_reconnects_not_when_the_backoff_ends(tmp_path: Path) -> None:
    # MQTT reconnects by itself (paho); the backlog must not sit out a long backoff after that.
    async def scenario() -> None:
        output = FakeOutput()
        long_backoff = ExponentialBackoff(initial_s=30.0, max_s=30.0, jitter=0.0)
        publisher = make_publisher(tmp_path, output, backoff=long_backoff)
        await publisher.start()
        output.up = False
        await publisher.publish(make_record(0))
        await wait_until(lambda: long_backoff.failures >= 1, "the replay failed once and is backing off")
        output.up = True  # the output says it is connected again
        await wait_until(lambda: drained(publisher), "spool drained well before the 30 s backoff", timeout=5.0)
        assert output.accepted_counts() == [0]
        await publisher.close()

    asyncio.run(scenario())
