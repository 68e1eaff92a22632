"""``pagehint check LOG``: replay a run's log and verify the model's invariants offline.

The simulator checks its invariants as it runs, on its own state; this checks them again on what
the log says, so a log from another build, an edited log, or a log whose run was cut short can
be trusted (or not) without re-running it:

- ``conservation``: at every ``sample``, free + isolated + lent pages == total pages.
- ``report_ledger``: report tokens are unique per worker, each ``report_done`` answers a report
  in flight, and no block is in two reports in flight at once (a page on two lists).
- ``discard_in_flight``: every host ``discard`` (debug level) lies inside a block of a report of
  that guest still in flight: the host never discards a page the guest may be using.
- ``isolated_at_end``: at each guest's last sample, its isolated pages are those of its reports
  in flight (and of a poll whose report was not yet logged). Reports without a ``report_done``
  at the end are listed as in flight, not counted as lost.

A whole run writes ``run_end`` (its summary) after its final sample, and at debug level only
``actor_stopped`` lines after that; a failed run ends with ``run_failed``. A log with neither is
truncated (the run was killed, or the file was cut, a last line cut mid-write included) and its
run is marked ``truncated``. Without ``run_end`` the other checks cover the lines there are,
but the last sample logged is not the run's end: ``isolated_at_end`` is ``not checked`` (its
status says why), never ``ok``.

The first violation of each run is reported with its line number. Exit 0 when no check is
violated, 1 on a violation, 2 on bad input (a log that cannot be read). A check the log cannot
support is not a violation: a truncated log with nothing violated exits 0, its JSON ``ok`` is
true, and its run's ``truncated`` and ``checks`` say what was not checked.
"""

from __future__ import annotations

import argparse
import bisect
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson
from rich.console import Console
from rich.table import Table

from pagehint.runtime.harness.logdb import LogDB, LogError

from .database import open_run

CHECKS = ("conservation", "report_ledger", "discard_in_flight", "isolated_at_end")
_BATCH = 10_000


@attrs.frozen
class Violation:
    check: str
    line: int
    t: int
    message: str


@attrs.define
class RunCheck:
    """What ``check`` found in one run's log."""

    run: str
    log: Path
    status: dict[str, str] = attrs.field(factory=lambda: dict.fromkeys(CHECKS, "ok"))
    violations: list[Violation] = attrs.field(factory=list)  # the first of each check
    in_flight: list[dict[str, Any]] = attrs.field(factory=list)  # reports never answered
    counted: dict[str, int] = attrs.field(factory=dict)
    truncated: bool = False  # no run_end (nor run_failed) line: the log stops before the end

    @property
    def first(self) -> Violation | None:
        return min(self.violations, key=lambda v: v.line, default=None)

    def violate(self, check: str, line: int, t: int, message: str) -> None:
        if self.status[check] != "violated":
            self.status[check] = "violated"
            self.violations.append(Violation(check, line, t, message))

    def as_dict(self) -> dict[str, Any]:
        first = self.first
        return {
            "run": self.run,
            "log": str(self.log),
            "checks": self.status,
            "first_violation": None if first is None else attrs.asdict(first),
            "violations": [attrs.asdict(v) for v in sorted(self.violations, key=_line)],
            "truncated": self.truncated,
            "in_flight_at_end": self.in_flight,
            "counted": self.counted,
        }


def _line(violation: Violation) -> int:
    return violation.line


@attrs.define
class _Flight:
    token: int
    line: int
    pages: int
    blocks: list[tuple[int, int]]


