"""``pagehint analyze``: the command (entry-point group ``pagehint.commands``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table

from pagehint.runtime.harness.logdb import LogDB, LogError

from .database import open_run
from .fields import FIELDS
from .plots import PlotError, write_plots
from .reports import DEFAULT_REPORTS, REPORT_NAMES, guest_reports
from .tables import dumps, jsonable, table_of
from .views import VIEWS

HELP = "analyse run logs: canned reports, your own SQL, plots"
DESCRIPTION = (
    "Read the logs of runs (run directories, log files, or sweep directories of runs) with "
    "DuckDB and print canned reports: memory returned to the host and time to 50/90/99%, "
    "zone-lock wait by requester and over time, the hinting worker's wake-ups, polls and batch "
    "fill, false OOMs and isolated memory, host discards, refaults and swap. Over several runs "
    "the reports are keyed by the factors that differ between their configs. --sql runs your "
    "own query against the view 'events' (see docs/log-schema.md). Exit 0, or 2 on bad input."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="*", type=Path, metavar="RUN_DIR|LOG|SWEEP_DIR", help="what to analyse"
    )
    parser.add_argument(
        "--report",
        dest="reports",
        action="append",
        choices=[*REPORT_NAMES, "all"],
        metavar="NAME",
        help=f"report to show, repeatable (default: {', '.join(DEFAULT_REPORTS)}; "
        f"also: {', '.join(n for n in REPORT_NAMES if n not in DEFAULT_REPORTS)}; or all)",
    )
    parser.add_argument("--sql", metavar="QUERY", help="run this query instead of the reports")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="write PNG figures into DIR")
    parser.add_argument(
        "--buckets", type=int, default=20, help="time buckets per run for *_over_time (20)"
    )
    parser.add_argument(
        "--per-run",
        action="store_true",
        help="over several runs, one row per run (default: averaged over seeds)",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the reports, views and columns of 'events'"
    )


def _listing() -> dict[str, Any]:
    reports = guest_reports()
    columns = LogDB.columns_of(FIELDS)
    return {
        "reports": {report.name: f"{report.title}: {report.about}" for report in reports},
        "views": ["events", "runs", "policy", *VIEWS],
        "events_columns": columns,
    }


def _print_listing(console: Console) -> None:
    listing = _listing()
    table = Table(title="Reports (--report NAME)", title_justify="left")
    table.add_column("name")
    table.add_column("what")
    for name, about in listing["reports"].items():
        table.add_row(name, about)
    console.print(table)
    console.print("Views and tables for --sql: " + ", ".join(listing["views"]))
    columns = Table(title="Columns of the view 'events'", title_justify="left")
    columns.add_column("column")
    columns.add_column("type")
    for name, kind in listing["events_columns"].items():
        columns.add_row(name, kind)
    console.print(columns)


def command(args: argparse.Namespace) -> int:
    """``pagehint analyze``: 0, or 2 for bad input (a log, a path or a query)."""
    # Full-width tables even when piped (rich would fold them to 80 columns), as `pagehint` does.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    if args.list:
        if args.json:
            print(dumps(_listing()))
        else:
            _print_listing(console)
        return 0
    if not args.paths:
        print(
            "pagehint analyze: bad input: give at least one RUN_DIR, LOG or SWEEP_DIR",
            file=sys.stderr,
        )
        return 2
    try:
        db = open_run(args.paths, buckets=args.buckets)
    except (LogError, ValueError) as error:
        print(f"pagehint analyze: bad input: {error}", file=sys.stderr)
        return 2
    with db:
        for warning in db.warnings:
            print(f"pagehint analyze: warning: {warning}", file=sys.stderr)
        if args.sql is not None:
            return _run_sql(db, args.sql, args.json, console)
        names = list(DEFAULT_REPORTS)
        if args.reports:
            names = (
                list(REPORT_NAMES) if "all" in args.reports else list(dict.fromkeys(args.reports))
            )
        document: dict[str, Any] = {
            "runs": jsonable(db.runs)["rows"],
            "factors": db.factors,
            "replicates": db.replicates if db.replicated else [],
            "warnings": db.warnings,
            "reports": {},
        }
        # Many factors (runs of unrelated configs) make wide tables: the overview shows them.
        crowded = not args.json and len(db.factors) > 3 and not db.replicated
        for name in names:
            report = db.reports[name]
            by_factors = not args.per_run and (name == "overview" or not crowded)
            relation = db.report(name, by_factors=by_factors)
            notes = db.notes(name)
            if args.json:
                document["reports"][name] = {
                    "title": report.title,
                    **jsonable(relation),
                    "notes": notes,
                }
                continue
            ids = [*db.factors_all, "run", *report.keys]
            title = f"{report.title} ({name})"
            console.print(table_of(title, relation, ids=ids, series=report.series))
            for note in notes:
                console.print(f"  note: {note}", highlight=False)
            console.print()
        if args.plot is not None:
            try:
                written, skipped = write_plots(db, args.plot)
            except PlotError as error:
                print(f"pagehint analyze: {error}", file=sys.stderr)
                return 2
            document["plots"] = [str(path) for path in written]
            document["plots_skipped"] = skipped
            if not args.json:
                for path in written:
                    console.print(f"plot: {path}", highlight=False)
                for note in skipped:
                    console.print(f"plot left out: {note}", highlight=False)
        if args.json:
            print(dumps(document))
    return 0


def _run_sql(db: LogDB, query: str, as_json: bool, console: Console) -> int:
    try:
        relation = db.sql(query)
        if relation is None:  # a statement with no result (CREATE, SET...)
            return 0
        if as_json:
            print(dumps({**jsonable(relation), "warnings": db.warnings}))
        else:
            console.print(table_of("query", relation))
    except duckdb.Error as error:
        print(f"pagehint analyze: bad input: the query failed: {error}", file=sys.stderr)
        return 2
    return 0
