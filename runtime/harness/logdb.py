"""Run logs as DuckDB tables: one run, one log, or a sweep.

Generic: this module knows the four keys every line starts with (``t``, ``actor``, ``level``,
``event``), the header line and the run directory layout (``config.toml``, ``log.jsonl``,
``log.parquet``, then ``summary.json`` or ``error.json``), and nothing of any model's events. A
model passes the typed fields of its events and its canned reports (``pagehint.actors.analysis``
does for the guest).

A finished run's log has a Parquet copy beside it (``write_copy``: every column DuckDB detects
in the JSON lines, the line number, and the log's size and mtime in its metadata). A log is read
from its copy when the copy is fresh (the log's size and mtime are those it records); otherwise
DuckDB parses its JSON lines once (``read_json``, newline-delimited) into a scratch Parquet file
that every query then reads. Python reads a log's first and last line and, for JSON lines,
counts its newlines; only when DuckDB finds a bad line does Python scan the file, to name that
line's number.

The ``events`` view (documented in docs/log-schema.md) has ``run`` (the run's name), ``line``
(1-based line number in its log), ``t``, ``actor``, ``level``, ``event``, then one typed column
per event field (JSON where two events give one name different types). The ``runs`` table has
one row per run: its status, whether it was read from its copy and, for a sweep, one column per
factor.
"""

from __future__ import annotations

import csv
import functools
import os
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import duckdb
import orjson

from ..errors import PagehintError
from ..log import LOG_SCHEMA_VERSION

LOG_NAME = "log.jsonl"
COPY_NAME = "log.parquet"  # what write_copy makes of LOG_NAME
COMMON = {"t": "BIGINT", "actor": "VARCHAR", "level": "VARCHAR", "event": "VARCHAR"}
RESERVED = ("run", "line", *COMMON)
NUMERIC_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT"}
    | {"UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL"}
)
# The runtime's own events (any model's log may hold them); docs/log-schema.md documents each.
_MAILBOX = ("capacity", "depth", "peak_depth", "handled", "wakeups", "budget_exhausted")
RUNTIME_FIELDS: dict[str, dict[str, str]] = {
    "header": {
        "schema": "BIGINT",
        "pagehint": "VARCHAR",
        "trio": "VARCHAR",
        "python": "VARCHAR",
        "seed": "BIGINT",
        "config_hash": "VARCHAR",
        "wall_time": "VARCHAR",
        "model": "VARCHAR",
        "log_level": "VARCHAR",
        "scenario": "VARCHAR",
    },
    "run_failed": {"error": "VARCHAR"},
    "actor_crashed": {"message": "JSON", "error": "VARCHAR"},
    "actor_stopped": dict.fromkeys(
        (*_MAILBOX, "blocked_sends", "blocked_ns", "dead_letters"), "BIGINT"
    ),
    "dead_letter": {"message_type": "VARCHAR", "message": "JSON"},
    "demo_done": {"virtual_s": "DOUBLE", "server_mailbox": "JSON", "metrics": "JSON"},
    "answered": {"number": "BIGINT", "latency_ns": "BIGINT"},
}
_TAIL_BYTES = 1 << 20
_CHUNK = 1 << 24