@attrs.define
class _Guest:
    """The replayed hinting state of one guest."""

    in_flight: dict[int, _Flight] = attrs.field(factory=dict)
    starts: list[int] = attrs.field(factory=list)  # sorted first pfns of blocks in flight
    blocks: dict[int, tuple[int, int]] = attrs.field(factory=dict)  # pfn -> (end, token)
    answered: dict[int, int] = attrs.field(factory=dict)  # token -> line of its report_done
    returned: dict[int, tuple[int, int]] = attrs.field(factory=dict)  # pfn -> (token, line)
    pending_poll: int = 0  # pages of a poll whose report line has not come yet
    largest_poll: int = 0
    at_last_sample: tuple[int, int, int, int, int] | None = None  # line, t, isolated, ...

    def holder(self, pfn: int, end: int) -> tuple[int, int] | None:
        """(block start, token) of the in-flight block that holds [pfn, end), if any."""
        index = bisect.bisect_right(self.starts, pfn) - 1
        if index < 0:
            return None
        start = self.starts[index]
        block_end, token = self.blocks[start]
        return (start, token) if end <= block_end else None

    def overlapping(self, pfn: int, end: int) -> tuple[int, int] | None:
        index = bisect.bisect_right(self.starts, pfn) - 1
        for start in self.starts[max(index, 0) : index + 2]:
            block_end, token = self.blocks[start]
            if start < end and pfn < block_end:
                return start, token
        return None

    @property
    def in_flight_pages(self) -> int:
        return sum(flight.pages for flight in self.in_flight.values())


def _guest_of(actor: str) -> str:
    """The guest an actor belongs to, named as the host names it ('g1.worker' -> 'g1.guest')."""
    prefix, dot, _ = actor.rpartition(".")
    return f"{prefix}{dot}guest"


_REPLAY = """
    SELECT run, line, t, actor, event, token, pages,
        CASE WHEN event = 'report' THEN CAST(blocks AS BIGINT[][]) END AS report_blocks,
        CASE WHEN event = 'worker_poll' THEN CAST(blocks AS BIGINT) END AS poll_blocks,
        acked, guest, pfn, isolated_pages
    FROM events
    WHERE event IN ('worker_poll', 'report', 'report_done', 'discard', 'sample')
    ORDER BY run, line"""


def _rows(db: LogDB) -> Iterator[tuple[Any, ...]]:
    """The replayed lines in log order, streamed in batches (a big log never sits in memory)."""
    cursor = db.con.execute(_REPLAY)
    while batch := cursor.fetchmany(_BATCH):
        yield from batch


def _check_conservation(db: LogDB, results: dict[str, RunCheck]) -> None:
    found = db.sql(
        """SELECT run, line, t, monitor, free_pages, isolated_pages, lent_pages, total_pages
        FROM samples
        WHERE free_pages + isolated_pages + lent_pages IS DISTINCT FROM total_pages
        QUALIFY row_number() OVER (PARTITION BY run ORDER BY line) = 1"""
    ).fetchall()
    for run, line, t, monitor, free, isolated, lent, total in found:
        results[run].violate(
            "conservation",
            line,
            t,
            f"{monitor}: free {free} + isolated {isolated} + lent {lent} = "
            f"{_sum_or_missing(free, isolated, lent)} pages, but the guest has {total}",
        )
    for run, samples in db.sql("SELECT run, count(*) FROM samples GROUP BY run").fetchall():
        results[run].counted["samples"] = samples


def _sum_or_missing(*values: int | None) -> str:
    if any(value is None for value in values):
        return "(a field is missing)"
    return str(sum(value for value in values if value is not None))


def _replay(db: LogDB, results: dict[str, RunCheck], ended: set[str]) -> None:
    """Replay the report ledger; the end-of-run check only for runs whose log has ``run_end``
    (``ended``): a truncated log's last sample is not the run's end."""
    guests: dict[tuple[str, str], _Guest] = {}
    counts: dict[str, dict[str, int]] = {}
    for row in _rows(db):
        run, line, t, actor, event, token, pages, blocks, poll_blocks, acked, guest, pfn, iso = row
        result = results[run]
        counted = counts.setdefault(run, {"reports": 0, "discards": 0})
        name = guest if event == "discard" else _guest_of(actor)
        state = guests.setdefault((run, name), _Guest())
        if event == "sample":
            state.at_last_sample = (line, t, iso, state.in_flight_pages, state.pending_poll)
        elif event == "worker_poll":
            if poll_blocks:
                state.pending_poll = pages
                state.largest_poll = max(state.largest_poll, pages)
        elif event == "report":
            counted["reports"] += 1
            _sent(result, state, line, t, actor, token, pages, blocks)
        elif event == "report_done":
            _answered(result, state, line, t, actor, token, acked)
        else:
            counted["discards"] += 1
            _discarded(result, state, line, t, name, pfn, pages)
    for run, counted in counts.items():
        results[run].counted.update(counted)
    for (run, name), state in sorted(guests.items()):
        _at_end(results[run], name, state, run in ended)


