"""Showing results: report relations as Rich tables and JSON, and how runs are labelled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import orjson
from rich.table import Table

from pagehint.protocol.units import format_duration, format_size
from pagehint.runtime.harness.logdb import LogDB


def _cell(column: str, value: Any) -> str:
    """A value for people: sizes, durations and percentages in their units."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if column.endswith("_bytes"):
            return format_size(int(value))
        if column.endswith("_ns"):
            return format_duration(value)
        if column.endswith("_pct"):
            return f"{value:.1f}%"
        if column.endswith("_s"):
            return f"{value:.6g}s"
        if isinstance(value, float):
            return f"{value:.4g}"
        return f"{value:,}"
    if isinstance(value, list | dict):
        return orjson.dumps(value, default=str).decode()
    return str(value)


def _thinned(
    rows: list[tuple[Any, ...]], group_of: int | None, limit: int
) -> list[tuple[Any, ...]]:
    """At most ``limit`` evenly spaced rows per group (per run or factor combination)."""
    groups: dict[Any, list[tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault(row[group_of] if group_of is not None else None, []).append(row)
    shown: list[tuple[Any, ...]] = []
    for members in groups.values():
        if len(members) <= limit:
            shown.extend(members)
            continue
        step = (len(members) - 1) / (limit - 1)
        shown.extend(members[round(i * step)] for i in range(limit))
    return shown


def table_of(
    title: str,
    relation: duckdb.DuckDBPyRelation,
    *,
    ids: Sequence[str] = ("run",),
    series: bool = False,
    limit: int = 12,
) -> Table:
    """A Rich table of a relation, for a terminal.

    A few wide rows are turned on their side (a column per row, named by its ``ids``), as a
    side-by-side comparison reads best; a long series is thinned, with a caption saying so.
    """
    columns = list(relation.columns)
    rows = relation.fetchall()
    caption = None
    if series:
        group_of = columns.index("run") if "run" in columns else None
        shown = _thinned(rows, group_of, limit)
        if len(shown) < len(rows):
            caption = f"{len(shown)} of {len(rows)} rows shown, evenly spaced; --json for all"
        rows = shown
    id_columns = [columns.index(name) for name in ids if name in columns]
    if not series and 0 < len(rows) <= 6 and len(columns) > 8 and id_columns:
        varying = [i for i in id_columns if len({row[i] for row in rows}) > 1] or id_columns
        table = Table(title=title, caption=caption, title_justify="left")
        table.add_column("measure")
        for row in rows:
            name = ", ".join(
                str(row[i]) if columns[i] in ("run", "worker") else f"{columns[i]}={row[i]}"
                for i in varying
            )
            table.add_column(name, justify="right")
        for index, column in enumerate(columns):
            if index not in id_columns:
                table.add_row(column, *(_cell(column, row[index]) for row in rows))
        return table
    table = Table(title=title, caption=caption, title_justify="left")
    for column in columns:
        numeric = rows and isinstance(rows[0][columns.index(column)], int | float)
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(_cell(column, value) for column, value in zip(columns, row, strict=True)))
    return table


def jsonable(relation: duckdb.DuckDBPyRelation) -> dict[str, Any]:
    columns = list(relation.columns)
    return {
        "columns": columns,
        "types": [str(kind) for kind in relation.types],
        "rows": [dict(zip(columns, row, strict=True)) for row in relation.fetchall()],
    }


def dumps(document: Mapping[str, Any]) -> str:
    return orjson.dumps(document, default=str, option=orjson.OPT_INDENT_2).decode()


def factor_names(keys: Sequence[str]) -> dict[str, str]:
    """How factors are named for people: by their last part (vcpus; policy for policy.name),
    unless two would clash."""
    shorts = [key.split(".")[-2 if key.endswith(".name") else -1] for key in keys]
    return dict(zip(keys, shorts if len(set(shorts)) == len(shorts) else keys, strict=True))


def run_labels(db: LogDB) -> dict[str, str]:
    """How a run is named in a legend: its factors (policy=scanner), else its name."""
    keys = db.factors + (db.replicates if db.replicated else [])
    if not keys or len(keys) > 3:  # unrelated configs: their names say more than a diff
        return {source.run: source.run for source in db.sources}
    names = factor_names(keys)
    rows = db.sql("SELECT run, " + ", ".join(f'"{key}"' for key in keys) + " FROM runs").fetchall()
    return {
        row[0]: ", ".join(f"{names[key]}={value}" for key, value in zip(keys, row[1:], strict=True))
        for row in rows
    }
