"""Log analysis speed and memory on one core: DuckDB over a run's Parquet copy, and over its
JSON lines, vs a plain Python ``json`` loop; and what writing the copy costs a run.

What is measured, on one generated log of 1,000,000 lines in pagehint's schema (a debug-level
hinting run: zone requests with their pfns, the hinting worker's own steps under the zone lock
(``zone_work``), samples, worker wake/poll/report/sleep lines, host discards, in proportions
like those of a real run), each repeat:

1. ``write``: ``write_copy``, which makes the log's Parquet copy as a run does when it ends.
2. ``parquet``: what ``pagehint analyze LOG --report lock_wait`` does with the copy beside the
   log: open it (header and last-line checks, the copy's metadata, one scan of its common
   columns, the views), then the canned ``lock_wait`` report: exact zone-lock wait
   percentiles by requester class (vCPUs and the worker).
3. ``json``: the same without a copy (``from_copy=False``, as for an interrupted run): DuckDB
   parses the JSON lines once, into a scratch Parquet file, and reads that.
4. ``loop``: a plain Python loop over the same file computing the same table (``json.loads``
   per line, lists of waits per class, sorted for the same ``quantile_disc`` percentiles).

All on one core: the process is pinned to one CPU where the OS allows (``sched_setaffinity``),
and DuckDB runs one thread. The three results are compared, so the speed-ups are for the same
answer. The readers are interleaved (``_stats.interleave``); speed-ups are per repeat, then
min/median/max (target: a median of at least 10x from the copy). Peak memory of each DuckDB
path is measured in a fresh subprocess (its VmHWM, where Linux gives it; target: at most
500 MiB).

The write cost: a debug-level run of a scenario (default: ``default`` for 1 s virtual), then its
copy, as ``pagehint run`` does them, in a fresh process each repeat (on this process's core);
the share is the copy's time over the run's wall time (summary.json's ``wall_s``; target: at
most 15%), and over the whole process's, interpreter and imports included, per repeat. Opening
DuckDB in a process costs some 20 ms of it, whatever the log's size.

Run: ``python benchmarks/analyze_bench.py [--lines N] [--repeats N] [--log PATH]
[--scenario NAME] [--duration D] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from _stats import Spread, interleave, ratios, spread, target_met
from rich.console import Console
from rich.table import Table

from pagehint.actors.analysis import open_run
from pagehint.runtime import LOG_SCHEMA_VERSION, VERSION
from pagehint.runtime.harness.config import apply_overrides, load_toml
from pagehint.runtime.harness.logdb import copy_path, write_copy
from pagehint.runtime.harness.model import execute, load_config, load_model

SEED = 20261126
TARGETS = {
    "speedup_vs_json": (10.0, "min"),
    "peak_rss_mib": (500.0, "max"),
    "copy_share_of_run": (0.15, "max"),
}
VCPUS = 8
GUEST_PAGES = 1 << 21  # 8 GiB


def generate(path: Path, lines: int) -> None:
    """A log of ``lines`` lines: a debug-level run of 8 vCPUs faulting and a hinting worker."""
    rng = random.Random(SEED)
    t = 0
    written = 0
    token = 0
    with path.open("wb") as out:

        def emit(actor: str, level: str, event: str, **fields: Any) -> None:
            nonlocal written
            if written < lines:
                record = {"t": t, "actor": actor, "level": level, "event": event, **fields}
                out.write(orjson.dumps(record) + b"\n")
                written += 1

        emit(
            "runtime",
            "info",
            "header",
            schema=LOG_SCHEMA_VERSION,
            pagehint=VERSION,
            trio="0.35.0",
            python="3.11.7",
            seed=0,
            config_hash="0" * 16,
            wall_time="2026-01-01T00:00:00+00:00",
            model="guest",
        )

        def worker_step(examined: int, isolated: int) -> None:
            emit(
                "zone",
                "debug",
                "zone_work",
                requester="worker",
                examined=examined,
                isolated_pages=isolated,
                wait_ns=rng.choice((0, rng.randrange(2_000))),
                queued=rng.randrange(2),
            )

        while written < lines:
            t += rng.randrange(1_000, 50_000)
            draw = rng.random()
            if draw < 0.9775:  # zone requests: per-CPU refills and drains, THP faults and frees
                vcpu = f"vcpu{rng.randrange(VCPUS)}"
                thp = rng.random() < 0.5
                order, count = (9, 1) if thp else (0, 63)
                base = rng.randrange(GUEST_PAGES >> 9) << 9
                pfns = [base + (i << order) % 512 for i in range(count)]
                wait = 0 if rng.random() < 0.6 else int(rng.expovariate(1 / 8_000))
                queued = rng.randrange(VCPUS)
                if rng.random() < 0.55:
                    emit(
                        "zone",
                        "debug",
                        "zone_alloc",
                        requester=vcpu,
                        order=order,
                        wanted=count,
                        got=count,
                        pfns=pfns,
                        wait_ns=wait,
                        queued=queued,
                    )
                else:
                    emit(
                        "zone",
                        "debug",
                        "zone_free",
                        requester=vcpu,
                        order=order,
                        blocks=count,
                        pfns=pfns,
                        wait_ns=wait,
                        queued=queued,
                    )
            elif draw < 0.9975:
                free = rng.randrange(GUEST_PAGES)
                emit(
                    "monitor",
                    "info",
                    "sample",
                    rss_pages=rng.randrange(GUEST_PAGES),
                    free_pages=free,
                    isolated_pages=0,
                    reported_pages=free // 2,
                    wasted_pages=free // 3,
                    pcp_pages=rng.randrange(4096),
                    lent_pages=GUEST_PAGES - free,
                    total_pages=GUEST_PAGES,
                    lock_queue=0,
                )
            else:  # a hinting pass: wake, polls each isolating and reporting 32 blocks, discards
                emit("worker", "info", "worker_wake", in_flight=0)
                worker_step(examined=1, isolated=0)  # the design's begin, under the zone lock
                polls = rng.randrange(1, 5)
                for _ in range(polls):
                    blocks = [[rng.randrange(GUEST_PAGES >> 10) << 10, 10] for _ in range(32)]
                    worker_step(examined=32, isolated=32 << 10)
                    emit("worker", "info", "worker_poll", blocks=32, pages=32 << 10, examined=32)
                    emit("worker", "info", "report", token=token, pages=32 << 10, blocks=blocks)
                    for pfn, order in blocks:
                        t += 80_000
                        emit("host", "debug", "discard", guest="guest", pfn=pfn, pages=1 << order)
                    emit("worker", "info", "report_done", token=token, acked=True)
                    worker_step(examined=32, isolated=0)  # the put-back
                    token += 1
                emit("worker", "info", "worker_sleep", polls=polls, rearmed=False)


# -- three ways to the same table ----------------------------------------------------------
Table_ = list[tuple[Any, ...]]


def with_duckdb(path: Path, *, from_copy: bool) -> Table_:
    with open_run(path, from_copy=from_copy, threads=1) as db:
        expected = "parquet" if from_copy else "json"
        assert db.sql("SELECT source FROM runs").fetchall() == [(expected,)], db.warnings
        return [tuple(row) for row in db.report("lock_wait").fetchall()]


def _requester_class(requester: str) -> str:
    name = requester.rpartition(".")[2]
    return name.rstrip("0123456789") or name


def _quantile_disc(ordered: Sequence[int], q: float) -> int:
    """DuckDB's quantile_disc, the nearest rank: the ceil(n * q)-th smallest value."""
    return ordered[max(0, math.ceil(len(ordered) * q) - 1)]