# -- errors ------------------------------------------------------------------------------------
class LogError(PagehintError):
    """A log (or a directory given as a run) that cannot be analysed; names file and line."""

    def __init__(self, path: Path | str, problem: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


class EmptyLog(LogError):
    """A log with no lines at all: the run ended before it wrote its header."""


class SchemaMismatch(LogError):
    """A log written with another version of the log schema."""


class CorruptLine(LogError):
    """A line that is not a log record, before the last line (so not a crash's cut-off)."""


class NotARun(LogError):
    """A path that is neither a run directory, a log file, nor a directory of runs."""


# -- what one log is -----------------------------------------------------------------------------
@attrs.frozen
class LogSource:
    """One run's log as checked before DuckDB reads it."""

    run: str  # the run's name: its directory, relative to a sweep's root
    path: Path  # the log file
    run_dir: Path | None  # the run directory holding it (None for a bare log file)
    header: Mapping[str, Any]
    last_line_cut: bool  # its last line was cut off mid-write (a crashed run)
    status: str  # ok (summary.json), failed (error.json), incomplete (neither), log (bare file)
    error: str | None  # error.json's message for a failed run
    config: Mapping[str, Any]  # config.toml as read ({} without one)
    lines: int = 0  # lines in the file, a cut-off last line included: counted by LogDB
    # Set by LogDB: the fresh Parquet copy read in place of the log (None: its JSON lines are
    # read), and why the JSON lines are read where a copy was to be expected ("" if not).
    copy: Path | None = None
    copy_note: str = ""

    @property
    def cut_line(self) -> int | None:
        """The number of the cut-off last line, if any."""
        return self.lines if self.last_line_cut else None

    @property
    def settings(self) -> dict[str, Any]:
        """The config flattened to dotted keys (``policy.name``): what factors are made of."""
        return dict(_flatten(self.config))


@attrs.frozen
class Report:
    """A canned query over the views; one row per ``run`` and ``keys``."""

    name: str
    title: str
    sql: str
    keys: tuple[str, ...] = ()  # columns that, with run, identify a row (kept when grouping)
    series: bool = False  # one row per instant or time bucket: long, shown thinned
    per_run: bool = False  # never averaged over seeds: one row per run, even in a sweep
    about: str = ""
    # What a reader must know about this report on these logs: what is missing, and why.
    notes: Callable[[LogDB], list[str]] = lambda db: []


def _check_record(raw: bytes) -> str | None:
    """Why ``raw`` is not a log record (None if it is): what DuckDB is asked to read."""
    if not raw.strip():
        return "empty line"
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return f"not valid JSON ({error})"
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    t = record.get("t")
    if type(t) is not int:
        return f"'t' must be virtual time in integer ns, got {t!r}"
    for key in ("actor", "level", "event"):
        if not isinstance(record.get(key), str):
            return f"{key!r} must be a string, got {record.get(key)!r}"
    return None


def _readable(table: str = "") -> str:
    """SQL: the row is a record (DuckDB gives a line it cannot read as a row of nulls)."""
    return " AND ".join(f"{table}{name} IS NOT NULL" for name in COMMON)


def _excerpt(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").rstrip("\n")
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _count_lines(path: Path) -> int:
    """Lines in the file, a last one without its newline included."""
    newlines = 0
    last = b""
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            newlines += chunk.count(b"\n")
            last = chunk
    return newlines + (0 if last.endswith(b"\n") else 1)


def _last_line(path: Path, size: int) -> bytes:
    with path.open("rb") as file:
        file.seek(max(0, size - _TAIL_BYTES))
        tail = file.read()
    return tail.rstrip(b"\n").rpartition(b"\n")[2] if tail.strip() else b""


def _first_line(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.readline().rstrip(b"\n")


def _read_header(path: Path, expected_schema: int) -> dict[str, Any]:
    first = _first_line(path)
    problem = _check_record(first)
    if problem is not None:
        raise CorruptLine(path, f"{problem}; expected the log header: {_excerpt(first)}", 1)
    header: dict[str, Any] = orjson.loads(first)
    if header["event"] != "header":
        raise LogError(
            path,
            f"expected the header line (event 'header') first, found event "
            f"{header['event']!r}: not a pagehint run log, or its start was cut off",
            1,
        )
    schema = header.get("schema")
    if schema != expected_schema:
        by = header.get("pagehint", "an unknown version")
        raise SchemaMismatch(
            path,
            f"log schema version {schema!r} (written by pagehint {by}), but this reader "
            f"understands schema {expected_schema} only: analyse it with the pagehint release "
            "that wrote it",
            1,
        )
    return header


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in table.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _run_files(run_dir: Path) -> tuple[str, str | None, dict[str, Any]]:
    """(status, error message, flattened config) from the files beside a log."""
    config: dict[str, Any] = {}
    config_path = run_dir / "config.toml"
    if config_path.is_file():
        try:
            config = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise LogError(config_path, f"cannot read the run's resolved config: {error}") from None
    if (run_dir / "summary.json").is_file():
        return "ok", None, config
    error_path = run_dir / "error.json"
    if error_path.is_file():
        try:
            message = str(orjson.loads(error_path.read_bytes()).get("error", "unknown error"))
        except (OSError, orjson.JSONDecodeError, AttributeError):
            message = "error.json is unreadable"
        return "failed", message, config
    return "incomplete", None, config


def inspect_log(
    path: Path, run: str, run_dir: Path | None, expected_schema: int = LOG_SCHEMA_VERSION
) -> LogSource:
    """Check a log's header and last line; LogDB counts its lines and DuckDB reads the rest."""
    try:
        size = path.stat().st_size
    except OSError as error:
        raise NotARun(path, f"cannot read the log: {error.strerror}") from None
    if size == 0:
        raise EmptyLog(path, "the log is empty: the run stopped before writing its header line")
    header = _read_header(path, expected_schema)
    beyond_header = size > len(_first_line(path)) + 1
    cut = beyond_header and _check_record(_last_line(path, size)) is not None
    status, failure, config = ("log", None, {}) if run_dir is None else _run_files(run_dir)
    return LogSource(run, path, run_dir, header, cut, status, failure, config)


def locate_bad_line(path: Path, stop_before: int | None) -> tuple[int, str] | None:
    """The first line DuckDB could not read as a record, scanning in Python (errors only)."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, 1):
            if number == stop_before:
                return None
            problem = _check_record(raw)
            if problem is not None:
                return number, f"{problem}: {_excerpt(raw)}"
    return None


# -- the Parquet copy ------------------------------------------------------------------------
# Its key-value metadata: what it was copied from, so that a reader can tell it is stale.
COPY_FORMAT = "1"  # of the copy itself (the line column, how types are mapped)
_SIZE_KEY, _MTIME_KEY, _FORMAT_KEY = "log_size_bytes", "log_mtime_ns", "log_copy_format"
_COPIED_AS_DETECTED = frozenset({"BOOLEAN", "BIGINT", "HUGEINT", "DOUBLE", "VARCHAR"})


def copy_path(log: Path) -> Path:
    """Where a log's Parquet copy is: beside it, ``log.parquet`` for ``log.jsonl``."""
    return log.with_suffix(".parquet")


def _copied_type(detected: str) -> str:
    """How a column of the type DuckDB detected is copied: a scalar as it is; objects, lists,
    mixed kinds and fields that are only ever null as their JSON text; a string that DuckDB
    took for a date, a time or a UUID as written."""
    if detected in _COPIED_AS_DETECTED:
        return detected
    return "VARCHAR" if detected.startswith(("DATE", "TIME", "UUID")) else "JSON"


@functools.cache
def _copying_database(pid: int) -> duckdb.DuckDBPyConnection:
    """The DuckDB that writes copies, one per process (``pid``: a forked worker opens its
    own): opening one costs more than copying a small log (some 20 ms), and a sweep's worker
    copies the log of every run it makes."""
    return duckdb.connect(config={"threads": 1})


def write_copy(log: Path) -> Path:
    """Write the Parquet copy of a finished log beside it; its path.

    Every column DuckDB detects over all the lines, and ``line``; the log's size and mtime go
    into the copy's metadata first, so a log that changes meanwhile leaves a stale copy. One
    DuckDB thread: a run is one core's work, and a sweep runs one per core. Written under
    another name and renamed: a ``log.parquet`` that is there is whole. Thread-safe (a cursor
    each).
    """
    stat = log.stat()
    target = copy_path(log)
    partial = target.with_name(f"{target.name}.partial")
    lines = f"read_json({quote_text(str(log))}, format = 'newline_delimited'"
    metadata = {
        _SIZE_KEY: str(stat.st_size),
        _MTIME_KEY: str(stat.st_mtime_ns),
        _FORMAT_KEY: COPY_FORMAT,
    }
    with _copying_database(os.getpid()).cursor() as con:
        detected = con.execute(f"DESCRIBE SELECT * FROM {lines}, sample_size = -1)").fetchall()
        columns = {name: _copied_type(kind) for name, kind, *_ in detected}
        con.execute(
            f"COPY (SELECT row_number() OVER () AS line, * FROM {lines}, "
            f"columns = {_struct(columns)})) TO {quote_text(str(partial))} "
            f"(FORMAT parquet, KV_METADATA {_struct(metadata)})"
        )
    os.replace(partial, target)
    return target


def _fresh_copy(con: duckdb.DuckDBPyConnection, log: Path) -> tuple[dict[str, str], str]:
    """The columns of ``log``'s Parquet copy and their types when the copy is fresh; else no
    columns and why it is not read ("": there is none)."""
    copy = copy_path(log)
    if not copy.is_file():
        return {}, ""
    where = quote_text(str(copy))
    try:
        found = con.execute(f"SELECT key, value FROM parquet_kv_metadata({where})").fetchall()
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet({where})").fetchall()
    except duckdb.Error as error:
        cause = str(error).splitlines()[0]
        return {}, f"{copy.name} is unreadable, cut short or not Parquet ({cause})"
    metadata = {bytes(key).decode(): bytes(value).decode() for key, value in found}
    if metadata.get(_FORMAT_KEY) != COPY_FORMAT:
        return {}, f"{copy.name} is not a copy of its log that this pagehint reads"
    stat = log.stat()
    if (metadata.get(_SIZE_KEY), metadata.get(_MTIME_KEY)) != (
        str(stat.st_size),
        str(stat.st_mtime_ns),
    ):
        return {}, (
            f"{copy.name} is stale: {log.name} changed after it was written (its size or "
            "modification time differs from those the copy records)"
        )
    columns = {name: kind for name, kind, *_ in described}
    if any(columns.get(name) != kind for name, kind in (COMMON | {"line": "BIGINT"}).items()):
        return {}, f"{copy.name} lacks the typed columns line, t, actor, level and event"
    return columns, ""


def _as_declared(name: str, declared: str, stored: str | None) -> str:
    """Column ``name`` of a Parquet file (of type ``stored``; None: it has none) as the
    ``events`` view's type ``declared``: the value ``read_json`` would give for that type."""
    column = quote_name(name)
    if stored is None:
        return f"CAST(NULL AS {declared}) AS {column}"
    if stored == declared:
        return f"p.{column}"
    if declared == "JSON":  # a string becomes a JSON string, not JSON text to parse
        return f"to_json(p.{column}) AS {column}"
    return f"CAST(p.{column} AS {declared}) AS {column}"


# -- finding runs ----------------------------------------------------------------------------
def _sources_at(path: Path) -> list[tuple[str, Path, Path | None, Path | None]]:
    """(run name, log, run dir, sweep root) for every log at ``path``."""
    if path.is_file():
        run_dir = path.parent if (path.parent / "config.toml").is_file() else None
        name = path.resolve().parent.name if path.name == LOG_NAME else path.stem
        return [(name, path, run_dir, None)]
    if not path.is_dir():
        raise NotARun(path, "no such file or directory")
    log = path / LOG_NAME
    if log.is_file():
        return [(path.resolve().name, log, path, None)]
    listed = _indexed_run_dirs(path)
    if listed is not None:
        logs = [run / LOG_NAME for run in listed if (run / LOG_NAME).is_file()]
        if not logs:
            raise NotARun(path, "its index.jsonl lists no run with a log")
    else:
        logs = sorted(found for found in path.rglob(LOG_NAME) if found.is_file())
    if not logs:
        hint = (
            " (it has config.toml but no log.jsonl: the run never started logging)"
            if (path / "config.toml").is_file()
            else ""
        )
        raise NotARun(
            path,
            f"not a run directory (no {LOG_NAME}) nor a sweep directory (no run directory with "
            f"a {LOG_NAME} below it){hint}",
        )
    return [(log.parent.relative_to(path).as_posix(), log, log.parent, path) for log in logs]


def _indexed_run_dirs(root: Path) -> list[Path] | None:
    """The run directories a sweep's ``index.jsonl`` lists, in its order (None: no index).

    Only these are the sweep: a directory left from an earlier sweep, or a run the index does
    not know, is not read. A row's ``dir`` is relative to the sweep directory (absolute in
    indexes of earlier versions).
    """
    if not (root / "index.jsonl").is_file():
        return None
    dirs = []
    for number, row in _index_rows(root):
        where = row.get("dir") if row is not None else None
        if not isinstance(where, str):
            raise NotARun(root, f"index.jsonl line {number} has no run directory (dir)")
        dirs.append(root / where)
    return dirs


def _index_rows(root: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """Each non-blank line of ``root``'s index.jsonl: its number and its object (None: a JSON
    value that is not an object). A line that is not JSON raises NotARun; an unreadable
    index, OSError."""
    for number, raw in enumerate((root / "index.jsonl").read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise NotARun(root, f"index.jsonl line {number} is not JSON") from None
        yield number, row if isinstance(row, dict) else None


_NESTED_PARAMS = ("params.", "parameters.", "factors.")


def _index_keys(root: Path, config_keys: set[str]) -> list[str]:
    """Factor names a sweep's index (index.jsonl or index.csv) gives, if any.

    A column counts as a factor when its name is a config key (``policy.name``), directly or
    under a ``params``/``parameters``/``factors`` mapping; the values are read from each run's
    config.toml, which is what the run used.
    """
    rows: list[Mapping[str, Any]] = []
    jsonl, table = root / "index.jsonl", root / "index.csv"
    try:
        if jsonl.is_file():
            rows.extend(row for _, row in _index_rows(root) if row is not None)
        elif table.is_file():
            with table.open(newline="", encoding="utf-8") as file:
                rows.extend(csv.DictReader(file))
    except (OSError, NotARun, csv.Error, UnicodeDecodeError):
        return []  # an index is a convenience: the configs say the same
    keys: list[str] = []
    for row in rows:
        for column, _ in _flatten(row):
            name = column.partition(".")[2] if column.startswith(_NESTED_PARAMS) else column
            if name in config_keys and name not in keys:
                keys.append(name)
    return keys


# Whether a config key differs between runs only because another key does (a design's own knob
# comes and goes with the design's name): ``implied(key, differing_keys)``.
Implied = Callable[[str, Sequence[str]], bool]


def _factors(sources: Sequence[LogSource], root: Path | None, implied: Implied | None) -> list[str]:
    """Config keys that differ between runs (or that the sweep's index names)."""
    if len(sources) < 2:
        return []
    settings = [source.settings for source in sources]
    ordered = list(dict.fromkeys(key for one in settings for key in one))
    differing = [key for key in ordered if len({repr(one.get(key)) for one in settings}) > 1]
    if implied is not None:
        differing = [key for key in differing if not implied(key, differing)]
    named = _index_keys(root, set(ordered)) if root is not None else []
    if named:  # the index's factors, and the seeds that replicate them
        return named + [key for key in differing if _is_replicate(key) and key not in named]
    return differing


def _is_replicate(key: str) -> bool:
    """A factor that replicates rather than varies the design: the seed."""
    return key.rpartition(".")[2] == "seed"


# -- SQL text helpers --------------------------------------------------------------------------
def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Sequence[Any]]) -> None:
    """Insert ``rows`` into ``table`` in one statement (``executemany`` runs one per row: a
    second for a sweep's thousand)."""
    if rows:
        marks = "(" + ", ".join("?" for _ in rows[0]) + ")"
        values = [value for row in rows for value in row]
        con.execute(f"INSERT INTO {table} VALUES " + ", ".join([marks] * len(rows)), values)


def _struct(values: Mapping[str, str]) -> str:
    """A DuckDB struct of text: ``{'key': 'value', ...}`` (named columns, Parquet metadata)."""
    return "{" + ", ".join(f"{quote_text(k)}: {quote_text(v)}" for k, v in values.items()) + "}"


def _files(paths: Iterable[Path | str]) -> str:
    """A DuckDB list of file names, for a table function."""
    return "[" + ", ".join(quote_text(str(path)) for path in paths) + "]"


def _sql_type(values: Iterable[Any]) -> str:
    present = [value for value in values if value is not None]
    if present and all(isinstance(value, bool) for value in present):
        return "BOOLEAN"
    if present and all(type(value) is int for value in present):
        return "BIGINT"
    if present and all(isinstance(value, int | float) for value in present):
        return "DOUBLE"
    return "VARCHAR"


def _sql_value(value: Any, sql_type: str) -> Any:
    if value is None or sql_type != "VARCHAR" or isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def column_types(fields: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """One column per field name over all events; JSON where events disagree on its type."""
    columns: dict[str, str] = {}
    for event, event_fields in fields.items():
        for name, sql_type in event_fields.items():
            if name in RESERVED:
                raise ValueError(f"event {event!r}: field {name!r} is a reserved column name")
            columns[name] = sql_type if columns.get(name, sql_type) == sql_type else "JSON"
    return columns


def is_numeric(sql_type: str) -> bool:
    return sql_type.partition("(")[0] in NUMERIC_TYPES


# -- the database ----------------------------------------------------------------------------
class LogDB:
    """The logs of one or more runs as DuckDB views; the notebook and CLI entry point.

    ``events`` is every record of every log; ``runs`` one row per run; ``report(name)`` runs a
    canned report; ``sql(query)`` anything else. Results are DuckDB relations: ``.fetchall()``,
    ``.df()`` (with pandas), ``.pl()`` (with polars).
    """

    def __init__(
        self,
        sources: Sequence[LogSource],
        *,
        fields: Mapping[str, Mapping[str, str]] | None = None,
        reports: Iterable[Report] = (),
        root: Path | None = None,
        connection: duckdb.DuckDBPyConnection | None = None,
        implied: Implied | None = None,
        from_copy: bool = True,
        threads: int | None = None,
    ) -> None:
        """``from_copy``: read a log from its fresh Parquet copy (False: always from its JSON
        lines). ``threads``: DuckDB's threads (None: its default, one per core)."""
        if not sources:
            raise ValueError("LogDB needs at least one log")
        self.sources = list(sources)
        self.con = connection if connection is not None else duckdb.connect()
        # Each query reads each copy's footer otherwise: over a sweep of many short runs, most
        # of a report's time.
        self.con.execute("SET parquet_metadata_cache = true")
        if threads is not None:
            self.con.execute(f"SET threads = {int(threads)}")
        self.reports = {report.name: report for report in reports}
        self.warnings: list[str] = []
        self.factors_all = _factors(self.sources, root, implied)
        self.factors = [key for key in self.factors_all if not _is_replicate(key)]
        self.replicates = [key for key in self.factors_all if _is_replicate(key)]
        self._columns = dict(COMMON) | column_types(fields or {})
        # The scratch copy of the logs read from their JSON lines: lists as JSON text, which
        # costs less to write and is cast only when a query asks for it (as a copy's are).
        self._scratch_columns = {
            name: "JSON" if kind.endswith("]") else kind for name, kind in self._columns.items()
        }
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._copies: dict[str, dict[str, str]] = {}  # a fresh copy -> its columns and types
        if from_copy:
            self._find_copies()
        self._validate_and_count()
        self._create_views()
        self._note_run_status()

    # -- setting up ------------------------------------------------------------------------
    def _find_copies(self) -> None:
        """Read each log from its Parquet copy where that is fresh; note why not elsewhere."""
        for index, source in enumerate(self.sources):
            columns, problem = _fresh_copy(self.con, source.path)
            copy = copy_path(source.path)
            if columns:
                self._copies[str(copy)] = columns
                self.sources[index] = attrs.evolve(source, copy=copy)
                continue
            if not problem and source.status in ("ok", "failed", "incomplete"):
                problem = f"it has no {copy.name}"
                if source.status == "incomplete":
                    problem += ", which a run writes as it ends"
            self.sources[index] = attrs.evolve(source, copy_note=problem)

    @staticmethod
    def _file(source: LogSource) -> str:
        """The file DuckDB reads for ``source``: its copy, or its log."""
        return str(source.copy or source.path)

    def _scratch_file(self) -> str:
        """The scratch Parquet file of the logs read from their JSON lines, as SQL text."""
        assert self._scratch is not None, "no log was read from its JSON lines"
        return quote_text(str(Path(self._scratch.name) / "logs.parquet"))

    def _scan_json(self, sources: Sequence[LogSource]) -> None:
        """Parse the JSON lines of ``sources`` once, into the scratch Parquet file."""
        self._scratch = tempfile.TemporaryDirectory(prefix="pagehint-logdb-")
        self.con.execute(
            "COPY (SELECT row_number() OVER () AS _row, * FROM read_json("
            f"{_files(source.path for source in sources)}, format = 'newline_delimited', "
            f"columns = {_struct(self._scratch_columns)}, filename = '_file', "
            f"ignore_errors = true)) TO {self._scratch_file()} "
            "(FORMAT parquet, ROW_GROUP_SIZE 16384)"  # row groups are buffered: 460 MiB -> 180
        )

    def _validate_and_count(self) -> None:
        """One scan of the common columns: rows, unreadable rows, events, levels, end time.

        Over JSON lines, Python counts each file's lines meanwhile (DuckDB runs without the
        GIL): DuckDB skips blank lines silently, so only the two counts together show every
        line was read. A copy holds the lines of a log DuckDB read whole: its rows are them.
        """
        from_json = [source for source in self.sources if source.copy is None]
        common = ", ".join(["_file", *COMMON])
        scans = []
        with ThreadPoolExecutor(max_workers=1) as pool:
            counting = pool.map(_count_lines, [source.path for source in from_json])
            if from_json:
                self._scan_json(from_json)
                scans.append(f"SELECT {common} FROM read_parquet({self._scratch_file()})")
            if self._copies:
                scans.append(
                    f"SELECT {common} FROM read_parquet({_files(self._copies)}, "
                    "filename = '_file', union_by_name = true)"
                )
            self.con.execute(
                "CREATE TEMP TABLE _lines AS SELECT _file, event, level, count(*) AS n, "
                f"count(*) FILTER (WHERE {_readable()}) AS good, "
                f"max(t) FILTER (WHERE {_readable()}) AS last "
                f"FROM ({' UNION ALL '.join(scans)}) GROUP BY ALL"
            )
            found = self.con.execute("SELECT _file, level, n, good, last FROM _lines").fetchall()
            counted = dict(zip((source.path for source in from_json), counting, strict=True))
        rows: dict[str, int] = {}
        bad: dict[str, int] = {}
        end: dict[str, int] = {}
        debug: set[str] = set()
        for filename, level, count, good, last in found:
            rows[filename] = rows.get(filename, 0) + count
            bad[filename] = bad.get(filename, 0) + count - good
            if good:
                end[filename] = max(end.get(filename, 0), last)
                if level == "debug":
                    debug.add(filename)
        self.sources = [
            attrs.evolve(source, lines=counted.get(source.path, rows.get(self._file(source), 0)))
            for source in self.sources
        ]
        for source in self.sources:
            path = self._file(source)
            expected_bad = 1 if source.cut_line is not None else 0
            if rows.get(path, 0) != source.lines or bad.get(path, 0) != expected_bad:
                located = locate_bad_line(source.path, source.cut_line)
                if located is not None:
                    raise CorruptLine(source.path, located[1], located[0])
                raise LogError(
                    source.path,
                    f"DuckDB read {rows.get(path, 0)} records ({bad.get(path, 0)} unreadable) "
                    f"from {source.lines} lines, yet every line parses as a record",
                )
        self._create_runs_table(rows, end, debug)
        self.con.execute(
            "CREATE TABLE event_counts AS SELECT r.run, l.event, l.level, l.good AS n "
            "FROM _lines AS l JOIN runs AS r USING (_file) WHERE l.good > 0"
        )
        self.con.execute("DROP TABLE _lines")

    def _create_runs_table(
        self, rows: Mapping[str, int], end: Mapping[str, int], debug: set[str]
    ) -> None:
        fixed = {
            "run": "VARCHAR",
            "status": "VARCHAR",
            "log": "VARCHAR",
            "source": "VARCHAR",
            "lines": "BIGINT",
            "cut_line": "BIGINT",
            "seed": "BIGINT",
            "config_hash": "VARCHAR",
            "end_ns": "BIGINT",
            "debug": "BOOLEAN",
            "_file": "VARCHAR",
            "_first_row": "BIGINT",
        }
        settings = [source.settings for source in self.sources]
        factor_types = {
            key: _sql_type(one.get(key) for one in settings) for key in self.factors_all
        }
        columns = fixed | {key: kind for key, kind in factor_types.items() if key not in fixed}
        self.con.execute(
            "CREATE TABLE runs ("
            + ", ".join(f"{quote_name(name)} {kind}" for name, kind in columns.items())
            + ")"
        )
        first_row = 1  # of each log in the scratch copy, where logs read as JSON follow in turn
        values = []
        for source, setting in zip(self.sources, settings, strict=True):
            path = self._file(source)
            seed = source.header.get("seed")
            values.append(
                (
                    source.run,
                    source.status,
                    str(source.path),
                    "json" if source.copy is None else "parquet",
                    source.lines,
                    source.cut_line,
                    seed if type(seed) is int else None,
                    source.header.get("config_hash"),
                    end.get(path, 0),
                    path in debug,
                    path,
                    first_row if source.copy is None else None,
                    *(
                        _sql_value(setting.get(key), factor_types[key])
                        for key in columns
                        if key not in fixed
                    ),
                )
            )
            if source.copy is None:
                first_row += rows.get(path, 0)
        insert_rows(self.con, "runs", values)

    def _create_views(self) -> None:
        """``events``: the scratch copy's readable rows, then those of each group of copies
        that share their columns (a sweep's, mostly one group)."""
        scans = []
        if self._scratch is not None:
            scans.append(
                self._events_from(
                    f"read_parquet({self._scratch_file()})",
                    self._scratch_columns,
                    "p._row - r._first_row + 1",
                )
                + f" WHERE {_readable('p.')}"
            )
        groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
        for copy, columns in self._copies.items():
            groups.setdefault(tuple(columns.items()), []).append(copy)
        for shared, copies in groups.items():
            scans.append(
                self._events_from(
                    f"read_parquet({_files(copies)}, filename = '_file')", dict(shared), "p.line"
                )
            )
        self.con.execute("CREATE VIEW events AS " + " UNION ALL ".join(scans))

    def _events_from(self, scan: str, stored: Mapping[str, str], line: str) -> str:
        fields = [
            _as_declared(name, kind, stored.get(name))
            for name, kind in self._columns.items()
            if name not in COMMON
        ]
        return (
            f"SELECT r.run, {line} AS line, p.t, p.actor, p.level, p.event"
            + "".join(f", {field}" for field in fields)
            + f" FROM {scan} AS p JOIN runs AS r ON p._file = r._file"
        )

    def _note_run_status(self) -> None:
        for source in self.sources:
            if source.cut_line is not None:
                self.warnings.append(
                    f"{source.path}: line {source.cut_line} is cut off (the run was interrupted "
                    f"while writing it); analysed lines 1-{source.cut_line - 1}"
                )
            if source.status == "failed":
                self.warnings.append(f"run {source.run}: the run failed: {source.error}")
            elif source.status == "incomplete":
                self.warnings.append(
                    f"run {source.run}: no summary.json or error.json: the run did not finish "
                    "(still running, or killed); its log is analysed as far as it goes"
                )
            if source.copy_note:
                self.warnings.append(
                    f"run {source.run}: read from its JSON lines (slower than from a Parquet "
                    f"copy): {source.copy_note}"
                )
            if source.lines - (source.cut_line is not None) <= 1:
                self.warnings.append(f"{source.path}: the log has no events after its header")

    # -- asking ----------------------------------------------------------------------------
    @property
    def events(self) -> duckdb.DuckDBPyRelation:
        return self.con.view("events")

    @property
    def runs(self) -> duckdb.DuckDBPyRelation:
        return self.con.sql(
            "SELECT * EXCLUDE (_file, _first_row) FROM runs ORDER BY "
            + ", ".join([*(quote_name(key) for key in self.factors_all), "run"])
        )

    @property
    def columns(self) -> dict[str, str]:
        """The ``events`` view's columns and their DuckDB types."""
        return {"run": "VARCHAR", "line": "BIGINT"} | self._columns

    @staticmethod
    def columns_of(fields: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
        """The ``events`` view's columns for a model's fields, without opening a log."""
        return {"run": "VARCHAR", "line": "BIGINT"} | COMMON | column_types(fields)

    @property
    def replicated(self) -> bool:
        """Some runs differ only in their seed: reports grouped by factors average over them."""
        names = [quote_name(key) for key in self.factors]
        if not self.factors:
            return len(self.sources) > 1 and bool(self.replicates)
        distinct = self.con.sql(
            f"SELECT count(*) FROM (SELECT DISTINCT {', '.join(names)} FROM runs)"
        )
        return bool(distinct.fetchall()[0][0] < len(self.sources))

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        return self.con.sql(query)

    def runs_with(self, event: str) -> set[str]:
        """Runs whose log has at least one ``event`` line."""
        found = self.con.execute("SELECT DISTINCT run FROM event_counts WHERE event = ?", [event])
        return {row[0] for row in found.fetchall()}

    def report_sql(self, name: str, *, by_factors: bool = True) -> str:
        try:
            report = self.reports[name]
        except KeyError:
            known = ", ".join(sorted(self.reports)) or "none"
            raise LookupError(f"no report named {name!r} (reports: {known})") from None
        if not by_factors or len(self.sources) < 2:
            return report.sql
        return self._grouped(report)

    def report(self, name: str, *, by_factors: bool = True) -> duckdb.DuckDBPyRelation:
        """A canned report; over several runs, keyed by the sweep's factors."""
        return self.con.sql(self.report_sql(name, by_factors=by_factors))

    def notes(self, name: str) -> list[str]:
        """What a reader must know about report ``name`` on these logs."""
        return self.reports[name].notes(self)

    def _grouped(self, report: Report) -> str:
        """The report with the runs' factors in front; averaged over seeds where replicated."""
        inner = self.con.sql(report.sql)
        factors = [quote_name(key) for key in self.factors]
        keys = [quote_name(key) for key in report.keys]
        averaged = self.replicated and not report.per_run
        order = ", ".join([*factors, *keys] if averaged else [*factors, *keys, "run"])
        if not averaged:
            shown = [f"runs.{name}" for name in factors]
            return (
                f"SELECT {', '.join([*shown, 'r.*'])} FROM ({report.sql}) AS r "
                f"JOIN runs USING (run) ORDER BY {order}"
            )
        metrics = []
        for name, kind in zip(inner.columns, inner.types, strict=True):
            if name == "run" or name in report.keys:
                continue
            quoted = quote_name(name)
            aggregate = "avg" if is_numeric(str(kind)) else "any_value"
            metrics.append(f"{aggregate}(r.{quoted}) AS {quoted}")
        group = ", ".join([*(f"runs.{name}" for name in factors), *(f"r.{k}" for k in keys)])
        selected = [*(f"runs.{name}" for name in factors), *(f"r.{k}" for k in keys)]
        return (
            f"SELECT {', '.join([*selected, 'count(DISTINCT r.run) AS runs', *metrics])} "
            f"FROM ({report.sql}) AS r JOIN runs USING (run)"
            + (f" GROUP BY {group}" if group else "")
            + (f" ORDER BY {order}" if order else "")
        )

    def close(self) -> None:
        self.con.close()
        if self._scratch is not None:
            self._scratch.cleanup()

    def __enter__(self) -> LogDB:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def find_logs(
    paths: Sequence[Path | str], expected_schema: int = LOG_SCHEMA_VERSION
) -> tuple[list[LogSource], Path | None]:
    """Every log at ``paths`` (run dirs, log files, sweep dirs), checked; and a sweep's root."""
    found: list[tuple[str, Path, Path | None, Path | None]] = []
    for path in paths:
        found.extend(_sources_at(Path(path)))
    roots = {root for *_, root in found}
    root = roots.pop() if len(roots) == 1 else None
    names = [name for name, *_ in found]
    if len(set(names)) < len(names):  # two runs of one name from different places
        found = [(str(log.with_suffix("")), log, run_dir, r) for _, log, run_dir, r in found]
    sources = [
        inspect_log(log.resolve(), name, run_dir, expected_schema)
        for name, log, run_dir, _ in found
    ]
    return sources, root


def open_logs(
    paths: Path | str | Sequence[Path | str],
    *,
    fields: Mapping[str, Mapping[str, str]] | None = None,
    reports: Iterable[Report] = (),
    expected_schema: int = LOG_SCHEMA_VERSION,
    implied: Implied | None = None,
    from_copy: bool = True,
    threads: int | None = None,
) -> LogDB:
    """Open runs, logs or sweep directories as one ``LogDB``.

    Raises a ``LogError`` (naming the file, and the line where one is to blame) for an empty
    log, another schema version, a corrupt line, or a path that holds no run. A last line cut
    off mid-write is not an error: the log is read up to it and ``LogDB.warnings`` says so.
    A log is read from its Parquet copy where that is fresh (``from_copy``); the warnings say
    why a run's JSON lines are read instead.
    """
    many = [paths] if isinstance(paths, Path | str) else list(paths)
    if not many:
        raise ValueError("open_logs needs at least one path")
    sources, root = find_logs(many, expected_schema)
    return LogDB(
        sources,
        fields=fields,
        reports=reports,
        root=root,
        implied=implied,
        from_copy=from_copy,
        threads=threads,
    )