def _sent(
    result: RunCheck,
    state: _Guest,
    line: int,
    t: int,
    actor: str,
    token: int,
    pages: int,
    blocks: list[list[int]],
) -> None:
    state.pending_poll = 0
    if token in state.in_flight or token in state.answered:
        earlier = state.in_flight.get(token)
        where = f"line {earlier.line}" if earlier else f"answered at line {state.answered[token]}"
        result.violate("report_ledger", line, t, f"{actor} reused report token {token} ({where})")
        return
    flight = _Flight(token, line, pages, [(pfn, order) for pfn, order in blocks])
    for pfn, order in flight.blocks:
        end = pfn + (1 << order)
        clash = state.overlapping(pfn, end)
        if clash is not None:
            result.violate(
                "report_ledger",
                line,
                t,
                f"{actor} reported block pfn {pfn} order {order} (token {token}), but pfn "
                f"{clash[0]} of report {clash[1]} (line {state.in_flight[clash[1]].line}) "
                "is still in flight: a page on two lists",
            )
            continue
        bisect.insort(state.starts, pfn)
        state.blocks[pfn] = (end, token)
    state.in_flight[token] = flight


def _answered(
    result: RunCheck, state: _Guest, line: int, t: int, actor: str, token: int, acked: bool
) -> None:
    flight = state.in_flight.pop(token, None)
    if flight is None:
        where = (
            f"it was answered already at line {state.answered[token]}"
            if token in state.answered
            else "no report with that token was logged before"
        )
        result.violate(
            "report_ledger", line, t, f"{actor}: report_done for token {token}, but {where}"
        )
        return
    state.answered[token] = line
    for pfn, _ in flight.blocks:
        if state.blocks.get(pfn, (0, None))[1] == token:
            del state.blocks[pfn]
            state.starts.pop(bisect.bisect_left(state.starts, pfn))
            state.returned[pfn] = (token, line)


def _discarded(
    result: RunCheck, state: _Guest, line: int, t: int, guest: str, pfn: int, pages: int
) -> None:
    if state.holder(pfn, pfn + pages) is not None:
        return
    last = state.returned.get(pfn)
    history = (
        f"; pfn {pfn} was last in report {last[0]}, put back at line {last[1]}"
        if last is not None
        else "; no report held it"
    )
    result.violate(
        "discard_in_flight",
        line,
        t,
        f"the host discarded pfns {pfn}..{pfn + pages - 1} of {guest}, which no report in flight "
        f"holds: the guest may be using them{history}",
    )


def _at_end(result: RunCheck, guest: str, state: _Guest, ended: bool) -> None:
    for flight in sorted(state.in_flight.values(), key=lambda f: f.line):
        result.in_flight.append(
            {"guest": guest, "token": flight.token, "line": flight.line, "pages": flight.pages}
        )
    if state.at_last_sample is None or not ended:
        return
    line, t, isolated, in_flight, pending = state.at_last_sample
    expected = in_flight + pending
    if isolated == expected:
        return
    # The log lags the allocator by one lock hold: at the run's last instant a poll may be
    # isolating (not yet logged) or a report being put back (report_done not yet logged).
    if 0 < isolated - expected <= state.largest_poll:
        return
    if expected > isolated and any(
        f.pages == expected - isolated for f in state.in_flight.values()
    ):
        return
    result.violate(
        "isolated_at_end",
        line,
        t,
        f"{guest} has {isolated} pages isolated at its last sample, but its reports in flight "
        f"hold {in_flight} and a pending poll {pending}: isolated memory was lost or leaked",
    )