def with_json(path: Path) -> Table_:
    """The lock_wait report by hand: every request under the zone lock, the worker's too."""
    waits: dict[str, list[int]] = {}
    queued: dict[str, list[int]] = {}
    with path.open("rb") as file:
        for line in file:
            record = json.loads(line)
            if record["event"] in ("zone_alloc", "zone_free", "zone_work"):
                group = _requester_class(record["requester"])
                waits.setdefault(group, []).append(record["wait_ns"])
                queued.setdefault(group, []).append(record["queued"])
    waits["all"] = [wait for group in list(waits) for wait in waits[group]]
    queued["all"] = [depth for group in list(queued) if group != "all" for depth in queued[group]]
    table: Table_ = []
    for group in sorted(waits):
        ordered = sorted(waits[group])
        table.append(
            (
                path.parent.name if path.name == "log.jsonl" else path.stem,
                group,
                len(ordered),
                sum(ordered) / len(ordered),
                _quantile_disc(ordered, 0.5),
                _quantile_disc(ordered, 0.9),
                _quantile_disc(ordered, 0.99),
                ordered[-1],
                100 * sum(1 for wait in ordered if wait > 0) / len(ordered),
                sum(queued[group]) / len(queued[group]),
            )
        )
    return table


def _same(ours: Table_, theirs: Table_) -> bool:
    if len(ours) != len(theirs):
        return False
    for row, other in zip(ours, theirs, strict=True):
        for a, b in zip(row, other, strict=True):
            if isinstance(a, float) or isinstance(b, float):
                if not math.isclose(float(a), float(b), rel_tol=1e-9):
                    return False
            elif a != b:
                return False
    return True


