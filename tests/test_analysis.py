"""`pagehint analyze` and the log database: reports on real runs, sweeps, bad input, plots."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pagehint.actors import analysis
from pagehint.actors.analysis import cli as analyze_cli
from pagehint.actors.analysis import open_run
from pagehint.actors.analysis.plots import write_plots
from pagehint.runtime import PagehintError
from pagehint.runtime.harness.cli import main
from pagehint.runtime.harness.logdb import CorruptLine, EmptyLog, LogError, NotARun, SchemaMismatch

from conftest import copy_run, read_summary, run_cli, run_command

# Small and short: a 1 GiB guest whose vCPUs free 128 MiB each, reported by the scanner.
SHORT = [
    "run.duration=300ms",
    "run.baseline=false",
    "guest.memory=1GiB",
    "workload.size=128MiB",
    "run.sample_interval=10ms",
    "faults=[]",
]


def run(out: Path, *overrides: str) -> Path:
    return run_cli("host_stall.toml", out, *SHORT, *overrides)


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(tmp_path_factory.mktemp("debug") / "run", "run.log_level=debug")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep directory: two policies x two seeds, info level, no index."""
    root = tmp_path_factory.mktemp("sweep")
    for policy in ("scanner", "bitmap"):
        for seed in (1, 2):
            run(root / f"{policy}-{seed}", f"policy.name={policy}", f"run.seed={seed}")
    return root


def analyze(*argv: str) -> int:
    return run_command(analyze_cli, *argv)


def rows(relation: Any) -> list[dict[str, Any]]:
    return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


# -- reports on a real run -------------------------------------------------------------------
def test_events_view_has_every_line_with_its_number(debug_run: Path) -> None:
    lines = (debug_run / "log.jsonl").read_bytes().splitlines()
    with open_run(debug_run) as db:
        assert db.sql("SELECT count(*), max(line) FROM events").fetchall() == [
            (len(lines), len(lines))
        ]
        (header,) = db.sql("SELECT line, event, seed FROM events WHERE line = 1").fetchall()
        assert header == (1, "header", 0)
        first_report = next(i for i, line in enumerate(lines, 1) if b'"event":"report"' in line)
        found = db.sql("SELECT min(line) FROM events WHERE event = 'report'").fetchall()
        assert found == [(first_report,)]
        assert db.warnings == []


def test_return_report_recomputes_the_summarys_time_to_return(debug_run: Path) -> None:
    expected = read_summary(debug_run)
    with open_run(debug_run) as db:
        (row,) = rows(db.report("return"))
    assert row["returnable_peak_bytes"] == expected["returnable_peak_bytes"] > 0
    for level in ("50", "90", "99"):
        assert row[f"t{level}_s"] == expected["time_to_return_s"][level]
    assert row["rss_peak_bytes"] == expected["host"]["rss_bytes_peak"]
    assert row["matches_summary"] is True


def test_worker_oom_and_host_reports_agree_with_the_summary(debug_run: Path) -> None:
    expected = read_summary(debug_run)
    with open_run(debug_run) as db:
        (worker,) = rows(db.report("worker"))
        (oom,) = rows(db.report("oom"))
        (host,) = rows(db.report("host"))
    assert worker["wakeups"] == expected["worker"]["wakeups"]
    assert worker["polls"] == expected["worker"]["polls"]
    assert worker["reports"] == expected["worker"]["batches"] > 0
    assert worker["polls_per_wakeup"] == expected["worker"]["polls_per_wakeup"]
    assert worker["mean_batch_fill"] == pytest.approx(expected["worker"]["mean_batch_fill"])
    assert oom["peak_isolated_bytes"] == expected["peak_isolated_bytes"] > 0
    assert oom["false_ooms"] == expected["false_ooms"]
    assert host["discards"] == expected["host"]["discards"] > 0
    assert host["refaults"] == expected["host"]["refaults"]


def test_lock_wait_counts_every_vcpu_request_at_debug_level(debug_run: Path) -> None:
    expected = read_summary(debug_run)["lock_wait_ns_by_requester"]["vcpu"]
    with open_run(debug_run) as db:
        by_requester = {row["requester"]: row for row in rows(db.report("lock_wait"))}
        over_time = rows(db.report("lock_wait_over_time"))
    assert by_requester["vcpu"]["requests"] == expected["count"]
    assert by_requester["vcpu"]["max_ns"] == expected["max"]
    assert by_requester["all"]["requests"] >= expected["count"]
    assert sum(row["requests"] for row in over_time) == by_requester["all"]["requests"]
    assert [row["bucket"] for row in over_time] == sorted(row["bucket"] for row in over_time)