def check_logs(db: LogDB) -> list[RunCheck]:
    """Check every run of ``db``; a check the log cannot support is marked 'not checked'."""
    results = {source.run: RunCheck(source.run, source.path) for source in db.sources}
    ended = db.runs_with("run_end")
    _check_conservation(db, results)
    _replay(db, results, ended)
    debug = {row[0] for row in db.sql("SELECT run FROM runs WHERE debug").fetchall()}
    with_samples = db.runs_with("sample")
    failed_line = db.runs_with("run_failed")
    failed = failed_line | {source.run for source in db.sources if source.status == "failed"}
    for run, result in results.items():
        if run not in debug:
            result.status["discard_in_flight"] = (
                "not checked: the log is at info level and discard lines are debug; rerun "
                "with --set run.log_level=debug"
            )
        if run not in with_samples:
            for check in ("conservation", "isolated_at_end"):
                result.status[check] = "not checked: the log has no sample lines"
        if run not in ended:
            result.truncated = run not in failed_line
            why = "the run failed" if run in failed else "log truncated"
            result.status["isolated_at_end"] = (
                f"not checked ({why}: no end-of-run line): the last sample logged is not the "
                "run's end"
            )
    return list(results.values())


# -- the command -----------------------------------------------------------------------------
HELP = "verify a run's invariants offline from its log"
DESCRIPTION = (
    "Replay the log of a run (a run directory or log.jsonl; a sweep directory checks every run) "
    "and verify page conservation at every sample, the report ledger (unique tokens, answered "
    "once, no block in two reports), that the host discarded only pages of reports in flight "
    "(needs a debug-level log), and that isolated pages at the end are those of reports still "
    "in flight (not checked on a log truncated before its run_end line). Prints the first "
    "violation with its line number. Exit 0 when nothing is violated (a truncated log "
    "included), 1 on a violation, 2 on bad input."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUN_DIR|LOG|SWEEP_DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def command(args: argparse.Namespace) -> int:
    """``pagehint check``: 0 clean, 1 on a violation, 2 on bad input."""
    try:
        db = open_run(args.paths, from_copy=False)  # the lines it names are the file's own
    except (LogError, ValueError) as error:
        print(f"pagehint check: bad input: {error}", file=sys.stderr)
        return 2
    with db:
        results = check_logs(db)
        warnings = list(db.warnings)
    violated = any(result.violations for result in results)
    if args.json:
        document = {
            "ok": not violated,
            "warnings": warnings,
            "runs": [result.as_dict() for result in results],
        }
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        _print(results, warnings)
    return 1 if violated else 0


def _print(results: Sequence[RunCheck], warnings: Sequence[str]) -> None:
    console = Console(highlight=False, soft_wrap=True)  # a path:line stays on one line
    for warning in warnings:
        console.print(f"warning: {warning}")
    for result in results:
        table = Table(title=f"check: {result.run} ({result.log})", title_justify="left")
        table.add_column("invariant")
        table.add_column("result")
        for check, status in result.status.items():
            shown = {"ok": "[green]ok[/green]", "violated": "[red]VIOLATED[/red]"}
            table.add_row(check, shown.get(status, status))
        console.print(table)
        counted = ", ".join(f"{n:,} {what}" for what, n in result.counted.items())
        console.print(f"replayed: {counted}")
        if result.truncated:
            console.print(
                "[yellow]truncated[/yellow]: the log has no run_end line; checked as far as it goes"
            )
        if result.in_flight:
            where = "where the log stops" if result.truncated else "at the end"
            console.print(f"{len(result.in_flight)} report(s) still in flight {where}:")
            for flight in result.in_flight:
                console.print(
                    f"  {flight['guest']} token {flight['token']}: {flight['pages']:,} pages, "
                    f"reported at line {flight['line']}"
                )
        first = result.first
        if first is None and result.truncated:
            console.print("[green]no violation[/green] in the lines there are")
        elif first is None:
            console.print("[green]no violation[/green]")
        else:
            console.print(
                f"[red]first violation[/red] ({first.check}) at {result.log}:{first.line} "
                f"(t={first.t} ns): {first.message}"
            )
        console.print()
