"""The Parquet copy of a run's log (``log.parquet``): written as a run ends (by the client for
a Dask run), read in place of the JSON lines while it is fresh, with the same answers; a stale,
cut or missing copy is not read, and analysis says why."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from pagehint.actors.analysis import REPORT_NAMES, open_run
from pagehint.actors.analysis import check as check_cli
from pagehint.actors.scenario import GuestModel
from pagehint.runtime import ActorSystem
from pagehint.runtime.harness.cli import main
from pagehint.runtime.harness.logdb import LogDB, copy_path
from pagehint.runtime.harness.model import RunFailed
from pagehint.runtime.harness.sweep import Executor, execute_all, expand, load_sweep

from conftest import CONFIGS, log_records, run_command, run_sweep

# Four debug-level runs of 60 ms: two designs that hint at once, two seeds each.
SWEEP = f"""
base = "{CONFIGS / "host_stall.toml"}"
seed = 3
replicates = 2
[set]
"run.duration" = "60ms"
"run.baseline" = false
"run.log_level" = "debug"
"run.sample_interval" = "5ms"
"guest.memory" = "1GiB"
"workload.size" = "128MiB"
"faults" = []
"policy.delay" = "0ms"
[grid]
"policy.name" = ["scanner", "bitmap"]
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_sweep(tmp_path_factory.mktemp("sweep"), SWEEP)


@pytest.fixture(scope="module")
def one_run(sweep: Path) -> Path:
    """The sweep's run with the most lines: one of the scanner's, which reports."""
    return max((sweep / "runs").iterdir(), key=lambda run: (run / "log.jsonl").stat().st_size)


def answers(path: Path, *, from_copy: bool) -> dict[str, Any]:
    """Where each run was read from, every line of ``events``, and every canned report with
    its notes, keyed by the factors and per run."""
    with open_run(path, from_copy=from_copy) as db:
        found: dict[str, Any] = {
            "sources": source_of(db),
            "events": db.sql("SELECT * FROM events ORDER BY run, line").fetchall(),
        }
        for name in REPORT_NAMES:
            found[name] = db.report(name).fetchall()
            found[f"{name}, per run"] = db.report(name, by_factors=False).fetchall()
            found[f"{name}, notes"] = db.notes(name)
        return found


def source_of(db: LogDB) -> list[str]:
    return [row[0] for row in db.sql("SELECT source FROM runs ORDER BY run").fetchall()]


# -- what a run directory holds ----------------------------------------------------------------
def test_every_finished_run_has_a_fresh_copy_written_before_its_summary(sweep: Path) -> None:
    for run in (sweep / "runs").iterdir():
        log, copy = run / "log.jsonl", run / "log.parquet"
        assert copy.stat().st_mtime_ns <= (run / "summary.json").stat().st_mtime_ns
        metadata = dict(
            duckdb.execute(f"SELECT key, value FROM parquet_kv_metadata('{copy}')").fetchall()
        )
        assert metadata[b"log_size_bytes"] == str(log.stat().st_size).encode()
        assert metadata[b"log_mtime_ns"] == str(log.stat().st_mtime_ns).encode()


def test_the_copy_holds_every_field_of_every_line_and_its_number(one_run: Path) -> None:
    records = log_records(one_run / "log.jsonl")
    relation = duckdb.connect().sql(f"SELECT * FROM '{one_run / 'log.parquet'}' ORDER BY line")
    types = dict(zip(relation.columns, map(str, relation.types), strict=True))
    assert set(types) == {"line"} | {key for record in records for key in record}
    rows = relation.fetchall()
    assert len(rows) == len(records)
    for number, (row, record) in enumerate(zip(rows, records, strict=True), 1):
        copied = dict(zip(relation.columns, row, strict=True))
        assert copied.pop("line") == number
        for key, value in copied.items():
            if types[key] == "JSON" and value is not None:
                value = orjson.loads(value)
            assert value == record.get(key), f"line {number}, {key}"


def test_a_failed_run_has_a_copy_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def fail(self: GuestModel, system: ActorSystem, config: Any) -> Any:
        raise RunFailed("injected failure", {})

    monkeypatch.setattr(GuestModel, "run", fail)
    out = tmp_path / "failed"
    assert main(["run", "idle", "--set", "run.duration=5ms", "--out", str(out)]) == 1
    assert (out / "error.json").is_file() and not (out / "summary.json").exists()
    with open_run(out) as db:
        assert source_of(db) == ["parquet"]
        assert db.warnings == ["run failed: the run failed: injected failure"]


