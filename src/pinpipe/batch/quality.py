"""Data-quality checks of a batch run: counts reconcile, keys unique, nulls bounded, answers.

The checks are plain functions over numbers the job measured (:class:`TableCounts`,
:func:`profile_clean`), so each is easy to test by hand. :class:`QualityReport` collects them;
a run with a failed check raises :class:`QualityError` (terminal: re-running the same input
fails the same way until the data or the bounds change).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pinpipe.errors import TerminalError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


@dataclass(frozen=True)
class TableCounts:
    """Rows of one table in one run. ``raw`` should equal clean + duplicates + quarantined."""

    table: str
    raw: int
    quarantined: int
    duplicates: int
    clean: int


@dataclass(frozen=True)
class TableProfile:
    """What the clean rows of a run hold: rows, nulls per column, keys seen more than once."""

    table: str
    rows: int
    nulls: dict[str, int]
    duplicate_keys: int


@dataclass(frozen=True)
class Check:
    """One check's outcome; ``detail`` says what was measured."""

    name: str
    passed: bool
    detail: str


@dataclass
class QualityReport:
    """Every check of a run, in order, and the run's figures."""

    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def to_json(self) -> str:
        document = {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}
        return json.dumps({**document, "figures": self.figures}, indent=2, default=str)


class QualityError(TerminalError):
    """A batch run failed its data-quality checks; ``report`` holds every check."""

    def __init__(self, report: QualityReport) -> None:
        names = ", ".join(f"{c.name} ({c.detail})" for c in report.failures)
        super().__init__(f"data-quality checks failed: {names}")
        self.report = report


def profile_clean(df: DataFrame, table: str, key: list[str]) -> TableProfile:
    """Measure the clean rows ``df`` of ``table`` (two small actions)."""
    from pyspark.sql import functions as F

    columns = [name for name in df.columns if name != "dt"]
    row = df.agg(
        F.count(F.lit(1)).alias("_rows"),
        *(F.count_if(F.col(name).isNull()).alias(name) for name in columns),
    ).first()
    repeated = df.groupBy(*key).count().where(F.col("count") > 1).count()
    nulls = {name: int(row[name]) for name in columns}
    return TableProfile(table, int(row["_rows"]), nulls, int(repeated))


def reconcile(counts: TableCounts) -> Check:
    """raw = clean + duplicates + quarantined."""
    total = counts.clean + counts.duplicates + counts.quarantined
    detail = (
        f"raw {counts.raw}, clean {counts.clean} + duplicates {counts.duplicates} "
        f"+ quarantined {counts.quarantined} = {total}"
    )
    return Check(f"{counts.table}.counts_reconcile", counts.raw == total, detail)


def unique_keys(profile: TableProfile) -> Check:
    """No natural key twice in a partition of the clean table."""
    return Check(
        f"{profile.table}.unique_keys",
        profile.duplicate_keys == 0,
        f"{profile.duplicate_keys} keys appear more than once",
    )


def null_rates(profile: TableProfile, max_null_rate: dict[str, float]) -> list[Check]:
    """Each bounded column's share of nulls is at most its bound (no rows: nothing to check)."""
    checks = []
    for column, nulls in profile.nulls.items():
        bound = max_null_rate.get(f"{profile.table}.{column}")
        if bound is None or profile.rows == 0:
            continue
        rate = nulls / profile.rows
        checks.append(
            Check(
                f"{profile.table}.{column}.null_rate",
                rate <= bound,
                f"{nulls}/{profile.rows} = {rate:.4f} (max {bound})",
            )
        )
    return checks


def answer_not_empty(name: str, input_rows: int, answer_rows: int) -> Check:
    """An answer has rows whenever the rows it is computed from exist."""
    passed = answer_rows > 0 or input_rows == 0
    return Check(f"{name}.not_empty", passed, f"{answer_rows} rows from {input_rows} input rows")
