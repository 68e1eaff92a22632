"""`pagehint check`: clean runs pass, an edited log line is caught with its line number, and a
truncated log is checked as far as it goes, its end-of-run check marked not checked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pagehint.actors.analysis import check, open_run

from conftest import copy_run, run_cli, run_command

SHORT = ["run.duration=300ms", "run.baseline=false", "guest.memory=1GiB", "workload.size=128MiB"]


def run(out: Path, *overrides: str) -> Path:
    return run_cli("host_stall.toml", out, *SHORT, *overrides)


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The host stalls before the first report is served, a reset drops it, and a second stall
    # keeps a report in flight past the end.
    faults = (
        'faults=[{kind="stall", at="5ms", duration="100ms"}, {kind="reset", at="50ms"}, '
        '{kind="stall", at="120ms", duration="1s"}]'
    )
    return run(tmp_path_factory.mktemp("debug") / "run", "run.log_level=debug", faults)


@pytest.fixture(scope="module")
def info_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(tmp_path_factory.mktemp("info") / "run", "faults=[]")


def check_json(*argv: str, code: int, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert run_command(check, *argv, "--json") == code
    document: dict[str, Any] = orjson.loads(capsys.readouterr().out)
    return document


Edit = Callable[[dict[str, Any]], dict[str, Any]]


def edited(source: Path, tmp_path: Path, event: str, nth: int, edit: Edit) -> tuple[Path, int]:
    """A copy of a run whose ``nth`` line of ``event`` is changed; and that line's number."""
    lines = (source / "log.jsonl").read_bytes().splitlines()
    numbers = [n for n, raw in enumerate(lines, 1) if orjson.loads(raw)["event"] == event]
    if len(numbers) < nth:
        raise AssertionError(f"fewer than {nth} {event} lines")
    number = numbers[nth - 1]

    def edit_line(lines: list[bytes]) -> list[bytes]:
        lines[number - 1] = orjson.dumps(edit(orjson.loads(lines[number - 1]))) + b"\n"
        return lines

    return copy_run(source, tmp_path / "edited", edit_line), number


def first_violation(document: dict[str, Any]) -> dict[str, Any]:
    (result,) = document["runs"]
    violation: dict[str, Any] = result["first_violation"]
    return violation


