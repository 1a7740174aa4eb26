"""The batch job: raw partitions -> clean tables -> answers -> quality checks -> PostgreSQL.

Lake layout (DATA_SPEC.md section 5), under the lake root:

- ``raw/<table>/dt=<day>/*.parquet``: read; written by the lake sink.
- ``clean/<table>/dt=<day>/``: one partition per raw partition, one row per natural key
  within it (the last arrival). A key re-sent on a later day is in both partitions; readers
  of the clean table take the latest ``dt`` (:func:`read_clean`, the SQL views do the same).
- ``quarantine/<table>/dt=<day>/``: raw values that could not be parsed, with the reason.
- ``answers/<name>/``: the nine answers over the whole clean layer, replaced on every run,
  with ``answers/_quality_report.json`` beside them.

Each step writes with partition overwrite, so re-running the same dates gives the same lake.
The steps are public so the Airflow DAG can run them as separate tasks; :func:`run_batch`
runs them all. Every step works unchanged with a cluster master: Spark reads and writes
the lake paths itself (an ``s3://`` root is read as ``s3a://``, which needs hadoop-aws jars).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from pinpipe.batch.quality import (
    Check,
    QualityError,
    QualityReport,
    TableCounts,
    answer_not_empty,
    null_rates,
    profile_clean,
    reconcile,
    unique_keys,
)
from pinpipe.config import Settings
from pinpipe.events import Table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

QUALITY_REPORT = "_quality_report.json"
PARTITION = "dt"


def spark_lake_root(settings: Settings) -> str:
    """The lake's root (:func:`pinpipe.lake.storage.lake_root`) as Spark reads it: ``s3a://``
    for an ``s3://`` lake (Hadoop's S3 connector)."""
    from pinpipe.lake.storage import lake_root

    root = lake_root(settings)
    return "s3a://" + root.removeprefix("s3://") if root.startswith("s3://") else root.rstrip("/")


def lake_path(settings: Settings, *parts: str) -> str:
    """A path under the lake, as Spark reads it."""
    return "/".join([spark_lake_root(settings), *parts])


