"""The sink contract's buffering without a broker: batches of hand-made messages through
``add``/``cut``/``flush`` of a :class:`~pinpipe.lake.parquet.ParquetSink` into a local lake.

A consumed batch is buffered a topic-partition run at a time in bulk, and falls back to the
per-record loop for runs it cannot take whole. Both must cut files at the same records, since
file names (first offsets) are what makes a re-run after a crash replace, never duplicate.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Message

from pinpipe.config import load_settings
from pinpipe.lake.buffer import BatchingSink
from pinpipe.lake.parquet import ParquetSink
from pinpipe.lake.storage import LakeStorage
from tests.lake.conftest import raw_files

MIDNIGHT = int(datetime(2024, 1, 2, tzinfo=timezone.utc).timestamp() * 1000)  # 2024-01-02 00:00
PIN, GEO = "p.pin", "p.geo"


def make_sink(tmp_path: Path, partitions: list[tuple[str, int]], checkpoint=None,
              **lake) -> ParquetSink:  # fmt: skip
    """A Parquet sink owning ``partitions`` from offset 0 (nothing committed yet)."""
    settings = load_settings(data_dir=tmp_path, broker={"topic_prefix": "p"},
                             lake={"rotate_age_s": 600, **lake})  # fmt: skip
    sink = ParquetSink(settings.lake, LakeStorage.from_settings(settings), checkpoint=checkpoint)
    sink.assign({key: 0 for key in partitions})
    return sink


def message(topic: str, partition: int, offset: int, value: bytes | None = b"{}",
            timestamp: int | None = MIDNIGHT - 60_000) -> Message:  # fmt: skip
    stamp = (1, timestamp) if timestamp is not None else (0, -1)  # librdkafka: -1 when missing
    key = f"k{offset}".encode()
    return Message(topic=topic, partition=partition, offset=offset, value=value, key=key,
                   timestamp=stamp)  # fmt: skip


def drain(sink: ParquetSink, *batches: list[Message]) -> list[tuple[str, str, int, list[int]]]:
    """Buffer the batches (a checkpoint after each), write what is left as on shutdown;
    (dt, table, first offset, offsets) of every file."""
    for batch in batches:
        sink.add(batch)
        sink.flush()
    sink.cut()
    sink.flush()
    files = []
    for path in raw_files(Path(sink.storage.base)):
        offsets = pq.read_table(path, columns=["offset"]).column("offset").to_pylist()
        files.append((path.parent.name, path.parent.parent.name, offsets[0], offsets))
    return files


@pytest.fixture(params=["bulk", "per-record"])
def buffering(request, monkeypatch) -> str:
    """Every test runs twice: the bulk path, and every run forced through the per-record loop."""
    if request.param == "per-record":
        monkeypatch.setattr(BatchingSink, "add_run", lambda self, key, run: False)
    return request.param


def test_a_run_spanning_midnight_splits_into_two_days(tmp_path, buffering) -> None:
    sink = make_sink(tmp_path, [(PIN, 0)])
    stamps = [MIDNIGHT - 2000, MIDNIGHT - 1000, MIDNIGHT - 1, MIDNIGHT, MIDNIGHT + 1000]
    batch = [message(PIN, 0, offset, timestamp=stamp) for offset, stamp in enumerate(stamps)]
    assert drain(sink, batch) == [("dt=2024-01-01", "pin", 0, [0, 1, 2]),
                                  ("dt=2024-01-02", "pin", 3, [3, 4])]  # fmt: skip


def test_a_run_of_the_next_day_closes_the_open_file(tmp_path, buffering) -> None:
    sink = make_sink(tmp_path, [(PIN, 0)])
    first = [message(PIN, 0, offset, timestamp=MIDNIGHT - 10) for offset in range(3)]
    second = [message(PIN, 0, offset, timestamp=MIDNIGHT + 10) for offset in range(3, 5)]
    assert drain(sink, first, second) == [("dt=2024-01-01", "pin", 0, [0, 1, 2]),
                                          ("dt=2024-01-02", "pin", 3, [3, 4])]  # fmt: skip


def test_one_invalid_utf8_value_keeps_its_bytes(tmp_path, buffering) -> None:
    sink = make_sink(tmp_path, [(PIN, 0)])
    values = [b'{"a": 1}', b"\xff\xfe not utf-8", '{"b": "caf\u00e9"}'.encode(), None]
    drain(sink, [message(PIN, 0, offset, value) for offset, value in enumerate(values)])
    (only,) = raw_files(tmp_path / "lake")
    rows = pq.read_table(only, columns=["value", "value_bytes", "offset"]).to_pylist()
    assert rows == [
        {"value": '{"a": 1}', "value_bytes": None, "offset": 0},
        {"value": None, "value_bytes": b"\xff\xfe not utf-8", "offset": 1},
        {"value": '{"b": "caf\u00e9"}', "value_bytes": None, "offset": 2},
        {"value": None, "value_bytes": None, "offset": 3},  # a tombstone stays null
    ]


def test_count_and_bytes_cut_files_inside_a_run(tmp_path, buffering) -> None:
    sink = make_sink(tmp_path, [(PIN, 0), (GEO, 0)], rotate_records=4, rotate_bytes=250)
    pins = [message(PIN, 0, offset) for offset in range(10)]  # 2 B each: count decides
    geos = [message(GEO, 0, offset, b"x" * 100) for offset in range(7)]  # bytes decide
    assert drain(sink, pins[:6] + geos + pins[6:]) == [
        ("dt=2024-01-01", "geo", 0, [0, 1, 2]),  # 300 B >= 250 B after the third record
        ("dt=2024-01-01", "geo", 3, [3, 4, 5]),
        ("dt=2024-01-01", "geo", 6, [6]),
        ("dt=2024-01-01", "pin", 0, [0, 1, 2, 3]),
        ("dt=2024-01-01", "pin", 4, [4, 5, 6, 7]),
        ("dt=2024-01-01", "pin", 8, [8, 9]),
    ]


def test_memory_cap_cuts_inside_a_run(tmp_path, buffering) -> None:
    # 1,000 B values + 200 B bookkeeping each: the 4th record crosses 4,096 B.
    sink = make_sink(tmp_path, [(PIN, 0)], max_buffer_bytes=4096)
    batch = [message(PIN, 0, offset, b"z" * 1000) for offset in range(10)]
    assert drain(sink, batch) == [("dt=2024-01-01", "pin", 0, [0, 1, 2, 3]),
                                  ("dt=2024-01-01", "pin", 4, [4, 5, 6, 7]),
                                  ("dt=2024-01-01", "pin", 8, [8, 9])]  # fmt: skip


def test_redelivered_missing_timestamp_and_same_partition_of_two_topics(tmp_path, buffering) -> None:
    sink = make_sink(tmp_path, [(PIN, 0), (GEO, 0)])
    batch = [
        *(message(PIN, 0, offset) for offset in range(3)),
        *(message(GEO, 0, offset) for offset in range(2)),  # partition 0 again, another topic
        *(message(PIN, 0, offset) for offset in range(1, 5)),  # 1 and 2 again: taken already
    ]
    late = [message(GEO, 0, 2, timestamp=None)]  # no broker timestamp: keeps the open file's day
    assert drain(sink, batch, late) == [("dt=2024-01-01", "geo", 0, [0, 1, 2]),
                                        ("dt=2024-01-01", "pin", 0, [0, 1, 2, 3, 4])]  # fmt: skip
    orphan = make_sink(tmp_path / "orphan", [(PIN, 0)])
    # A file whose first record has no timestamp goes to 1970-01-01 (the same on every re-run);
    # the next record with a timestamp is another day.
    assert drain(orphan, [message(PIN, 0, 0, timestamp=None), message(PIN, 0, 1)]) == [
        ("dt=1970-01-01", "pin", 0, [0]), ("dt=2024-01-01", "pin", 1, [1])
    ]


def test_records_of_unassigned_partitions_are_dropped(tmp_path, buffering) -> None:
    sink = make_sink(tmp_path, [(PIN, 0)])
    assert drain(sink, [message(PIN, 1, 0), message(PIN, 0, 0)]) == [
        ("dt=2024-01-01", "pin", 0, [0])
    ]


def test_flush_returns_the_offsets_made_durable(tmp_path, buffering) -> None:
    sink = make_sink(tmp_path, [(PIN, 0), (GEO, 0)], rotate_records=4)
    sink.add([message(PIN, 0, offset) for offset in range(6)]
             + [message(GEO, 0, offset) for offset in range(2)])  # fmt: skip
    assert sink.flush() == {(PIN, 0): 4}  # the file [0..3]; pin 4, 5 and geo 0, 1 stay open
    assert sink.positions() == {(PIN, 0): 6, (GEO, 0): 2}
    sink.cut([(GEO, 0)])
    assert sink.flush() == {(GEO, 0): 2}
    sink.cut()
    assert sink.flush() == {(PIN, 0): 6}
    assert sink.flush() == {}


def test_the_memory_cap_calls_the_checkpoint_mid_batch(tmp_path, buffering) -> None:
    # As in test_memory_cap_cuts_inside_a_run: the 4th and the 8th record cross 4,096 B.
    checkpoints = []
    sink = make_sink(tmp_path, [(PIN, 0)], checkpoint=lambda: checkpoints.append(sink.flush()),
                     max_buffer_bytes=4096)  # fmt: skip
    sink.add([message(PIN, 0, offset, b"z" * 1000) for offset in range(10)])
    assert checkpoints == [{(PIN, 0): 4}, {(PIN, 0): 8}]
    assert sink.flush() == {}  # [8, 9] still open
    sink.cut()
    assert sink.flush() == {(PIN, 0): 10}


def test_forgotten_partitions_are_never_written(tmp_path, buffering) -> None:
    sink = make_sink(tmp_path, [(PIN, 0), (GEO, 0)], rotate_records=2)
    sink.add([message(PIN, 0, offset) for offset in range(3)]
             + [message(GEO, 0, offset) for offset in range(3)])  # fmt: skip
    sink.forget([(GEO, 0)])
    sink.cut()
    assert sink.flush() == {(PIN, 0): 3}
    assert sink.positions() == {(PIN, 0): 3}
    assert [path.name for path in raw_files(tmp_path / "lake")] == [
        f"{PIN}+0+{0:020d}.parquet", f"{PIN}+0+{2:020d}.parquet"
    ]