def test_info_level_logs_say_what_they_cannot_show(sweep: Path) -> None:
    with open_run(sweep / "scanner-1") as db:
        assert rows(db.report("lock_wait")) == []
        notes = db.notes("lock_wait")
        (host,) = rows(db.report("host"))
    assert any("info-level" in note and "run.log_level=debug" in note for note in notes)
    assert host["discards"] is None  # unknown, not zero


def test_json_output_has_every_default_report(
    debug_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert analyze(str(debug_run), "--json") == 0
    document = orjson.loads(capsys.readouterr().out)
    assert set(document["reports"]) == set(analysis.DEFAULT_REPORTS)
    assert document["reports"]["return"]["rows"][0]["matches_summary"] is True
    assert document["runs"][0]["status"] == "ok"


def test_terminal_tables_and_notes(debug_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert analyze(str(debug_run), "--report", "all") == 0
    out = capsys.readouterr().out
    for title in ("Memory returned to the host", "Zone-lock wait", "Hinting worker"):
        assert title in out
    assert "requester=worker" in out  # the worker's steps under the lock (zone_work)


def test_users_own_sql(debug_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    query = "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY n DESC"
    assert analyze(str(debug_run), "--sql", query, "--json") == 0
    document = orjson.loads(capsys.readouterr().out)
    assert document["columns"] == ["event", "n"]
    assert {"header", "sample", "report", "discard"} <= {row["event"] for row in document["rows"]}


def test_a_bad_query_is_bad_input(debug_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert analyze(str(debug_run), "--sql", "SELECT nope FROM events") == 2
    assert "the query failed" in capsys.readouterr().err


def test_list_names_reports_and_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert analyze("--list", "--json") == 0
    listing = orjson.loads(capsys.readouterr().out)
    assert set(listing["reports"]) == set(analysis.REPORT_NAMES)
    assert listing["events_columns"]["blocks"] == "JSON"
    assert listing["events_columns"]["wait_ns"] == "BIGINT"


# -- sweeps ----------------------------------------------------------------------------------
def test_a_sweep_is_keyed_by_its_factors_and_averaged_over_seeds(sweep: Path) -> None:
    with open_run(sweep) as db:
        assert db.factors == ["policy.name"]
        assert db.replicates == ["run.seed"]
        assert db.replicated
        grouped = rows(db.report("worker"))
        per_run = rows(db.report("worker", by_factors=False))
    assert [(row["policy.name"], row["runs"]) for row in grouped] == [
        ("bitmap", 2),
        ("scanner", 2),
    ]
    scanner = [row["reports"] for row in per_run if row["run"].startswith("scanner")]
    assert grouped[1]["reports"] == pytest.approx(sum(scanner) / 2)


def test_a_sweep_index_names_the_factors(sweep: Path, tmp_path: Path) -> None:
    copy = tmp_path / "indexed"
    shutil.copytree(sweep, copy)
    index = [
        {"dir": f"{name}", "params": {"policy.name": name.split("-")[0]}, "status": "ok"}
        for name in ("scanner-1", "scanner-2", "bitmap-1", "bitmap-2")
    ]
    (copy / "index.jsonl").write_bytes(b"\n".join(orjson.dumps(row) for row in index))
    with open_run(copy) as db:
        assert db.factors_all == ["policy.name", "run.seed"]
        assert db.replicated


def test_sweep_terminal_output_is_grouped(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert analyze(str(sweep), "--report", "return") == 0
    out = capsys.readouterr().out
    assert "policy.name" in out and "scanner" in out and "bitmap" in out


# -- bad input -------------------------------------------------------------------------------
def copy_log(source: Path, tmp_path: Path, edit: Callable[[list[bytes]], list[bytes]]) -> Path:
    return copy_run(source, tmp_path / "edited", edit)


def test_an_empty_log(debug_run: Path, tmp_path: Path) -> None:
    empty = copy_log(debug_run, tmp_path, lambda lines: [])
    with pytest.raises(EmptyLog, match=r"log\.jsonl: the log is empty"):
        open_run(empty)
    assert analyze(str(empty)) == 2


def test_a_truncated_last_line_is_analysed_up_to_there(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = copy_log(debug_run, tmp_path, lambda lines: [*lines[:-1], lines[-1][:25]])
    count = len((cut / "log.jsonl").read_bytes().splitlines())
    with open_run(cut) as db:
        assert db.sql("SELECT count(*) FROM events").fetchall() == [(count - 1,)]
        warning, copy_warning = db.warnings
    assert f"log.jsonl: line {count} is cut off" in warning
    assert f"analysed lines 1-{count - 1}" in warning
    assert "log.parquet is stale: log.jsonl changed after it was written" in copy_warning
    assert analyze(str(cut), "--report", "oom") == 0
    assert f"line {count} is cut off" in capsys.readouterr().err


def test_a_corrupt_line_in_the_middle_names_its_number(debug_run: Path, tmp_path: Path) -> None:
    def corrupt(lines: list[bytes]) -> list[bytes]:
        lines[99] = lines[99][:30] + b"\n"
        return lines

    broken = copy_log(debug_run, tmp_path, corrupt)
    with pytest.raises(CorruptLine, match=r"log\.jsonl, line 100: not valid JSON") as caught:
        open_run(broken)
    assert caught.value.line == 100


def test_a_line_without_the_common_keys_is_corrupt(debug_run: Path, tmp_path: Path) -> None:
    def untimed(lines: list[bytes]) -> list[bytes]:
        lines[9] = b'{"t":"soon","actor":"zone","level":"info","event":"sample"}\n'
        lines[20] = b"\n"
        return lines

    broken = copy_log(debug_run, tmp_path, untimed)
    with pytest.raises(CorruptLine, match=r"line 10: 't' must be virtual time in integer ns"):
        open_run(broken)


def test_a_blank_line_is_corrupt(debug_run: Path, tmp_path: Path) -> None:
    def blank(lines: list[bytes]) -> list[bytes]:
        return [*lines[:5], b"\n", *lines[5:]]

    with pytest.raises(CorruptLine, match="line 6: empty line"):
        open_run(copy_log(debug_run, tmp_path, blank))


def test_another_schema_version(debug_run: Path, tmp_path: Path) -> None:
    def future(lines: list[bytes]) -> list[bytes]:
        return [lines[0].replace(b'"schema":1', b'"schema":2'), *lines[1:]]

    with pytest.raises(SchemaMismatch, match=r"line 1: log schema version 2 .* schema 1 only"):
        open_run(copy_log(debug_run, tmp_path, future))


def test_a_log_that_does_not_start_with_its_header(debug_run: Path, tmp_path: Path) -> None:
    with pytest.raises(LogError, match=r"line 1: expected the header line .* found event"):
        open_run(copy_log(debug_run, tmp_path, lambda lines: lines[1:]))


def test_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(NotARun, match=r"not a run directory .* nor a sweep directory"):
        open_run(tmp_path)
    (tmp_path / "config.toml").write_text("[run]\n")
    with pytest.raises(NotARun, match=r"has config\.toml but no log\.jsonl"):
        open_run(tmp_path)
    with pytest.raises(NotARun, match="no such file or directory"):
        open_run(tmp_path / "missing")


def test_a_log_of_another_model(tmp_path: Path) -> None:
    assert main(["demo", "--out", str(tmp_path), "--requests", "5"]) == 0
    with pytest.raises(LogError, match="a log of model None"):
        open_run(tmp_path / "log.jsonl")


def test_every_log_error_is_a_pagehint_error() -> None:
    for error in (EmptyLog, SchemaMismatch, CorruptLine, NotARun):
        assert issubclass(error, PagehintError)


# -- plots -----------------------------------------------------------------------------------
PNG = b"\x89PNG\r\n\x1a\n"


def test_plots_are_written(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    assert analyze(str(debug_run), "--plot", str(tmp_path), "--json") == 0
    document = orjson.loads(capsys.readouterr().out)
    names = {"memory.png", "returned.png", "lock_wait.png", "worker_timeline.png"}
    assert {Path(path).name for path in document["plots"]} == names
    for name in names:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000


def test_plots_of_a_sweep_leave_out_what_info_logs_lack(sweep: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with open_run(sweep) as db:
        written, skipped = write_plots(db, tmp_path)
    names = {"memory.png", "returned.png", "worker_timeline.png", "sweep.png"}
    assert {path.name for path in written} == names
    assert any("lock_wait.png" in note for note in skipped)
    assert all(path.read_bytes().startswith(PNG) for path in written)


def test_the_oom_report_counts_false_ooms_as_kills_like_the_summary(tmp_path: Path) -> None:
    """Failed allocations outnumber kills (a refill drains every list and retries first);
    the report must count what summary.json counts, and the failures apart."""
    out = run_cli("false_oom.toml", tmp_path / "run", "run.duration=200ms")
    expected = read_summary(out)
    with open_run(out) as db:
        (oom,) = rows(db.report("oom"))
    assert oom["false_ooms"] == expected["false_ooms"] > 0
    assert oom["oom_kills"] == expected["workload"]["oom_kills"]
    assert oom["alloc_failures"] == expected["zone"]["failed_allocations"]
    assert oom["false_alloc_failures"] > oom["false_ooms"]