def date_range(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last`` inclusive."""
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def raw_dates(settings: Settings, table: Table) -> list[str]:
    """The ``dt`` values present in the raw layer of ``table`` (local lake), sorted."""
    directory = Path(lake_path(settings, "raw", Table(table).value))
    if not directory.is_dir():
        return []
    return sorted(p.name[3:] for p in directory.iterdir() if p.name.startswith("dt="))


def _dt_values(settings: Settings, table: Table, dates: list[date] | None) -> list[str]:
    present = raw_dates(settings, table)
    if dates is None:
        return present
    wanted = {d.isoformat() for d in dates}
    return [dt for dt in present if dt in wanted]


def _natural_key(table: Table) -> str:
    return "unique_id" if table is Table.PIN else "ind"


def clean_table(
    settings: Settings, table: Table, dates: list[date] | None, *, spark: SparkSession
) -> TableCounts:
    """Clean the raw partitions of ``dates`` (None: all) of one table into the clean layer.

    One pass over the raw values: parse, clean, keep the last arrival per key and partition,
    write; the counts are observed on the way. Quarantined values are written when any exist.
    """
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    from pinpipe.cleaning import ARRIVAL_COLUMNS, ARRIVAL_RANK, CLEANERS, parse_raw, rank_arrivals

    table = Table(table)
    dts = _dt_values(settings, table, dates)
    if not dts:
        return TableCounts(table.value, raw=0, quarantined=0, duplicates=0, clean=0)
    raw_dir = lake_path(settings, "raw", table.value)
    raw = spark.read.option("basePath", raw_dir).parquet(*(f"{raw_dir}/dt={dt}" for dt in dts))
    seen, kept, ranked_obs = Observation("raw"), Observation("parsed"), Observation("ranked")
    parsed, _ = parse_raw(raw.observe(seen, F.count(F.lit(1)).alias("rows")), table)
    parsed = parsed.observe(kept, F.count(F.lit(1)).alias("rows"))
    cleaned = CLEANERS[table](parsed)
    ranked = rank_arrivals(cleaned, [PARTITION, _natural_key(table)])
    ranked = ranked.observe(ranked_obs, F.count_if(F.col(ARRIVAL_RANK) > 1).alias("duplicates"))
    clean = ranked.where(F.col(ARRIVAL_RANK) == 1).drop(ARRIVAL_RANK, *ARRIVAL_COLUMNS)
    clean_dir = lake_path(settings, "clean", table.value)
    _overwrite_partitions(clean, clean_dir)

    raw_rows, parsed_rows = seen.get["rows"], kept.get["rows"]
    quarantined = raw_rows - parsed_rows
    if quarantined:
        _, quarantine = parse_raw(raw, table)
        _overwrite_partitions(quarantine, lake_path(settings, "quarantine", table.value))
    written = _partitions(spark.read.parquet(clean_dir), dts).count()
    return TableCounts(
        table.value,
        raw=raw_rows,
        quarantined=quarantined,
        duplicates=ranked_obs.get["duplicates"],
        clean=written,
    )


def _overwrite_partitions(df: DataFrame, directory: str) -> None:
    """Write ``df`` partitioned by ``dt``, replacing only the partitions it has rows for."""
    (
        df.write.mode("overwrite")
        .option("partitionOverwriteMode", "dynamic")
        .partitionBy(PARTITION)
        .parquet(directory)
    )


def _partitions(df: DataFrame, dts: list[str]) -> DataFrame:
    from pyspark.sql import functions as F

    return df.where(F.col(PARTITION).cast("string").isin(dts))


def _empty_clean(spark: SparkSession, table: Table) -> DataFrame:
    from pinpipe.cleaning import CLEANERS
    from pinpipe.events import spark_schema

    return CLEANERS[table](spark.createDataFrame([], spark_schema(table)))


def read_clean(settings: Settings, table: Table, *, spark: SparkSession) -> DataFrame:
    """The clean table: every partition, one row per natural key (the latest ``dt`` wins).

    Columns of DATA_SPEC.md section 3 (no ``dt``); empty with those columns before any run.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from pinpipe.events import CLEAN_COLUMNS

    table = Table(table)
    directory = lake_path(settings, "clean", table.value)
    try:
        stored = spark.read.parquet(directory)
    except Exception as exc:  # AnalysisException: PATH_NOT_FOUND before the first run
        if "PATH_NOT_FOUND" not in str(exc) and "UNABLE_TO_INFER_SCHEMA" not in str(exc):
            raise
        return _empty_clean(spark, table)
    latest = Window.partitionBy(_natural_key(table)).orderBy(F.col(PARTITION).desc())
    return (
        stored.withColumn("_latest", F.row_number().over(latest))
        .where(F.col("_latest") == 1)
        .select(*CLEAN_COLUMNS[table])
    )


# The columns the answers read; posts are cached with only these.
_ANSWER_INPUTS = (
    "category",
    "follower_count",
    "poster_name",
    "country",
    "timestamp",
    "user_name",
    "age",
    "date_joined",
)


@dataclass(frozen=True)
class AnswerCounts:
    """Rows an answer was computed from and rows it has."""

    name: str
    input_rows: int
    rows: int


def build_answers(settings: Settings, *, spark: SparkSession) -> list[AnswerCounts]:
    """Compute the nine answers over the whole clean layer and replace ``answers/<name>/``."""
    from pinpipe.batch.answers import ANSWERS, ELIGIBLE, join_posts

    tables = [read_clean(settings, table, spark=spark) for table in Table]
    posts = join_posts(*tables).select(*_ANSWER_INPUTS).cache()
    try:
        counts = []
        for name, answer in ANSWERS.items():
            result = answer(posts).coalesce(1).cache()
            result.write.mode("overwrite").parquet(lake_path(settings, "answers", name))
            counts.append(AnswerCounts(name, ELIGIBLE[name](posts).count(), result.count()))
            result.unpersist()
        return counts
    finally:
        posts.unpersist()


def read_answers(settings: Settings) -> dict[str, pa.Table]:
    """The answers in the lake as Arrow tables (local lake; no Spark), in section 4 order."""
    from pinpipe.batch.answers import ANSWERS

    answers = {}
    for name in ANSWERS:
        directory = Path(lake_path(settings, "answers", name))
        files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
        if files:
            answers[name] = pa.concat_tables(pq.read_table(f) for f in files)
    return answers


def check_quality(
    settings: Settings,
    counts: list[TableCounts],
    answers: list[AnswerCounts],
    dates: list[date] | None,
    *,
    spark: SparkSession,
) -> QualityReport:
    """Run every check on the run's clean partitions and answers; write the report JSON."""
    checks: list[Check] = []
    profiles = {}
    for table_counts in counts:
        table = Table(table_counts.table)
        checks.append(reconcile(table_counts))
        dts = _dt_values(settings, table, dates)
        if not dts:
            continue
        clean = _partitions(spark.read.parquet(lake_path(settings, "clean", table.value)), dts)
        profile = profile_clean(clean, table.value, [PARTITION, _natural_key(table)])
        profiles[table.value] = asdict(profile)
        checks.append(unique_keys(profile))
        checks.extend(null_rates(profile, settings.batch.max_null_rate))
    checks.extend(answer_not_empty(a.name, a.input_rows, a.rows) for a in answers)
    figures = {
        "dates": "all" if dates is None else [d.isoformat() for d in dates],
        "tables": [asdict(c) for c in counts],
        "profiles": profiles,
        "answers": [asdict(a) for a in answers],
    }
    report = QualityReport(checks, figures)
    write_report(settings, report)
    return report


def write_report(settings: Settings, report: QualityReport) -> str:
    """Write the report beside the answers (local lake); returns its path."""
    path = Path(lake_path(settings, "answers", QUALITY_REPORT))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.to_json())
    return str(path)