def pin_to_one_core() -> int | None:
    """Pin this process, and the children it starts, to one CPU where the OS allows; which."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def peak_rss_mib(path: Path, *, from_copy: bool) -> float:
    """Peak RSS of a DuckDB path, alone in a fresh interpreter (on this process's core)."""
    read = ["--child-from-copy"] if from_copy else []
    child = subprocess.run(
        [sys.executable, __file__, "--child", str(path), *read],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(child.stdout.strip().splitlines()[-1])


def _child(path: Path, from_copy: bool) -> None:
    with_duckdb(path, from_copy=from_copy)
    print(_own_peak_rss_mib())


def _own_peak_rss_mib() -> float:
    """This process's peak RSS: Linux's VmHWM, since ``ru_maxrss`` starts at the forking
    parent's peak (the benchmark's own, with the json loop's lists), not at this process's."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # KiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
        1 << 20 if sys.platform == "darwin" else 1024
    )


def _seconds(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def _reading(
    read: Callable[[], Table_], results: dict[str, Table_], name: str
) -> Callable[[], float]:
    """A timed reader that keeps its table in ``results[name]``."""

    def keep() -> None:
        results[name] = read()

    return lambda: _seconds(keep)


def write_cost(scenario: str, duration: str, repeats: int) -> dict[str, Spread]:
    """A debug-level run of ``scenario`` then its copy, each repeat in a fresh process (as
    ``pagehint run`` does them): the run's wall time, the whole process's (interpreter and
    imports included), the copy's, and the copy's share of each."""
    runs: list[float] = []
    processes: list[float] = []
    copies: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(repeats):
            started = time.perf_counter()
            child = subprocess.run(
                [sys.executable, __file__, "--child-run", scratch, scenario, duration],
                check=True,
                capture_output=True,
                text=True,
            )
            processes.append(time.perf_counter() - started)
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            runs.append(figures["wall_s"])
            copies.append(figures["copy_s"])
    return {
        "run_wall_s": spread(runs),
        "process_wall_s": spread(processes),
        "copy_s": spread(copies),
        "copy_share_of_run": spread(ratios(copies, runs)),
        "copy_share_of_process": spread(ratios(copies, processes)),
    }


def _child_run(out: Path, scenario: str, duration: str) -> None:
    """``pagehint run SCENARIO`` at debug level, its copy timed apart from the run."""
    model = load_model("guest")
    if model.examples is None:
        raise SystemExit("the guest model installs no example scenarios")
    source = model.examples / f"{scenario}.toml"
    overrides = ["run.log_level=debug", f"run.duration={duration}"]
    config = load_config(model, apply_overrides(load_toml(source), overrides), str(source))
    _, summary = execute(model, config, out, log_copy=False)
    copy_s = _seconds(lambda: write_copy(out / "log.jsonl"))
    print(json.dumps({"wall_s": summary["wall_s"], "copy_s": copy_s}))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines to generate")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--log", type=Path, help="use (or keep) the generated log here")
    parser.add_argument("--scenario", default="default", help="the run whose copy is timed")
    parser.add_argument("--duration", default="1s", help="its virtual duration")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-from-copy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-run", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child, args.child_from_copy)
        return
    if args.child_run is not None:
        out, scenario, duration = args.child_run
        _child_run(Path(out), scenario, duration)
        return
    cpu = pin_to_one_core()
    with tempfile.TemporaryDirectory() as scratch:
        path: Path = args.log or Path(scratch) / "bench.jsonl"
        started = time.perf_counter()
        if not path.exists():
            generate(path, args.lines)
        generated_s = time.perf_counter() - started
        lines = sum(1 for _ in path.open("rb"))
        writes = [_seconds(lambda: write_copy(path)) for _ in range(args.repeats)]
        results: dict[str, Table_] = {}
        timings = interleave(
            {
                "parquet": _reading(lambda: with_duckdb(path, from_copy=True), results, "parquet"),
                "json": _reading(lambda: with_duckdb(path, from_copy=False), results, "json"),
                "loop": _reading(lambda: with_json(path), results, "loop"),
            },
            args.repeats,
            warmup_rounds=0,
        )
        same = results["parquet"] == results["json"] and _same(results["json"], results["loop"])
        rss = peak_rss_mib(path, from_copy=True)
        rss_json = peak_rss_mib(path, from_copy=False)
        size_mib = path.stat().st_size / (1 << 20)
        copy_mib = copy_path(path).stat().st_size / (1 << 20)
    report: dict[str, Any] = {
        "lines": lines,
        "log_mib": round(size_mib, 1),
        "copy_mib": round(copy_mib, 1),
        "generate_s": round(generated_s, 2),
        "repeats": args.repeats,
        "cpu": cpu,
        "duckdb_threads": 1,
        "parquet_s": spread(timings["parquet"]),
        "json_s": spread(timings["json"]),
        "loop_s": spread(timings["loop"]),
        "write_copy_s": spread(writes),
        "same_result": same,
        "speedup_vs_json_spread": spread(ratios(timings["loop"], timings["parquet"])),
        "fallback_speedup_vs_json_spread": spread(ratios(timings["loop"], timings["json"])),
        "peak_rss_mib": round(rss, 1),
        "peak_rss_mib_fallback": round(rss_json, 1),
        "write_cost": write_cost(args.scenario, args.duration, args.repeats),
        "write_cost_run": f"{args.scenario}, run.log_level=debug, run.duration={args.duration}",
    }
    report["speedup_vs_json"] = report["speedup_vs_json_spread"]["median"]
    report["copy_share_of_run"] = report["write_cost"]["copy_share_of_run"]["median"]
    report["targets_met"] = {key: target_met(TARGETS, key, report[key]) for key in TARGETS}
    _show(report)
    if not same:
        print("the DuckDB and json results differ", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    if not same:
        sys.exit(1)


def _row(table: Table, label: str, figures: Spread, unit: str = "", digits: int = 3) -> None:
    table.add_row(label, *(f"{figures[key]:.{digits}f}{unit}" for key in ("min", "median", "max")))


def _show(report: dict[str, Any]) -> None:
    console = Console()
    pinned = f"CPU {report['cpu']}" if report["cpu"] is not None else "no pinning on this OS"
    table = Table(
        title=f"lock_wait report over {report['lines']:,} lines ({report['log_mib']} MiB; "
        f"copy {report['copy_mib']} MiB), {report['repeats']} repeats, one core ({pinned}), "
        "one DuckDB thread",
        title_justify="left",
    )
    for column in ("what", "min", "median", "max"):
        table.add_column(column, justify="left" if column == "what" else "right")
    _row(table, "DuckDB from the Parquet copy (s)", report["parquet_s"])
    _row(table, "DuckDB from the JSON lines (s)", report["json_s"])
    _row(table, "Python json loop (s)", report["loop_s"])
    _row(table, "writing the copy (s)", report["write_copy_s"])
    _row(table, "speed-up vs json, from the copy (x)", report["speedup_vs_json_spread"], digits=1)
    _row(
        table,
        "speed-up vs json, JSON lines (x)",
        report["fallback_speedup_vs_json_spread"],
        digits=1,
    )
    cost = report["write_cost"]
    _row(table, f"run wall time (s): {report['write_cost_run']}", cost["run_wall_s"])
    _row(table, "its process, interpreter and imports included (s)", cost["process_wall_s"])
    _row(table, "its copy (s)", cost["copy_s"])
    _row(table, "the copy's share of the run", cost["copy_share_of_run"])
    _row(table, "the copy's share of the process", cost["copy_share_of_process"])
    console.print(table)
    met = report["targets_met"]

    def verdict(key: str) -> str:
        return "met" if met[key] else "MISSED"

    console.print(
        f"speed-up vs json from the copy: {report['speedup_vs_json']:.1f}x (median; target >= 10x: "
        f"{verdict('speedup_vs_json')}); same result: {report['same_result']}"
    )
    console.print(
        f"peak RSS (fresh process): {report['peak_rss_mib']} MiB from the copy, "
        f"{report['peak_rss_mib_fallback']} MiB from the JSON lines (target <= 500 MiB: "
        f"{verdict('peak_rss_mib')})"
    )
    console.print(
        f"writing the copy: {report['copy_share_of_run']:.1%} of the run (median; target <= 15%: "
        f"{verdict('copy_share_of_run')})"
    )


if __name__ == "__main__":
    main()
