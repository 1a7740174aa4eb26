"""Rich tables of a batch run: table counts and the nine answers (for the CLI and the demo)."""

from __future__ import annotations

import pyarrow as pa
from rich.console import Console
from rich.table import Table as RichTable

from pinpipe.batch.job import BatchResult


def print_counts(result: BatchResult, console: Console) -> None:
    """Raw, quarantined, duplicate and clean rows per table, and the quality verdict."""
    table = RichTable("table", "raw", "quarantined", "duplicates", "clean", title="batch run")
    for counts in result.tables:
        table.add_row(counts.table, *(f"{n:,}" for n in (counts.raw, counts.quarantined, counts.duplicates,
                                                          counts.clean)))
    console.print(table)
    verdict = "[green]passed[/]" if result.report.passed else "[red]failed[/]"
    console.print(f"data-quality checks: {verdict}")


def print_answers(answers: dict[str, pa.Table], console: Console, max_rows: int = 10) -> None:
    """Each answer as a table, its first ``max_rows`` rows (the whole of it when shorter)."""
    for name, answer in answers.items():
        shown = answer.slice(0, max_rows)
        title = name if answer.num_rows <= max_rows else f"{name} (first {max_rows} of {answer.num_rows:,})"
        table = RichTable(*answer.column_names, title=title)
        for row in shown.to_pylist():
            table.add_row(*(_cell(value) for value in row.values()))
        console.print(table)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return "" if value is None else str(value)
