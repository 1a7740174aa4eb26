"""The three source tables held in memory, row *n* of each describing one post."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pinpipe.events import Table

# Raw Python type of every source field that is not text (DATA_SPEC.md section 1).
# Storage modules map these to their own column types; every other field is ``str``.
NON_TEXT_TYPES: dict[str, type] = {
    "index": int,
    "ind": int,
    "downloaded": int,
    "age": int,
    "latitude": float,
    "longitude": float,
    "timestamp": datetime,
    "date_joined": datetime,
}


def raw_type(field: str) -> type:
    """The Python type of a raw source field's values (naive UTC ``datetime`` for datetimes)."""
    return NON_TEXT_TYPES.get(field, str)


@dataclass(frozen=True)
class SourceTables:
    """The pin, geo and user tables; each row a dict keyed by ``RAW_FIELDS[table]`` in order.

    Position *n* of the three lists is one post: its rows share the row number
    (``index`` in pin, ``ind`` in geo and user).
    """

    pin: list[dict[str, Any]]
    geo: list[dict[str, Any]]
    user: list[dict[str, Any]]

    def __post_init__(self) -> None:
        if not len(self.pin) == len(self.geo) == len(self.user):
            raise ValueError(
                f"tables differ in length: pin {len(self.pin)}, geo {len(self.geo)}, "
                f"user {len(self.user)}"
            )
        for position, (pin, geo, user) in enumerate(zip(self.pin, self.geo, self.user)):
            if not pin["index"] == geo["ind"] == user["ind"]:
                raise ValueError(f"row numbers differ at position {position}")

    def __len__(self) -> int:
        """Number of rows (the same in all three tables)."""
        return len(self.pin)

    def rows(self, table: Table) -> list[dict[str, Any]]:
        """The rows of one table."""
        return getattr(self, Table(table).value)

    def post(self, row: int) -> dict[Table, dict[str, Any]]:
        """The pin, geo and user rows at position ``row`` of the lists."""
        return {table: self.rows(table)[row] for table in Table}
