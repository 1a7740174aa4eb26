"""The sink in a thread against the session's Tansu broker, writing a local lake."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest

from pinpipe.lake import SinkStopped, list_partitions, run_sink, verify_lake
from pinpipe.lake.layout import parse_file_name
from tests.lake.conftest import raw_files, read_lake, wait_for

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
JAN_1 = int(datetime(2024, 1, 1, 12, tzinfo=timezone.utc).timestamp() * 1000)


def lake_rows(env) -> int:
    return sum(pq.read_metadata(path).num_rows for path in raw_files(env.lake_dir))


def test_rotation_by_count_and_layout(lake_env) -> None:
    lake_env.create_topics(partitions=1)
    topic = lake_env.topic("pin")
    values = [f'{{"i": {i}, "t": "caf\u00e9 \U0001f4cc"}}'.encode() for i in range(25)]
    lake_env.produce(topic, values, partition=0, timestamps=[JAN_1] * 25)
    sink = lake_env.run_in_thread(lake_env.settings(rotate_records=10, rotate_age_s=600))
    wait_for(lambda: lake_rows(lake_env) >= 20, 30, "two full files")
    stats = sink.stop()

    names = [path.name for path in raw_files(lake_env.lake_dir)]
    assert names == [f"{topic}+0+{offset:020d}.parquet" for offset in (0, 10, 20)]
    assert {path.parent.name for path in raw_files(lake_env.lake_dir)} == {"dt=2024-01-01"}
    assert [path.parent.parent.name for path in raw_files(lake_env.lake_dir)] == ["pin"] * 3
    # The last 5 are written on shutdown.
    assert [pq.read_metadata(p).num_rows for p in raw_files(lake_env.lake_dir)] == [10, 10, 5]
    rows = read_lake(lake_env.lake_dir)
    assert [row["value"].encode() for row in rows] == values
    assert [row["offset"] for row in rows] == list(range(25))
    first = rows[0]
    assert first["topic"] == topic and first["partition"] == 0 and first["key"] == "k0"
    assert first["timestamp"] == datetime(2024, 1, 1, 12, tzinfo=timezone.utc)
    assert first["written_at"].tzinfo is not None and first["value_bytes"] is None
    assert stats.records == 25 and stats.files == 3 and stats.records_by_table == {"pin": 25}
    schema = pq.read_schema(raw_files(lake_env.lake_dir)[0])
    assert str(schema.field("timestamp").type) == "timestamp[ms, tz=UTC]"
    assert pq.read_metadata(raw_files(lake_env.lake_dir)[0]).row_group(0).column(0).compression == "ZSTD"


def test_rotation_by_bytes_and_day_change(lake_env) -> None:
    lake_env.create_topics(partitions=1)
    topic = lake_env.topic("geo")
    values = [bytes([65 + i % 26]) * 100 for i in range(12)]  # 100 B each
    # Offsets 0-7 on Jan 1, 8-11 on Jan 2: the day change closes a file too.
    stamps = [JAN_1] * 8 + [JAN_1 + DAY_MS] * 4
    lake_env.produce(topic, values, partition=0, timestamps=stamps)
    sink = lake_env.run_in_thread(lake_env.settings(rotate_bytes=250, rotate_age_s=600))
    wait_for(lambda: lake_rows(lake_env) >= 9, 30, "files closed by size")
    sink.stop()
    files = [(path.parent.name, parse_file_name(str(path)).first_offset, pq.read_metadata(path).num_rows)
             for path in raw_files(lake_env.lake_dir)]  # fmt: skip
    # 3 x 100 B crosses 250 B; the day change at offset 8 closes [6, 7] early.
    assert files == [("dt=2024-01-01", 0, 3), ("dt=2024-01-01", 3, 3), ("dt=2024-01-01", 6, 2),
                     ("dt=2024-01-02", 8, 3), ("dt=2024-01-02", 11, 1)]  # fmt: skip


def test_rotation_by_age_on_a_quiet_partition(lake_env) -> None:
    lake_env.create_topics(partitions=1)
    topic = lake_env.topic("user")
    sink = lake_env.run_in_thread(lake_env.settings(rotate_age_s=1.0))
    lake_env.produce(topic, [b'{"ind": 1}', b'{"ind": 2}'], partition=0)
    # Far below the count and byte limits: only age can close this file while running.
    wait_for(lambda: lake_rows(lake_env) == 2, 30, "the aged file")
    assert not sink.stop_event.is_set()
    lake_env.produce(topic, [b'{"ind": 3}'], partition=0)
    wait_for(lambda: lake_rows(lake_env) == 3, 30, "the second aged file")
    sink.stop()
    assert [parse_file_name(str(p)).first_offset for p in raw_files(lake_env.lake_dir)] == [0, 2]


def test_dead_letters_go_to_raw_dlq_and_verify_passes(lake_env) -> None:
    lake_env.create_topics(partitions=2)
    dlq, pin = lake_env.topic("dlq"), lake_env.topic("pin")
    lake_env.produce(dlq, [b'{"reason": "index: missing", "record": "{}"}'] * 3)
    lake_env.produce(pin, [f'{{"index": {i}}}'.encode() for i in range(40)])
    sink = lake_env.run_in_thread(lake_env.settings(rotate_records=7, rotate_age_s=0.5))
    wait_for(lambda: lake_rows(lake_env) == 43, 30, "every record in the lake")
    sink.stop()
    tables = {path.parent.parent.name for path in raw_files(lake_env.lake_dir)}
    assert tables == {"_dlq", "pin"}
    dlq_rows = [row for row in read_lake(lake_env.lake_dir) if row["topic"] == dlq]
    assert len(dlq_rows) == 3 and all(row["file"].parts[-3] == "_dlq" for row in dlq_rows)

    partitions = list_partitions(lake_env.settings())
    assert {(p.table, p.records) for p in partitions} >= {("_dlq", 3)}
    assert sum(p.records for p in partitions if p.table == "pin") == 40
    report = verify_lake(lake_env.settings(), lake_env.bootstrap)
    assert report.ok, report
    committed = {(c.topic, c.partition): c.committed for c in report.checks}
    assert sum(committed[(pin, p)] for p in (0, 1)) == 40


def test_verify_reports_duplicates_gaps_and_lost_records(lake_env) -> None:
    lake_env.create_topics(partitions=1)
    topic = lake_env.topic("pin")
    lake_env.produce(topic, [b"x"] * 30, partition=0)
    sink = lake_env.run_in_thread(lake_env.settings(rotate_records=10))
    wait_for(lambda: lake_rows(lake_env) == 30, 30, "every record in the lake")
    sink.stop()
    first, second, _ = raw_files(lake_env.lake_dir)
    # A copy under another first offset duplicates 0..9; removing the middle file leaves a gap.
    (first.parent / first.name.replace("+00000000000000000000", "+00000000000000000100")
     ).write_bytes(first.read_bytes())  # fmt: skip
    second.unlink()
    check = verify_lake(lake_env.settings(), lake_env.bootstrap).checks[0]
    assert (check.duplicates, check.gaps, check.committed) == (10, 10, 30)
    assert not check.ok and len(check.problems) == 2
    for path in raw_files(lake_env.lake_dir)[1:]:
        path.unlink()
    check = verify_lake(lake_env.settings(), lake_env.bootstrap).checks[0]
    assert "records lost" in check.problems[-1]


def test_readers_never_see_partial_files(lake_env) -> None:
    lake_env.create_topics(partitions=3)
    topic = lake_env.topic("pin")
    seen: Counter[str] = Counter()
    broken: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            for path in raw_files(lake_env.lake_dir):
                try:
                    pq.read_metadata(path)
                    seen[path.name] += 1
                except FileNotFoundError:
                    pass  # replaced between listing and opening: never partial
                except Exception as exc:  # noqa: BLE001 - anything else is a partial file
                    broken.append(f"{path}: {exc}")

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    sink = lake_env.run_in_thread(lake_env.settings(rotate_records=200, rotate_age_s=0.5))
    lake_env.produce(topic, [b"y" * 300] * 6000)
    wait_for(lambda: lake_rows(lake_env) == 6000, 60, "every record in the lake")
    sink.stop()
    done.set()
    thread.join(10)
    assert not broken
    assert len(seen) >= 20
    # Temporary files may exist while writing but are never matched by a reader's glob.
    assert all(not path.name.startswith(".") for path in raw_files(lake_env.lake_dir))


def test_memory_cap_writes_early_and_keeps_every_offset(lake_env) -> None:
    lake_env.create_topics(partitions=1)
    topic = lake_env.topic("pin")
    produced = lake_env.produce(topic, [b"z" * 1000] * 3000, partition=0)
    settings = lake_env.settings(max_buffer_bytes=200_000, rotate_age_s=600)
    sink = lake_env.run_in_thread(settings)
    # Only the cap can write files before shutdown here (no count, byte or age trigger).
    wait_for(lambda: lake_rows(lake_env) >= 2800, 60, "files written under memory pressure")
    stats = sink.stop()
    # 3000 records of ~1.2 kB against a 200 kB cap: many small files, not one big one.
    assert stats.files >= 15
    assert sorted(row["offset"] for row in read_lake(lake_env.lake_dir)) == [o for _, o, _ in produced]


def test_terminal_storage_error_stops_without_commit(lake_env) -> None:
    lake_env.create_topics(partitions=1)
    topic = lake_env.topic("pin")
    lake_env.produce(topic, [b"a"] * 5, partition=0)
    blocker = lake_env.data_dir / "not-a-dir"
    blocker.write_text("a file where the lake should be")
    settings = lake_env.settings(root=str(blocker / "lake"), rotate_records=5)
    with pytest.raises(SinkStopped, match="terminal storage error"):
        run_sink(settings, lake_env.bootstrap, threading.Event())
    check = verify_lake(lake_env.settings(), lake_env.bootstrap)
    assert all(c.committed is None for c in check.checks)