def test_a_clean_debug_run_passes_every_check(
    debug_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = check_json(str(debug_run), code=0, capsys=capsys)
    (result,) = document["runs"]
    assert result["checks"] == dict.fromkeys(check.CHECKS, "ok")
    assert result["counted"]["discards"] > 0 and result["counted"]["reports"] > 0
    assert result["truncated"] is False
    assert document["ok"] is True


def test_reports_unanswered_at_the_end_are_listed_not_violations(
    debug_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (result,) = check_json(str(debug_run), code=0, capsys=capsys)["runs"]
    in_flight = result["in_flight_at_end"]
    assert in_flight, "the host stall should leave a report in flight"
    lines = (debug_run / "log.jsonl").read_bytes().splitlines()
    for flight in in_flight:
        record = orjson.loads(lines[flight["line"] - 1])
        assert record["event"] == "report" and record["token"] == flight["token"]


def test_conservation_violation_is_caught_at_its_line(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken, line = edited(
        debug_run, tmp_path, "sample", 5, lambda r: {**r, "free_pages": r["free_pages"] - 1}
    )
    violation = first_violation(check_json(str(broken), code=1, capsys=capsys))
    assert violation["check"] == "conservation" and violation["line"] == line
    assert "but the guest has" in violation["message"]


def test_discard_of_a_page_no_report_holds_is_caught(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken, line = edited(debug_run, tmp_path, "discard", 3, lambda r: {**r, "pfn": 5})
    violation = first_violation(check_json(str(broken), code=1, capsys=capsys))
    assert violation["check"] == "discard_in_flight" and violation["line"] == line
    assert "the host discarded pfns 5.." in violation["message"]


def test_discard_after_the_report_came_back_is_caught(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Move a report_done before its report's last discard: the page was back in use."""
    records = [orjson.loads(raw) for raw in (debug_run / "log.jsonl").read_bytes().splitlines()]
    done = next(i for i, r in enumerate(records) if r["event"] == "report_done" and r["acked"])
    discard = max(i for i in range(done) if records[i]["event"] == "discard")

    def move_done_before_discard(lines: list[bytes]) -> list[bytes]:
        lines.insert(discard, lines.pop(done))
        return lines

    target = copy_run(debug_run, tmp_path / "reordered", move_done_before_discard)
    violation = first_violation(check_json(str(target), code=1, capsys=capsys))
    assert violation["check"] == "discard_in_flight" and violation["line"] == discard + 2
    assert "put back at line" in violation["message"]


def test_a_report_done_for_no_report_is_caught(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken, line = edited(debug_run, tmp_path, "report_done", 2, lambda r: {**r, "token": 999})
    violation = first_violation(check_json(str(broken), code=1, capsys=capsys))
    assert violation["check"] == "report_ledger" and violation["line"] == line
    assert "token 999" in violation["message"]


def test_a_block_in_two_reports_at_once_is_caught(
    info_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (info_run / "log.jsonl").read_bytes().splitlines()
    first = next(i for i, raw in enumerate(lines) if b'"event":"report"' in raw)
    again = orjson.dumps({**orjson.loads(lines[first]), "token": 1000}) + b"\n"
    # its blocks are still in report 0
    target = copy_run(
        info_run,
        tmp_path / "twice",
        lambda lines: [*lines[: first + 1], again, *lines[first + 1 :]],
    )
    violation = first_violation(check_json(str(target), code=1, capsys=capsys))
    assert violation["check"] == "report_ledger" and violation["line"] == first + 2
    assert "is still in flight: a page on two lists" in violation["message"]


def test_an_info_level_log_says_which_check_it_cannot_do(
    info_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (result,) = check_json(str(info_run), code=0, capsys=capsys)["runs"]
    assert result["checks"]["discard_in_flight"].startswith("not checked: the log is at info")
    assert result["checks"]["conservation"] == "ok"


def test_terminal_output_names_file_and_line(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken, line = edited(debug_run, tmp_path, "sample", 2, lambda r: {**r, "lent_pages": 0})
    assert run_command(check, str(broken)) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert f"first violation (conservation) at {broken / 'log.jsonl'}:{line}" in out


def test_a_cut_off_log_is_checked_up_to_its_last_whole_line(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (debug_run / "log.jsonl").read_bytes().splitlines(keepends=True)
    report = max(i for i, raw in enumerate(lines) if b'"event":"report"' in raw)
    target = copy_run(
        debug_run, tmp_path / "cut", lambda lines: [*lines[: report + 1], lines[report + 1][:20]]
    )
    document = check_json(str(target), code=0, capsys=capsys)
    assert any(f"line {report + 2} is cut off" in warning for warning in document["warnings"])
    (result,) = document["runs"]
    assert result["in_flight_at_end"][-1]["line"] == report + 1


TRUNCATED = "not checked (log truncated: no end-of-run line)"


def _plain(out: str) -> str:
    """Terminal output without the table's borders, its words joined by single spaces."""
    return " ".join(out.translate({ord(c): " " for c in "│┃┏┓┗┛┡┩└┘┳┻╇┴━─"}).split())


def _cut_mid_line(lines: list[bytes]) -> list[bytes]:
    return [*lines[:-1], lines[-1][: len(lines[-1]) // 2]]


def _before_run_end(lines: list[bytes]) -> list[bytes]:
    """The lines before ``run_end`` (a debug log has ``actor_stopped`` lines after it)."""
    return lines[: next(i for i, raw in enumerate(lines) if b'"event":"run_end"' in raw)]


def _to_last_report_cut(lines: list[bytes]) -> list[bytes]:
    last = max(i for i, raw in enumerate(lines) if b'"event":"report"' in raw)
    return _cut_mid_line(lines[: last + 1])


@pytest.mark.parametrize(
    ("source", "cut"),
    [
        pytest.param("info_run", lambda lines: lines[:-1], id="info-last-line-dropped"),
        pytest.param("info_run", lambda lines: lines[:-5], id="info-last-5-lines-dropped"),
        pytest.param("info_run", _cut_mid_line, id="info-last-line-cut-mid-json"),
        pytest.param("debug_run", _before_run_end, id="debug-cut-before-run_end"),
        pytest.param("debug_run", _to_last_report_cut, id="debug-report-cut-mid-json"),
    ],
)
def test_a_truncated_log_does_not_check_the_end_of_the_run(
    source: str,
    cut: Callable[[list[bytes]], list[bytes]],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    whole: Path = request.getfixturevalue(source)
    assert run_command(check, str(whole)) == 0
    assert "isolated_at_end ok" in _plain(capsys.readouterr().out)
    target = copy_run(whole, tmp_path / "truncated", cut)
    document = check_json(str(target), code=0, capsys=capsys)
    (result,) = document["runs"]
    assert result["truncated"] is True and document["ok"] is True
    assert result["checks"]["isolated_at_end"].startswith(TRUNCATED)
    assert result["checks"]["conservation"] == result["checks"]["report_ledger"] == "ok"

    assert run_command(check, str(target)) == 0
    out = _plain(capsys.readouterr().out)
    assert "isolated_at_end ok" not in out
    assert f"isolated_at_end {TRUNCATED}" in out
    assert "truncated: the log has no run_end line" in out
    assert "no violation in the lines there are" in out


def test_a_debug_log_cut_after_its_run_end_is_checked_to_the_end(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only ``actor_stopped`` lines follow ``run_end``: losing some loses no end-of-run state."""
    target = copy_run(debug_run, tmp_path / "cut", lambda lines: _cut_mid_line(lines[:-3]))
    (result,) = check_json(str(target), code=0, capsys=capsys)["runs"]
    assert result["truncated"] is False
    assert result["checks"] == dict.fromkeys(check.CHECKS, "ok")


def test_a_failed_run_says_so_where_the_end_is_not_checked(
    info_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail_at_line_30(lines: list[bytes]) -> list[bytes]:
        t = orjson.loads(lines[29])["t"]
        failed = {
            "t": t,
            "actor": "runtime",
            "level": "error",
            "event": "run_failed",
            "error": "boom",
        }
        return [*lines[:30], orjson.dumps(failed) + b"\n"]

    target = copy_run(info_run, tmp_path / "failed", fail_at_line_30)
    (target / "summary.json").unlink()
    (target / "error.json").write_bytes(orjson.dumps({"status": "failed", "error": "boom"}))
    (result,) = check_json(str(target), code=0, capsys=capsys)["runs"]
    assert result["truncated"] is False
    assert result["checks"]["isolated_at_end"].startswith(
        "not checked (the run failed: no end-of-run line)"
    )


def test_a_whole_log_is_not_truncated(info_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (result,) = check_json(str(info_run), code=0, capsys=capsys)["runs"]
    assert result["truncated"] is False and result["checks"]["isolated_at_end"] == "ok"
    assert run_command(check, str(info_run)) == 0
    out = _plain(capsys.readouterr().out)
    assert "isolated_at_end ok" in out and "truncated" not in out


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "log.jsonl").write_bytes(b"")
    assert run_command(check, str(tmp_path)) == 2
    assert "the log is empty" in capsys.readouterr().err


def test_check_logs_from_python(debug_run: Path) -> None:
    with open_run(debug_run) as db:
        (result,) = check.check_logs(db)
    assert result.first is None and result.run == "run"


def _isolating_at_last_sample(lines: list[bytes]) -> list[bytes]:
    """The last sample shows half the free pages isolated, more than any poll takes and held by
    no logged report (as if the run stopped mid-isolation): free + isolated stays the same."""
    last = max(i for i, raw in enumerate(lines) if b'"event":"sample"' in raw)
    sample = orjson.loads(lines[last])
    moved = sample["free_pages"] // 2
    sample["free_pages"] -= moved
    sample["isolated_pages"] += moved
    return [*lines[:last], orjson.dumps(sample) + b"\n", *lines[last + 1 :]]


def test_a_truncated_logs_last_sample_is_not_held_to_the_end_of_run_check(
    info_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = copy_run(info_run, tmp_path / "whole", _isolating_at_last_sample)
    assert first_violation(check_json(str(whole), code=1, capsys=capsys))["check"] == (
        "isolated_at_end"
    )
    cut = copy_run(info_run, tmp_path / "cut", lambda lines: _isolating_at_last_sample(lines[:-1]))
    document = check_json(str(cut), code=0, capsys=capsys)
    (result,) = document["runs"]
    assert result["truncated"] is True and result["first_violation"] is None
    assert result["checks"]["isolated_at_end"].startswith(TRUNCATED)
