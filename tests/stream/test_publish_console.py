"""Console/JSON-lines publisher: one parseable line per record, in order, to a file or stdout."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from avcc_stream.stream.publish.base import Publisher, PublisherUnavailable
from avcc_stream.stream.publish.console import ConsolePublisher
from tests.stream.record_samples import one_of_each


def test_records_are_appended_as_json_lines_in_order(tmp_path: Path) -> None:
    path = tmp_path / "out" / "records.jsonl"
    records = one_of_each("gate1", second=1) + one_of_each("gate1", second=2)

    async def scenario() -> None:
        publisher = ConsolePublisher(path)
        assert isinstance(publisher, Publisher)
        await publisher.start()
        await asyncio.gather(*(publisher.publish(record) for record in records))
        await publisher.close()

    asyncio.run(scenario())
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["id"] for line in lines] == [record.record_id for record in records]
    assert lines[0]["topic"] == "crowd/gate1/count" and lines[0]["count"] == records[0].payload["count"]


def test_stdout_lines_and_unavailable_before_start(capsys: pytest.CaptureFixture[str]) -> None:
    record = one_of_each("gate1")[0]

    async def scenario() -> None:
        publisher = ConsolePublisher()
        with pytest.raises(PublisherUnavailable):
            await publisher.publish(record)
        await publisher.start()
        await publisher.publish(record)
        await publisher.close()

    asyncio.run(scenario())
    assert json.loads(capsys.readouterr().out)["id"] == record.record_id
