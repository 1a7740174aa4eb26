"""File names, encoding and atomic local writes (no broker)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pinpipe.config import load_settings
from pinpipe.lake.encode import encode_records, to_parquet_bytes
from pinpipe.lake.layout import RawFile, UnknownTopic, file_path, parse_file_name, table_for_topic
from pinpipe.lake.storage import LakeStorage, lake_root


def test_paths_follow_data_spec() -> None:
    assert table_for_topic("0a1b2c3d4e5f.pin") == "pin"
    assert table_for_topic("pinpipe.user") == "user"
    assert table_for_topic("pinpipe.dlq") == "_dlq"
    with pytest.raises(UnknownTopic):
        table_for_topic("pinpipe.other")
    path = file_path("geo", 19_723, "pinpipe.geo", 2, 1234)  # day 19723 = 2024-01-01
    assert path == "raw/geo/dt=2024-01-01/pinpipe.geo+2+00000000000000001234.parquet"
    assert parse_file_name(path) == RawFile("geo", "2024-01-01", "pinpipe.geo", 2, 1234)
    temporary = "raw/geo/dt=2024-01-01/.pinpipe.geo+2+00000000000000001234.parquet.ab12.tmp"
    assert parse_file_name(temporary) is None


def test_invalid_utf8_value_is_kept_byte_exact() -> None:
    table = encode_records("p.pin", 0, [b'{"a": "\xc3\xa9"}', b"\xff\xfe", None],
                           [b"k", b"\xff", None], [5, 6, 7], [1000, None, 3000])  # fmt: skip
    rows = table.to_pylist()
    assert rows[0]["value"] == '{"a": "é"}' and rows[0]["value_bytes"] is None
    assert rows[1]["value"] is None and rows[1]["value_bytes"] == b"\xff\xfe"
    assert rows[1]["key"] == "\ufffd" and rows[1]["timestamp"] is None
    assert rows[2]["value"] is None and rows[2]["value_bytes"] is None
    assert pq.read_table(pa.BufferReader(to_parquet_bytes(table))).equals(table)


def test_local_write_is_atomic_and_temporary_names_are_invisible(tmp_path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert lake_root(settings) == str(tmp_path / "lake")
    storage = LakeStorage.from_settings(settings)
    table = encode_records("p.pin", 0, [b"1"], [None], [0], [0])
    path = file_path("pin", 0, "p.pin", 0, 0)
    assert storage.write_atomic(path, to_parquet_bytes(table)) is False
    assert storage.write_atomic(path, to_parquet_bytes(table)) is True  # replaced whole
    directory = tmp_path / "lake" / "raw" / "pin" / "dt=1970-01-01"
    (directory / ".p.pin+0+00000000000000000009.parquet.x.tmp").write_bytes(b"PAR1 partial")
    dataset = ds.dataset(tmp_path / "lake" / "raw" / "pin", format="parquet")
    assert dataset.count_rows() == 1  # pyarrow skips names starting with "." or "_"
    assert [f.path for f in storage.list_files("raw") if parse_file_name(f.path)] == [path]


def test_storage_errors_say_whether_retrying_helps(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    settings = load_settings(data_dir=tmp_path, lake={"root": str(tmp_path / "file" / "lake")})
    storage = LakeStorage.from_settings(settings)
    with pytest.raises(Exception) as caught:
        storage.write_atomic("raw/pin/x.parquet", b"data")
    assert caught.value.transient is False