def test_the_client_of_shipped_runs_writes_their_copies(tmp_path: Path) -> None:
    def submit_inline(fn: Callable[..., Any], /, *args: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        row = fn(*args)
        assert "log.parquet" not in row["files"], "a worker ships its log, not a copy of it"
        future.set_result(row)
        return future

    (tmp_path / "sweep.toml").write_text(SWEEP.replace("replicates = 2", "replicates = 1"))
    specs = expand(load_sweep(tmp_path / "sweep.toml"))
    shipping = Executor(submit_inline, ships_files=True, stop=lambda: None)
    execute_all("guest", specs, tmp_path / "out", shipping)
    with open_run(tmp_path / "out") as db:
        assert source_of(db) == ["parquet", "parquet"] and db.warnings == []


# -- the same answers --------------------------------------------------------------------------
def copied(run: Path, tmp_path: Path) -> Path:
    """A copy of ``run`` whose files keep their mtimes: its log's copy is still fresh."""
    return Path(shutil.copytree(run, tmp_path / "run"))


def same_but_sources(path: Path, sources: list[str]) -> None:
    """The answers from where ``path``'s runs are read (``sources``) and from the JSON lines."""
    found, from_json = answers(path, from_copy=True), answers(path, from_copy=False)
    assert (found.pop("sources"), from_json.pop("sources")) == (sources, ["json"] * len(sources))
    assert found == from_json


def test_copy_and_json_lines_give_the_same_answers_for_one_run(one_run: Path) -> None:
    events = {row[5] for row in answers(one_run, from_copy=True)["events"]}
    assert {"zone_alloc", "zone_free", "zone_work", "report", "discard"} <= events
    same_but_sources(one_run, ["parquet"])


def test_copy_and_json_lines_give_the_same_answers_over_a_sweep(sweep: Path) -> None:
    assert len(answers(sweep, from_copy=True)["overview"]) == 4
    same_but_sources(sweep, ["parquet"] * 4)


def test_a_sweep_read_partly_from_copies_gives_the_same_answers(
    sweep: Path, tmp_path: Path
) -> None:
    mixed = copied(sweep, tmp_path)
    first, *_ = sorted((mixed / "runs").iterdir())
    (first / "log.parquet").unlink()
    same_but_sources(mixed, ["json", "parquet", "parquet", "parquet"])


# -- copies that are not read -----------------------------------------------------------------
def test_a_copy_of_a_run_directory_keeping_mtimes_is_read_from_its_copy(
    one_run: Path, tmp_path: Path
) -> None:
    with open_run(copied(one_run, tmp_path)) as db:
        assert source_of(db) == ["parquet"] and db.warnings == []


@pytest.mark.parametrize("change", ["touched", "appended"])
def test_a_stale_copy_is_not_read(one_run: Path, tmp_path: Path, change: str) -> None:
    run = copied(one_run, tmp_path)
    log = run / "log.jsonl"
    lines = log.read_bytes().count(b"\n")
    if change == "touched":  # the same bytes, a later mtime
        later = log.stat().st_mtime_ns + 1_000_000_000
        os.utime(log, ns=(later, later))
    else:
        with log.open("ab") as file:
            file.write(log.read_bytes().splitlines(keepends=True)[-1])
        lines += 1
    with open_run(run) as db:
        assert source_of(db) == ["json"]
        assert db.sql("SELECT count(*) FROM events").fetchall() == [(lines,)]
        (warning,) = db.warnings
    assert "read from its JSON lines" in warning
    assert "log.parquet is stale: log.jsonl changed after it was written" in warning


@pytest.mark.parametrize("damage", ["cut", "foreign"])
def test_a_cut_or_foreign_copy_is_not_read(one_run: Path, tmp_path: Path, damage: str) -> None:
    run = copied(one_run, tmp_path)
    copy = run / "log.parquet"
    if damage == "cut":
        copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 2])
        said = "log.parquet is unreadable, cut short or not Parquet"
    else:  # a Parquet file of the same rows that pagehint did not write
        duckdb.execute(
            f"COPY (SELECT * FROM '{copy}') TO '{run / 'other.parquet'}' (FORMAT parquet)"
        )
        os.replace(run / "other.parquet", copy)
        said = "log.parquet is not a copy of its log that this pagehint reads"
    lines = (run / "log.jsonl").read_bytes().count(b"\n")
    with open_run(run) as db:
        assert source_of(db) == ["json"]
        assert db.sql("SELECT count(*), max(line) FROM events").fetchall() == [(lines, lines)]
        (warning,) = db.warnings
    assert said in warning


def test_an_interrupted_run_is_read_from_its_json_lines_and_says_why(
    one_run: Path, tmp_path: Path
) -> None:
    run = copied(one_run, tmp_path)
    for left in ("summary.json", "log.parquet"):
        (run / left).unlink()
    log = run / "log.jsonl"
    log.write_bytes(log.read_bytes()[:-20])  # killed mid-line
    with open_run(run) as db:
        assert source_of(db) == ["json"]
        cut, unfinished, no_copy = db.warnings
    assert "is cut off" in cut and "the run did not finish" in unfinished
    assert "read from its JSON lines" in no_copy
    assert "it has no log.parquet, which a run writes as it ends" in no_copy


def test_a_finished_run_without_a_copy_says_so(one_run: Path, tmp_path: Path) -> None:
    run = copied(one_run, tmp_path)
    copy_path(run / "log.jsonl").unlink()
    with open_run(run) as db:
        assert source_of(db) == ["json"]
        (warning,) = db.warnings
    assert warning.endswith(
        "read from its JSON lines (slower than from a Parquet copy): it has no log.parquet"
    )


def test_check_reads_the_json_lines_whatever_the_copy(
    one_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copied(one_run, tmp_path)
    (run / "log.parquet").write_bytes(b"not parquet")
    assert run_command(check_cli, str(run), "--json") == 0
    assert orjson.loads(capsys.readouterr().out)["warnings"] == []
