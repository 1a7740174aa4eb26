"""Write one micro-batch to PostgreSQL in one transaction, exactly once.

For each micro-batch the stream job hands over Arrow tables (clean rows with their arrival
columns, dead letters) and :meth:`PostgresWriter.write` then, inside a
single transaction:

1. records ``(query_id, batch_id)`` in ``pinpipe.stream_batch``; if the row is already there
   the batch was committed before a crash and is a replay: nothing else is written;
2. COPYs each clean table into a temporary staging table and upserts it into ``pin``, ``geo``,
   ``"user"`` by natural key, keeping the last arrival (broker timestamp, then offset, then
   partition, within the batch and against the stored row: DATA_SPEC.md section 3);
3. inserts dead letters (a record met twice keeps its first reason);
4. counts the staged clean rows per metric window or pane (:mod:`pinpipe.speed.metrics`, in
   SQL) and adds the counts to them, except windows that ended at or before the
   stream's watermark (the latest broker time seen in earlier batches minus the allowed
   lateness), then advances the watermark.

Either all of it is visible or none of it is; a crash anywhere replays the batch, which
step 1 turns into a no-op once it has committed. The same makes a lost connection safe to
retry in place: PostgreSQL restarted or unreachable, the writer reconnects and writes the batch
again (for up to ``wait_s``) instead of failing the query, which would cost the stream job a
restart of Spark and its warm-up. A commit whose answer was lost is found by step 1.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from pinpipe.config import check_poster_window
from pinpipe.events import CLEAN_COLUMNS, Table
from pinpipe.speed.metrics import METRICS

ARRIVAL = ("broker_timestamp", "kafka_partition", "kafka_offset")

CLEAN_TABLES: dict[Table, tuple[str, tuple[str, ...]]] = {
    table: (table.natural_key, CLEAN_COLUMNS[table]) for table in Table
}
"""Per table: its natural key and the clean columns stored (arrival columns follow)."""

log = logging.getLogger("pinpipe.speed")

RETRY_MAX_DELAY_S = 5.0
"""The longest pause between two attempts at a batch while PostgreSQL does not answer."""

DEAD_LETTER_COLUMNS = ("topic", "kafka_partition", "kafka_offset", "broker_timestamp", "value", "reason")

@dataclass(frozen=True)
class BatchOutcome:
    """What one :meth:`PostgresWriter.write` did."""

    batch_id: int
    replayed: bool
    upserted: dict[str, int]
    dead_letters: int
    late_dropped: int


def _csv(table: Any, columns: tuple[str, ...]) -> bytes:
    """Arrow columns -> CSV for ``COPY ... (FORMAT csv)``, encoded by Arrow, not per value in Python.

    Every value is quoted, so an empty field is a null and ``""`` an empty string; a list
    column becomes a PostgreSQL array literal (``{-5.5,12.25}``; Arrow writes each double in
    its shortest form that reads back exactly) and a timestamp without a zone is UTC.
    PostgreSQL text cannot hold NUL characters (valid in JSON as ``\\u0000``): they become
    U+FFFD, the only change text ever undergoes on the way in.
    """
    import io

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    selected = []
    for name in columns:
        column = table[name].combine_chunks()
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            column = pc.replace_substring(column, "\x00", "\ufffd")
        elif pa.types.is_list(kind):  # numbers only (coordinates): no element needs quotes
            items = pc.cast(column, pa.list_(pa.string()))
            items = pa.ListArray.from_arrays(
                items.offsets, pc.fill_null(items.values, "NULL"), mask=items.is_null()
            )
            column = pc.binary_join_element_wise("{", pc.binary_join(items, ","), "}", "")
        elif pa.types.is_timestamp(kind) and kind.tz is None:
            column = pc.cast(column, pa.timestamp(kind.unit, tz="UTC"))
        selected.append(column)
    out = io.BytesIO()
    options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
    pacsv.write_csv(pa.table(selected, names=list(columns)), out, options)
    return out.getvalue()


class PostgresWriter:
    """Holds one connection (reopened after a failure) and writes micro-batches."""

    def __init__(
        self,
        dsn: str,
        *,
        lateness_s: float,
        poster_window_s: int = 600,
        poster_slide_s: int = 60,
        schema: str = "pinpipe",
        wait_s: float = 0.0,
    ) -> None:
        """``wait_s``: how long a batch is retried while PostgreSQL cannot be reached (0: not)."""
        check_poster_window(poster_window_s, poster_slide_s)
        self.dsn = dsn
        self.wait_s = wait_s
        self.lateness = timedelta(seconds=lateness_s)
        self.poster_window_s = poster_window_s
        self.poster_slide_s = poster_slide_s
        self.schema = schema
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.dsn, autocommit=True)
            self._staging_ready = False
        return self._conn

    def has_batch(self, query_id: str, batch_id: int) -> bool:
        """Batch ``batch_id`` of the query is already written (False when PostgreSQL does not
        answer: :meth:`write` then waits for it and finds out)."""
        try:
            row = self._connection().execute(
                sql.SQL("SELECT 1 FROM {} WHERE query_id = %s AND batch_id = %s").format(
                    sql.Identifier(self.schema, "stream_batch")),
                (query_id, batch_id),
            ).fetchone()
        except psycopg.Error:
            self.close()
            return False
        return row is not None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _ensure_staging(self, conn: psycopg.Connection) -> None:
        if self._staging_ready:
            return
        for table in (*(t.value for t in CLEAN_TABLES), "dead_letter", *(m.name for m in METRICS)):
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS "
                    "SELECT * FROM {} WITH NO DATA"
                ).format(sql.Identifier(f"stage_{table}"), sql.Identifier(self.schema, table))
            )
        # The windows the poster panes add up to (the view pinpipe.poster_activity).
        conn.execute(
            sql.SQL(
                "INSERT INTO {} AS w (id, window_length, slide) "
                "VALUES (true, make_interval(secs => %s), make_interval(secs => %s)) "
                "ON CONFLICT (id) DO UPDATE SET window_length = excluded.window_length, slide = excluded.slide"
            ).format(sql.Identifier(self.schema, "poster_window")),
            (self.poster_window_s, self.poster_slide_s),
        )
        self._staging_ready = True

    def _copy(self, cur: psycopg.Cursor, target: str, columns: tuple[str, ...], table: Any) -> None:
        if not table.num_rows:
            return
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(sql.Identifier(target), names)
        with cur.copy(statement) as copy:
            copy.write(_csv(table, columns))

    def write(
        self,
        query_id: str,
        batch_id: int,
        clean: dict[Table, Any],
        dead_letters: Any | None,
        topics: dict[Table, str],
    ) -> BatchOutcome:
        """Write one micro-batch (see the module docstring); Arrow tables in, counts out.

        A connection that fails (``psycopg.OperationalError``) is reopened and the whole batch
        written again, for up to ``wait_s``; then the error is raised.
        """
        deadline, delay = None, 0.2
        while True:
            try:
                conn = self._connection()
                self._ensure_staging(conn)
                outcome = self._write(conn, query_id, batch_id, clean, dead_letters, topics)
            except psycopg.OperationalError as error:
                self.close()  # a broken connection is reopened by the next attempt
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.wait_s
                    if self.wait_s:
                        # The first line only: psycopg's message names host and port, never the password.
                        log.warning("PostgreSQL failed during batch %d (%s); retrying it for up to %.0f s",
                                    batch_id, str(error).strip().splitlines()[0], self.wait_s)
                if now >= deadline:
                    raise
                time.sleep(min(delay, deadline - now))
                delay = min(delay * 2, RETRY_MAX_DELAY_S)
                continue
            if deadline is not None:
                log.info("PostgreSQL answers again: batch %d written", batch_id)
            return outcome

    def _write(self, conn, query_id, batch_id, clean, dead_letters, topics) -> BatchOutcome:
        s = self.schema
        records = sum(t.num_rows for t in clean.values()) + (dead_letters.num_rows if dead_letters is not None else 0)
        upserted: dict[str, int] = {}
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (query_id, batch_id, records) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING RETURNING 1"
                ).format(sql.Identifier(s, "stream_batch")),
                (query_id, batch_id, records),
            )
            if cur.fetchone() is None:
                return BatchOutcome(batch_id, True, {}, 0, 0)

            dead = 0
            for table, arrow in clean.items():
                key, columns = CLEAN_TABLES[table]
                every = (*columns, *ARRIVAL)
                stage = f"stage_{table.value}"
                self._copy(cur, stage, every, arrow)
                upserted[table.value] = self._upsert(cur, table, key, columns, stage)
                # A key that cleaning blanked cannot be stored: it is a dead letter.
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} (topic, kafka_partition, kafka_offset, broker_timestamp, "
                        "value, reason) SELECT %s, kafka_partition, kafka_offset, broker_timestamp, "
                        "NULL, %s FROM {} WHERE {} IS NULL ON CONFLICT DO NOTHING"
                    ).format(sql.Identifier(s, "dead_letter"), sql.Identifier(stage), sql.Identifier(key)),
                    (topics[table], f"{key} is blank after cleaning"),
                )
                dead += cur.rowcount

            if dead_letters is not None and dead_letters.num_rows:
                self._copy(cur, "stage_dead_letter", DEAD_LETTER_COLUMNS, dead_letters)
                names = sql.SQL(", ").join(map(sql.Identifier, DEAD_LETTER_COLUMNS))
                cur.execute(
                    sql.SQL("INSERT INTO {} ({}) SELECT {} FROM stage_dead_letter ON CONFLICT DO NOTHING").format(
                        sql.Identifier(s, "dead_letter"), names, names
                    )
                )
                dead += cur.rowcount

            late = self._merge_metrics(cur, query_id, clean)
        return BatchOutcome(batch_id, False, upserted, dead, late)

    def _upsert(self, cur, table: Table, key: str, columns: tuple[str, ...], stage: str) -> int:
        every = (*columns, *ARRIVAL)
        names = sql.SQL(", ").join(map(sql.Identifier, every))
        updates = sql.SQL(", ").join(
            sql.SQL("{} = excluded.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in every
            if c != key
        )
        query = sql.SQL(
            "INSERT INTO {target} AS t ({names}) "
            "SELECT DISTINCT ON ({key}) {names} FROM {stage} WHERE {key} IS NOT NULL "
            "ORDER BY {key}, broker_timestamp DESC NULLS LAST, kafka_offset DESC, kafka_partition DESC "
            "ON CONFLICT ({key}) DO UPDATE SET {updates}, updated_at = clock_timestamp() "
            "WHERE (t.broker_timestamp, t.kafka_offset, t.kafka_partition) "
            "< (excluded.broker_timestamp, excluded.kafka_offset, excluded.kafka_partition) "
            "OR t.broker_timestamp IS NULL"
        ).format(
            target=sql.Identifier(self.schema, table.value),
            names=names,
            key=sql.Identifier(key),
            stage=sql.Identifier(stage),
            updates=updates,
        )
        cur.execute(query)
        return cur.rowcount

    def _merge_metrics(self, cur, query_id: str, clean: dict[Table, Any]) -> int:
        """Count the staged clean rows per window and add them to the open windows."""
        s = self.schema
        cur.execute(
            sql.SQL("SELECT max_event_time, watermark FROM {} WHERE query_id = %s FOR UPDATE").format(
                sql.Identifier(s, "stream_watermark")
            ),
            (query_id,),
        )
        row = cur.fetchone()
        watermark: datetime | None = row[1] if row else None
        late = 0
        for metric in METRICS:
            source = clean.get(metric.source)
            if source is None or not source.num_rows:
                continue
            stage = f"stage_{metric.name}"
            cur.execute(metric.partial_sql(f"stage_{metric.source.value}", self.poster_slide_s))
            partial = cur.rowcount
            if not partial:
                continue
            names = sql.SQL(", ").join(map(sql.Identifier, metric.columns))
            sets = sql.SQL(", ").join(
                sql.SQL("{} = " + expression).format(sql.Identifier(column))
                for column, expression in metric.merge.items()
            )
            cur.execute(
                sql.SQL(
                    "INSERT INTO {target} AS t ({names}) SELECT {names} FROM {stage} "
                    "WHERE %(watermark)s::timestamptz IS NULL OR {end} > %(watermark)s "
                    "ON CONFLICT ({key}) DO UPDATE SET {sets}, updated_at = clock_timestamp()"
                ).format(
                    target=sql.Identifier(s, metric.name),
                    names=names,
                    stage=sql.Identifier(stage),
                    end=sql.Identifier(metric.end),
                    key=sql.SQL(", ").join(map(sql.Identifier, metric.key)),
                    sets=sets,
                ),
                {"watermark": watermark},
            )
            late += partial - cur.rowcount
        latest = _max_broker_time(clean)
        if latest is not None:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} AS w (query_id, max_event_time, watermark) VALUES (%s, %s, %s) "
                    "ON CONFLICT (query_id) DO UPDATE SET "
                    "max_event_time = greatest(w.max_event_time, excluded.max_event_time), "
                    "watermark = greatest(w.max_event_time, excluded.max_event_time) - %s, "
                    "updated_at = clock_timestamp()"
                ).format(sql.Identifier(s, "stream_watermark")),
                (query_id, latest, latest - self.lateness, self.lateness),
            )
        return late


def _max_broker_time(clean: dict[Table, Any]) -> datetime | None:
    import pyarrow.compute as pc

    latest = None
    for arrow in clean.values():
        if arrow.num_rows:
            value = pc.max(arrow["broker_timestamp"]).as_py()
            if value is not None and (latest is None or value > latest):
                latest = value
    return latest