def read_counts(items: list[dict]) -> list[TableCounts]:
    """:class:`TableCounts` back from their dict form (Airflow passes them through XCom)."""
    return [TableCounts(**item) for item in items]


@dataclass
class BatchResult:
    """What a run did: counts per table, answers, the quality report, published rows."""

    dates: list[date] | None
    tables: list[TableCounts]
    answers: list[AnswerCounts]
    report: QualityReport
    published: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "dates": None if self.dates is None else [d.isoformat() for d in self.dates],
                "tables": [asdict(t) for t in self.tables],
                "answers": [asdict(a) for a in self.answers],
                "quality_passed": self.report.passed,
                "published": self.published,
            },
            indent=2,
        )


def run_batch(
    settings: Settings,
    *,
    dates: list[date] | None = None,
    all_dates: bool = False,
    spark: SparkSession | None = None,
    publish: bool = True,
    origin: str = "cli",
) -> BatchResult:
    """Clean the raw partitions of ``dates`` (or all of them), answer, check, publish.

    Raises :class:`QualityError` (after writing the report, before publishing) when a
    data-quality check fails. Re-running the same dates gives the same lake and tables.
    The run is recorded in ``pinpipe.batch_run`` with ``origin`` (who started it:
    :data:`pinpipe.store.runs.ORIGINS`).
    """
    if all_dates == (dates is not None):
        raise ValueError("give either dates or all_dates=True")
    from pinpipe.batch.recording import recorded_run

    # pinpipe.batch_run: success, or failed with the error
    with recorded_run(settings, dates, origin):
        if spark is None:
            from pinpipe.spark.session import get_spark

            spark = get_spark(settings, app_name="pinpipe-batch")
        tables = [clean_table(settings, table, dates, spark=spark) for table in Table]
        answers = build_answers(settings, spark=spark)
        report = check_quality(settings, tables, answers, dates, spark=spark)
        result = BatchResult(dates, tables, answers, report)
        if not report.passed:
            raise QualityError(report)
        if publish:
            from pinpipe.batch.publish import publish_answers

            result.published = publish_answers(settings, read_answers(settings))
        return result
